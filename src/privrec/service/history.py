"""Serving memory: every shopper's history by pseudonym, and the cache of finished lists.

A shopper's lists are cached under their history generation, which changes with each new event,
consent change or erasure, so exactly that shopper's lists are invalidated.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.types import EVENT_CODE
from privrec.events.store_api import EventStoreAPI

# Above this many events a server reads histories on demand instead of preloading them.
PRELOAD_MAX_EVENTS = 5_000_000
_MAX_ON_DEMAND_USERS = 200_000


class HistoryIndex:
    """Every user's events in memory by pseudonym (item keys and type codes, oldest first), the
    number of distinct users per item, and a generation per user that changes with their data."""

    def __init__(self) -> None:
        self._users: dict[str, tuple[list[str], list[int]]] = {}
        self._gen: dict[str, int] = {}
        self._pop: dict[str, int] = {}
        self._lock = threading.Lock()
        self._store: EventStoreAPI | None = None
        self.preloaded = False
        self.loaded = False
        self.n_events = 0

    @property
    def n_users(self) -> int:
        """Users held in memory."""
        return len(self._users)

    def load(self, store: EventStoreAPI, *, preload_max_events: int = PRELOAD_MAX_EVENTS) -> None:
        """Read every history from the store (or, above the limit, read users on demand)."""
        with self._lock:
            if self.loaded:
                return
            self._store = store
            n = store.count()
            if n <= preload_max_events:
                ev = store.events()
                codes = ev["type"].map(EVENT_CODE).fillna(0).astype(np.int8).to_numpy()
                users = ev["user"].astype(str).to_numpy(dtype=object)
                items = ev["item"].astype(str).to_numpy(dtype=object)
                ucodes, uniq = pd.factorize(users)
                order = np.argsort(ucodes, kind="stable")
                bounds = np.searchsorted(ucodes[order], np.arange(len(uniq) + 1))
                for u, p in enumerate(uniq):
                    sel = order[bounds[u] : bounds[u + 1]]
                    keys = items[sel].tolist()
                    self._users[str(p)] = (keys, codes[sel].tolist())
                    for k in set(keys):
                        self._pop[k] = self._pop.get(k, 0) + 1
                self.n_events = len(ev)
                self.preloaded = True
            else:
                counts = store.events().groupby("item")["user"].nunique()
                self._pop = {str(k): int(v) for k, v in counts.items()}
                self.n_events = n
            self.loaded = True

    def get(self, pseudonym: str) -> tuple[list[str], list[int]]:
        """(item keys, type codes) of a pseudonym; empty lists for an unknown one."""
        got = self._users.get(pseudonym)
        if got is not None:
            return got
        if self.preloaded or self._store is None:
            return [], []
        ev = self._store.events(user=pseudonym)
        got = (
            ev["item"].astype(str).tolist(),
            ev["type"].map(EVENT_CODE).fillna(0).astype(int).tolist(),
        )
        with self._lock:
            if len(self._users) > _MAX_ON_DEMAND_USERS:
                self._users.pop(next(iter(self._users)))
            self._users[pseudonym] = got
        return got

    def add(self, accepted: pd.DataFrame) -> None:
        """Append gated events (pseudonymous users) and invalidate those users' cached lists."""
        users = accepted["user"].astype(str).tolist()
        items = accepted["item"].astype(str).tolist()
        types = accepted["type"].map(EVENT_CODE).fillna(0).astype(int).tolist()
        with self._lock:
            for p, it, t in zip(users, items, types, strict=True):
                got = self._users.get(p)
                if got is None:
                    if not self.preloaded and self._store is not None:
                        self._gen[p] = (
                            self._gen.get(p, 0) + 1
                        )  # read again from the store next time
                        continue
                    got = self._users[p] = ([], [])
                if it not in got[0]:
                    self._pop[it] = self._pop.get(it, 0) + 1
                got[0].append(it)
                got[1].append(t)
                self._gen[p] = self._gen.get(p, 0) + 1
            self.n_events += len(users)

    def drop(self, pseudonym: str) -> bool:
        """Forget a pseudonym's history; returns whether anything was held."""
        with self._lock:
            got = self._users.pop(pseudonym, None)
            self._gen[pseudonym] = self._gen.get(pseudonym, 0) + 1
            if got is None:
                return False
            for k in set(got[0]):
                self._pop[k] = max(0, self._pop.get(k, 0) - 1)
            self.n_events -= len(got[0])
            return True

    def replace(self, pseudonym: str, keys: list[str], types: list[int]) -> None:
        """Set a pseudonym's whole history (read again from the store after another process
        changed it; empty lists: none left) and invalidate their cached lists. Only for a
        loaded index: an unloaded one reads everything when it loads."""
        with self._lock:
            if not self.loaded:
                return
            old = self._users.pop(pseudonym, None)
            if old is not None:
                for k in set(old[0]):
                    self._pop[k] = max(0, self._pop.get(k, 0) - 1)
                self.n_events -= len(old[0])
            if keys and (self.preloaded or old is not None):  # on demand: read on next use
                self._users[pseudonym] = (list(keys), list(types))
                for k in set(keys):
                    self._pop[k] = self._pop.get(k, 0) + 1
                self.n_events += len(keys)
            self._gen[pseudonym] = self._gen.get(pseudonym, 0) + 1

    def bump(self, pseudonym: str) -> None:
        """Invalidate a pseudonym's cached lists (consent changed)."""
        with self._lock:
            self._gen[pseudonym] = self._gen.get(pseudonym, 0) + 1

    def generation(self, pseudonym: str) -> int:
        """Changes whenever the pseudonym's data or consent changes."""
        return self._gen.get(pseudonym, 0)

    def popularity_for(self, keys: list[str]) -> np.ndarray:
        """Distinct users per item key."""
        pop = self._pop
        return np.fromiter((pop.get(k, 0) for k in keys), dtype=np.float64, count=len(keys))


class Peers:
    """Who else must hear when this process changes its serving memory: the other API workers
    of a shared store. This no-op is the one-process case; `privrec.service.coordination`'s
    `Coordinator` tells the other workers (PostgreSQL LISTEN/NOTIFY)."""

    def shoppers(self, pseudonyms: list[str], why: str) -> None:
        """These shoppers' events, consent or erasure changed (`why`: events, consent, erase)."""

    def histories(self) -> None:
        """Every history changed (a bulk ingest, retention, a key rotation)."""

    def catalogue(self) -> None:
        """The catalogue changed (titles, prices, stock, deleted items)."""


class ListCache:
    """A bounded LRU of finished recommendation lists (0 entries: off)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._d: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Any, ...]) -> Any:
        """The cached value of `key`, or None (counted as a hit or a miss)."""
        got = self._d.get(key)
        if got is None:
            self.misses += 1
            return None
        self.hits += 1
        return got

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        """Cache `value`, evicting the least recently stored entry when full."""
        if self.max_entries <= 0:
            return
        with self._lock:
            self._d[key] = value
            if len(self._d) > self.max_entries:
                self._d.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._d.clear()

    def __len__(self) -> int:
        return len(self._d)
