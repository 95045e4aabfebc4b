"""Server settings: defaults < PRIVREC_* environment variables < arguments.

Kept apart from `privrec.core.settings.Settings` (which rejects unknown fields) so the core
settings stay the same for every entry point; both read the PRIVREC_ prefix.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    """How `privrec serve` behaves.

    Attributes:
        api_keys: "role:key,role:key" (roles: client, admin); if unset, the keys file of the data
            directory (`keys/api-keys.json`, created with one key per role on first start).
        cors_origins: origins allowed by CORS; empty (the default) turns CORS off.
        max_body_bytes: largest request body, except batch ingestion.
        max_batch_bytes: largest body of POST /v1/events/batch.
        max_batch_events: most events in one batch.
        rate_client / rate_admin: requests per second per key (token bucket, burst = 2 x rate).
        pages: the web pages: "auto" (on for the demo data directory), "on" or "off".
        preload_max_events: read every history into memory at start when the store holds at
            most this many events.
        refresh_seconds: how often versions activated elsewhere and popularity are picked up.
        cache_entries: finished recommendation lists kept in memory (0: compute every request).
        fast_path: answer POST /v1/recommendations without FastAPI's routing (same model,
            checks and errors).
        shopper_token_secret: the HMAC key of shopper tokens, 32 characters or more (checked on
            first use, so that no error echoes it); if unset, the data directory's
            `keys/shopper-token.key` (created with mode 0600 on first use).
        shopper_token_ttl: default lifetime of a shopper token in seconds (at most 24 h).
        shopper_token_required: strict mode (`PRIVREC_SHOPPER_TOKEN_REQUIRED`, default off):
            POST /v1/recommendations and POST /v1/search with a client key personalise only
            for a valid shopper token naming the body's user; without one the caller gets the
            anonymous shopper's list (`personalized: false`), not an error. Off, a client key
            alone gets the shopper's ranking with every explanation redacted of their items
            (see `privrec.server.personal`). Turn it on where the client key is public.
        blas_threads: BLAS threads of the serving process (`PRIVREC_BLAS_THREADS`, default 1;
            0 leaves the library's default). A request's arithmetic is too small to share out
            and idle BLAS threads spin: one thread halves the hybrid's CPU a request at the same
            latency. Process-wide: a job training in the server gets one too
            (`privrec.core.native_threads` says why and when to set 0).
    """

    model_config = SettingsConfigDict(env_prefix="PRIVREC_", extra="ignore")

    api_keys: SecretStr | None = None
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    max_batch_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_batch_events: int = Field(default=20_000, ge=1)
    rate_client: float = Field(default=2000.0, gt=0)
    rate_admin: float = Field(default=200.0, gt=0)
    pages: Literal["auto", "on", "off"] = "auto"
    preload_max_events: int = 5_000_000
    refresh_seconds: float = Field(default=5.0, gt=0)
    cache_entries: int = Field(default=100_000, ge=0)
    fast_path: bool = True
    shopper_token_secret: SecretStr | None = None
    shopper_token_ttl: int = Field(default=15 * 60, ge=1, le=24 * 3600)
    shopper_token_required: bool = False
    blas_threads: int = Field(default=1, ge=0)
