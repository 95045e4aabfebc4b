"""The index of report files in the reports folder, and an archive that never loses one
(layer 7).

The report writers (`privrec evaluate`, `privacy-report`, `robustness-report`, the demo) write
fixed file names and overwrite the previous run. `archive` copies every report file whose
content it has not kept yet into `reports/archive/` under its modification time and a content
hash, so an older report survives the next run as long as the index was built in between (the
console builds it each time it is opened, and `privrec` commands may call it before writing).
`index` lists the current files and every archived one with its date.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ARCHIVE", "REPORT_SUFFIXES", "ReportFile", "archive", "find", "index"]

ARCHIVE = "archive"
REPORT_SUFFIXES = frozenset({".html", ".md", ".json", ".jsonl", ".csv", ".png", ".svg"})
_KINDS = {
    ".html": "HTML",
    ".md": "Markdown",
    ".json": "JSON",
    ".jsonl": "JSON lines",
    ".csv": "CSV",
    ".png": "image",
    ".svg": "image",
}
_MAX_FILES = 2000  # a runaway folder must not make the console list forever


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


def _files(reports: Path, *, archived: bool) -> list[Path]:
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


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def archive(reports: Path) -> list[Path]:
    """Keep a copy of every current report file whose content is not archived yet.

    Returns:
        the copies made now.
    """
    made: list[Path] = []
    current = _files(reports, archived=False)
    if not current:
        return made
    dest_dir = reports / ARCHIVE
    for p in current:
        rel = p.relative_to(reports)
        digest = _digest(p)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(p.stat().st_mtime))
        folder = dest_dir / rel.parent
        # one copy per content: the same bytes under a later date are not a new report
        if folder.is_dir() and any(folder.glob(f"*-{digest}-{rel.name}")):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{stamp}-{digest}-{rel.name}"
        shutil.copy2(p, target)
        made.append(target)
    return made


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
        (p.relative_to(reports).parent / f"{_digest(p)}-{p.name}").as_posix()
        for p in _files(reports, archived=False)
    }
    out: list[ReportFile] = []
    for archived in (False, True):
        files = _files(reports, archived=archived)
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
