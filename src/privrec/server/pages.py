"""Server-rendered web pages (Jinja2, no JavaScript, no external CDN or font).

- `/`: the storefront: browse by category, search, "recommended for you" with a "why?" per item.
- `/privacy`: the shopper's privacy centre: consent level, download my data, delete my data
  (with the receipt).
- `/ops`: the operator dashboard (admin key): models and their evaluation, privacy budget,
  privacy-utility plot, experiments and their results.

The shopper "signs in" by typing their shop id: the pages are the demo shop's front, enabled by
default only in the demo data directory (PRIVREC_PAGES=on|off overrides). A real shop calls the
API from its own backend. Signing in does what a shop's backend does: it issues a shopper token
for that one shopper (`privrec.server.tokens`, short-lived) and keeps it in the session cookie;
every page and privacy action verifies that token exactly as `/v1/me/*` does, so an expired or
forged token signs the shopper out. Cookies are HMAC-signed with a key in the data directory,
HttpOnly and SameSite=Strict; every form carries a CSRF token bound to the session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, FastAPI, Form, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from privrec.core.errors import NotFoundError, PrivrecError
from privrec.core.files import private_dir, write_private
from privrec.privacy.consent import LEVEL_TEXTS
from privrec.server.problems import ProblemError
from privrec.server.responses import JSON
from privrec.server.tokens import app_secret, app_ttl, issue_shopper_token, verify_shopper_token

HERE = Path(__file__).parent
SHOPPER = "privrec_shopper"
OPERATOR = "privrec_ops"
OPS_HOURS = 8
# the privacy layer's texts, so the privacy centre says exactly what the policy does
CONSENT_TEXT: dict[str, str] = {
    lv.value: f"{text.title}: {text.description}" for lv, text in LEVEL_TEXTS.items()
}

router = APIRouter(include_in_schema=False)
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(HERE / "templates")),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
)


def _secret(keys: Path) -> bytes:
    """The key that signs cookies, created once (mode 0600) in the key directory."""
    path = keys / "session.key"
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    private_dir(path.parent)
    key = secrets.token_bytes(32)
    try:
        # create-once: workers starting together must sign with one key
        write_private(path, key.hex(), exclusive=True)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    return key


def _sign(secret: bytes, payload: str) -> str:
    body = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
    mac = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{body}.{mac}"


def _unsign(secret: bytes, value: str | None) -> str | None:
    if not value or "." not in value:
        return None
    body, mac = value.rsplit(".", 1)
    good = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:32]
    if not hmac.compare_digest(mac, good):
        return None
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def _csrf(secret: bytes, request: Request) -> str:
    basis = (request.cookies.get(SHOPPER) or "") + "|" + (request.cookies.get(OPERATOR) or "")
    return hmac.new(secret, ("csrf|" + basis).encode(), hashlib.sha256).hexdigest()[:32]


def _check_csrf(request: Request, token: str) -> None:
    if not hmac.compare_digest(token or "", _csrf(request.app.state.page_secret, request)):
        raise ProblemError(
            403,
            "the form has expired or did not come from this site; reload the page and try again",
            slug="csrf",
        )


def _shopper(request: Request) -> str | None:
    """The signed-in shopper: the one the session's shopper token names, if it verifies."""
    if hasattr(request.state, "privrec_shopper"):  # verified once per request
        cached: str | None = request.state.privrec_shopper
        return cached
    user = None
    token = _unsign(request.app.state.page_secret, request.cookies.get(SHOPPER))
    if token is not None:
        try:
            user = verify_shopper_token(app_secret(request.app.state), token)
        except ProblemError:
            user = None  # expired or forged: signed out, as the API would refuse it
    request.state.privrec_shopper = user
    return user


def _signed_out(request: Request) -> Response:
    """Back to the sign-in form, dropping a session whose token no longer verifies."""
    resp = RedirectResponse("/?signin=1", status_code=303)
    if request.cookies.get(SHOPPER):
        resp.delete_cookie(SHOPPER, path="/")
    return resp


def _operator(request: Request) -> bool:
    got = _unsign(request.app.state.page_secret, request.cookies.get(OPERATOR))
    if not got or not got.startswith("admin|"):
        return False
    try:
        return float(got.split("|", 1)[1]) > time.time()
    except ValueError:
        return False


def _render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    ctx.setdefault("shopper", _shopper(request))
    ctx.setdefault("csrf", _csrf(request.app.state.page_secret, request))
    ctx.setdefault("message", None)
    ctx.setdefault("q", None)
    return HTMLResponse(_env.get_template(name).render(**ctx), status_code=status)


def _cookie(resp: Response, name: str, value: str, max_age: int | None = None) -> None:
    resp.set_cookie(name, value, httponly=True, samesite="strict", max_age=max_age, path="/")


# ---- storefront --------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
async def store(
    request: Request,
    q: str | None = Query(default=None, max_length=200),
    category: str | None = Query(default=None, max_length=200),
    page: int = Query(default=1, ge=1, le=10_000),
) -> HTMLResponse:
    rs = request.app.state.rs
    user = _shopper(request)
    if not request.app.state.ready:
        return _render(
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
        served = await run_in_threadpool(rs.recommend, user, 8, rules={"in_stock": True})
        recs = served.to_dict()
    results = None
    if q:
        results = (await run_in_threadpool(rs.search, q, 24, user_id=user)).to_dict()
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
    return _render(
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
    _check_csrf(request, csrf)
    state = request.app.state
    ttl = app_ttl(state)
    # the same token a shop's backend would mint: the session can do no more than it allows
    token = issue_shopper_token(app_secret(state), user.strip(), ttl)
    resp = RedirectResponse("/", status_code=303)
    _cookie(resp, SHOPPER, _sign(state.page_secret, token), max_age=ttl)
    return resp


@router.post("/signout")
async def signout(request: Request, csrf: str = Form("")) -> Response:
    _check_csrf(request, csrf)
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
    user = _shopper(request)
    if not user:
        return _signed_out(request)
    rs = request.app.state.rs
    doc = await run_in_threadpool(rs.export_user, user)
    level = rs.consent(user)
    return _render(
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
    _check_csrf(request, csrf)
    user = _shopper(request)
    if not user:
        return _signed_out(request)
    await run_in_threadpool(request.app.state.rs.set_consent, user, level)
    return RedirectResponse("/privacy?saved=1", status_code=303)


@router.get("/privacy/export")
async def export(request: Request) -> Response:
    user = _shopper(request)
    if not user:
        return _signed_out(request)
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
    _check_csrf(request, csrf)
    user = _shopper(request)
    if not user:
        return _signed_out(request)
    if confirm != "delete":  # erasure cannot be undone: never on one stray click
        return RedirectResponse("/privacy?confirm=1", status_code=303)
    receipt = await run_in_threadpool(request.app.state.rs.forget, user, background=True)
    # the shopper is gone: the page (and the session) must not say "signed in" any more
    resp = _render(
        request, "receipt.html.j2", title="Your data was deleted", receipt=receipt, shopper=None
    )
    resp.delete_cookie(SHOPPER, path="/")
    return resp


# ---- operator dashboard --------------------------------------------------------------------------
def _report_files(reports: Path) -> dict[str, Path]:
    """The report files the dashboard may serve, by the flat name it links them under."""
    files: dict[str, Path] = {}
    if not reports.is_dir():
        return files
    if (reports / "report.html").exists():
        files["report.html"] = reports / "report.html"
    files.update({p.name: p for p in reports.glob("report-*.png")})
    # where `privrec privacy-report` writes its plot (DATA_DIR/reports/privacy/frontier.png)
    frontier = reports / "privacy" / "frontier.png"
    if frontier.exists():
        files["privacy-frontier.png"] = frontier
    return files


def _plots(reports: Path) -> list[str]:
    return sorted(n for n in _report_files(reports) if n.startswith("privacy-"))


@router.get("/ops", response_class=HTMLResponse)
async def ops(request: Request) -> Response:
    if not _operator(request):
        return _render(request, "ops_signin.html.j2", title="Operator sign-in", shopper=None)
    rs = request.app.state.rs

    def gather() -> dict[str, Any]:
        exps = []
        for e in rs.experiments.all():
            try:
                exps.append(rs.experiments.report(e["name"]))
            except PrivrecError:
                exps.append({"experiment": e, "variants": [], "srm": {}})
        return {
            "models": rs.serving.versions(),
            "budget": rs.privacy_budget(),
            "experiments": exps,
            "stats": rs.serving.stats(),
        }

    ctx = await run_in_threadpool(gather)
    reports = rs.reports_dir
    return _render(
        request,
        "ops.html.j2",
        title="Operator dashboard",
        report=(reports / "report.html").exists(),
        plots=_plots(reports),
        shopper=None,  # the operator's page is no shopper's: no shopper header on it
        operator=True,
        **ctx,
    )


@router.post("/ops/signout")
async def ops_signout(request: Request, csrf: str = Form("")) -> Response:
    _check_csrf(request, csrf)
    resp = RedirectResponse("/ops", status_code=303)
    resp.delete_cookie(OPERATOR, path="/")
    return resp


@router.post("/ops/signin")
async def ops_signin(
    request: Request, key: str = Form(min_length=1, max_length=512), csrf: str = Form("")
) -> Response:
    _check_csrf(request, csrf)
    p = request.app.state.keyring.check(key)
    if p is None or p.role != "admin":
        return _render(
            request,
            "ops_signin.html.j2",
            401,
            title="Operator sign-in",
            message="That is not an admin key.",
        )
    resp = RedirectResponse("/ops", status_code=303)
    _cookie(
        resp,
        OPERATOR,
        _sign(request.app.state.page_secret, f"admin|{time.time() + OPS_HOURS * 3600}"),
        OPS_HOURS * 3600,
    )
    return resp


@router.post("/ops/activate")
async def ops_activate(
    request: Request,
    model: str = Form(..., max_length=64),
    version: str = Form(..., max_length=64),
    csrf: str = Form(""),
) -> Response:
    _check_csrf(request, csrf)
    if not _operator(request):
        raise ProblemError(401, "sign in with an admin key first", slug="operator-sign-in")
    await run_in_threadpool(request.app.state.rs.serving.activate, model, version)
    return RedirectResponse("/ops", status_code=303)


@router.get("/ops/files/{name}")
async def ops_file(request: Request, name: str) -> Response:
    if not _operator(request):
        raise ProblemError(401, "sign in with an admin key first", slug="operator-sign-in")
    allowed = _report_files(request.app.state.rs.reports_dir)
    if name not in allowed:
        raise NotFoundError(f"report file {name!r} does not exist")
    return FileResponse(allowed[name])


def install(app: FastAPI) -> None:
    """Add the pages and their static files to `app`."""
    app.state.page_secret = _secret(app.state.rs.ctx.key_dir)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(router)
