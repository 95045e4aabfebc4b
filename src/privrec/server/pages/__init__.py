"""Server-rendered web pages (Jinja2, no JavaScript, no external CDN or font).

- `/`: the storefront: browse by category, search, "recommended for you" with a "why?" per item;
  `/item/{id}`: a product with similar items and items bought together; `/why/{id}`: how much
  each of the shopper's items counted for a recommendation (`store`).
- `/privacy`: the shopper's privacy centre: consent level, download my data, delete my data
  (with a confirmation and the receipt, then signed out) (`store`).
- `/ops`: the operator console (admin key): charts, the privacy ledger, reports and controls
  (`ops`, `reports`).

Sessions, cookies and CSRF are in `common`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from privrec.server.pages import ops, reports, store
from privrec.server.pages.common import HERE, OPERATOR, SHOPPER, page_secret, sign, unsign
from privrec.service.insights import Insights
from privrec.service.report_index import archive

logger = logging.getLogger(__name__)

__all__ = ["OPERATOR", "SHOPPER", "install", "sign", "unsign"]


def install(app: FastAPI) -> None:
    """Add the pages and their static files to `app`."""
    app.state.page_secret = page_secret(app.state.rs.ctx.key_dir)
    if getattr(app.state, "insights", None) is None:
        app.state.insights = Insights(app.state.rs.serving)
    try:  # keep what the reports folder holds now, before a later run overwrites it
        archive(app.state.rs.reports_dir)
    except OSError as exc:  # a read-only or full disk must not stop the server
        logger.warning("report archive failed error=%s", type(exc).__name__)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (store, ops, reports):
        app.include_router(module.router)
