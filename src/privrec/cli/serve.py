"""`privrec serve`: the HTTP API and the web pages over one data directory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from privrec.cli.common import (
    DataDir,
    app,
    console,
    errors,
    settings_of,
)
from privrec.privacy.keys import key_dir


@app.command()
def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.", min=1, max=65535)] = 8000,
    data_dir: DataDir = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log one line per request (route templates and key ids only).",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="API worker processes on the one port (more than 1 needs PostgreSQL: "
            "PRIVREC_STORE_URL=postgresql://...).",
            min=1,
            max=64,
        ),
    ] = 1,
) -> None:
    """Serve the HTTP API (/v1, OpenAPI at /v1/openapi.json), the web pages and /metrics.

    API keys come from PRIVREC_API_KEYS ("client:KEY,admin:KEY") or from
    DATA_DIR/keys/api-keys.json, created (mode 0600) on the first start; they are never printed.
    """
    import uvicorn

    from privrec.cli.runtime import client_url, live_server, remove_runtime
    from privrec.core.errors import ConfigError, ConflictError
    from privrec.core.native_threads import serving_blas_threads
    from privrec.server.app import create_app
    from privrec.server.security import key_id, load_or_create_keys, parse_keys
    from privrec.server.settings import ServerSettings

    with errors():
        settings = settings_of(data_dir)
        shared = _postgres(settings)
        if workers > 1 and not shared:
            raise ConfigError(
                f"--workers: {workers} workers need the PostgreSQL store "
                "(PRIVREC_STORE_URL=postgresql://...); the embedded DuckDB store admits one "
                "writer process, so serve it with --workers 1"
            )
        running = live_server(settings.data_dir)  # a stale file of a dead server is removed
        if running is not None and not shared:
            raise ConflictError(
                f"a privrec server (pid {running.pid}, {running.url}) already serves "
                f"{settings.data_dir}; the embedded store admits one writer process"
            )
        server = ServerSettings()
        if server.api_keys is None:
            keys, created = load_or_create_keys(key_dir(settings))
            where = key_dir(settings) / "api-keys.json"
            # never printed: a service's stdout ends up in logs that others read
            state = "created" if created else "in"
            console.print(f"API keys {state} {where} (mode 0600; read them from there)")
            key_ref = {"source": "file", "path": str(where.resolve())}
        else:
            keys = parse_keys(server.api_keys.get_secret_value())
            key_ref = {"source": "env", "var": "PRIVREC_API_KEYS"}
        # the runtime file names where the admin key is, never the key (CLI beside the server)
        key_ref["key_id"] = next((key_id(k) for role, k in keys if role == "admin"), "")
        if workers > 1:
            _serve_workers(settings.data_dir, host, port, workers, access_log, key_ref)
            return
        application = create_app(settings, server=server)
    logging.getLogger("privrec.server.access").setLevel(
        logging.INFO if access_log else logging.WARNING
    )
    if access_log:
        log = logging.getLogger("privrec.server.access")
        log.addHandler(logging.StreamHandler())
        log.propagate = False  # the root handler would write every line a second time
    console.print(
        f"serving on http://{host}:{port}/  (API: /v1, schema: /v1/openapi.json, operator: /ops)"
    )
    _announce(application, settings.data_dir, client_url(host, port), key_ref)
    serving_blas_threads(server.blas_threads)  # this (main) thread, before it serves
    try:
        uvicorn.run(
            application,
            host=host,
            port=port,
            access_log=False,
            log_level="warning",
            loop="auto",
            http="auto",
        )
    finally:
        remove_runtime(settings.data_dir)  # a kill -9 leaves it: the pid check finds it stale


def _announce(application: Any, data_dir: Path, url: str, key_ref: dict[str, str]) -> None:
    """Write the runtime file once the app has started and remove it when the app stops.

    Inside the app's lifespan, not around `uvicorn.run`: uvicorn re-raises SIGTERM after its
    graceful shutdown, so code after `run` never runs when the server is stopped that way.
    """
    from privrec.cli.runtime import remove_runtime, write_runtime

    inner = application.router.lifespan_context

    @asynccontextmanager
    async def announced(app: Any) -> AsyncIterator[Any]:
        async with inner(app) as state:
            write_runtime(data_dir, url=url, key_ref=key_ref)
            try:
                yield state
            finally:
                remove_runtime(data_dir)

    application.router.lifespan_context = announced


def _postgres(settings: Any) -> bool:
    from privrec.events.store_api import is_postgres_url

    url = settings.store_url.get_secret_value() if settings.store_url else None
    return is_postgres_url(url)


def _serve_workers(
    data_dir: Path, host: str, port: int, workers: int, access_log: bool, key_ref: dict[str, str]
) -> None:
    """Run `workers` processes of the app on one port (uvicorn's process supervisor).

    Why uvicorn's workers and not SO_REUSEPORT: the supervisor binds one listening socket that
    every worker accepts from, so a connection waiting in the queue is taken by whichever worker
    is alive (with SO_REUSEPORT each worker has its own queue, and the connections queued on a
    worker that dies are reset); and it starts a new worker when one dies. Each worker builds
    its app from the environment (`privrec.server.worker_app.app_factory`); the retrain scheduler
    runs in the one that wins a PostgreSQL advisory lock (`PRIVREC_SCHEDULER_ELECT`).
    """
    import os
    import threading
    import urllib.request

    import uvicorn

    from privrec.cli.runtime import client_url, remove_runtime, write_runtime
    from privrec.server.workers import ACCESS_LOG_ENV

    os.environ["PRIVREC_DATA_DIR"] = str(data_dir)
    os.environ[ACCESS_LOG_ENV] = "1" if access_log else "0"
    if os.environ.get("PRIVREC_SCHEDULER_ENABLED", "true").lower() not in ("0", "false", "no"):
        os.environ["PRIVREC_SCHEDULER_ENABLED"] = "false"  # not in every worker: in the leader
        os.environ["PRIVREC_SCHEDULER_ELECT"] = "true"
    url = client_url(host, port)
    stop = threading.Event()

    def announce() -> None:
        # the runtime file (the CLI beside the server) once a worker answers; the pid is this
        # supervisor's, which outlives any one worker
        while not stop.wait(0.25):
            try:
                with urllib.request.urlopen(f"{url}/health/live", timeout=1):
                    write_runtime(data_dir, url=url, key_ref=key_ref)
                    return
            except OSError:
                continue

    threading.Thread(target=announce, name="privrec-announce", daemon=True).start()
    console.print(
        f"serving on http://{host}:{port}/ with {workers} workers over PostgreSQL "
        "(API: /v1, schema: /v1/openapi.json, operator: /ops)"
    )
    try:
        uvicorn.run(
            "privrec.server.worker_app:app_factory",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            access_log=False,
            log_level="warning",
        )
    finally:
        stop.set()
        remove_runtime(data_dir)
