"""The event store's interface, and the factory that opens the configured implementation.

Two implementations satisfy `EventStoreAPI`:

- `privrec.events.store.EventStore`: one encrypted DuckDB file in the data directory (the
  default; needs no server).
- `privrec.events.pg_store.PgEventStore`: PostgreSQL, chosen by
  `PRIVREC_STORE_URL=postgresql://...` (`Settings.store_url`).

Both hold gated events only (pseudonymous users; the privacy gate runs before `append`), the
item catalogue and string metadata, and give the same frames with the same dtypes. The service
layer types against this protocol and opens the store through `open_store`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

import pandas as pd

from privrec.core.errors import ConfigError

if TYPE_CHECKING:
    from privrec.privacy.pseudonym import Pseudonymiser

__all__ = ["EventStoreAPI", "StagedRekeyAPI", "is_postgres_url", "open_store"]

_PG_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


@runtime_checkable
class StagedRekeyAPI(Protocol):
    """A re-keying held in an open transaction: durable after `commit`, dropped by `rollback`."""

    count: int
    generation: int

    def commit(self) -> None:
        """Make the re-keying durable."""

    def rollback(self) -> None:
        """Drop the re-keying (a no-op after `commit`)."""


@runtime_checkable
class EventStoreAPI(Protocol):
    """What the service layer and ingestion call on an event store.

    Attributes:
        data_dir: the privrec data directory (rejects files and other sidecars live there,
            whichever database holds the events).
    """

    data_dir: Path

    # ---- metadata and key generation ------------------------------------------------------
    def bind_generation(self, generation: int) -> None:
        """Check (or record, for an empty store) the key generation of the pseudonyms."""

    def set_meta(self, key: str, value: str) -> None:
        """Record one metadata value."""

    def meta(self) -> dict[str, str]:
        """The store's metadata."""
        ...

    @property
    def pseudonym_generation(self) -> int | None:
        """The key generation of the stored pseudonyms (None before the first ingest)."""
        ...

    # ---- writing ------------------------------------------------------------------------------
    def append(self, frame: pd.DataFrame) -> tuple[int, int]:
        """Insert gated events idempotently; returns (inserted, duplicates)."""
        ...

    def upsert_items(self, frame: pd.DataFrame) -> int:
        """Insert or replace catalogue rows by item; returns the distinct items written."""
        ...

    # ---- reading ------------------------------------------------------------------------------
    def count(self) -> int:
        """Number of stored events."""
        ...

    def events(self, user: str | None = None) -> pd.DataFrame:
        """All events, or one pseudonym's, ordered by time (ties in arrival order)."""
        ...

    def expired(
        self, days: int | Mapping[str, int | None], now: float | None = None
    ) -> pd.DataFrame:
        """The events `retention(days, now)` would delete."""
        ...

    def users(self) -> list[str]:
        """The distinct pseudonyms with stored events, sorted."""
        ...

    def daily_counts(self, days: int = 30) -> pd.DataFrame:
        """Events per UTC day and type over the `days` days ending at the last event's day
        (columns date, type, count), aggregated in the database."""
        ...

    def items(self) -> pd.DataFrame:
        """The item catalogue, ordered by item."""
        ...

    def export_parquet(self, path: str | Path) -> int:
        """Write all events to a Parquet file; returns the number written."""
        ...

    # ---- deleting and re-keying -------------------------------------------------------------
    def retention(
        self,
        days: int | Mapping[str, int | None],
        now: float | None = None,
        *,
        compact: bool = True,
    ) -> int:
        """Delete events older than `days`; returns the number deleted."""
        ...

    def erase_user(self, pseudonym: str, *, compact: bool = True) -> int:
        """Delete every event of one pseudonym; returns the number deleted."""
        ...

    def delete_events(self, pseudonym: str, types: Sequence[str], *, compact: bool = True) -> int:
        """Delete one pseudonym's events of the given types; returns the number deleted."""
        ...

    def stage_rekey(self, pseudonymiser: Pseudonymiser) -> StagedRekeyAPI:
        """Re-key stored ids in a transaction left open for the caller to commit."""
        ...

    def rekey(self, pseudonymiser: Pseudonymiser, *, compact: bool = True) -> int:
        """Re-key stored ids atomically; returns the number of events re-keyed."""
        ...

    def compact(self) -> None:
        """Reclaim the space of deleted rows (what this guarantees depends on the engine)."""

    # ---- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Release the store (idempotent)."""

    @property
    def closed(self) -> bool:
        """Whether `close` has been called."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def is_postgres_url(url: str | None) -> bool:
    """Whether `url` names a PostgreSQL database (postgresql:// or postgres://)."""
    return bool(url) and str(url).startswith(_PG_SCHEMES)


def open_store(
    data_dir: str | Path,
    *,
    store_url: str | None = None,
    key: str | bytes | None = None,
    key_dir: str | Path | None = None,
) -> EventStoreAPI:
    """Open the configured event store.

    Args:
        data_dir: the privrec data directory.
        store_url: None or empty for the embedded, encrypted DuckDB store in `data_dir`;
            `postgresql://...` for PostgreSQL.
        key: the DuckDB store key (ignored for PostgreSQL: encrypt its volume instead).
        key_dir: where the DuckDB store's key file lives.

    Raises:
        ConfigError: `store_url` is neither empty nor a PostgreSQL URL.
        StoreError: the store cannot be opened.
    """
    if not store_url:
        from privrec.events.store import EventStore

        return EventStore.open(data_dir, key=key, key_dir=key_dir)
    if is_postgres_url(store_url):
        from privrec.events.pg_store import PgEventStore

        return PgEventStore.open(store_url, data_dir=data_dir)
    raise ConfigError(
        "store_url: must be empty (the embedded store) or start with postgresql://; got a "
        f"URL with scheme {str(store_url).split(':', 1)[0]!r}"
    )
