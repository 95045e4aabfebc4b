"""Event store maintenance: retention, erasure, consent downgrades and key rotation.

Each deletion runs in one transaction and, by default, ends with `compact()` so the deleted rows
leave no block behind in the file (see `privrec.events.store_file`). Re-keying after a pseudonym
key rotation can be staged (`stage_rekey`): the transaction stays open until the caller commits
it together with the other stores keyed by pseudonym, or rolls it back.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from privrec.core.errors import StoreError
from privrec.core.types import EVENT_TYPES
from privrec.events.store_file import StoreFile, first_line, scalar
from privrec.privacy.pseudonym import PSEUDONYM_HEX_LEN, Pseudonymiser

__all__ = ["StagedRekey", "StoreMaintenance"]

logger = logging.getLogger(__name__)

_HEX32 = re.compile(rf"[0-9a-f]{{{PSEUDONYM_HEX_LEN}}}")


class _Transactional(Protocol):
    """What a staged re-keying needs of its store: the connection and the store's lock."""

    _lock: Any

    def _conn(self) -> Any: ...


class StagedRekey:
    """A re-keying of an event store held in an open transaction (the embedded store's and,
    with `errors`/`describe` of its driver, the PostgreSQL store's).

    Nothing of it is visible to other connections or durable until `commit`; `rollback` (or a
    crash) leaves the store as it was. The store stays locked to other threads meanwhile, and
    the thread that staged it must finish it (the store's lock is re-entrant, per thread).

    Attributes:
        count: the events re-keyed.
        generation: the key generation the store holds after `commit`.
    """

    def __init__(
        self,
        store: _Transactional | None,
        count: int,
        generation: int,
        *,
        errors: tuple[type[BaseException], ...] = (duckdb.Error,),
        describe: Callable[[BaseException], str] = first_line,
    ) -> None:
        self._store = store
        self.count = count
        self.generation = generation
        self._errors = errors
        self._describe = describe

    def commit(self) -> None:
        """Make the re-keying durable.

        Raises:
            StoreError: the commit failed; the store holds the old pseudonyms.
        """
        store, self._store = self._store, None
        if store is None:
            return
        try:
            store._conn().execute("COMMIT")
        except self._errors as err:
            with contextlib.suppress(*self._errors):
                store._conn().execute("ROLLBACK")
            raise StoreError(
                f"rekey: commit failed, the store is unchanged ({self._describe(err)})"
            ) from None
        finally:
            store._lock.release()
        logger.info("rekey events=%d generation=%d", self.count, self.generation)

    def rollback(self) -> None:
        """Drop the re-keying: the store keeps the old pseudonyms (a no-op after `commit`)."""
        store, self._store = self._store, None
        if store is None:
            return
        try:
            with contextlib.suppress(StoreError, *self._errors):
                store._conn().execute("ROLLBACK")
        finally:
            store._lock.release()


class StoreMaintenance(StoreFile):
    """Deleting and re-keying stored events (the base of `privrec.events.store.EventStore`)."""

    # ---- deleting and re-keying -------------------------------------------------------------
    def retention(
        self,
        days: int | Mapping[str, int | None],
        now: float | None = None,
        *,
        compact: bool = True,
    ) -> int:
        """Delete events older than `days` (one limit, or per event type; None = keep forever).

        Args:
            days: a number of days for every type, or {type: days}; types not named are kept.
            now: the reference time (Unix seconds; default the current time).
            compact: rewrite the file afterwards so deleted rows leave no block behind.

        Returns:
            The number of events deleted.
        """
        deleted = 0
        with self._tx() as con:
            for where, params in retention_rule(days, now):
                deleted += scalar(con, f"DELETE FROM events WHERE {where}", params)
        logger.info("retention deleted=%d", deleted)
        if deleted and compact:
            self.compact()
        return int(deleted)

    def erase_user(self, pseudonym: str, *, compact: bool = True) -> int:
        """Delete every event of one pseudonymous user.

        Args:
            pseudonym: the user's pseudonym (the gate's output, not a raw id).
            compact: rewrite the file afterwards so the deleted rows leave no block behind
                (see the module docstring for what DuckDB does and does not guarantee).

        Returns:
            The number of events deleted.
        """
        if not isinstance(pseudonym, str) or not _HEX32.fullmatch(pseudonym):
            raise StoreError(
                "erase_user: pseudonym must be 32 hex characters (pseudonymise the raw id first)"
            )
        with self._tx() as con:
            deleted = scalar(con, 'DELETE FROM events WHERE "user" = ?', [pseudonym])
        if deleted and compact:
            self.compact()
        return int(deleted)

    def delete_events(self, pseudonym: str, types: Sequence[str], *, compact: bool = True) -> int:
        """Delete one pseudonymous user's events of the given types (a consent downgrade).

        Returns:
            The number of events deleted.
        """
        if not isinstance(pseudonym, str) or not _HEX32.fullmatch(pseudonym):
            raise StoreError(
                "delete_events: pseudonym must be 32 hex characters (pseudonymise the raw id first)"
            )
        unknown = sorted(set(types) - set(EVENT_TYPES))
        if unknown:
            raise StoreError(f"delete_events: {unknown[0]!r} is not an event type")
        if not types:
            return 0
        marks = ", ".join("?" for _ in types)
        with self._tx() as con:
            deleted = scalar(
                con,
                f'DELETE FROM events WHERE "user" = ? AND type IN ({marks})',
                [pseudonym, *types],
            )
        if deleted and compact:
            self.compact()
        return int(deleted)

    def stage_rekey(self, pseudonymiser: Pseudonymiser) -> StagedRekey:
        """Re-key stored user, session and event ids in a transaction left open.

        Every stored value v becomes `pseudonymiser.rekey(v)`, so the same raw user ingested
        afterwards maps onto the re-keyed pseudonym and an old file re-ingested gives only
        duplicates. A store already at the pseudonymiser's generation (a rotation that stopped
        after this store committed) gives an empty staging that changes nothing.

        Args:
            pseudonymiser: the rotated pseudonymiser (one generation above the store).

        Returns:
            The staged re-keying: call `commit` or `rollback` on this thread.

        Raises:
            StoreError: the store is not one generation behind `pseudonymiser` (nor at it), or
                the update failed (then nothing was changed).
        """
        gen = self.pseudonym_generation
        target = pseudonymiser.generation
        if gen == target:
            return StagedRekey(None, 0, target)
        if gen is not None and gen + 1 != target:
            raise StoreError(
                f"rekey: the store holds key generation {gen} but the pseudonymiser is at "
                f"generation {target}; re-key one rotation at a time"
            )
        self._lock.acquire()
        try:
            con = self._conn()
            con.execute("BEGIN TRANSACTION")
        except BaseException:
            self._lock.release()
            raise
        staged = StagedRekey(self, 0, target)
        try:
            staged.count = _rekey_rows(con, pseudonymiser)
            self._meta_set(con, "pseudonym_generation", str(target))
        except BaseException as err:
            staged.rollback()
            if isinstance(err, duckdb.Error):
                raise StoreError(
                    f"rekey: the update failed and was rolled back ({first_line(err)})"
                ) from None
            raise
        return staged

    def rekey(self, pseudonymiser: Pseudonymiser, *, compact: bool = True) -> int:
        """Re-key stored user, session and event ids after `Pseudonymiser.rotate`, atomically.

        `stage_rekey` committed at once; see there.

        Args:
            pseudonymiser: the rotated pseudonymiser (one generation above the store).
            compact: rewrite the file so the old pseudonyms leave no block behind.

        Returns:
            The number of events re-keyed.

        Raises:
            StoreError: the store is not exactly one generation behind `pseudonymiser`.
        """
        gen = self.pseudonym_generation
        if gen is not None and gen + 1 != pseudonymiser.generation:
            raise StoreError(
                f"rekey: the store holds key generation {gen} but the pseudonymiser is at "
                f"generation {pseudonymiser.generation}; re-key one rotation at a time"
            )
        staged = self.stage_rekey(pseudonymiser)
        staged.commit()
        if staged.count and compact:
            self.compact()
        return staged.count

    @property
    def pseudonym_generation(self) -> int | None:
        """The key generation of the stored pseudonyms (None before the first ingest)."""
        value = self.meta().get("pseudonym_generation")
        return None if value is None else int(value)


def _rekey_rows(con: duckdb.DuckDBPyConnection, pseudonymiser: Pseudonymiser) -> int:
    """Re-key every stored event's ids inside the caller's transaction; returns the rows."""
    old = (
        con.execute('SELECT rowid AS rid, event_id, "user", session FROM events').arrow().read_all()
    )
    n = int(old.num_rows)
    if not n:
        return 0
    new = pa.table(
        {
            "rid": old["rid"],
            "event_id": pa.array(
                pseudonymiser.rekey_many(old["event_id"].to_pylist()), type=pa.string()
            ),
            "user": _rekey_column(old["user"], pseudonymiser),
            "session": _rekey_column(old["session"], pseudonymiser),
        }
    )
    con.register("_rekeyed", new)
    try:
        con.execute(
            'UPDATE events SET event_id = r.event_id, "user" = r.user, session = r.session '
            "FROM _rekeyed AS r WHERE events.rowid = r.rid"
        )
    finally:
        con.unregister("_rekeyed")
    return n


def retention_rule(
    days: int | Mapping[str, int | None], now: float | None = None
) -> list[tuple[str, list[Any]]]:
    """The SQL conditions (one per limit) of a retention rule: what `retention` deletes.

    Raises:
        StoreError: an unknown event type or a bad number of days.
    """
    now = time.time() if now is None else float(now)
    limits: list[tuple[str | None, float]] = []
    if isinstance(days, Mapping):
        for t, d in days.items():
            if t not in EVENT_TYPES:
                raise StoreError(
                    f"retention: {t!r} is not an event type; use one of {', '.join(EVENT_TYPES)}"
                )
            if d is not None:
                limits.append((t, _check_days(d)))
    else:
        limits.append((None, _check_days(days)))
    out: list[tuple[str, list[Any]]] = []
    for etype, limit in limits:
        cutoff = now - limit * 86_400.0
        if etype is None:
            out.append(("ts < ?", [cutoff]))
        else:
            out.append(("type = ? AND ts < ?", [etype, cutoff]))
    return out


def _check_days(d: Any) -> float:
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not d >= 0:
        raise StoreError("retention: days must be a number >= 0")
    return float(d)


def _rekey_column(col: pa.ChunkedArray, p: Pseudonymiser) -> pa.Array:
    """Re-key the distinct non-null values of a pseudonym column (nulls stay null)."""
    enc = pc.dictionary_encode(col).combine_chunks()
    values = enc.dictionary.to_pylist()
    mapped = pa.array(p.rekey_many(values), type=pa.string())
    return pc.take(mapped, enc.indices)
