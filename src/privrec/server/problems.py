"""RFC 9457 problem details: every 4xx and 5xx answer is `application/problem+json`.

Messages name the problem and the fix; they never echo a request's values (a value may be a
raw user id), only field names.
"""

from __future__ import annotations

import http
from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_TYPE = "application/problem+json"


class ProblemError(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.headers = headers or {}
        self.extra = extra


def _title(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(
    status: int, detail: str, *, slug: str | None = None, instance: str | None = None, **extra: Any
) -> bytes:
    """The JSON bytes of a problem document."""
    title = _title(status)
    doc: dict[str, Any] = {
        "type": f"urn:privrec:problem:{slug or _slug(title)}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        doc["instance"] = instance
    doc.update(extra)
    return orjson.dumps(doc)


def problem_response(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem+json response."""
    return Response(
        problem_body(status, detail, slug=slug, instance=instance, **extra),
        status_code=status,
        media_type=PROBLEM_TYPE,
        headers=headers,
    )


PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for problem documents."""
    return {
        c: {"description": _title(c), "content": {PROBLEM_TYPE: {"schema": PROBLEM_SCHEMA}}}
        for c in codes
    }


def _slug(title: str) -> str:
    """A problem type's slug from its title ("Not Found" -> "not-found")."""
    return title.lower().replace(" ", "-").replace("'", "")
