"""Catalogue changes (admin): bulk upsert, patch one item, delete one item.

Every change reaches the served lists at once (see `privrec.service.catalogue`). A rejected
row is reported by its position in the list, its field and the problem, never its value.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Body, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from privrec.data.catalogue_import import CATALOGUE_FIELDS
from privrec.server.deps import RS, admin
from privrec.server.problems import ProblemError, problem_responses
from privrec.server.responses import JSON

router = APIRouter(prefix="/v1", tags=["catalogue"], dependencies=[Depends(admin)])
ItemId = Path(min_length=1, max_length=256)

_ITEM_SCHEMA = {
    "type": "object",
    "required": ["item"],
    "additionalProperties": False,
    "properties": {name: {} for name in CATALOGUE_FIELDS},
}


@router.put(
    "/items",
    responses=problem_responses(400, 401, 403, 413, 415, 422, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "array", "minItems": 1, "items": _ITEM_SCHEMA}
                }
            },
        }
    },
)
async def put_items(rs: RS, request: Request) -> JSON:
    """Insert or replace catalogue items (a JSON list, at most `max_batch_events` rows).

    Rows: item (required), title, description, category ("A > B > C"), brand, price,
    currency, in_stock or stock, image_url, attributes. The reply is the import report.
    """
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() not in ("application/json", ""):
        raise ProblemError(
            415, "send the items as application/json: [{...}, ...]", slug="unsupported-media-type"
        )
    try:
        rows = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise ProblemError(
            400, "the body is not valid JSON; send a list of items", slug="invalid-json"
        ) from None
    if not isinstance(rows, list) or not rows:
        raise ProblemError(
            422, "body: must be a non-empty list of item objects", slug="invalid-batch"
        )
    limit = request.app.state.server_settings.max_batch_events
    if len(rows) > limit:
        raise ProblemError(
            413,
            f"body: {len(rows)} items in one request; send at most {limit}",
            slug="batch-too-large",
        )
    return JSON(await run_in_threadpool(rs.catalogue.upsert, rows))


@router.patch("/items/{item}", responses=problem_responses(401, 403, 404, 413, 422, 429))
async def patch_item(
    rs: RS,
    item: str = ItemId,
    fields: dict[str, Any] = Body(
        description="the fields to change (None clears one); item cannot change"
    ),
) -> JSON:
    """Change some fields of one item (price, stock, title, ...); applies to lists at once."""
    return JSON(await run_in_threadpool(rs.catalogue.patch, item, fields))


@router.delete("/items/{item}", responses=problem_responses(401, 403, 404, 422, 429))
async def delete_item(rs: RS, item: str = ItemId) -> JSON:
    """Delete one item: it leaves every list at once."""
    return JSON(await run_in_threadpool(rs.catalogue.delete, item))
