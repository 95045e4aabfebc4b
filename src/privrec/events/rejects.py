"""Rejected rows: what the gate and the file readers refuse, and the rejects files on disk.

A rejects file (`<data_dir>/rejects/<source>.rejects.jsonl`, mode 0600) holds one JSON line per
refused row: its line number, the reason (field names and problems, never an input value) and
the pseudonym of its user when the user field itself was valid, else null. The pseudonyms make
the files personal data, so the shopper's rights reach them: `lines_of` serves access,
`erase_users` erasure and `stage_rekey` key rotation.

Given the sidecar key (the service always gives it), each line is sealed (`privacy.sealed`:
base64 of the AES-256-GCM-sealed JSON); plaintext lines of older files are still read, and a
file rewritten with the key (erasure, rotation) is sealed throughout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from privrec.core.files import open_private_write, private_dir, write_private
from privrec.privacy.sealed import seal_line, unseal_line

__all__ = [
    "REJECTS_DIR",
    "Reject",
    "RejectWriter",
    "StagedRejectsRekey",
    "erase_users",
    "finish_staged",
    "lines_of",
    "pseudonyms_in",
    "stage_rekey",
]

REJECTS_DIR = "rejects"
REJECTS_SUFFIX = ".rejects.jsonl"
REJECTS_AAD = b"privrec:rejects"
# A re-keyed copy waiting for its rotation to commit: ".<file>.gen<generation>.staged".
_STAGED = re.compile(r"\.(?P<name>.+)\.gen(?P<gen>\d+)\.staged")


@dataclass(frozen=True)
class Reject:
    """A row the gate refused.

    Attributes:
        line: 1-based line (or record / row) number in the source.
        reason: the fields and their problems; never a raw id or any raw input value.
        user: the pseudonym of the row's user when the user field itself was valid, else None.
    """

    line: int
    reason: str
    user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (one line of a rejects file)."""
        return {"line": int(self.line), "reason": self.reason, "user": self.user}


def _line(rec: dict[str, Any], key: bytes | None) -> str:
    """One rejects line (no newline): sealed with `key`, else plaintext JSON."""
    if key is None:
        return json.dumps(rec, ensure_ascii=False)
    return seal_line(rec, key, aad=REJECTS_AAD)


class RejectWriter:
    """Appends rejects as JSON Lines to a file created with mode 0600 (it holds pseudonyms).

    Args:
        path: the rejects file (None: write nothing).
        key: the sidecar key that seals each line (None: plaintext JSON lines).
    """

    def __init__(self, path: Path | None, *, key: bytes | None = None) -> None:
        self.path = path
        self._key = key
        self._fh: IO[str] | None = None

    def __enter__(self) -> RejectWriter:
        if self.path is not None:
            if not self.path.parent.exists():
                # only a directory made here is narrowed: the caller's own directory is left alone
                private_dir(self.path.parent)
            self._fh = open_private_write(self.path)
        return self

    def write(self, rejects: list[Reject]) -> None:
        """Append these rejects (one JSON line each)."""
        if self._fh is not None and rejects:
            self._fh.write("".join(_line(r.to_dict(), self._key) + "\n" for r in rejects))

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()


# ---- the shoppers' rights over rejects files -----------------------------------------------
def _files(data_dir: Path) -> list[Path]:
    """The rejects files of a data directory, by name."""
    folder = Path(data_dir) / REJECTS_DIR
    return sorted(folder.glob("*" + REJECTS_SUFFIX)) if folder.is_dir() else []


def _parse(line: str, key: bytes | None = None, where: str = "") -> dict[str, Any] | None:
    """One rejects line as a record (None for a line that is not one: kept as it is).

    Raises:
        SealedDataError: a sealed line that does not open with `key` (or no key given).
    """
    if not line.strip():
        return None
    try:
        rec = unseal_line(line, key, aad=REJECTS_AAD, where=where or "rejects line")
    except ValueError:  # a plaintext line that is not JSON: kept, never a record
        return None
    return rec if isinstance(rec, dict) else None


def lines_of(
    data_dir: Path, pseudonyms: Collection[str], *, key: bytes | None = None
) -> list[dict[str, Any]]:
    """The rejected rows of these pseudonyms (right of access): file, line and reason each."""
    wanted = set(pseudonyms)
    out: list[dict[str, Any]] = []
    for path in _files(data_dir):
        with open(path, encoding="utf-8") as fh:
            for i, text in enumerate(fh, 1):
                rec = _parse(text, key, f"{path} line {i}")
                if rec is not None and rec.get("user") in wanted:
                    out.append(
                        {"file": path.name, "line": rec.get("line"), "reason": rec.get("reason")}
                    )
    return out


def pseudonyms_in(data_dir: Path, *, key: bytes | None = None) -> set[str]:
    """Every pseudonym the rejects files name."""
    out: set[str] = set()
    for path in _files(data_dir):
        with open(path, encoding="utf-8") as fh:
            for i, text in enumerate(fh, 1):
                rec = _parse(text, key, f"{path} line {i}")
                if rec is not None and isinstance(rec.get("user"), str):
                    out.add(rec["user"])
    return out


def erase_users(data_dir: Path, pseudonyms: Collection[str], *, key: bytes | None = None) -> int:
    """Delete these pseudonyms' lines from every rejects file (right to erasure).

    Each file that holds one is rewritten atomically (`write_private`): a reader or a crash sees
    the old file or the new one, never a part. With `key`, the lines kept are rewritten sealed.

    Returns:
        The lines deleted.
    """
    wanted = set(pseudonyms)
    deleted = 0
    for path in _files(data_dir):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines(keepends=True)
        recs = [(ln, _parse(ln, key, f"{path} line {i}")) for i, ln in enumerate(lines, 1)]
        kept = [(ln, r) for ln, r in recs if (r or {}).get("user") not in wanted]
        if len(kept) != len(lines):
            deleted += len(lines) - len(kept)
            write_private(path, "".join(_reseal(ln, r, key) for ln, r in kept))
    return deleted


def _reseal(line: str, rec: dict[str, Any] | None, key: bytes | None) -> str:
    """A kept line as it is rewritten: sealed with `key` when it is a record, else unchanged."""
    if rec is None or key is None:
        return line if line.endswith("\n") else line + "\n"
    return _line(rec, key) + "\n"


class StagedRejectsRekey:
    """Re-keyed copies of the rejects files, written beside them and not yet in place.

    Attributes:
        count: the lines re-keyed.
    """

    def __init__(self, moves: list[tuple[Path, Path]], count: int) -> None:
        self._moves = moves
        self.count = count

    def commit(self) -> None:
        """Put every re-keyed copy in place (one atomic rename per file)."""
        moves, self._moves = self._moves, []
        for staged, target in moves:
            os.replace(staged, target)
        if moves:
            _fsync_dir(moves[0][1].parent)

    def rollback(self) -> None:
        """Remove the re-keyed copies: the files keep the old pseudonyms."""
        moves, self._moves = self._moves, []
        for staged, _ in moves:
            staged.unlink(missing_ok=True)


def stage_rekey(
    data_dir: Path,
    rekey_many: Callable[[list[str]], list[str]],
    generation: int,
    *,
    key: bytes | None = None,
) -> StagedRejectsRekey:
    """Write a re-keyed copy of every rejects file that names a pseudonym (a key rotation).

    The copies are complete and fsynced when this returns; `commit` renames them into place.

    Args:
        data_dir: the data directory.
        rekey_many: maps old pseudonyms to the new key's (`Pseudonymiser.rekey_many`).
        generation: the key generation after the rotation (names the copies).
        key: the sidecar key: lines are read with it and the copies written sealed.
    """
    moves: list[tuple[Path, Path]] = []
    count = 0
    try:
        for path in _files(data_dir):
            text = path.read_text(encoding="utf-8").splitlines()
            recs = [(ln, _parse(ln, key, f"{path} line {i}")) for i, ln in enumerate(text, 1)]
            old = sorted({r["user"] for _, r in recs if r and isinstance(r.get("user"), str)})
            if not old:
                continue
            new = dict(zip(old, rekey_many(old), strict=True))
            out = []
            for ln, r in recs:
                if r and isinstance(r.get("user"), str):
                    r["user"] = new[r["user"]]
                    count += 1
                    out.append(_line(r, key) + "\n")
                else:
                    out.append(_reseal(ln, r, key))
            staged = path.with_name(f".{path.name}.gen{int(generation)}.staged")
            write_private(staged, "".join(out))
            moves.append((staged, path))
    except BaseException:
        StagedRejectsRekey(moves, count).rollback()
        raise
    return StagedRejectsRekey(moves, count)


def finish_staged(data_dir: Path, generation: int | None) -> int:
    """Deal with the re-keyed copies a stopped rotation left behind.

    Args:
        data_dir: the data directory.
        generation: the generation of the rotation being finished: its copies are put in place;
            every other copy (None: all of them) belongs to a rotation that never reached its
            commit point and is removed.

    Returns:
        The files put in place.
    """
    folder = Path(data_dir) / REJECTS_DIR
    if not folder.is_dir():
        return 0
    done = 0
    for staged in sorted(folder.glob(".*.staged")):
        m = _STAGED.fullmatch(staged.name)
        if m and generation is not None and int(m["gen"]) == generation:
            os.replace(staged, folder / m["name"])
            done += 1
        else:
            staged.unlink(missing_ok=True)
    if done:
        _fsync_dir(folder)
    return done


def _fsync_dir(path: Path) -> None:
    """Make renames in `path` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
