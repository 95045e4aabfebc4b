"""Catalogue browsing, similar items and product search (public item data)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from privrec.server.deps import RS, Caller, ShopperToken, client
from privrec.server.personal import Access, access_of, redact_items
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import SearchIn, SearchOut

router = APIRouter(prefix="/v1", tags=["items"], dependencies=[Depends(client)])
ItemId = Path(min_length=1, max_length=256)


@router.get("/items", responses=problem_responses(401, 403, 422, 429, 503))
async def list_items(
    rs: RS,
    q: str | None = Query(
        default=None, max_length=200, description="words that must all appear in the title"
    ),
    category: str | None = Query(default=None, max_length=200, description="category path prefix"),
    limit: int = Query(default=24, ge=1, le=200),
    offset: int = Query(default=0, ge=0, le=1_000_000),
) -> JSON:
    """Browse the catalogue, most popular first."""
    return JSON(
        await run_in_threadpool(
            rs.serving.catalogue, q=q, category=category, limit=limit, offset=offset
        )
    )


@router.get("/categories", responses=problem_responses(401, 403, 429, 503))
async def categories(rs: RS) -> JSON:
    """The catalogue's categories with item counts."""
    return JSON({"categories": rs.serving.categories()})


@router.get("/items/{item}", responses=problem_responses(401, 403, 404, 422, 429, 503))
async def get_item(rs: RS, item: str = ItemId) -> JSON:
    """One catalogue item."""
    return JSON(rs.serving.item(item))


@router.get("/items/{item}/similar", responses=problem_responses(401, 403, 404, 422, 429, 503))
async def similar(
    rs: RS,
    item: str = ItemId,
    k: int = Query(default=10, ge=1, le=100),
    model: str | None = Query(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$"),
) -> JSON:
    """Items like this one (for a product page; no personal data involved)."""
    return JSON(rs.serving.similar(item, k, model=model))


@router.post(
    "/search", response_model=SearchOut, responses=problem_responses(401, 403, 413, 422, 429, 503)
)
async def search(
    request: Request, rs: RS, body: SearchIn, caller: Caller, token: ShopperToken = None
) -> JSON:
    """Product search: words (BM25, typo-tolerant) and meaning (MiniLM) fused over the items
    that may be listed, then re-ranked for a shopper who consented to personalisation, with
    the shop rules and an explanation per item. The response's `mode` says how items were
    retrieved (lexical, with a `note`, when the semantic index is unavailable) and
    `corrected_query` the query a typo was corrected to. A consenting shopper's query is kept
    as its embedding, sealed; the search event is stored when they act on a result.

    With a `user`, what the caller sees of that shopper's own data depends on who calls: the
    admin key, or a client key with an `X-Shopper-Token` naming `user`: full explanations
    ("matches your search 'q'; because you bought X"); a client key alone: the order is still
    the shopper's, but explanations keep only "matches your search 'q'" (`because` empty);
    with `PRIVREC_SHOPPER_TOKEN_REQUIRED=true`, a client key alone gets the search of an
    anonymous shopper (`personalized: false`, nothing kept); a token naming another shopper:
    403 `not-this-shopper`; a bad or expired one: 401."""
    access = access_of(request.app.state, caller, token, body.user)
    user = None if access is Access.ANONYMOUS else body.user
    rules = body.rules.model_dump(exclude_defaults=True) if body.rules is not None else None
    found = await run_in_threadpool(
        rs.search, body.query, body.k, user_id=user, rules=rules, mode=body.mode
    )
    out = found.to_dict()
    if access is Access.REDACTED:
        out["items"] = redact_items(out["items"], query=found.query)
    return JSON(out)
