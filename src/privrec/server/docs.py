"""API documentation at `/docs`, rendered on the server from the app's own OpenAPI document.

FastAPI's Swagger UI and ReDoc pages load their JavaScript and CSS from a CDN, which an offline
shop (and the pages' content security policy, `script-src 'none'`) rules out. Rather than ship
a bundled JavaScript UI from a package, the documentation is plain HTML generated from
`app.openapi()` with Jinja: every operation grouped by tag with its method, path, who may call
it, parameters, request body, responses, and the schemas. Its only asset is the stylesheet,
served from this package at `/docs/style.css`. Works whether or not the demo pages are on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import FileResponse, HTMLResponse

__all__ = ["install"]

HERE = Path(__file__).parent
router = APIRouter(include_in_schema=False)
_METHODS = ("get", "post", "put", "patch", "delete")
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(HERE / "templates")),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
)


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def schema_text(schema: dict[str, Any] | None, depth: int = 0) -> str:
    """A one-line type of a JSON schema: `integer`, `array of ItemOut`, `EventIn | null`."""
    if not schema:
        return "any"
    if "$ref" in schema:
        return _ref_name(schema["$ref"])
    if depth > 4:
        return "…"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(schema_text(s, depth + 1) for s in schema[key])
    if "allOf" in schema:
        return " & ".join(schema_text(s, depth + 1) for s in schema["allOf"])
    t = schema.get("type")
    if t == "array":
        return f"array of {schema_text(schema.get('items'), depth + 1)}"
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if t == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {schema_text(schema['additionalProperties'], depth + 1)}"
    return str(t or "any")


def _limits(schema: dict[str, Any]) -> str:
    parts = []
    for key, word in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("pattern", "pattern"),
    ):
        if key in schema:
            parts.append(f"{word} {schema[key]}")
    if "default" in schema:
        parts.append(f"default {json.dumps(schema['default'])}")
    return ", ".join(parts)


def _who(op: dict[str, Any], doc: dict[str, Any]) -> str:
    sec = op.get("security", doc.get("security"))
    if not sec:
        return "no key"
    names = sorted({name for req in sec for name in req})
    return ", ".join(names)


def build(doc: dict[str, Any]) -> dict[str, Any]:
    """The template's view of an OpenAPI document: operations by tag, and the schemas."""
    tags: dict[str, list[dict[str, Any]]] = {}
    for path, item in sorted(doc.get("paths", {}).items()):
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            params = [
                {
                    "name": p.get("name"),
                    "in": p.get("in"),
                    "required": bool(p.get("required")),
                    "type": schema_text(p.get("schema")),
                    "limits": _limits(p.get("schema") or {}),
                    "description": p.get("description") or "",
                }
                for p in op.get("parameters", [])
            ]
            body = None
            content = (op.get("requestBody") or {}).get("content") or {}
            for media, spec in content.items():
                body = {"media": media, "type": schema_text(spec.get("schema"))}
                break
            responses = [
                {
                    "status": code,
                    "description": r.get("description") or "",
                    "types": ", ".join(
                        f"{m}: {schema_text(c.get('schema'))}"
                        for m, c in (r.get("content") or {}).items()
                    ),
                }
                for code, r in sorted(op.get("responses", {}).items())
            ]
            tag = (op.get("tags") or ["other"])[0]
            tags.setdefault(tag, []).append(
                {
                    "id": op.get("operationId") or f"{method}-{path}",
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary") or "",
                    "description": op.get("description") or "",
                    "who": _who(op, doc),
                    "params": params,
                    "body": body,
                    "responses": responses,
                }
            )
    schemas = []
    for name, s in sorted((doc.get("components") or {}).get("schemas", {}).items()):
        required = set(s.get("required") or [])
        props = [
            {
                "name": p,
                "type": schema_text(ps),
                "required": p in required,
                "limits": _limits(ps),
                "description": ps.get("description") or "",
            }
            for p, ps in (s.get("properties") or {}).items()
        ]
        schemas.append(
            {
                "name": name,
                "description": s.get("description") or "",
                "type": schema_text(s) if not props else "object",
                "props": props,
            }
        )
    security = (doc.get("components") or {}).get("securitySchemes", {})
    return {"tags": tags, "schemas": schemas, "security": security}


@router.get("/docs", response_class=HTMLResponse)
async def docs(request: Request) -> HTMLResponse:
    """The API reference, generated from the OpenAPI document (no script, no CDN)."""
    doc = request.app.openapi()
    info = doc.get("info", {})
    return HTMLResponse(
        _env.get_template("docs.html.j2").render(
            title=f"{info.get('title', 'API')} {info.get('version', '')} API",
            info=info,
            openapi_url=request.app.openapi_url,
            **build(doc),
        )
    )


@router.get("/docs/style.css")
async def docs_style() -> FileResponse:
    """The documentation's stylesheet (the pages' own, served from this package)."""
    return FileResponse(HERE / "static" / "style.css", media_type="text/css")


def install(app: FastAPI) -> None:
    """Serve the API documentation at `/docs`."""
    app.include_router(router)
