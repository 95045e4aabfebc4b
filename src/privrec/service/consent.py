"""Consent as the service applies it: one cached view of the consent store for every path.

The policy itself (levels, which event types each keeps, what each is served) lives in
`privrec.privacy.consent`; this module only looks levels up fast and applies that policy to
event frames and histories, so ingestion, training and serving cannot disagree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privrec.privacy import consent as policy
from privrec.privacy.consent_store import ConsentStore

_MAX_CACHED = 500_000


class ConsentBook:
    """Consent levels by pseudonym: the consent store behind a cache that every change updates.

    Args:
        data_dir: the data directory that holds the consent store.
        key: the sidecar key that seals the stored levels (None: plaintext levels).
    """

    def __init__(self, data_dir: Path, *, key: bytes | None = None) -> None:
        self._data_dir = data_dir
        self._key = key
        self._opened: ConsentStore | None = None
        self._cache: dict[str, policy.ConsentLevel] = {}
        self._lock = threading.Lock()

    @property
    def _store(self) -> ConsentStore:
        # opened on first use: no error if it cannot be opened and is never needed, and an
        # error (never a silent default level) when it is
        if self._opened is None:
            self._opened = ConsentStore.open(self._data_dir, key=self._key)
        return self._opened

    def level(self, pseudonym: str) -> policy.ConsentLevel:
        """The level of one pseudonym (the hot path of every request: a dict lookup)."""
        got = self._cache.get(pseudonym)
        return got if got is not None else self.levels([pseudonym])[pseudonym]

    def levels(self, pseudonyms: list[str]) -> dict[str, policy.ConsentLevel]:
        """Levels of many pseudonyms: cached ones, the others in one query (then cached)."""
        out = {p: lv for p in pseudonyms if (lv := self._cache.get(p)) is not None}
        missing = [p for p in dict.fromkeys(pseudonyms) if p not in out]
        if missing:
            got = self._store.levels(missing)
            with self._lock:
                if len(self._cache) + len(missing) > _MAX_CACHED:
                    self._cache.clear()
                for p in missing:
                    out[p] = self._cache[p] = got.get(p) or policy.DEFAULT_LEVEL
        return out

    def set(self, pseudonym: str, level: str | policy.ConsentLevel) -> policy.ConsentLevel:
        """Store a new level (validated); returns the previous one."""
        new = policy.parse_level(level)
        previous = self.level(pseudonym)
        self._store.set(pseudonym, new)
        with self._lock:
            self._cache[pseudonym] = new
        return previous

    def invalidate(self, pseudonym: str | None = None) -> None:
        """Read a pseudonym's level (None: every level) from the store again on next use:
        another API worker changed it."""
        with self._lock:
            if pseudonym is None:
                self._cache.clear()
            else:
                self._cache.pop(pseudonym, None)

    def record(self, pseudonym: str) -> dict[str, Any] | None:
        """The stored consent record (level and time of the change), or None."""
        return self._store.record(pseudonym)

    def delete(self, pseudonym: str) -> bool:
        """Delete a pseudonym's consent record (erasure); returns whether one existed."""
        with self._lock:
            self._cache.pop(pseudonym, None)
        return self._store.delete(pseudonym)

    def frame_filter(self, *, use: bool = False) -> Callable[[pd.DataFrame], np.ndarray]:
        """Which rows of a gated event frame their users' consent lets the store keep.

        With `use=True`: which stored rows training may use (events kept under an earlier,
        wider level are not used once the user lowers it). The levels are read when a frame is
        checked, so a change applies to the next batch.
        """
        mask = policy.uses if use else policy.keeps

        def keep(frame: pd.DataFrame) -> np.ndarray:
            users = frame["user"].astype(str)
            levels = self.levels(pd.unique(users).tolist())
            if all(lv == policy.DEFAULT_LEVEL for lv in levels.values()):
                return np.ones(len(frame), dtype=bool)  # the common case: nothing to look up
            of_user = users.map(levels).to_numpy(dtype=object)
            return mask(of_user, frame["type"].astype(str).to_numpy(dtype=object))

        return keep

    def usable(self, events: pd.DataFrame) -> pd.DataFrame:
        """The stored `events` that their users' current consent lets training use."""
        if not len(events):
            return events
        return events[self.frame_filter(use=True)(events)].reset_index(drop=True)
