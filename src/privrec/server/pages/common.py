"""What every page shares: the template environment, signed cookies, CSRF tokens, who is
signed in (shopper or operator) and rendering.

Cookies are HMAC-signed with a key in the data directory, HttpOnly and SameSite=Strict; every
form carries a CSRF token bound to the session. A shopper's session holds the same short-lived
shopper token a shop's backend would mint (`privrec.server.tokens`), verified on every request
exactly as `/v1/me/*` does; an operator's session is signed after an admin key was shown.
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
from fastapi import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from privrec.core.files import private_dir, write_private
from privrec.privacy.consent import LEVEL_TEXTS
from privrec.server.charts import fmt_number
from privrec.server.problems import ProblemError
from privrec.server.tokens import app_secret, verify_shopper_token

HERE = Path(__file__).parent.parent
SHOPPER = "privrec_shopper"
OPERATOR = "privrec_ops"
OPS_HOURS = 8
# the privacy layer's texts, so the privacy centre says exactly what the policy does
CONSENT_TEXT: dict[str, str] = {
    lv.value: f"{text.title}: {text.description}" for lv, text in LEVEL_TEXTS.items()
}

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(HERE / "templates")),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    undefined=jinja2.StrictUndefined,
)
_env.filters["num"] = fmt_number


def page_secret(keys: Path) -> bytes:
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


def sign(secret: bytes, payload: str) -> str:
    """`payload` with an HMAC, for a cookie."""
    body = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
    mac = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{body}.{mac}"


def unsign(secret: bytes, value: str | None) -> str | None:
    """The payload of a signed value, or None when the signature does not verify."""
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


def csrf_token(secret: bytes, request: Request) -> str:
    """The CSRF token bound to this request's sessions."""
    basis = (request.cookies.get(SHOPPER) or "") + "|" + (request.cookies.get(OPERATOR) or "")
    return hmac.new(secret, ("csrf|" + basis).encode(), hashlib.sha256).hexdigest()[:32]


def check_csrf(request: Request, token: str) -> None:
    """Refuse (403) a form whose CSRF token is not this session's."""
    if not hmac.compare_digest(token or "", csrf_token(request.app.state.page_secret, request)):
        raise ProblemError(
            403,
            "the form has expired or did not come from this site; reload the page and try again",
            slug="csrf",
        )


def shopper(request: Request) -> str | None:
    """The signed-in shopper: the one the session's shopper token names, if it verifies."""
    if hasattr(request.state, "privrec_shopper"):  # verified once per request
        cached: str | None = request.state.privrec_shopper
        return cached
    user = None
    token = unsign(request.app.state.page_secret, request.cookies.get(SHOPPER))
    if token is not None:
        try:
            user = verify_shopper_token(app_secret(request.app.state), token)
        except ProblemError:
            user = None  # expired or forged: signed out, as the API would refuse it
    request.state.privrec_shopper = user
    return user


def signed_out(request: Request) -> Response:
    """Back to the sign-in form, dropping a session whose token no longer verifies."""
    resp = RedirectResponse("/?signin=1", status_code=303)
    if request.cookies.get(SHOPPER):
        resp.delete_cookie(SHOPPER, path="/")
    return resp


def operator(request: Request) -> bool:
    """Whether the request carries an unexpired operator session."""
    got = unsign(request.app.state.page_secret, request.cookies.get(OPERATOR))
    if not got or not got.startswith("admin|"):
        return False
    try:
        return float(got.split("|", 1)[1]) > time.time()
    except ValueError:
        return False


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    """Render template `name` with the session's shopper, CSRF token and `ctx`."""
    ctx.setdefault("shopper", shopper(request))
    ctx.setdefault("csrf", csrf_token(request.app.state.page_secret, request))
    ctx.setdefault("message", None)
    ctx.setdefault("q", None)
    return HTMLResponse(_env.get_template(name).render(**ctx), status_code=status)


def set_cookie(resp: Response, name: str, value: str, max_age: int | None = None) -> None:
    """Set an HttpOnly, SameSite=Strict cookie for the whole site."""
    resp.set_cookie(name, value, httponly=True, samesite="strict", max_age=max_age, path="/")


def require_operator(request: Request, token: str) -> None:
    """A console form: the CSRF token must match and an operator must be signed in."""
    check_csrf(request, token)
    if not operator(request):
        raise ProblemError(401, "sign in with an admin key first", slug="operator-sign-in")
