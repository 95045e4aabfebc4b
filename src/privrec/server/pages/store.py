"""The storefront pages: browse, search, item pages with similar and bought-together items, the
"why?" view of a recommendation, and the shopper's privacy centre.

The shopper "signs in" by typing their shop id: the pages are the demo shop's front, enabled by
default only in the demo data directory (PRIVREC_PAGES=on|off overrides). A real shop calls the
API from its own backend. Signing in does what a shop's backend does: it issues a shopper token
for that one shopper and keeps it in the signed session cookie.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Form, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from privrec.core.errors import NotFoundError, PrivrecError
from privrec.server.pages.common import (
    CONSENT_TEXT,
    SHOPPER,
    check_csrf,
    render,
    set_cookie,
    shopper,
    sign,
    signed_out,
)
from privrec.server.responses import JSON
from privrec.server.tokens import app_secret, app_ttl, issue_shopper_token

router = APIRouter(include_in_schema=False)


# ---- storefront --------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
async def store(
    request: Request,
    q: str | None = Query(default=None, max_length=200),
    category: str | None = Query(default=None, max_length=200),
    page: int = Query(default=1, ge=1, le=10_000),
) -> HTMLResponse:
    rs = request.app.state.rs
    user = shopper(request)
    if not request.app.state.ready:
        return render(
            request,
            "store.html.j2",
            503,
            title="privrec shop",
            recs=None,
            results=None,
            browse=None,
            categories=[],
            q=q,
            category=category,
            page=page,
            pages=1,
            message=request.app.state.not_ready_reason,
        )
    # a cookie whose token no longer verifies: say why the shopper is signed out
    ended = bool(request.cookies.get(SHOPPER)) and user is None
    recs = None
    if user and not q:
        # the demo shop's front enrols its shoppers in the newest running experiment
        served = await run_in_threadpool(
            lambda: rs.recommend(
                user, 8, rules={"in_stock": True}, experiment=_running_experiment(rs)
            )
        )
        recs = _tagged(served.to_dict())
    results = None
    if q:
        # tagged like "recommended for you": opening a result is the choice the search records
        results = _tagged((await run_in_threadpool(rs.search, q, 24, user_id=user)).to_dict())
    per_page = 24
    browse = (
        None
        if q
        else await run_in_threadpool(
            rs.serving.catalogue, category=category, limit=per_page, offset=(page - 1) * per_page
        )
    )
    cats = sorted(rs.serving.categories(), key=lambda c: -c["items"])[:40]
    pages = max(1, -(-browse["total"] // per_page)) if browse else 1
    return render(
        request,
        "store.html.j2",
        title="privrec shop",
        recs=recs,
        results=results,
        browse=browse,
        categories=cats,
        q=q,
        category=category,
        page=page,
        pages=pages,
        message="Your sign-in has ended; sign in again." if ended else None,
    )


@router.post("/signin")
async def signin(
    request: Request, user: str = Form(min_length=1, max_length=256), csrf: str = Form("")
) -> Response:
    check_csrf(request, csrf)
    state = request.app.state
    ttl = app_ttl(state)
    # the same token a shop's backend would mint: the session can do no more than it allows
    token = issue_shopper_token(app_secret(state), user.strip(), ttl)
    resp = RedirectResponse("/", status_code=303)
    set_cookie(resp, SHOPPER, sign(state.page_secret, token), max_age=ttl)
    return resp


@router.post("/signout")
async def signout(request: Request, csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    resp = RedirectResponse("/", status_code=303)
    resp.delete_cookie(SHOPPER, path="/")
    return resp


# ---- privacy centre ----------------------------------------------------------------------------
@router.get("/privacy", response_class=HTMLResponse)
async def privacy(
    request: Request,
    saved: int = Query(default=0, ge=0, le=1),
    confirm: int = Query(default=0, ge=0, le=1),
) -> Response:
    user = shopper(request)
    if not user:
        return signed_out(request)
    rs = request.app.state.rs
    doc = await run_in_threadpool(rs.export_user, user)
    level = rs.consent(user)
    return render(
        request,
        "privacy.html.j2",
        title="Your privacy",
        level=level,
        levels=CONSENT_TEXT,
        n_events=doc["n_events"],
        dp=doc["privacy_ledger"],
        message="Saved: your choice applies from your next page view."
        if saved
        else "Tick the box to confirm the deletion: it cannot be undone."
        if confirm
        else None,
    )


@router.post("/privacy/consent")
async def set_consent(request: Request, level: str = Form(...), csrf: str = Form("")) -> Response:
    check_csrf(request, csrf)
    user = shopper(request)
    if not user:
        return signed_out(request)
    await run_in_threadpool(request.app.state.rs.set_consent, user, level)
    return RedirectResponse("/privacy?saved=1", status_code=303)


@router.get("/privacy/export")
async def export(request: Request) -> Response:
    user = shopper(request)
    if not user:
        return signed_out(request)
    rs = request.app.state.rs
    doc = await run_in_threadpool(rs.export_user, user)
    return JSON(
        doc,
        headers={
            "Content-Disposition": 'attachment; filename="my-data.json"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/privacy/delete", response_class=HTMLResponse)
async def delete(request: Request, csrf: str = Form(""), confirm: str = Form("")) -> Response:
    check_csrf(request, csrf)
    user = shopper(request)
    if not user:
        return signed_out(request)
    if confirm != "delete":  # erasure cannot be undone: never on one stray click
        return RedirectResponse("/privacy?confirm=1", status_code=303)
    receipt = await run_in_threadpool(request.app.state.rs.forget, user, background=True)
    # the shopper is gone: the page (and the session) must not say "signed in" any more
    resp = render(
        request, "receipt.html.j2", title="Your data was deleted", receipt=receipt, shopper=None
    )
    resp.delete_cookie(SHOPPER, path="/")
    return resp


# ---- the loop: lists carry their id; views, carts and purchases answer it ---------------------
REC_ID = r"^[0-9a-f]{8,64}$"
DONE = {"cart": "Added to your cart.", "purchase": "Thank you for your order."}


def _running_experiment(rs: Any) -> str | None:
    """The newest running experiment's name, or None."""
    running = [e for e in rs.experiments.all() if e.get("status") == "running"]
    if not running:
        return None
    return str(max(running, key=lambda e: e.get("created_at") or 0)["name"])


def _tagged(served: dict[str, Any]) -> dict[str, Any]:
    """A served list whose items carry the list id, so a click on one is its outcome."""
    rid = served.get("recommendation_id")
    if rid:
        served["items"] = [{**it, "list_id": rid} for it in served.get("items", [])]
    return served


def _record(rs: Any, user: str, item: str, kind: str, rec: str | None, value: Any = None) -> None:
    """One event of the signed-in shopper through the gate (as POST /v1/events does)."""
    # stamped by the feedback loop's clock (the wall clock unless a simulation runs the shop in
    # fast time), so a visit's click and purchase fall in the window of the list it came from
    now = rs.experiments.feedback.clock()
    event: dict[str, Any] = {"user": user, "item": item, "type": kind, "timestamp": now}
    if rec:
        event["recommendation_id"] = rec
    if value is not None:
        event["value"] = float(value)
    rs.ingestion.batch([event])


# ---- item pages and the "why?" view --------------------------------------------------------------
def _similar_models(rs: Any) -> list[tuple[str, str]]:
    """(model, heading) for the item page's similar lists: one collaborative, one by content."""
    versions = rs.serving.versions()
    active = {n for n, m in versions.items() if m.get("active")}
    default = rs.serving.default_model_name()
    out: list[tuple[str, str]] = []
    cf = default if not default.startswith(("content", "hybrid")) else None
    if cf is None:
        cf = next((n for n in ("itemknn", "ease", "als") if n in active), None)
    if cf is not None and cf != "popularity":
        out.append((cf, "Shoppers who liked this also liked"))
    content = next((n for n in ("content", "hybrid") if n in active), None)
    if content is not None:
        out.append((content, "Similar products"))
    return out


def _missing(request: Request, what: str) -> HTMLResponse:
    return render(request, "missing.html.j2", 404, title="Not found", what=what)


@router.get("/item/{item:path}", response_class=HTMLResponse)
async def item_page(
    request: Request,
    item: str,
    rec: str | None = Query(default=None, pattern=REC_ID),
    done: str | None = Query(default=None, max_length=20),
) -> Response:
    """One product: its facts and image, similar items (CF and content), bought together.

    A signed-in shopper's visit is stored as a view (through the gate and their consent); when
    they came from a served list (`rec`), it is that list's click.
    """
    rs = request.app.state.rs
    if not request.app.state.ready or len(item) > 256:
        return _missing(request, "this product")
    user = shopper(request)

    def gather() -> dict[str, Any] | None:
        try:
            facts = rs.serving.item(item)
        except NotFoundError:
            return None
        if user and not done:
            _record(rs, user, item, "view", rec)
        similar = []
        for name, heading in _similar_models(rs):
            try:
                got = rs.serving.similar(item, 6, model=name, rules={"in_stock": True})
            except PrivrecError:  # this model does not know the item (or is not ready)
                continue
            if got["items"]:
                got = _tagged(got)
                similar.append({"heading": heading, "model": name, "items": got["items"]})
        together = request.app.state.insights.bought_together(item, 6)
        return {"it": facts, "similar": similar, "together": together["items"]}

    ctx = await run_in_threadpool(gather)
    if ctx is None:
        return _missing(request, f"product {item!r}")
    return render(
        request,
        "item.html.j2",
        title=ctx["it"]["title"] or item,
        rec=rec,
        message=DONE.get(done or ""),
        **ctx,
    )


@router.post("/item/action")
async def item_action(
    request: Request,
    item: str = Form(..., min_length=1, max_length=256),
    action: str = Form(..., pattern="^(cart|purchase)$"),
    rec: str = Form("", max_length=64),
    csrf: str = Form(""),
) -> Response:
    """Add to cart or buy (the demo shop's checkout): a cart or purchase event through the
    gate, at the catalogue price, attributed to the list the shopper came from."""
    from urllib.parse import quote

    check_csrf(request, csrf)
    user = shopper(request)
    if not user:
        return signed_out(request)
    rs = request.app.state.rs
    rid = rec if re.fullmatch(REC_ID, rec or "") else None

    def go() -> None:
        price = rs.serving.item(item).get("price")
        _record(rs, user, item, action, rid, price if action == "purchase" else None)

    await run_in_threadpool(go)
    back = f"/item/{quote(item, safe='')}?done={action}" + (f"&rec={rid}" if rid else "")
    return RedirectResponse(back, status_code=303)


@router.get("/why/{item:path}", response_class=HTMLResponse)
async def why(request: Request, item: str) -> Response:
    """Which of the signed-in shopper's items made `item` score as it does, and how much."""
    user = shopper(request)
    if not user:
        return signed_out(request)
    rs = request.app.state.rs
    if len(item) > 256:
        return _missing(request, "this product")

    def gather() -> dict[str, Any] | None:
        try:
            facts = rs.serving.item(item)
            got = request.app.state.insights.contributions(user, item)
            served = rs.serving.explain(user, item)
        except NotFoundError:
            return None
        return {"it": facts, "contrib": got, "explained": served.explanation}

    ctx = await run_in_threadpool(gather)
    if ctx is None:
        return _missing(request, f"product {item!r}")
    chart = None
    rows = ctx["contrib"]["contributors"]
    if rows:
        from privrec.server.charts import bar_chart

        chart = bar_chart(
            [f"{r['action']}: {r['title']}" for r in rows],
            [100.0 * r["share"] for r in rows],
            title="Share of this item's score from each of your items",
            x_label="% of the score",
            value_format=".0f",
        )
    return render(request, "why.html.j2", title="Why this item?", chart=chart, **ctx)
