"""Consent levels per user: what may be stored about them and whether they are served personally.

Levels (design.md, "Privacy semantics"):

- ``personalized``: every event type is stored and recommendations use the user's history.
- ``purchases_only``: only ``purchase`` events are stored; views, searches, carts, favourites
  and ratings are dropped at the gate. Recommendations use the stored purchases.
- ``anonymous``: nothing about the user is stored (no events); they are served
  non-personalised results (the DP popularity model). Only the consent record itself is kept,
  because the gate must remember the choice.

Pure logic (`filter_types`, `allowed_types`, `stores_events`, `personalised`) plus a tiny
SQLite table (`ConsentStore`, file ``consent.sqlite`` in the data directory, mode 0600) mapping
pseudonym -> (level, time of the last change). Raw user ids never reach this module: callers
pseudonymise first. A change applies to the next request because every request reads the
table (no cache here).

How the gate and the service use it (wiring is done in events/ and service.py):

    store = ConsentStore(data_dir)
    level = store.get(pseudonym)                  # default level for unknown users
    kept = filter_types(level, ["view", "purchase"])   # -> ["purchase"] for purchases_only
    if not personalised(level): serve the DP popularity
    store.delete(pseudonym)                       # part of erasure (forget)
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from privrec.core.errors import ValidationError
from privrec.core.types import EVENT_TYPES

CONSENT_FILE = "consent.sqlite"


class ConsentLevel(str, Enum):
    """A user's consent level (its value is what is stored)."""

    PERSONALIZED = "personalized"
    PURCHASES_ONLY = "purchases_only"
    ANONYMOUS = "anonymous"


_ALLOWED: dict[ConsentLevel, frozenset[str]] = {
    ConsentLevel.PERSONALIZED: frozenset(EVENT_TYPES),
    ConsentLevel.PURCHASES_ONLY: frozenset({"purchase"}),
    ConsentLevel.ANONYMOUS: frozenset(),
}


def parse_level(level: str | ConsentLevel) -> ConsentLevel:
    """The ConsentLevel named by `level`; ValidationError names the allowed values otherwise."""
    if isinstance(level, ConsentLevel):
        return level
    try:
        return ConsentLevel(str(level).strip().lower())
    except ValueError:
        allowed = ", ".join(v.value for v in ConsentLevel)
        raise ValidationError(
            "consent", f"{level!r} is not a consent level; give one of {allowed}"
        ) from None


def allowed_types(level: str | ConsentLevel) -> frozenset[str]:
    """The event types that may be stored for a user at this level."""
    return _ALLOWED[parse_level(level)]


def filter_types(level: str | ConsentLevel, types: Iterable[str]) -> list[str]:
    """The event types of `types` that may be stored at `level`, in their given order.

    personalized keeps all, purchases_only keeps "purchase" only, anonymous keeps none.
    """
    allowed = allowed_types(level)
    return [t for t in types if t in allowed]


def stores_events(level: str | ConsentLevel) -> bool:
    """Whether any event of a user at this level may be stored (False for anonymous)."""
    return bool(allowed_types(level))


def personalised(level: str | ConsentLevel) -> bool:
    """Whether the user is served from their own history (False: serve the DP popularity)."""
    return parse_level(level) is not ConsentLevel.ANONYMOUS


class ConsentStore:
    """pseudonym -> (consent level, time of change), in ``<data_dir>/consent.sqlite`` (mode 0600).

    Args:
        data_dir: the privrec data directory (or a path ending in ``.sqlite``).
        default: the level of a user without a record.
    """

    def __init__(
        self, data_dir: str | Path, *, default: str | ConsentLevel = ConsentLevel.PERSONALIZED
    ) -> None:
        p = Path(data_dir)
        self.path = p if p.suffix == ".sqlite" else p / CONSENT_FILE
        self.default = parse_level(default)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        os.chmod(self.path, 0o600)
        with self._connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS consent (pseudonym TEXT PRIMARY KEY, level TEXT NOT NULL, updated REAL NOT NULL)"
            )

    @classmethod
    def from_data_dir(cls, data_dir: str | Path) -> ConsentStore:
        """The consent table of a data directory (created on first use)."""
        return cls(data_dir)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one transaction (committed on success), always closed."""
        con = sqlite3.connect(self.path, timeout=30.0)
        try:
            con.execute("PRAGMA journal_mode=DELETE")  # no WAL side files with wider modes
            con.execute(
                "PRAGMA secure_delete=ON"
            )  # erased records are overwritten, not just unlinked
            with con:
                yield con
        finally:
            con.close()

    def set(
        self, pseudonym: str, level: str | ConsentLevel, *, at: float | None = None
    ) -> ConsentLevel:
        """Record the user's level (replacing any earlier one); returns the parsed level."""
        lv = parse_level(level)
        _check_pseudonym(pseudonym)
        with self._connect() as con:
            con.execute(
                "INSERT INTO consent (pseudonym, level, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(pseudonym) DO UPDATE SET level = excluded.level, updated = excluded.updated",
                (pseudonym, lv.value, float(time.time() if at is None else at)),
            )
        return lv

    def get(self, pseudonym: str) -> ConsentLevel:
        """The user's level (the store's default when there is no record)."""
        with self._connect() as con:
            row = con.execute(
                "SELECT level FROM consent WHERE pseudonym = ?", (pseudonym,)
            ).fetchone()
        return ConsentLevel(row[0]) if row else self.default

    def levels(self, pseudonyms: Iterable[str]) -> dict[str, ConsentLevel]:
        """Levels of many users at once (defaults included), for the gate's batches."""
        ps = list(dict.fromkeys(pseudonyms))
        out = {p: self.default for p in ps}
        with self._connect() as con:
            for i in range(0, len(ps), 900):  # SQLite's bound-parameter limit
                chunk = ps[i : i + 900]
                q = f"SELECT pseudonym, level FROM consent WHERE pseudonym IN ({','.join('?' * len(chunk))})"
                for p, lv in con.execute(q, chunk):
                    out[p] = ConsentLevel(lv)
        return out

    def record(self, pseudonym: str) -> dict[str, Any] | None:
        """The stored record of one user (for access requests), or None."""
        with self._connect() as con:
            row = con.execute(
                "SELECT level, updated FROM consent WHERE pseudonym = ?", (pseudonym,)
            ).fetchone()
        if row is None:
            return None
        return {
            "level": row[0],
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row[1])),
        }

    def delete(self, pseudonym: str) -> bool:
        """Erase the user's record (part of `forget`); True if there was one."""
        with self._connect() as con:
            cur = con.execute("DELETE FROM consent WHERE pseudonym = ?", (pseudonym,))
            return cur.rowcount > 0

    def count(self) -> dict[str, int]:
        """How many users have each level recorded."""
        with self._connect() as con:
            rows = con.execute("SELECT level, COUNT(*) FROM consent GROUP BY level").fetchall()
        return {lv: int(n) for lv, n in rows}


def _check_pseudonym(p: str) -> None:
    if not isinstance(p, str) or not p or len(p) > 128:
        raise ValidationError(
            "pseudonym", "give the user's pseudonym (a hex string), never a raw id"
        )
