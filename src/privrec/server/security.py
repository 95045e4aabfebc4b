"""API keys in two roles, constant-time checks, and per-key rate limits.

Roles: `client` (events, recommendations, search; a shopper's own consent and data only together
with that shopper's token, see `privrec.server.tokens`) and `admin` (everything a client may do,
plus training, models, experiments, shopper tokens, and export or erasure on a shopper's
behalf). Keys come from `PRIVREC_API_KEYS` ("client:KEY,admin:KEY") or from the
data directory's `keys/api-keys.json` (mode 0600), which `privrec serve` creates with one key
per role on first start and prints once. A key is sent as `Authorization: Bearer KEY` or
`X-API-Key: KEY`. Every configured key is compared with `hmac.compare_digest` on SHA-256
digests, all of them every time, so timing says nothing about which or how much matched. Logs
and metrics name a key only by its id: "key-" + the first 8 hex of its digest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from privrec.core.errors import ConfigError
from privrec.core.files import private_dir, write_private
from privrec.server.problems import ProblemError

ROLES = ("client", "admin")
KEYS_FILE = "api-keys.json"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's role and id (never the key)."""

    role: str
    key_id: str

    def allows(self, role: str) -> bool:
        """Admins may do everything clients may."""
        return self.role == "admin" or self.role == role


def key_id(key: str) -> str:
    """The loggable id of a key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def parse_keys(spec: str) -> list[tuple[str, str]]:
    """Parse "role:key,role:key" (ConfigError naming the problem, never the key)."""
    out = []
    for n, part in enumerate(p.strip() for p in spec.split(",")):
        if not part:
            continue
        role, sep, key = part.partition(":")
        if not sep or role.strip() not in ROLES:
            raise ConfigError(
                f"PRIVREC_API_KEYS: entry {n + 1} must be ROLE:KEY "
                f"with ROLE one of {', '.join(ROLES)}"
            )
        if len(key.strip()) < 16:
            raise ConfigError(
                f"PRIVREC_API_KEYS: entry {n + 1} has a key shorter than 16 characters; "
                "use a long random key"
            )
        out.append((role.strip(), key.strip()))
    if not out:
        raise ConfigError(
            "PRIVREC_API_KEYS: holds no key; give ROLE:KEY entries or unset it to use the keys file"
        )
    return out


def new_key(role: str) -> str:
    """A fresh random key with a readable prefix."""
    return f"prk_{role}_{secrets.token_urlsafe(24)}"


def load_or_create_keys(keys_dir: Path) -> tuple[list[tuple[str, str]], bool]:
    """The API keys file of key directory `keys_dir`, created (mode 0600) with one key per role.

    Returns:
        (keys, created): `created` is True the one time the file was written.
    """
    path = private_dir(Path(keys_dir)) / KEYS_FILE
    if path.exists():
        return _read_keys(path), False
    keys = [(role, new_key(role)) for role in ROLES]
    doc = {"keys": [{"role": r, "key": k} for r, k in keys], "created_at": int(time.time())}
    try:
        # create-once: workers starting together must all accept the same keys
        write_private(path, json.dumps(doc), exclusive=True)
    except FileExistsError:
        return _read_keys(path), False
    return keys, True


def _read_keys(path: Path) -> list[tuple[str, str]]:
    doc = json.loads(path.read_text())
    keys = [
        (str(e["role"]), str(e["key"]))
        for e in doc.get("keys", [])
        if e.get("role") in ROLES and e.get("key")
    ]
    if not keys:
        raise ConfigError(f"{path}: holds no usable key; delete it to have new keys made")
    return keys


class KeyRing:
    """The configured keys, checked in constant time."""

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        self._entries = [(hashlib.sha256(k.encode()).digest(), role, key_id(k)) for role, k in keys]
        self._cache: dict[bytes, Principal | None] = {}

    def check(self, presented: str | None) -> Principal | None:
        """The principal of a presented key, or None."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found: Principal | None = None
        for d, role, kid in self._entries:  # no early exit: every key is compared every time
            if hmac.compare_digest(d, digest):
                found = Principal(role, kid)
        return found

    def roles(self) -> dict[str, int]:
        """How many keys each role has."""
        out = dict.fromkeys(ROLES, 0)
        for _, role, _ in self._entries:
            out[role] += 1
        return out


class RateLimiter:
    """A token bucket per key: `rate` requests per second, bursts up to 2 x rate."""

    def __init__(self, rates: dict[str, float]) -> None:
        self.rates = dict(rates)
        self._buckets: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def take(self, principal: Principal) -> float:
        """0.0 if the request may go ahead, else the seconds to wait."""
        rate = self.rates.get(principal.role, 1.0)
        cap = 2.0 * rate
        now = time.monotonic()
        with self._lock:
            b = self._buckets.get(principal.key_id)
            if b is None:
                b = self._buckets[principal.key_id] = [cap, now]
            tokens = min(cap, b[0] + (now - b[1]) * rate)
            b[1] = now
            if tokens >= 1.0:
                b[0] = tokens - 1.0
                return 0.0
            b[0] = tokens
            return (1.0 - tokens) / rate


class HeaderLookup(Protocol):
    """What `authorize` reads of a request's headers: `get` by lower-case name."""

    def get(self, name: str, /) -> str | None: ...


def presented_key(headers: HeaderLookup) -> str | None:
    """The key of a request's headers (Authorization: Bearer, or X-API-Key)."""
    get = headers.get
    auth = get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return get("x-api-key") or None


def authorize(
    keyring: KeyRing, limiter: RateLimiter, headers: HeaderLookup, role: str
) -> Principal:
    """The caller's principal; ProblemError 401 (no or unknown key), 403 (role), 429 (too fast)."""
    key = presented_key(headers)
    if key is None:
        raise ProblemError(
            401,
            "no API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
            slug="missing-api-key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = keyring.check(key)
    if principal is None:
        raise ProblemError(
            401,
            "the API key is not valid: check it, or ask the operator for a key",
            slug="invalid-api-key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not principal.allows(role):
        raise ProblemError(
            403,
            f"this endpoint needs the '{role}' role; the key has the '{principal.role}' role",
            slug="forbidden-role",
        )
    wait = limiter.take(principal)
    if wait > 0:
        raise ProblemError(
            429,
            f"rate limit of {limiter.rates.get(principal.role, 1.0):g} requests/s "
            "for this key exceeded; retry later",
            slug="rate-limited",
            headers={"Retry-After": str(max(1, int(wait + 0.999)))},
        )
    return principal
