"""Catalogue browsing, similar items and product search (public item data)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query
from starlette.concurrency import run_in_threadpool

from privrec.server.deps import client, recsys
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import SearchIn, SearchOut

router = APIRouter(prefix="/v1", tags=["items"], dependencies=[Depends(client)])
ItemId = Path(min_length=1, max_length=256)


@router.get("/items", responses=problem_responses(401, 403, 422, 429, 503))
async def list_items(
    q: str | None = Query(
        default=None, max_length=200, description="words that must all appear in the title"
    ),
    category: str | None = Query(default=None, max_length=200, description="category path prefix"),
    limit: int = Query(default=24, ge=1, le=200),
    offset: int = Query(default=0, ge=0, le=1_000_000),
    rs: Any = Depends(recsys),
) -> JSON:
    """Browse the catalogue, most popular first."""
    return JSON(
        await run_in_threadpool(rs.catalogue, q=q, category=category, limit=limit, offset=offset)
    )


@router.get("/categories", responses=problem_responses(401, 403, 429, 503))
async def categories(rs: Any = Depends(recsys)) -> JSON:
    """The catalogue's categories with item counts."""
    return JSON({"categories": rs.categories()})


@router.get("/items/{item}", responses=problem_responses(401, 403, 404, 422, 429, 503))
async def get_item(item: str = ItemId, rs: Any = Depends(recsys)) -> JSON:
    """One catalogue item."""
    return JSON(rs.item(item))


@router.get("/items/{item}/similar", responses=problem_responses(401, 403, 404, 422, 429, 503))
async def similar(
    item: str = ItemId,
    k: int = Query(default=10, ge=1, le=100),
    model: str | None = Query(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$"),
    rs: Any = Depends(recsys),
) -> JSON:
    """Items like this one (for a product page; no personal data involved)."""
    return JSON(rs.similar_items(item, k, model=model))


@router.post(
    "/search", response_model=SearchOut, responses=problem_responses(401, 403, 413, 422, 429, 503)
)
async def search(body: SearchIn, rs: Any = Depends(recsys)) -> JSON:
    """Product search: semantic where a text model is served, else title substring match (the
    response's `mode` says which); personalised when the shopper consented."""
    rules = body.rules.model_dump(exclude_defaults=True) if body.rules is not None else None
    return JSON(
        await run_in_threadpool(rs.search, body.query, body.k, user_id=body.user, rules=rules)
    )
