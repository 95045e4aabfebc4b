"""The app of one `privrec serve --workers N` worker, built from the environment.

uvicorn's process supervisor imports `app_factory` by name in each worker process (its
`factory=True` mode); `privrec serve` puts the data directory and the options in the
environment first. Kept apart from `privrec.server.workers` so the app module does not import
itself through it.
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI

from privrec.core.native_threads import serving_blas_threads
from privrec.core.settings import Settings
from privrec.server.app import create_app
from privrec.server.settings import ServerSettings
from privrec.server.workers import ACCESS_LOG_ENV

__all__ = ["app_factory"]


def app_factory() -> FastAPI:
    """A worker's app over the data directory of `PRIVREC_DATA_DIR` (and the other PRIVREC_*)."""
    log = logging.getLogger("privrec.server.access")
    if os.environ.get(ACCESS_LOG_ENV) == "1":
        log.setLevel(logging.INFO)
        log.addHandler(logging.StreamHandler())
        log.propagate = False  # the root handler would write every line a second time
    else:
        log.setLevel(logging.WARNING)
    server = ServerSettings()
    serving_blas_threads(server.blas_threads)  # the worker's main thread, before it serves
    return create_app(Settings(), server=server)
