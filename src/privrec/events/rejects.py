"""Rejected rows: what the gate and the file readers refuse, and the rejects files on disk.

A rejects file (`<data_dir>/rejects/<source>.rejects.jsonl`, mode 0600) holds one JSON line per
refused row: its line number, the reason (field names and problems, never an input value) and
the pseudonym of its user when the user field itself was valid, else null. The pseudonyms make
the files personal data, so the shopper's rights reach them: `lines_of` serves access,
`erase_users` erasure and `rekey_lines` key rotation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from privrec.core.files import open_private_write, private_dir

__all__ = ["REJECTS_DIR", "Reject", "RejectWriter"]

REJECTS_DIR = "rejects"


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


class RejectWriter:
    """Appends rejects as JSON Lines to a file created with mode 0600 (it holds pseudonyms)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def __enter__(self) -> RejectWriter:
        if self.path is not None:
            if not self.path.parent.exists():
                # only a directory made here is narrowed: the caller's own directory is left alone
                private_dir(self.path.parent)
            self._fh = open_private_write(self.path)
        return self

    def write(self, rejects: list[Reject]) -> None:
        if self._fh is not None and rejects:
            self._fh.write(
                "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rejects)
            )

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
