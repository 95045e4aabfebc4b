"""The consent table: pseudonym -> (level, time of the change), sealed at rest.

`privrec.privacy.consent` is the policy (what each level stores and serves); this module keeps
each shopper's level. A row is found by a keyed hash of the pseudonym and holds the sealed
pseudonym and level (with the sidecar key); see `ConsentStore`.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from privrec.core.errors import ValidationError
from privrec.core.files import ensure_private
from privrec.privacy.consent import (
    DEFAULT_LEVEL,
    LEVEL_NAMES,
    ConsentLevel,
    LevelLike,
    parse_level,
)
from privrec.privacy.sealed import SealedDataError, seal, unseal

CONSENT_FILE = "consent.sqlite"
LEGACY_FILE = "consent.json"  # where versions before the consent table kept the levels
CONSENT_AAD = b"privrec:consent-record"
_ROW_PREFIX = b"privrec:consent-row:"


class ConsentStore:
    """pseudonym -> (consent level, time of change), in ``<data_dir>/consent.sqlite`` (mode 0600).

    Use `ConsentStore.open` for a data directory: it also moves an older ``consent.json`` in.

    Args:
        data_dir: the privrec data directory (or a path ending in ``.sqlite``).
        default: the level of a user without a record.
        key: the sidecar key that hashes the lookup column and seals each record (None:
            plaintext pseudonyms and levels).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        default: LevelLike = DEFAULT_LEVEL,
        key: bytes | None = None,
    ) -> None:
        p = Path(data_dir)
        self.path = p if p.suffix == ".sqlite" else p / CONSENT_FILE
        self.default = parse_level(default)
        self._key = key
        self._readers = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # created 0600 before SQLite opens it: SQLite would use the umask, and its journal
        # files copy the database file's mode
        ensure_private(self.path)
        with self._connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS consent "
                "(pseudonym TEXT PRIMARY KEY, level TEXT NOT NULL, updated REAL NOT NULL)"
            )
            self._check_key(con)
            self._seal_plaintext(con)

    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        *,
        default: LevelLike = DEFAULT_LEVEL,
        key: bytes | None = None,
    ) -> ConsentStore:
        """The consent table of a data directory (created on first use).

        Levels in an older version's ``consent.json`` beside it move into the table once (a
        record already in the table wins) and the file is removed. With `key`, plaintext
        levels of an older table are sealed in place.

        Raises:
            ValidationError: ``consent.json`` is not valid JSON or names an unknown level.
            SealedDataError: the table is sealed and `key` is None or another key.
        """
        store = cls(data_dir, default=default, key=key)
        store._migrate(store.path.parent / LEGACY_FILE)
        return store

    def _row(self, pseudonym: str) -> str:
        """The ``pseudonym`` column's value: a keyed hash with the key, else the pseudonym."""
        if self._key is None:
            return pseudonym
        # the column is the lookup key: a keyed hash finds the row without storing the pseudonym
        return hmac.new(self._key, _ROW_PREFIX + pseudonym.encode(), hashlib.sha256).hexdigest()

    def _stored(self, pseudonym: str, level: ConsentLevel) -> str:
        """The ``level`` column's value: the sealed (pseudonym, level) with the key, else the
        level's name."""
        if self._key is None:
            return level.value
        doc = json.dumps({"p": pseudonym, "l": level.value}).encode()
        return base64.b64encode(seal(doc, self._key, aad=CONSENT_AAD)).decode()

    def _open(self, value: str, pseudonym: str | None = None) -> tuple[str | None, ConsentLevel]:
        """(pseudonym, level) a ``level`` column value holds: (None, level) for a plaintext one.

        Raises:
            SealedDataError: a sealed value without the key, one that does not decrypt, or one
                sealed for another pseudonym than `pseudonym` (a row copied over another).
        """
        if value in LEVEL_NAMES:
            return None, ConsentLevel(value)
        where = f"{self.path} (level column)"
        if self._key is None:
            raise SealedDataError(f"{where}: levels are sealed; give the sidecar key")
        try:
            raw = base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise SealedDataError(f"{where}: neither a level nor a sealed level") from None
        doc = json.loads(unseal(raw, self._key, aad=CONSENT_AAD, where=where))
        if pseudonym is not None and doc.get("p") != pseudonym:
            raise SealedDataError(f"{where}: a record sealed for another shopper (changed?)")
        return str(doc["p"]), parse_level(doc["l"])

    def _check_key(self, con: sqlite3.Connection) -> None:
        """Refuse a table of sealed rows without the key, or with another key.

        Rows are found by a keyed hash: without this check a wrong key would find no row and
        every shopper would silently get the default level.
        """
        names = sorted(LEVEL_NAMES)
        marks = ",".join("?" * len(names))
        q = f"SELECT level FROM consent WHERE level NOT IN ({marks}) LIMIT 1"
        row = con.execute(q, names).fetchone()
        if row is not None:
            self._open(row[0])

    def _seal_plaintext(self, con: sqlite3.Connection) -> None:
        """Seal the plaintext rows an older table holds (nothing to do without a key)."""
        if self._key is None:
            return
        names = sorted(LEVEL_NAMES)
        marks = ",".join("?" * len(names))
        q = f"SELECT rowid, pseudonym, level FROM consent WHERE level IN ({marks})"
        rows = con.execute(q, names).fetchall()
        con.executemany(
            "UPDATE consent SET pseudonym = ?, level = ? WHERE rowid = ?",
            [(self._row(p), self._stored(p, ConsentLevel(lv)), r) for r, p, lv in rows],
        )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one transaction (committed on success), always closed."""
        con = sqlite3.connect(self.path, timeout=30.0)
        try:
            con.execute("PRAGMA journal_mode=DELETE")  # no WAL side files left beside it
            # an erased record is overwritten in the file, not just unlinked from the b-tree
            con.execute("PRAGMA secure_delete=ON")
            with con:
                yield con
        finally:
            con.close()

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection, kept open between lookups.

        Opening a connection for each lookup was a tenth of a served request's CPU. A read
        holds no lock after it ends (every result is fetched whole, and Python's sqlite3 opens
        no transaction for a SELECT), so writers are never blocked and each read sees every
        committed change. A connection whose file was replaced (a restore) is reopened.
        """
        ino = os.stat(self.path).st_ino
        got: tuple[sqlite3.Connection, int] | None = getattr(self._readers, "con", None)
        if got is not None and got[1] == ino:
            return got[0]
        if got is not None:
            got[0].close()
        con = sqlite3.connect(self.path, timeout=30.0, check_same_thread=True)
        con.execute("PRAGMA query_only=ON")
        self._readers.con = (con, ino)
        return con

    def set(self, pseudonym: str, level: LevelLike, *, at: float | None = None) -> ConsentLevel:
        """Record the user's level (replacing any earlier one); returns the parsed level."""
        lv = parse_level(level)
        _check_pseudonym(pseudonym)
        with self._connect() as con:
            con.execute(
                "INSERT INTO consent (pseudonym, level, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(pseudonym) DO UPDATE "
                "SET level = excluded.level, updated = excluded.updated",
                (
                    self._row(pseudonym),
                    self._stored(pseudonym, lv),
                    float(time.time() if at is None else at),
                ),
            )
        return lv

    def get(self, pseudonym: str) -> ConsentLevel:
        """The user's level (the store's default when there is no record)."""
        rows = (
            self._reader()
            .execute("SELECT level FROM consent WHERE pseudonym = ?", (self._row(pseudonym),))
            .fetchall()
        )
        return self._open(rows[0][0], pseudonym)[1] if rows else self.default

    def levels(self, pseudonyms: Iterable[str]) -> dict[str, ConsentLevel]:
        """Levels of many users at once (defaults included), one query per 900 users."""
        ps = list(dict.fromkeys(pseudonyms))
        out = {p: self.default for p in ps}
        rows = {self._row(p): p for p in ps}
        keys = list(rows)
        con = self._reader()
        for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
            chunk = keys[i : i + 900]
            q = (
                "SELECT pseudonym, level FROM consent "
                f"WHERE pseudonym IN ({','.join('?' * len(chunk))})"
            )
            for r, lv in con.execute(q, chunk).fetchall():
                out[rows[r]] = self._open(lv, rows[r])[1]
        return out

    def record(self, pseudonym: str) -> dict[str, Any] | None:
        """The stored record of one user (level and time of the change, for access requests)."""
        with self._connect() as con:
            row = con.execute(
                "SELECT level, updated FROM consent WHERE pseudonym = ?", (self._row(pseudonym),)
            ).fetchone()
        if row is None:
            return None
        return {"level": self._open(row[0], pseudonym)[1].value, "updated": _iso(row[1])}

    def delete(self, pseudonym: str) -> bool:
        """Erase the user's record (part of `forget`); True if there was one."""
        with self._connect() as con:
            cur = con.execute("DELETE FROM consent WHERE pseudonym = ?", (self._row(pseudonym),))
            return cur.rowcount > 0

    def count(self) -> dict[str, int]:
        """How many users have each level recorded."""
        with self._connect() as con:
            rows = con.execute("SELECT level, COUNT(*) FROM consent GROUP BY level").fetchall()
        out: dict[str, int] = {}
        for value, n in rows:  # sealed values are all distinct: count them by what they open to
            lv = self._open(value)[1].value
            out[lv] = out.get(lv, 0) + int(n)
        return out

    def stage_rekey(
        self, rekey_many: Callable[[list[str]], list[str]], generation: int
    ) -> StagedConsentRekey:
        """Re-key every record's pseudonym in a transaction left open (a pseudonym key rotation).

        The table's ``pseudonym_generation`` marker is set to `generation` in the same
        transaction, so a rotation that stops half-way knows whether this table moved. A table
        already at `generation` gives an empty staging that changes nothing.

        Args:
            rekey_many: maps old pseudonyms to the new key's (`Pseudonymiser.rekey_many`).
            generation: the key generation after the rotation.

        Returns:
            The staged re-keying: `commit` makes it durable, `rollback` (or a crash) drops it.
        """
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=DELETE")
            con.execute("PRAGMA secure_delete=ON")  # the old pseudonyms are overwritten
            con.execute("BEGIN IMMEDIATE")  # no other writer until commit or rollback
            con.execute(
                "CREATE TABLE IF NOT EXISTS consent_meta (key TEXT PRIMARY KEY, value TEXT)"
            )
            row = con.execute(
                "SELECT value FROM consent_meta WHERE key = 'pseudonym_generation'"
            ).fetchone()
            if row is not None and int(row[0]) == generation:
                con.execute("ROLLBACK")
                con.close()
                return StagedConsentRekey(None, [])
            rows = con.execute("SELECT rowid, pseudonym, level FROM consent").fetchall()
            found = [(r, self._open(lv), p) for r, p, lv in rows]
            # a sealed row names its pseudonym inside; a plaintext one in the column
            old = [sp if sp is not None else p for _, (sp, _), p in found]
            if old:
                con.executemany(
                    "UPDATE consent SET pseudonym = ?, level = ? WHERE rowid = ?",
                    [
                        (self._row(new), self._stored(new, lv), r)
                        for (r, (_, lv), _), new in zip(found, rekey_many(old), strict=True)
                    ],
                )
            con.execute(
                "INSERT OR REPLACE INTO consent_meta VALUES ('pseudonym_generation', ?)",
                (str(int(generation)),),
            )
        except BaseException:
            with suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            con.close()
            raise
        return StagedConsentRekey(con, old)

    def _migrate(self, old: Path) -> None:
        """Move the levels of an older version's consent.json into the table; remove the file."""
        try:
            doc = json.loads(old.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return  # the usual case; or another process has just migrated it
        except ValueError:
            raise ValidationError(
                LEGACY_FILE, "is not valid JSON; restore it from a backup"
            ) from None
        if not isinstance(doc, dict):
            raise ValidationError(LEGACY_FILE, "is not a JSON object; restore it from a backup")
        rows = []
        for p, rec in doc.items():
            raw = rec.get("level") if isinstance(rec, dict) else rec
            try:
                lv = parse_level(str(raw))
            except ValidationError as e:
                raise ValidationError(LEGACY_FILE, e.problem) from None
            when = rec.get("updated_at") if isinstance(rec, dict) else None
            rows.append((self._row(str(p)), self._stored(str(p), lv), _parse_iso(when)))
        with self._connect() as con:
            # a record already in the table is newer than the file: it wins
            con.executemany(
                "INSERT OR IGNORE INTO consent (pseudonym, level, updated) VALUES (?, ?, ?)", rows
            )
        old.unlink(missing_ok=True)


class StagedConsentRekey:
    """A re-keying of the consent table held in an open SQLite transaction.

    Attributes:
        count: the records re-keyed.
        pseudonyms: their pseudonyms before the rotation.
    """

    def __init__(self, con: sqlite3.Connection | None, pseudonyms: list[str]) -> None:
        self._con = con
        self.pseudonyms = pseudonyms
        self.count = len(pseudonyms)

    def commit(self) -> None:
        """Make the re-keying durable (a no-op when nothing was staged)."""
        con, self._con = self._con, None
        if con is None:
            return
        try:
            con.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def rollback(self) -> None:
        """Drop the re-keying: the table keeps the old pseudonyms."""
        con, self._con = self._con, None
        if con is None:
            return
        try:
            with suppress(sqlite3.Error):
                con.execute("ROLLBACK")
        finally:
            con.close()


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _parse_iso(value: object) -> float:
    """Seconds since the epoch of a ``%Y-%m-%dT%H:%M:%SZ`` time; now when absent or unreadable."""
    if isinstance(value, str):
        try:
            return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
        except ValueError:
            pass
    return time.time()


def _check_pseudonym(p: str) -> None:
    if not isinstance(p, str) or not p or len(p) > 128:
        raise ValidationError(
            "pseudonym", "give the user's pseudonym (a hex string), never a raw id"
        )
