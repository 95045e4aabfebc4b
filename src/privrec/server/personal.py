"""Who may see a shopper's personal evidence in a served list, decided once per HTTP request.

A recommendation or search list explains each item, and a personal explanation names the
shopper's own items and what they did with them ("because you bought X", `because: [...]`,
"found X through a search"). The client key is what a shop's browser front end holds; it says
nothing about which shopper is at the keyboard, so with it alone anyone could read any
shopper's history by sending their id. The HTTP layer therefore decides by the caller:

- the admin key, or the client key with a valid `X-Shopper-Token` naming the body's user:
  full explanations (`Access.FULL`);
- the client key alone: the list is still ranked for the shopper (the product's function), but
  every explanation is redacted of personal evidence (`Access.REDACTED`, see `redact_items`);
- the client key alone while the server setting `shopper_token_required` is on: the list an
  anonymous shopper gets, `personalized: false` (`Access.ANONYMOUS`);
- a token naming another shopper: 403 `not-this-shopper`; a bad or expired token: 401.

The service (CLI, pages) always builds full lists, and the list cache holds those; redaction
happens here, on the way out, on copies, so a cached list is never served unredacted to a
client-key caller and a redacted one is never cached.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jwt

from privrec.server.problems import ProblemError
from privrec.server.schemas import RecommendIn
from privrec.server.security import Principal
from privrec.server.tokens import HEADER, LEEWAY, app_secret, verify_shopper_token

# What a redacted personal explanation says: true of every personalised item, names nothing.
NEUTRAL_TEXT = "Picked for you"
NEW_ARRIVAL_TEXT = "new arrival"
SEARCH_TEXT = "matches your search"
# Kinds whose text and evidence come from the request and the catalogue only (a shop rule, the
# popularity ranking, the item the caller says the page shows, a new arrival by its category).
_PUBLIC_KINDS = frozenset({"rule", "popular", "context", "cold_item"})
_MAX_QUERY = 60  # as explain.explanations words a query

STRICT_NOTE = (
    f"not personalised: this server needs a shopper token ({HEADER}) for personalised lists; "
    "the shop's backend issues it (POST /v1/admin/shopper-tokens)"
)
OTHER_SHOPPER = (
    f"the {HEADER} names another shopper than the body's user: a shopper's token personalises "
    "only their own lists"
)


class Access(enum.Enum):
    """How much of a shopper's own data a caller may see in a served list."""

    FULL = "full"  # admin key, or the shopper's own token
    REDACTED = "redacted"  # client key alone: ranked for the shopper, explanations redacted
    ANONYMOUS = "anonymous"  # client key alone in strict mode: the anonymous shopper's list


class _Verified:
    """Tokens already verified, with their shopper and expiry, so that a shopper's every list
    request does not pay for the signature check again (about 0.2 ms on a busy machine). A
    token is immutable, so its check stands until it expires; only verified tokens enter, keyed
    with the secret that verified them."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._got: OrderedDict[tuple[bytes, str], tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def shopper(self, secret: bytes, token: str) -> str:
        key = (secret, token)
        with self._lock:
            got = self._got.get(key)
        if got is not None and time.time() <= got[1] + LEEWAY:
            return got[0]
        sub = verify_shopper_token(secret, token)  # 401 problem when it is bad or expired
        exp = float(jwt.decode(token, options={"verify_signature": False})["exp"])
        with self._lock:
            self._got[key] = (sub, exp)
            while len(self._got) > self.max_entries:
                self._got.popitem(last=False)
        return sub


_verified = _Verified()


def access_of(state: Any, caller: Principal, token: str | None, user: str | None) -> Access:
    """The caller's access to `user`'s personal evidence (see the module docstring).

    Args:
        state: the app's state (server settings, the shopper-token secret).
        caller: the key's principal.
        token: the `X-Shopper-Token` header, if sent.
        user: the body's shopper (None: no shopper, nothing personal to protect).

    Raises:
        ProblemError: 401 for a bad, expired or empty token; 403 `not-this-shopper` for a token
            naming someone else.
    """
    if user is None or caller.allows("admin"):
        return Access.FULL
    if token is not None:
        if _verified.shopper(app_secret(state), token) != user:
            raise ProblemError(403, OTHER_SHOPPER, slug="not-this-shopper")
        return Access.FULL
    server = getattr(state, "server_settings", None)
    if bool(getattr(server, "shopper_token_required", False)):
        return Access.ANONYMOUS
    return Access.REDACTED


def _search_phrase(query: str) -> str:
    q = " ".join(query.split())
    if len(q) > _MAX_QUERY:
        q = q[: _MAX_QUERY - 1].rstrip() + "…"
    return f"{SEARCH_TEXT} '{q}'"


def redact_explanation(explanation: Mapping[str, Any], query: str | None = None) -> dict[str, Any]:
    """A copy of one explanation without the shopper's own items or actions.

    `because` is always emptied (its entries carry what the shopper did, even with the page's
    item); texts made from the request or the catalogue stay ("placed by a shop rule",
    "popular in ...", "because you are looking at 'X'", "new arrival in ..."); a new arrival
    compared with a history item, and a search match with a history reason, keep only their
    public part; every other kind (history, and any kind not known here) becomes
    "Picked for you".

    Args:
        explanation: an item's explanation as served ({"kind", "text", "because"}).
        query: the search query the list answers (the caller's own), if any.
    """
    kind = str(explanation.get("kind", ""))
    text = str(explanation.get("text", ""))
    personal = bool(explanation.get("because"))
    if kind in _PUBLIC_KINDS and not (kind == "cold_item" and personal):
        return {"kind": kind, "text": text, "because": []}
    if kind == "cold_item":  # "new arrival similar to <a history item>"
        return {"kind": kind, "text": NEW_ARRIVAL_TEXT, "because": []}
    if kind == "search":  # "matches your search 'q'; because you bought X"
        phrase = _search_phrase(query) if query else None
        if phrase is None or not (text == phrase or text.startswith(phrase + ";")):
            phrase = SEARCH_TEXT
        return {"kind": kind, "text": phrase, "because": []}
    return {"kind": "history", "text": NEUTRAL_TEXT, "because": []}


def redact_items(
    items: Sequence[Mapping[str, Any]], query: str | None = None
) -> list[dict[str, Any]]:
    """Copies of served items with every explanation redacted (`redact_explanation`); the
    items themselves (they may be the list cache's) are left as they are."""
    out = []
    for it in items:
        d = dict(it)
        e = d.get("explanation")
        if isinstance(e, Mapping):
            d["explanation"] = redact_explanation(e, query)
        out.append(d)
    return out


def recommendations(
    state: Any, caller: Principal, token: str | None, body: RecommendIn
) -> dict[str, Any]:
    """The answer of POST /v1/recommendations for this caller: the one place both the FastAPI
    route and the fast path serve it (so neither can skip the redaction)."""
    access = access_of(state, caller, token, body.user)
    rules = body.rules.model_dump(exclude_defaults=True) if body.rules is not None else None
    recommend: Callable[..., Any] = state.rs.recommend
    out = recommend(
        body.user,
        body.k,
        model=body.model,
        rules=rules,
        context_item=body.context_item,
        experiment=body.experiment,
        anonymous=access is Access.ANONYMOUS,
    ).to_dict()
    if access is Access.REDACTED:
        out["items"] = redact_items(out["items"])
    elif access is Access.ANONYMOUS:
        out["note"] = STRICT_NOTE if not out.get("note") else f"{STRICT_NOTE}; {out['note']}"
    return out
