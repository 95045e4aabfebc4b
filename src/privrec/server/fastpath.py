"""The hot path: POST /v1/recommendations answered without FastAPI's routing and dependency
machinery (which costs more CPU than the recommendation itself).

It is the same endpoint, not another one: the same request model (`RecommendIn`, validated by
pydantic from the raw JSON), the same key check and rate limit, the same facade call, the same
problem documents for every error. The FastAPI route in `routers/recommendations.py` documents
it in the OpenAPI schema and serves it when the fast path is turned off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from pydantic import ValidationError as PydanticValidationError
from starlette.types import Receive, Scope, Send

from privrec.core.errors import PrivrecError
from privrec.server import personal
from privrec.server.problems import ProblemError, problem_body
from privrec.server.schemas import RecommendIn
from privrec.server.security import authorize

PATH = "/v1/recommendations"
_JSON_HEADERS = [(b"content-type", b"application/json")]


class _Headers:
    """Just enough of a header mapping for `authorize` (ASGI headers are lower-case)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def get(self, name: str, default: Any = None) -> Any:
        key = name.encode()
        for k, v in self._raw:
            if k == key:
                return v.decode("latin-1")
        return default


def validation_errors(
    errors: Sequence[Mapping[str, Any]], where: str = "body"
) -> tuple[str, list[dict[str, str]]]:
    """(detail, errors) of a problem document from pydantic errors; never the input values."""
    out = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            w, loc = loc[0], loc[1:]
        else:
            w = where
        msg = str(e.get("msg", "is invalid"))
        if e.get("type") == "missing":
            msg = "is missing"
        elif e.get("type") == "extra_forbidden":
            msg = "is not a known field"
        out.append({"in": w, "field": ".".join(loc) or w, "problem": msg})
    detail = (
        "; ".join(f"{e['in']} {e['field']}: {e['problem']}" for e in out[:5])
        or "the request is invalid"
    )
    return detail, out[:50]


async def handle(
    state: Any,
    scope: Scope,
    receive: Receive,
    send: Send,
    error_status: list[tuple[type, int, str]],
) -> None:
    """Answer one POST /v1/recommendations."""
    try:
        principal = authorize(state.keyring, state.limiter, _Headers(scope["headers"]), "client")
        scope["privrec.key"] = principal.key_id
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        try:
            body = RecommendIn.model_validate_json(b"".join(chunks))
        except PydanticValidationError as exc:
            detail, errs = validation_errors(exc.errors(include_input=False, include_url=False))
            raise ProblemError(422, detail, slug="invalid-request", errors=errs) from None
        # the route's one serving function: it decides by the caller what of the shopper's
        # own data the answer may name (explanations redacted without their token)
        token = _Headers(scope["headers"]).get("x-shopper-token")
        payload = orjson.dumps(personal.recommendations(state, principal, token, body))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        return
    except ProblemError as exc:
        status, body_bytes, headers = (
            exc.status,
            problem_body(exc.status, exc.detail, slug=exc.slug, instance=PATH, **exc.extra),
            exc.headers,
        )
    except PrivrecError as exc:
        status, slug = 400, "bad-request"
        for cls, st, sl in error_status:
            if isinstance(exc, cls):
                status, slug = st, sl
                break
        body_bytes, headers = problem_body(status, str(exc), slug=slug, instance=PATH), {}
    hdrs = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body_bytes)).encode()),
    ]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body_bytes})
