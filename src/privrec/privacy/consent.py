"""The consent policy: the one place that says what each consent level allows.

Levels (design.md, "Privacy semantics"):

- ``personalized`` (the default): every event type is stored and used for the user's
  recommendations; they take part in experiments.
- ``purchases_only``: only ``purchase`` events are stored (views, searches, carts, favourites and
  ratings are dropped at the gate) and only purchases are used, also those stored before the
  user lowered their level. Results are personalised from the purchases.
- ``anonymous``: no event is stored and none is used; the user is served non-personalised
  results (the DP popularity) and is not enrolled in experiments. Only the consent record itself
  is kept, because the gate must remember the choice.

A change applies to the next request: `ConsentStore` reads the table on every call (no cache
here). Raw user ids never reach this module: callers pseudonymise first.

How the service uses it:

    store = ConsentStore.open(data_dir)           # migrates an older consent.json once
    levels = store.levels(pseudonyms)             # one query per chunk, defaults included
    mask = keeps(level_per_row, event_types)      # which rows the gate may store
    history = history[uses(level, history.event_types)]   # what serving may use
    if not personalised(level): serve the DP popularity
    if enrolled_in_experiments(level): assign a variant
    store.delete(pseudonym)                       # part of erasure (forget)

Given the sidecar key (`ConsentStore.open(data_dir, key=...)`; the service always gives it), a
row holds HMAC-SHA256(key, pseudonym) as its lookup key and, in the ``level`` column, the sealed
JSON ``{"p": pseudonym, "l": level}`` (base64 of AES-256-GCM with a fresh nonce each, so equal
levels do not look equal). Plaintext rows of older tables are sealed when the store is opened
with the key. The time of the change stays readable.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from privrec.core.errors import ValidationError
from privrec.core.files import ensure_private
from privrec.core.types import EVENT_CODE, EVENT_TYPES
from privrec.privacy.sealed import SealedDataError, seal, unseal

CONSENT_FILE = "consent.sqlite"
LEGACY_FILE = "consent.json"  # where versions before the consent table kept the levels
CONSENT_AAD = b"privrec:consent-record"
_ROW_PREFIX = b"privrec:consent-row:"


class ConsentLevel(StrEnum):
    """A user's consent level (its value is what is stored and what the API shows)."""

    PERSONALIZED = "personalized"
    PURCHASES_ONLY = "purchases_only"
    ANONYMOUS = "anonymous"


DEFAULT_LEVEL = ConsentLevel.PERSONALIZED
LEVELS: tuple[ConsentLevel, ...] = tuple(ConsentLevel)
_LEVEL_NAMES = frozenset(lv.value for lv in ConsentLevel)

LevelLike = ConsentLevel | str


@dataclass(frozen=True)
class LevelPolicy:
    """What one consent level allows.

    Attributes:
        stored: event types the gate may store for the user.
        served: event types serving and training may use, whenever they were stored.
        personalised: whether results come from the user's own history.
        experiments: whether the user is enrolled in A/B experiments.
    """

    stored: frozenset[str]
    served: frozenset[str]
    personalised: bool
    experiments: bool


class LevelText(NamedTuple):
    """What the pages and the API say about a level."""

    title: str
    description: str


_PURCHASE = frozenset({"purchase"})
_NOTHING: frozenset[str] = frozenset()

# served equals stored at every level: events kept under an earlier, wider level are not used
# once the user lowers it (they stay stored until retention or erasure removes them).
POLICY: Mapping[ConsentLevel, LevelPolicy] = MappingProxyType(
    {
        ConsentLevel.PERSONALIZED: LevelPolicy(
            frozenset(EVENT_TYPES), frozenset(EVENT_TYPES), personalised=True, experiments=True
        ),
        ConsentLevel.PURCHASES_ONLY: LevelPolicy(
            _PURCHASE, _PURCHASE, personalised=True, experiments=True
        ),
        ConsentLevel.ANONYMOUS: LevelPolicy(
            _NOTHING, _NOTHING, personalised=False, experiments=False
        ),
    }
)

LEVEL_TEXTS: Mapping[ConsentLevel, LevelText] = MappingProxyType(
    {
        ConsentLevel.PERSONALIZED: LevelText(
            "Personalised",
            "Everything you do in the shop (views, searches, carts, favourites, ratings and "
            "purchases) is stored and used for your recommendations.",
        ),
        ConsentLevel.PURCHASES_ONLY: LevelText(
            "Purchases only",
            "Only your purchases are stored and used for your recommendations; nothing else you "
            "do is kept.",
        ),
        ConsentLevel.ANONYMOUS: LevelText(
            "Anonymous",
            "Nothing more about you is stored or used, and you see popular items instead of "
            "personal recommendations.",
        ),
    }
)


def parse_level(level: LevelLike) -> ConsentLevel:
    """The ConsentLevel named by `level` (case and surrounding blanks ignored).

    Raises:
        ValidationError: on the field ``level``, listing the levels, for any other value.
    """
    if isinstance(level, ConsentLevel):
        return level
    try:
        return ConsentLevel(str(level).strip().lower())
    except ValueError:
        allowed = ", ".join(v.value for v in ConsentLevel)
        raise ValidationError(
            "level", f"{level!r} is not a consent level; use one of {allowed}"
        ) from None


def policy(level: LevelLike) -> LevelPolicy:
    """Everything `level` allows."""
    return POLICY[parse_level(level)]


def allowed_types(level: LevelLike) -> frozenset[str]:
    """The event types the gate may store for a user at this level."""
    return policy(level).stored


def served_types(level: LevelLike) -> frozenset[str]:
    """The event types serving and training may use for a user at this level."""
    return policy(level).served


def personalised(level: LevelLike) -> bool:
    """Whether the user is served from their own history (False: serve the DP popularity)."""
    return policy(level).personalised


def enrolled_in_experiments(level: LevelLike) -> bool:
    """Whether the user may be assigned to an experiment's variant."""
    return policy(level).experiments


def describe(level: LevelLike) -> dict[str, str]:
    """The level, its title and its one-sentence description, JSON-ready."""
    lv = parse_level(level)
    text = LEVEL_TEXTS[lv]
    return {"level": lv.value, "title": text.title, "description": text.description}


def keeps(level: LevelLike | Sequence[LevelLike] | np.ndarray, types: Any) -> np.ndarray:
    """Which events the gate may store: a boolean mask over `types`.

    Args:
        level: one level for every event, or one level per event (same length as `types`).
        types: event types as strings, or as the integer codes of ``EVENT_CODE``.
            An unknown type is never kept.
    """
    return _mask(_STORED, level, types)


def uses(level: LevelLike | Sequence[LevelLike] | np.ndarray, types: Any) -> np.ndarray:
    """Which stored events serving and training may use: a boolean mask over `types`.

    Args:
        level: one level for every event, or one level per event (same length as `types`).
        types: event types as strings, or as the integer codes of ``EVENT_CODE``
            (``UserHistory.event_types``). An unknown type is never used.
    """
    return _mask(_SERVED, level, types)


def _table(field: str) -> np.ndarray:
    """[level, type code] -> allowed; one extra last column (all False) for unknown types."""
    table = np.zeros((len(LEVELS), len(EVENT_TYPES) + 1), dtype=bool)
    for i, lv in enumerate(LEVELS):
        for t in getattr(POLICY[lv], field):
            table[i, EVENT_CODE[t]] = True
    table.setflags(write=False)
    return table


_STORED = _table("stored")
_SERVED = _table("served")
_LEVEL_INDEX = {lv: i for i, lv in enumerate(LEVELS)}
_UNKNOWN = len(EVENT_TYPES)


def _type_codes(types: Any) -> np.ndarray:
    """EVENT_CODE of each type (strings or codes); the unknown column for anything else."""
    t = np.asarray(types).reshape(-1)
    if t.dtype.kind in "iu":
        codes = t.astype(np.int64)
        return np.where((codes >= 0) & (codes < _UNKNOWN), codes, _UNKNOWN)
    codes = np.full(t.shape, _UNKNOWN, dtype=np.int64)
    if t.dtype.kind in "OUS" and t.size:
        # one vectorised comparison per event type, not a Python step per event
        for name, code in EVENT_CODE.items():
            codes[t == name] = code
    return codes


def _level_rows(level: Sequence[LevelLike] | np.ndarray) -> np.ndarray:
    """Index into LEVELS of each per-event level; ValidationError for an unknown one."""
    lv = np.asarray(level, dtype=object).reshape(-1)
    rows = np.full(lv.shape, -1, dtype=np.int64)
    for i, name in enumerate(LEVELS):
        rows[lv == name.value] = i  # a ConsentLevel member equals its value
    bad = np.flatnonzero(rows < 0)
    if bad.size:
        parse_level(lv[bad[0]])  # a level in another spelling ("Anonymous") still counts
        rows[bad] = [_LEVEL_INDEX[parse_level(x)] for x in lv[bad]]
    return rows


def _mask(
    table: np.ndarray, level: LevelLike | Sequence[LevelLike] | np.ndarray, types: Any
) -> np.ndarray:
    codes = _type_codes(types)
    if isinstance(level, str):
        return np.asarray(table[_LEVEL_INDEX[parse_level(level)]][codes], dtype=bool)
    rows = _level_rows(level)
    if rows.shape != codes.shape:
        raise ValueError(f"{len(rows)} levels for {len(codes)} event types; give one per event")
    return np.asarray(table[rows, codes], dtype=bool)


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
        if value in _LEVEL_NAMES:
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
        names = sorted(_LEVEL_NAMES)
        marks = ",".join("?" * len(names))
        q = f"SELECT level FROM consent WHERE level NOT IN ({marks}) LIMIT 1"
        row = con.execute(q, names).fetchone()
        if row is not None:
            self._open(row[0])

    def _seal_plaintext(self, con: sqlite3.Connection) -> None:
        """Seal the plaintext rows an older table holds (nothing to do without a key)."""
        if self._key is None:
            return
        names = sorted(_LEVEL_NAMES)
        marks = ",".join("?" * len(names))
        q = f"SELECT rowid, pseudonym, level FROM consent WHERE level IN ({marks})"
        rows = con.execute(q, names).fetchall()
        con.executemany(
            "UPDATE consent SET pseudonym = ?, level = ? WHERE rowid = ?",
            [(self._row(p), self._stored(p, ConsentLevel(lv)), r) for r, p, lv in rows],
        )

    @classmethod
    def from_data_dir(cls, data_dir: str | Path) -> ConsentStore:
        """Same as `open` (the name the service used before `open`)."""
        return cls.open(data_dir)

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
        with self._connect() as con:
            row = con.execute(
                "SELECT level FROM consent WHERE pseudonym = ?", (self._row(pseudonym),)
            ).fetchone()
        return self._open(row[0], pseudonym)[1] if row else self.default

    def levels(self, pseudonyms: Iterable[str]) -> dict[str, ConsentLevel]:
        """Levels of many users at once (defaults included), one query per 900 users."""
        ps = list(dict.fromkeys(pseudonyms))
        out = {p: self.default for p in ps}
        rows = {self._row(p): p for p in ps}
        keys = list(rows)
        with self._connect() as con:
            for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
                chunk = keys[i : i + 900]
                q = (
                    "SELECT pseudonym, level FROM consent "
                    f"WHERE pseudonym IN ({','.join('?' * len(chunk))})"
                )
                for r, lv in con.execute(q, chunk):
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
