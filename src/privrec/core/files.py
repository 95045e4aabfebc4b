"""Private files: only their owner can read them, from the first byte on.

Keys, the privacy-budget ledger, the audit log, consent and experiment tables and reject files
hold secrets or pseudonyms, so every one of them is written through these helpers:

- `write_private(path, data)`: replace a whole file atomically (readers see the old or the new
  content, never a part), or create it once with `exclusive=True`.
- `open_private_append(path)`: an append-only log (ledger, audit log), readable from the start.
- `open_private_write(path)`: a file streamed from scratch (rejects of one ingestion).
- `ensure_private(path)`: an empty file for a library that opens it itself (SQLite).
- `private_dir(path)`: a directory only the owner can list (the keys directory).

The mode is set with ``fchmod`` on the open descriptor as well as passed to ``open``: the
``open`` mode alone is narrowed by the umask (a umask of 0o277 would leave the owner unable to
write) and is ignored for a file that already exists with a wider mode.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import IO

FILE_MODE = 0o600
DIR_MODE = 0o700


def write_private(path: str | Path, data: bytes | str, *, exclusive: bool = False) -> None:
    """Write `data` to `path` atomically with mode 0600 (str is written as UTF-8).

    The content goes to a temporary file created with ``O_EXCL`` in the same directory, is
    fsynced, then moved into place, and the directory is fsynced; on any failure the temporary
    file is removed and `path` is left as it was.

    Args:
        path: the file to write; its directory must exist.
        data: the whole content.
        exclusive: create `path` only if it does not exist yet (FileExistsError otherwise),
            so that two processes creating the same key agree on one of them.

    Raises:
        FileExistsError: `exclusive` and `path` exists.
    """
    target = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            # link() fails if the target exists, unlike replace(): create-once without a race
            os.link(tmp, target)
        else:
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if exclusive:
        tmp.unlink()
    _fsync_dir(target.parent)


def open_private_append(path: str | Path) -> IO[str]:
    """Open `path` (created if absent) for appending text lines, mode 0600.

    Every write lands at the end (``O_APPEND``) even after a seek, so a caller may first read
    the log from the start; callers lock the file (``fcntl.flock``) when several processes
    append. An existing file with a wider mode is narrowed to 0600.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE)
    return _fdopen_private(fd, "a+")


def open_private_write(path: str | Path) -> IO[str]:
    """Open `path` for writing text from scratch (created or truncated), mode 0600.

    For output that is streamed and so cannot be written at once; use `write_private` when the
    whole content is at hand.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    return _fdopen_private(fd, "w")


def ensure_private(path: str | Path) -> bool:
    """Make sure `path` exists with mode 0600, creating it empty if absent.

    Call it before a library (SQLite) opens the file itself: a file it creates gets the umask's
    mode, and SQLite gives its journal and WAL files the mode of the database file.

    Returns:
        True if the file was created now; False if something already was there (a regular
        file is narrowed to 0600, anything else is left for the opener to refuse).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        if stat.S_ISREG(os.stat(path).st_mode):
            os.chmod(path, FILE_MODE)
        return False
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


def private_dir(path: str | Path) -> Path:
    """Create the directory `path` (and its parents) if absent, and give it mode 0700."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(p, DIR_MODE)
    return p


def _fdopen_private(fd: int, mode: str) -> IO[str]:
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode, encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself has happened
    finally:
        os.close(fd)
