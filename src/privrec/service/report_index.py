"""The index of report files in the reports folder, and an archive that never loses one
(layer 7).

Every report writer archives the files it is about to overwrite
(`privrec.evaluation.report_archive.keep_previous`), and `index` archives whatever is current
before it lists (a file written by other means is kept from then on). `index` lists the current
files and every archived one with its date.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from privrec.evaluation.report_archive import (
    ARCHIVE,
    REPORT_SUFFIXES,
    archive,
    content_digest,
    report_files,
)

__all__ = ["ARCHIVE", "REPORT_SUFFIXES", "ReportFile", "archive", "find", "index"]

_KINDS = {
    ".html": "HTML",
    ".md": "Markdown",
    ".json": "JSON",
    ".jsonl": "JSON lines",
    ".csv": "CSV",
    ".png": "image",
    ".svg": "image",
}


@dataclass(frozen=True)
class ReportFile:
    """One report file.

    Attributes:
        name: its path relative to the reports folder, with "/" (the key it is served under).
        path: where it is.
        kind: HTML, Markdown, JSON, JSON lines, CSV or image.
        modified: its modification time, UTC ISO 8601 (seconds).
        size: bytes.
        archived: whether it is a kept older copy.
    """

    name: str
    path: Path
    kind: str
    modified: str
    size: int
    archived: bool


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def index(reports: Path, *, keep: bool = True) -> list[ReportFile]:
    """Every report file, current ones first (newest first), then the archived copies.

    Args:
        reports: the reports folder.
        keep: archive the current files first (so the list can never lose an older one).
    """
    if keep:
        archive(reports)
    # an archived copy of what is current is not an older report: list it once
    same = {
        (p.relative_to(reports).parent / f"{content_digest(p)}-{p.name}").as_posix()
        for p in report_files(reports, archived=False)
    }
    out: list[ReportFile] = []
    for archived in (False, True):
        files = report_files(reports, archived=archived)
        files.sort(key=lambda p: (-p.stat().st_mtime, str(p)))
        for p in files:
            if archived:
                rel = p.relative_to(reports / ARCHIVE)
                tail = rel.name.split("-", 1)[1] if "-" in rel.name else rel.name
                if (rel.parent / tail).as_posix() in same:
                    continue
            st = p.stat()
            out.append(
                ReportFile(
                    name=p.relative_to(reports).as_posix(),
                    path=p,
                    kind=_KINDS[p.suffix.lower()],
                    modified=_iso(st.st_mtime),
                    size=st.st_size,
                    archived=archived,
                )
            )
    return out


def find(reports: Path, name: str) -> ReportFile | None:
    """The report file listed under `name` (a path relative to the reports folder), or None.

    Only what `index` would list is found: a report suffix, no hidden part, no link, nothing
    outside the folder (``..`` and absolute names find nothing).
    """
    rel = Path(name)
    if rel.is_absolute() or not rel.parts or any(p in ("", ".", "..") for p in rel.parts):
        return None
    if any(p.startswith(".") for p in rel.parts) or rel.suffix.lower() not in REPORT_SUFFIXES:
        return None
    path = reports / rel
    try:
        if path.is_symlink() or not path.is_file():
            return None
        path.resolve().relative_to(reports.resolve())
    except (OSError, ValueError):
        return None
    st = path.stat()
    return ReportFile(
        name=rel.as_posix(),
        path=path,
        kind=_KINDS[rel.suffix.lower()],
        modified=_iso(st.st_mtime),
        size=st.st_size,
        archived=rel.parts[0] == ARCHIVE,
    )
