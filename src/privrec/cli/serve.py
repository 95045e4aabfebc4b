"""`privrec serve`: the HTTP API and the web pages over one data directory."""

from __future__ import annotations

import logging
from typing import Annotated

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
) -> None:
    """Serve the HTTP API (/v1, OpenAPI at /v1/openapi.json), the web pages and /metrics.

    API keys come from PRIVREC_API_KEYS ("client:KEY,admin:KEY") or from
    DATA_DIR/keys/api-keys.json, created (mode 0600) on the first start; they are never printed.
    """
    import uvicorn

    from privrec.server.app import create_app
    from privrec.server.security import load_or_create_keys
    from privrec.server.settings import ServerSettings

    with errors():
        settings = settings_of(data_dir)
        server = ServerSettings()
        if server.api_keys is None:
            _keys, created = load_or_create_keys(key_dir(settings))
            where = key_dir(settings) / "api-keys.json"
            # never printed: a service's stdout ends up in logs that others read
            state = "created" if created else "in"
            console.print(f"API keys {state} {where} (mode 0600; read them from there)")
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
    uvicorn.run(
        application,
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        loop="auto",
        http="auto",
    )
