"""The HTTP server: `create_app(settings) -> FastAPI`.

One router per resource under /v1 (OpenAPI at /v1/openapi.json), /health/live, /health/ready,
/metrics, and the web pages. A single pure-ASGI middleware does what every request needs (body
size limit, security headers, latency metrics, an access log line that names the route template
and the key id, never a path with ids or a key); everything else is per route. Every 4xx and
5xx answer is RFC 9457 problem+json.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import privrec
from privrec.core.errors import (
    BudgetExceededError,
    ConfigError,
    ConflictError,
    NotFittedError,
    NotFoundError,
    PrivrecError,
    StoreError,
    ValidationError,
)
from privrec.core.settings import Settings
from privrec.server import fastpath
from privrec.server.jobs import JobRunner
from privrec.server.problems import (
    PROBLEM_SCHEMA,
    PROBLEM_TYPE,
    ProblemError,
    problem_body,
    problem_response,
)
from privrec.server.routers.metrics import Metrics
from privrec.server.security import KeyRing, RateLimiter, load_or_create_keys, parse_keys
from privrec.server.settings import ServerSettings

logger = logging.getLogger("privrec.server")
access_log = logging.getLogger("privrec.server.access")

_ERROR_STATUS: list[tuple[type[PrivrecError], int, str]] = [
    (ValidationError, 422, "invalid-value"),
    (NotFoundError, 404, "not-found"),
    (BudgetExceededError, 409, "privacy-budget-exceeded"),
    (ConflictError, 409, "conflict"),
    (ConfigError, 400, "invalid-configuration"),
    (NotFittedError, 503, "model-not-ready"),
    (StoreError, 503, "store-unavailable"),
]
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_API_HEADERS = [(b"cache-control", b"no-store")]
_PAGE_HEADERS = [
    (
        b"content-security-policy",
        # https: images: product pictures from the catalogue's image_url (https only)
        b"default-src 'self'; img-src 'self' data: https:; style-src 'self'; script-src 'none'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
]


# The evaluation report is a self-contained file with inline styles: shown sandboxed.
_REPORT_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox",
    )
]


class _FastRoute:
    path = "/v1/recommendations"


_FAST_ROUTE = _FastRoute()


async def _buffered(receive: Receive, limit: int) -> Receive:
    """Read a whole request body of unknown length (raising _TooLarge past `limit`) and return a
    `receive` that replays it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            first: Message = msg  # a disconnect: hand it on as it came
            break
        chunks.append(msg.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            raise _TooLarge
        if not msg.get("more_body", False):
            first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            break
    sent = [False]

    async def replay() -> Message:
        if not sent[0]:
            sent[0] = True
            return first
        return await receive()

    return replay


class _TooLarge(Exception):
    pass


class Gatekeeper:
    """Size limit, security headers, metrics and the access log, for every HTTP request."""

    def __init__(
        self, app: ASGIApp, server: ServerSettings, metrics: Metrics, state: Any = None
    ) -> None:
        self.app = app
        self.max_body = server.max_body_bytes
        self.max_batch = server.max_batch_bytes
        self.metrics = metrics
        self.state = state if server.fast_path else None
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path: str = scope["path"]
        limit = self.max_batch if path == "/v1/events/batch" else self.max_body
        declared = None
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = -1
                break
        status = [0]
        if path.startswith("/v1") or path.startswith("/health"):
            extra = _API_HEADERS
        elif path.startswith("/ops/files/"):
            extra = _REPORT_HEADERS
        else:
            extra = _PAGE_HEADERS

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS + extra
            await send(message)

        try:
            if declared is not None and (declared < 0 or declared > limit):
                await self._problem(
                    send_wrapper,
                    413 if declared > limit else 400,
                    f"the request body is larger than {limit} bytes; send less"
                    if declared > limit
                    else "the Content-Length header is not a number",
                    "body-too-large",
                    path,
                )
            else:
                recv = receive
                if declared is None:
                    # a body without Content-Length (chunked) is read here, up to the limit, so
                    # that an oversized one is a 413 before any route's body parser sees it
                    recv = await _buffered(receive, limit)
                if self.state is not None and path == fastpath.PATH and scope["method"] == "POST":
                    scope["route"] = _FAST_ROUTE
                    await fastpath.handle(self.state, scope, recv, send_wrapper, _ERROR_STATUS)
                else:
                    await self.app(scope, recv, send_wrapper)
        except _TooLarge:
            if not status[0]:
                await self._problem(
                    send_wrapper,
                    413,
                    f"the request body is larger than {limit} bytes; send less",
                    "body-too-large",
                    path,
                )
        except (
            Exception
        ) as exc:  # the last line of defence: a problem document, a reference, no details
            ref = secrets.token_hex(6)
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = (
                f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
                if tb is not None
                else "?"
            )
            logger.error("unhandled error ref=%s type=%s at=%s", ref, type(exc).__name__, where)
            if not status[0]:
                await self._problem(
                    send_wrapper,
                    500,
                    f"internal error; the server log has reference {ref}",
                    "internal-error",
                    path,
                )
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                "/static" if path.startswith("/static/") else "unmatched"
            )
            secs = time.perf_counter() - t0
            key = (scope["method"], template, status[0])
            children = self._children.get(key)
            if children is None:
                m = self.metrics
                children = (
                    m.latency.labels(scope["method"], template),
                    m.requests.labels(scope["method"], template, str(status[0])),
                )
                if len(self._children) < 10_000:
                    self._children[key] = children
            children[0].observe(secs)
            children[1].inc()
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request method=%s route=%s status=%d ms=%.2f key=%s",
                    scope["method"],
                    template,
                    status[0],
                    secs * 1000,
                    scope.get("privrec.key", "-"),
                )

    @staticmethod
    async def _problem(send: Send, status: int, detail: str, slug: str, path: str) -> None:
        body = problem_body(
            status, detail, slug=slug, instance=path if path.isascii() and len(path) < 200 else None
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", PROBLEM_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _instance(request: Request) -> str | None:
    p = request.url.path
    # Paths hold item ids and route names only (user ids travel in bodies and headers).
    return p if p.isascii() and len(p) < 200 else None


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def on_problem(request: Request, exc: ProblemError) -> Any:
        return problem_response(
            exc.status,
            exc.detail,
            slug=exc.slug,
            instance=_instance(request),
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Any:
        if exc.status_code == 404:
            detail = "no such endpoint or resource; the API is described at /v1/openapi.json"
        elif exc.status_code == 405:
            detail = (
                f"method {request.method} is not allowed here; "
                "the API is described at /v1/openapi.json"
            )
        else:
            detail = str(exc.detail) if isinstance(exc.detail, str) else "the request failed"
        return problem_response(
            exc.status_code,
            detail,
            instance=_instance(request),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Any:
        detail, errors = fastpath.validation_errors(list(exc.errors()), "request")
        return problem_response(
            422, detail, slug="invalid-request", instance=_instance(request), errors=errors
        )

    @app.exception_handler(PrivrecError)
    async def on_privrec(request: Request, exc: PrivrecError) -> Any:
        for cls, status, slug in _ERROR_STATUS:
            if isinstance(exc, cls):
                return problem_response(status, str(exc), slug=slug, instance=_instance(request))
        return problem_response(400, str(exc), slug="bad-request", instance=_instance(request))


def _custom_openapi(app: FastAPI) -> None:
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base()
        comps = schema.setdefault("components", {})
        comps.setdefault("securitySchemes", {}).update(
            {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key (client or admin role)",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
        )
        comps.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        for path, ops in schema.get("paths", {}).items():
            for op in ops.values():
                if not isinstance(op, dict):
                    continue
                if path.startswith("/v1"):
                    op["security"] = [{"bearer": []}, {"apiKey": []}]
                resp = op.get("responses", {})
                if "422" in resp:
                    resp["422"] = {
                        "description": "Unprocessable Content",
                        "content": {PROBLEM_TYPE: {"schema": PROBLEM_SCHEMA}},
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _pages_enabled(server: ServerSettings, settings: Settings) -> bool:
    if server.pages == "auto":
        from privrec.pipeline import DEMO_MARKER

        return (settings.data_dir / DEMO_MARKER).exists()
    return server.pages == "on"


def create_app(
    settings: Settings | None = None, *, server: ServerSettings | None = None, recsys: Any = None
) -> FastAPI:
    """The privrec HTTP app over one data directory.

    Args:
        settings: core settings (data directory, keys, event weights); default from the environment.
        server: server settings (API keys, limits, CORS, pages); default from the environment.
        recsys: an open RecSys to serve (default: one over `settings`, closed with the app).
    """
    from privrec.service import RecSys

    settings = settings or (recsys.settings if recsys is not None else Settings())
    server = server or ServerSettings()
    owns = recsys is None
    rs = recsys if recsys is not None else RecSys(settings)
    keys = (
        parse_keys(server.api_keys.get_secret_value())
        if server.api_keys
        else load_or_create_keys(rs.ctx.key_dir)[0]
    )
    rs.serving.configure(cache_entries=server.cache_entries)
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def warm() -> None:
            try:
                rs.serving.warm(preload_max_events=server.preload_max_events)
                rs.serving.default_model_name()
                app.state.ready = True
            except PrivrecError as exc:
                app.state.not_ready_reason = f"not ready: {exc}"
                logger.warning("not ready: %s", type(exc).__name__)

        await run_in_threadpool(warm)

        def refresher() -> None:
            last_pop = time.monotonic()
            while not stop.wait(server.refresh_seconds):
                try:
                    rs.experiments.flush()
                    if rs.serving.refresh():
                        app.state.ready = True
                    if not app.state.ready:
                        warm()
                    if time.monotonic() - last_pop > 60:
                        rs.serving.refresh_popularity()
                        last_pop = time.monotonic()
                except Exception as exc:  # keep refreshing; never take the server down
                    logger.warning("refresh failed error=%s", type(exc).__name__)

        thread = threading.Thread(target=refresher, name="privrec-refresh", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            app.state.jobs.shutdown()
            rs.experiments.flush()
            if owns:
                rs.close()

    app = FastAPI(
        title="privrec",
        version=privrec.__version__,
        description="Privacy-preserving recommendations: events, recommendations with "
        "explanations, search, consent, data-subject rights, models, A/B experiments. "
        "User ids travel in bodies, never in URLs; a shopper's own data (/v1/me) needs a "
        "token the shop signs for them. "
        "Errors are RFC 9457 problem+json.",
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.rs = rs
    app.state.settings = settings
    app.state.server_settings = server
    app.state.keyring = KeyRing(keys)
    app.state.limiter = RateLimiter({"client": server.rate_client, "admin": server.rate_admin})
    app.state.jobs = JobRunner(rs.jobs)  # persistent: the history the scheduler writes too
    app.state.metrics = Metrics(rs)
    app.state.ready = False
    app.state.not_ready_reason = None

    from privrec.server.routers import (
        catalogue,
        consent,
        events,
        experiments,
        explanations,
        feedback,
        health,
        insights,
        items,
        metrics,
        models,
        privacy,
        recommendations,
        schedule,
        tokens,
        users,
    )

    for r in (
        events,
        recommendations,
        items,
        insights,  # bought together; how much each of a shopper's items counted
        catalogue,
        explanations,
        consent,
        users,
        tokens,
        privacy,
        models,
        experiments,
        schedule,  # retrain policies, job history, rollback; starts the scheduler
        feedback,  # online metrics of served lists (GET /v1/metrics/online)
        health,
        metrics,
    ):
        app.include_router(r.router)
    if _pages_enabled(server, settings):
        from privrec.server import pages

        pages.install(app)
    from privrec.server import docs

    docs.install(app)  # the API reference at /docs, rendered offline from the OpenAPI document
    _install_handlers(app)
    _custom_openapi(app)
    app.add_middleware(Gatekeeper, server=server, metrics=app.state.metrics, state=app.state)
    if server.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=server.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            # the shopper is named only by a signed token; a bare X-User-Id is not accepted
            allow_headers=["Authorization", "X-API-Key", "X-Shopper-Token", "Content-Type"],
        )
    from privrec.server import workers

    workers.install(app)  # a PostgreSQL store: limits and changes shared by every API worker
    return app
