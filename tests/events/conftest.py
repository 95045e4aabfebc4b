"""Each event store implementation in turn for the store tests.

`store_url`, `pg_url` and `pg_server` (a throwaway PostgreSQL cluster from the Debian binaries;
the PostgreSQL cases skip with a clear message without them) live in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from privrec.events.store_api import EventStoreAPI


@pytest.fixture()
def open_event_store(store_url: str | None, data_dir: Path) -> Callable[[], EventStoreAPI]:
    """Opens the parametrised store over `data_dir` (call it as you would EventStore.open)."""
    from privrec.events.store_api import open_store

    return lambda: open_store(data_dir, store_url=store_url)
