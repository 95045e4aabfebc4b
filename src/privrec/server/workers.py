"""Several API workers over PostgreSQL: shared rate limits, coordination, and the worker app.

When the store is PostgreSQL (`PRIVREC_STORE_URL`), `install` makes an app one of several
interchangeable workers (processes of `privrec serve --workers N`, or servers on several
machines sharing the database and the artifact directory):

- Rate limits hold across workers: `SharedRateLimiter` counts each key's requests per aligned
  window of `PRIVREC_RATE_WINDOW_SECONDS` (default 1 s; limit = rate x window) in PostgreSQL.
  To keep the database off the hot path, a worker claims a lease of requests at a time (1/64 of
  the limit, at least 1) and serves from it; the leases of all workers never add up to more than
  the limit (see `PgWindowCounter.claim`), so the limit holds exactly and a worker may at worst
  refuse a little early while another holds unused lease. A key refused in a window is refused
  without a database call until the window ends. If the database cannot be reached the worker
  falls back to its own in-process bucket. On the embedded store, limits stay in-process.
- Activation, per-shopper list invalidation and catalogue changes reach every worker through
  `privrec.service.coordination.Coordinator` (LISTEN/NOTIFY), started in the app's lifespan.
- The retrain scheduler runs in one worker only when `PRIVREC_SCHEDULER_ELECT` is set (as
  `privrec serve --workers N` sets it): the one holding a PostgreSQL advisory lock; if it dies,
  the lock goes with its connection and another worker takes over.

`privrec.server.worker_app.app_factory` builds a worker's app from the environment.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.concurrency import run_in_threadpool

from privrec.core.errors import StoreError
from privrec.events.pg_notify import PgWindowCounter, wall_window
from privrec.events.store_api import is_postgres_url
from privrec.server.security import Principal, RateLimiter

__all__ = ["ACCESS_LOG_ENV", "SharedRateLimiter", "WorkerSettings", "install"]

logger = logging.getLogger(__name__)

ACCESS_LOG_ENV = "PRIVREC_ACCESS_LOG"  # set by `privrec serve --workers N --access-log`


class WorkerSettings(BaseSettings):
    """How API workers share limits and work (PostgreSQL store only).

    Attributes:
        rate_window_seconds: the shared rate limit's window: each key gets `rate x window`
            requests per aligned window of this many seconds.
        scheduler_elect: run the retrain scheduler in the one worker holding the leader lock
            (instead of in every worker).
    """

    model_config = SettingsConfigDict(env_prefix="PRIVREC_", extra="ignore")

    rate_window_seconds: float = Field(default=1.0, gt=0, le=3600)
    scheduler_elect: bool = False


class SharedRateLimiter(RateLimiter):
    """Per-key limits counted in PostgreSQL per fixed window, served from local leases.

    Args:
        rates: requests per second by role (as `RateLimiter`).
        counter: the shared counter.
        window_seconds: the window; a key may make `rate x window` requests in each.
    """

    def __init__(
        self, rates: dict[str, float], counter: PgWindowCounter, *, window_seconds: float = 1.0
    ) -> None:
        super().__init__(rates)
        self.counter = counter
        self.window = float(window_seconds)
        self._leases: dict[str, list[int]] = {}  # key id -> [window, left, exhausted]
        self._claim_lock = threading.Lock()
        self.claims = 0
        self.fallbacks = 0

    def limit(self, role: str) -> int:
        """Requests a key of `role` may make per window."""
        return max(1, int(self.rates.get(role, 1.0) * self.window))

    def take(self, principal: Principal) -> float:
        """0.0 if the request may go ahead, else the seconds until the window ends."""
        win, left_s = wall_window(self.window)
        with self._claim_lock:
            lease = self._leases.get(principal.key_id)
            if lease is None or lease[0] != win:
                lease = self._leases[principal.key_id] = [win, 0, 0]
            if lease[1] > 0:
                lease[1] -= 1
                return 0.0
            if lease[2]:
                return left_s
            limit = self.limit(principal.role)
            try:
                got = self.counter.claim(principal.key_id, win, max(1, limit // 64), limit)
            except StoreError as exc:
                self.fallbacks += 1
                logger.warning("shared rate limit unavailable, local bucket used error=%s", exc)
                return super().take(principal)
            self.claims += 1
            if got <= 0:
                lease[2] = 1
                return left_s
            lease[1] = got - 1
            return 0.0


def install(app: FastAPI) -> bool:
    """Make `app` one of several workers when its store is PostgreSQL; whether it did.

    Replaces the in-process rate limiter with the shared one and starts the coordinator
    (LISTEN first, then the app's own start-up, so that no change made meanwhile is missed).
    """
    settings = app.state.settings
    url = settings.store_url.get_secret_value() if settings.store_url else None
    if not is_postgres_url(url):
        return False
    assert url is not None
    ws = WorkerSettings()
    counter = PgWindowCounter(url)
    app.state.limiter = SharedRateLimiter(
        dict(app.state.limiter.rates), counter, window_seconds=ws.rate_window_seconds
    )
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def coordinated(a: Any) -> AsyncIterator[Any]:
        from privrec.service.coordination import Coordinator

        rs = app.state.rs
        on_lead = None
        if ws.scheduler_elect:
            from privrec.server.routers.schedule import SchedulerSettings

            tick = SchedulerSettings().tick_seconds

            def on_lead() -> None:
                logger.info("this worker runs the retrain scheduler pid=%d", os.getpid())
                rs.scheduler.start(tick, run=app.state.jobs.run_exclusive)

        coordinator = Coordinator(rs.serving, url, on_lead=on_lead)
        await run_in_threadpool(coordinator.start)
        app.state.coordinator = coordinator
        try:
            async with inner(a) as state:
                yield state
        finally:
            coordinator.stop()
            counter.close()

    app.router.lifespan_context = coordinated
    return True
