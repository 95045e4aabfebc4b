"""Keep every older report: a report file is copied into the archive before it is overwritten
(layer 6, the lowest layer that writes reports).

The report writers (`privrec evaluate`, `privacy-report`, `robustness-report`, the demo) write
fixed file names. Each calls `keep_previous(folder)` before it writes, which copies every report
file of that folder whose content is not archived yet into `<reports>/archive/<sub folder>/`
under its modification time and a content hash. `<reports>` is the nearest folder named
``reports`` at or above the written folder (the data directory's reports folder), else the
written folder itself. The console's report index (`privrec.service.report_index`) lists the
current files and every archived copy.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "ARCHIVE",
    "REPORT_SUFFIXES",
    "archive",
    "content_digest",
    "keep_previous",
    "report_files",
    "reports_root",
]

ARCHIVE = "archive"
REPORTS = "reports"
REPORT_SUFFIXES = frozenset({".html", ".md", ".json", ".jsonl", ".csv", ".png", ".svg"})
_MAX_FILES = 2000  # a runaway folder must not make a listing run forever


def report_files(reports: Path, *, archived: bool) -> list[Path]:
    """The report files under `reports` (sorted): the current ones, or the archived copies.

    Links, hidden parts and other suffixes are left out; at most 2000 files.
    """
    if not reports.is_dir():
        return []
    base = reports / ARCHIVE if archived else reports
    if not base.is_dir():
        return []
    out: list[Path] = []
    for p in sorted(base.rglob("*")):
        if len(out) >= _MAX_FILES:
            break
        if not p.is_file() or p.is_symlink() or p.suffix.lower() not in REPORT_SUFFIXES:
            continue
        rel = p.relative_to(reports)
        if not archived and rel.parts[0] == ARCHIVE:
            continue
        if any(part.startswith(".") for part in rel.parts):
            continue
        out.append(p)
    return out


def content_digest(path: Path) -> str:
    """The first 12 hex digits of the file's SHA-256 (names an archived copy)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def archive(reports: Path, files: Iterable[Path] | None = None) -> list[Path]:
    """Keep a copy of every current report file (or of `files`) whose content is not archived.

    Args:
        reports: the reports folder (the archive is its ``archive`` sub folder).
        files: only these report files (inside `reports`); default: every current one.

    Returns:
        the copies made now.
    """
    current = report_files(reports, archived=False) if files is None else list(files)
    made: list[Path] = []
    for p in current:
        try:
            rel = p.relative_to(reports)
        except ValueError:
            continue  # not inside the reports folder: not this archive's
        if rel.parts[0] == ARCHIVE or p.is_symlink() or not p.is_file():
            continue
        digest = content_digest(p)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(p.stat().st_mtime))
        folder = reports / ARCHIVE / rel.parent
        # one copy per content: the same bytes under a later date are not a new report
        if folder.is_dir() and any(folder.glob(f"*-{digest}-{rel.name}")):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{stamp}-{digest}-{rel.name}"
        shutil.copy2(p, target)
        made.append(target)
    return made


def reports_root(folder: Path) -> Path:
    """The reports folder `folder` belongs to: the nearest one named ``reports`` at or above
    it, else `folder` itself."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.name == REPORTS:
            return p
    return folder


def keep_previous(folder: str | Path) -> list[Path]:
    """Archive the report files directly in `folder` before a writer overwrites them.

    Returns:
        the copies made now (none when the folder is new or everything is archived already).
    """
    out = Path(folder)
    if not out.is_dir():
        return []
    files = [
        p
        for p in sorted(out.iterdir())
        if p.suffix.lower() in REPORT_SUFFIXES and not p.name.startswith(".")
    ]
    return archive(reports_root(out), files)
