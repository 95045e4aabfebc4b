"""Shopper tokens: short-lived HS256 JWTs that the shop's backend signs for one shopper.

The client key says "this is the shop's front end"; it does not say which shopper is at the
keyboard, so the shopper-facing data rights (`/v1/me/*`) also need a token naming that one
shopper. The shop's backend mints it for the shopper it has signed in, either through
`POST /v1/admin/shopper-tokens` (admin key) or by signing it itself with the shared secret,
and the browser sends it as `X-Shopper-Token`.

Claims: `sub` (the shop's user id), `aud` = "privrec-shopper", `iat`, `exp` (at most
`MAX_TTL` seconds after `iat`) and `jti`, all required. The secret is `PRIVREC_SHOPPER_TOKEN_SECRET`
or, unset, `DATA_DIR/keys/shopper-token.key` (mode 0600, created once); its UTF-8 bytes are the
HMAC key. Only HS256 is accepted, so `alg: none` and algorithm swaps are refused.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import jwt
from fastapi import Header, Request
from pydantic import SecretStr

from privrec.core.errors import ConfigError, ValidationError
from privrec.core.files import private_dir, write_private
from privrec.server.problems import ProblemError

HEADER = "X-Shopper-Token"
AUDIENCE = "privrec-shopper"
ALGORITHM = "HS256"
DEFAULT_TTL = 15 * 60
MAX_TTL = 24 * 3600
# clocks of the shop's backend and this server may differ a little
LEEWAY = 30
MIN_SECRET_CHARS = 32
MAX_TOKEN_CHARS = 4096
MAX_USER_CHARS = 256
SECRET_FILE = "shopper-token.key"

_CHALLENGE = {"WWW-Authenticate": f'ShopperToken realm="privrec", header="{HEADER}"'}
_lock = threading.Lock()


def load_or_create_secret(keys: Path) -> bytes:
    """The shopper-token secret in key directory `keys`, created once (mode 0600) if absent."""
    path = private_dir(Path(keys)) / SECRET_FILE
    if not path.exists():
        # create-once: workers starting together must verify with one secret
        with contextlib.suppress(FileExistsError):
            write_private(path, secrets.token_urlsafe(48), exclusive=True)
    text = path.read_text().strip()
    if len(text) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{path}: the shopper-token secret is shorter than {MIN_SECRET_CHARS} characters; "
            "delete the file to have a new one made"
        )
    return text.encode()


def shopper_token_secret(keys: Path, configured: SecretStr | str | None = None) -> bytes:
    """The HMAC key of shopper tokens: `configured` (the environment's) or key directory's.

    Raises:
        ConfigError: the configured secret is too short to be safe.
    """
    if configured is None:
        return load_or_create_secret(keys)
    value = configured.get_secret_value() if isinstance(configured, SecretStr) else configured
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"PRIVREC_SHOPPER_TOKEN_SECRET: shorter than {MIN_SECRET_CHARS} characters; "
            "use a long random value"
        )
    return value.encode()


def issue_shopper_token(
    secret: bytes | str, user_id: str, ttl: int = DEFAULT_TTL, *, now: int | None = None
) -> str:
    """A signed token that lets its bearer use `/v1/me/*` as `user_id` for `ttl` seconds.

    Args:
        secret: the HMAC key (`shopper_token_secret`).
        user_id: the shop's id of the signed-in shopper.
        ttl: lifetime in seconds, 1 to `MAX_TTL`.
        now: the issue time (Unix seconds); default the current time.

    Raises:
        ValidationError: an empty or over-long user id, or a lifetime out of range.
    """
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValidationError("user", "must be a non-empty shop user id")
    if len(user_id) > MAX_USER_CHARS:
        raise ValidationError("user", f"must be at most {MAX_USER_CHARS} characters")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL:
        raise ValidationError("ttl", f"must be a whole number of seconds from 1 to {MAX_TTL}")
    iat = int(time.time()) if now is None else int(now)
    claims = {
        "sub": user_id,
        "aud": AUDIENCE,
        "iat": iat,
        "exp": iat + ttl,
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(claims, _key(secret), algorithm=ALGORITHM)


def verify_shopper_token(secret: bytes | str, token: str | None) -> str:
    """The shopper a token was issued for.

    Raises:
        ProblemError: 401 when the token is missing, malformed, badly signed, signed with
            another algorithm, for another audience, expired, too long-lived or lacks a claim.
            The detail names the problem only, never the token or the user id.
    """
    if not token:
        raise _refused(
            "missing-shopper-token",
            f"no shopper token: send '{HEADER}: TOKEN', signed by the shop's backend for the "
            "signed-in shopper (POST /v1/admin/shopper-tokens); the X-User-Id header is not "
            "accepted",
        )
    if len(token) > MAX_TOKEN_CHARS:
        raise _refused("invalid-shopper-token", "the shopper token is too long to be one we issue")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            _key(secret),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            leeway=LEEWAY,
            options={"require": ["sub", "aud", "iat", "exp", "jti"], "strict_aud": True},
        )
    except jwt.ExpiredSignatureError:
        raise _refused(
            "expired-shopper-token",
            "the shopper token has expired; have the shop's backend issue a new one",
        ) from None
    except jwt.MissingRequiredClaimError as exc:
        raise _refused(
            "invalid-shopper-token", f"the shopper token lacks the required '{exc.claim}' claim"
        ) from None
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError):
        raise _refused(
            "invalid-shopper-token", f"the shopper token is not meant for '{AUDIENCE}'"
        ) from None
    except jwt.InvalidAlgorithmError:
        raise _refused(
            "invalid-shopper-token", f"the shopper token must be signed with {ALGORITHM}"
        ) from None
    except jwt.InvalidSignatureError:
        raise _refused(
            "invalid-shopper-token",
            "the shopper token's signature does not match; it was altered or signed with "
            "another secret",
        ) from None
    except jwt.ImmatureSignatureError:
        raise _refused(
            "invalid-shopper-token", "the shopper token is issued in the future; check clocks"
        ) from None
    except jwt.InvalidTokenError:
        raise _refused(
            "invalid-shopper-token", "the shopper token is malformed; send it exactly as issued"
        ) from None
    sub, iat, exp = claims["sub"], claims["iat"], claims["exp"]
    if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_USER_CHARS:
        raise _refused("invalid-shopper-token", "the shopper token's 'sub' is not a shop user id")
    if not isinstance(claims["jti"], str) or not claims["jti"]:
        raise _refused("invalid-shopper-token", "the shopper token's 'jti' must be a string")
    # a token signed with the shared secret could claim a long life; short-lived is the promise
    if not isinstance(exp, int | float) or not isinstance(iat, int | float) or exp - iat > MAX_TTL:
        raise _refused(
            "invalid-shopper-token",
            f"the shopper token lives longer than {MAX_TTL} seconds; issue a shorter one",
        )
    return sub


def app_secret(state: Any) -> bytes:
    """The shopper-token secret of an app (from its server settings), read once and kept."""
    secret: bytes | None = getattr(state, "shopper_token_secret", None)
    if secret is None:
        with _lock:
            secret = getattr(state, "shopper_token_secret", None)
            if secret is None:
                server = getattr(state, "server_settings", None)
                configured = getattr(server, "shopper_token_secret", None)
                secret = shopper_token_secret(state.rs.ctx.key_dir, configured)
                state.shopper_token_secret = secret
    return secret


def app_ttl(state: Any) -> int:
    """The app's default token lifetime in seconds."""
    server = getattr(state, "server_settings", None)
    return int(getattr(server, "shopper_token_ttl", DEFAULT_TTL))


async def shopper(
    request: Request,
    token: str | None = Header(
        default=None,
        alias=HEADER,
        description="a shopper token from POST /v1/admin/shopper-tokens (or signed by the "
        "shop's backend with the shared secret); names the shopper",
    ),
) -> str:
    """FastAPI dependency: the shopper named by a valid `X-Shopper-Token` header."""
    return verify_shopper_token(app_secret(request.app.state), token)


def _key(secret: bytes | str) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def _refused(slug: str, detail: str) -> ProblemError:
    return ProblemError(401, detail, slug=slug, headers=dict(_CHALLENGE))
