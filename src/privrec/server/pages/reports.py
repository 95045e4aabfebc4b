"""The console's report index and report files (operator only).

`/ops/reports` lists every report file with its date, the current ones and every older copy
kept in `reports/archive/` (`privrec.service.report_index`). HTML reports are served as they
are (sandboxed by the server's report policy: no script, inline styles only); Markdown is
rendered to HTML with markdown-it (raw HTML disabled, so a report cannot inject markup); JSON is
shown indented.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from fastapi import APIRouter, Request
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from privrec.core.errors import NotFoundError
from privrec.server.pages.common import operator, render
from privrec.server.pages.ops_data import LEGACY_NAMES
from privrec.server.problems import ProblemError
from privrec.service.report_index import ReportFile, find, index

router = APIRouter(include_in_schema=False)
_ALIASES = {flat: name for name, flat in LEGACY_NAMES.items()}
_MAX_VIEW_BYTES = 5_000_000


def _lookup(reports: Path, name: str) -> ReportFile:
    """The report file served under `name`: only names the index lists (no path tricks)."""
    name = _ALIASES.get(name, name)
    got = find(reports, name)
    if got is None:
        raise NotFoundError(f"report file {name!r} does not exist")
    return got


def _need_operator(request: Request) -> None:
    if not operator(request):
        raise ProblemError(401, "sign in with an admin key first", slug="operator-sign-in")


@router.get("/ops/reports", response_class=HTMLResponse)
async def reports(request: Request) -> Response:
    """Every report file with its date, newest first; older copies under "archive"."""
    if not operator(request):
        return RedirectResponse("/ops", status_code=303)
    files = await run_in_threadpool(index, request.app.state.rs.reports_dir)
    return render(
        request, "ops_reports.html.j2", title="Reports", files=files, shopper=None, operator=True
    )


def _as_html(f: ReportFile) -> Markup:
    if f.path.stat().st_size > _MAX_VIEW_BYTES:
        return Markup("<p>This file is too large to show here; download it instead.</p>")
    text = f.path.read_text(encoding="utf-8", errors="replace")
    if f.kind == "Markdown":
        from markdown_it import MarkdownIt

        # raw HTML off: a report's text can never become markup on the operator's page
        return Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))
    if f.kind == "JSON":
        with contextlib.suppress(ValueError):  # not JSON after all: shown as it is
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    return Markup("<pre>") + text + Markup("</pre>")


@router.get("/ops/reports/view/{name:path}", response_class=HTMLResponse)
async def view(request: Request, name: str) -> Response:
    """A Markdown, JSON, JSON-lines or CSV report shown as a page (HTML and images: the file)."""
    _need_operator(request)
    f = await run_in_threadpool(_lookup, request.app.state.rs.reports_dir, name)
    if f.kind in ("HTML", "image"):
        return RedirectResponse(f"/ops/files/{f.name}", status_code=303)
    body = await run_in_threadpool(_as_html, f)
    return render(
        request,
        "ops_report_view.html.j2",
        title=f.name,
        f=f,
        body=body,
        shopper=None,
        operator=True,
    )


@router.get("/ops/files/{name:path}")
async def ops_file(request: Request, name: str) -> Response:
    """A report file as it is (HTML reports render as HTML, sandboxed)."""
    _need_operator(request)
    f = await run_in_threadpool(_lookup, request.app.state.rs.reports_dir, name)
    media = {"Markdown": "text/plain; charset=utf-8", "JSON lines": "text/plain; charset=utf-8"}
    return FileResponse(f.path, media_type=media.get(f.kind))
