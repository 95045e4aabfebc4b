"""Shoppers' search-query embeddings, sealed at rest: the content models' query signal.

"Query embeddings are kept; query text only where the shop opts in." When a shopper who
consented to personalisation searches, the query's embedding is kept here (no event is stored
then: a search chooses nothing), so `UserHistory.query_embeddings` can use it. When they act on
a result (an outcome with the search list's `recommendation_id`), the search is stored as a
`search` event naming the item they chose (`SearchIndexes.record_choices`); where the shop keeps
query text (`keep_query_text`), the entry holds it until then.

Layout: one sealed file per pseudonym, `<data_dir>/search/queries/g<generation>-<name>.sealed`,
where `name` is a keyed hash of the pseudonym (HMAC-SHA256 with the sidecar key), so a file name
says nothing about who searched, and `generation` is the pseudonym key's generation (how many
rotations it has had). The file is AES-256-GCM sealed (`privacy.sealed`, its name authenticated)
and holds an `.npz` (no pickle) of the searches' list ids (`recommendation_id`), their times,
the float32 unit vectors and the kept query texts ("" when not kept), newest last, at most
`MAX_PER_SHOPPER`.

An entry has its own expiry, like the events it stands beside:

- erasure (`forget`) and a consent level without personalisation delete the shopper's file;
- retention (`expire`) applies the rule of the `search` events (one limit, or the per-type one);
- `sweep` (after retention, a consent change, a key rotation or a bulk ingest) deletes every
  file of another key generation: a rotation re-keys pseudonyms, so query embeddings are
  re-learnt from new searches rather than carried across keys. Files of the older layout
  (entries tied to a stored search event that named the first item found) are dropped too.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from privrec.core.files import private_dir
from privrec.events.store_api import EventStoreAPI
from privrec.privacy.sealed import FILE_SUFFIX, read_sealed, write_sealed

__all__ = ["MAX_PER_SHOPPER", "QueryMemory"]

logger = logging.getLogger(__name__)

MAX_PER_SHOPPER = 50  # older searches say little next to recent ones; bounds the file
_CACHE = 10_000  # shoppers' vectors held in memory
_NAME_DOMAIN = b"privrec:query-embeddings:"
_DAY = 86_400.0

# one file's entries: list ids, times, vectors (rows), kept query texts ("" when not kept)
Entries = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class QueryMemory:
    """Sealed per-shopper query embeddings under `<data_dir>/search/queries`.

    Args:
        data_dir: the data directory.
        key: the sidecar key (32 bytes) that seals the files and keys their names.
        generation: the pseudonym key's current generation (None: always 0).
    """

    def __init__(
        self, data_dir: Path, key: bytes, *, generation: Callable[[], int] | None = None
    ) -> None:
        self.directory = Path(data_dir) / "search" / "queries"
        self._key = key
        self._generation = generation or (lambda: 0)
        self._lock = threading.RLock()
        self._names: set[str] | None = None  # files on disk (listed once)
        self._cache: OrderedDict[str, Entries] = OrderedDict()

    # ---- files -----------------------------------------------------------------------------
    def _prefix(self) -> str:
        return f"g{int(self._generation())}-"

    def _name(self, pseudonym: str) -> str:
        mac = hmac.new(self._key, _NAME_DOMAIN + pseudonym.encode(), hashlib.sha256)
        return self._prefix() + mac.hexdigest()[:32]

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}{FILE_SUFFIX}"

    def _known(self) -> set[str]:
        if self._names is None:
            names = (
                {p.name[: -len(FILE_SUFFIX)] for p in self.directory.glob(f"*{FILE_SUFFIX}")}
                if self.directory.is_dir()
                else set()
            )
            # another key generation's files (an interrupted rotation) or the older layout's:
            # no current pseudonym reaches them, so an erasure could not either; they go now
            prefix = self._prefix()
            for name in [n for n in names if not n.startswith(prefix)]:
                self._path(name).unlink(missing_ok=True)
                names.discard(name)
            self._names = names
        return self._names

    def _read(self, name: str) -> Entries:
        got = self._cache.get(name)
        if got is not None:
            return got
        raw = read_sealed(self._path(name), self._key)
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            got = (
                z["ids"].astype(str),
                z["ts"].astype(np.float64),
                z["vectors"],
                z["queries"].astype(str),
            )
        self._remember(name, got)
        return got

    def _remember(self, name: str, got: Entries) -> None:
        self._cache[name] = got
        self._cache.move_to_end(name)
        while len(self._cache) > _CACHE:
            self._cache.popitem(last=False)

    def _write(self, name: str, entries: Entries) -> None:
        ids, ts, vectors, queries = entries
        if not len(ids):
            self._delete(name)
            return
        got = (ids.astype(str), ts.astype(np.float64), vectors, queries.astype(str))
        buf = io.BytesIO()
        np.savez(buf, ids=got[0], ts=got[1], vectors=got[2], queries=got[3])
        private_dir(self.directory)
        write_sealed(self._path(name), buf.getvalue(), self._key)
        self._known().add(name)
        self._remember(name, got)

    def _delete(self, name: str) -> bool:
        self._cache.pop(name, None)
        self._known().discard(name)
        path = self._path(name)
        if path.exists():
            path.unlink()
            return True
        return False

    def reread(self, pseudonym: str | None = None) -> None:
        """Drop what this process holds of one shopper's entries (None: everyone's), so they are
        read from disk again: another API worker changed them."""
        with self._lock:
            if pseudonym is None:
                self._names = None
                self._cache.clear()
                return
            name = self._name(pseudonym)
            self._cache.pop(name, None)
            if self._names is not None:
                if self._path(name).exists():
                    self._names.add(name)
                else:
                    self._names.discard(name)

    # ---- the shopper's entries ---------------------------------------------------------------
    def add(
        self,
        pseudonym: str,
        search_id: str,
        ts: float,
        vector: np.ndarray,
        *,
        query: str | None = None,
    ) -> None:
        """Keep the embedding of one search (the oldest beyond the cap go).

        Args:
            pseudonym: the shopper.
            search_id: the search list's id (its `recommendation_id`).
            ts: when the search was made (Unix seconds).
            vector: the query's embedding.
            query: the query text, only where the shop keeps query text (None: not kept).
        """
        vec = np.asarray(vector, np.float32).reshape(1, -1)
        with self._lock:
            name = self._name(pseudonym)
            if name in self._known():
                ids, times, vecs, texts = self._read(name)
                if vecs.shape[1] != vec.shape[1]:  # a new encoder: old vectors are not comparable
                    ids, times, vecs, texts = (
                        ids[:0],
                        times[:0],
                        vecs[:0, : vec.shape[1]],
                        texts[:0],
                    )
            else:
                ids, times, texts = np.zeros(0, str), np.zeros(0, np.float64), np.zeros(0, str)
                vecs = np.zeros((0, vec.shape[1]), np.float32)
            cap = slice(-MAX_PER_SHOPPER, None)
            self._write(
                name,
                (
                    np.append(ids, str(search_id))[cap],
                    np.append(times, float(ts))[cap],
                    np.vstack([vecs, vec]).astype(np.float32)[cap],
                    np.append(texts, query or "")[cap],
                ),
            )

    def search_of(self, pseudonym: str, search_id: str) -> tuple[float, str | None] | None:
        """(time, kept query text or None) of one kept search of the shopper, or None."""
        with self._lock:
            name = self._name(pseudonym)
            if name not in self._known():
                return None
            ids, ts, _, texts = self._read(name)
        hit = np.flatnonzero(ids == str(search_id))
        if not len(hit):
            return None
        j = int(hit[-1])
        return float(ts[j]), (str(texts[j]) or None)

    def recent(self, pseudonym: str, n: int = 20, *, dim: int | None = None) -> np.ndarray | None:
        """The shopper's `n` most recent query embeddings (rows, oldest first), or None.

        Args:
            pseudonym: the shopper.
            n: at most this many rows.
            dim: only vectors of this size (the serving model's text space); None: any.
        """
        if n <= 0:
            return None
        with self._lock:
            name = self._name(pseudonym)
            if name not in self._known():
                return None
            vecs = self._read(name)[2]
        if not len(vecs) or (dim is not None and vecs.shape[1] != dim):
            return None
        return vecs[-n:]

    def export(self, pseudonym: str) -> list[dict[str, Any]]:
        """Right of access: each kept query embedding with its search's list id (the
        `recommendation_id` of the search in `served_lists`), its time and any kept text."""
        with self._lock:
            name = self._name(pseudonym)
            if name not in self._known():
                return []
            ids, ts, vecs, texts = self._read(name)
        out = []
        for e, t, v, q in zip(ids.tolist(), ts.tolist(), vecs, texts.tolist(), strict=True):
            d: dict[str, Any] = {"recommendation_id": e, "ts": float(t)}
            if q:
                d["query"] = q
            d["embedding"] = [round(float(x), 6) for x in v]
            out.append(d)
        return out

    def forget(self, pseudonym: str) -> int:
        """Erase every query embedding of the shopper; returns how many were deleted."""
        with self._lock:
            name = self._name(pseudonym)
            if name not in self._known():
                return 0
            try:
                n = len(self._read(name)[0])
            except Exception:  # an unreadable file is still deleted
                n = 1
            self._delete(name)
            return n

    # ---- housekeeping ----------------------------------------------------------------------
    def expire(self, days: int | float | Mapping[str, int | None], now: float) -> int:
        """Retention: drop the entries older than the rule of `search` events (one limit for
        every type, or {type: days} whose `search` entry applies); returns the entries dropped."""
        limit = days.get("search") if isinstance(days, Mapping) else days
        if limit is None:
            return 0
        cut = float(now) - float(limit) * _DAY
        dropped = 0
        with self._lock:
            for name in sorted(self._known()):
                try:
                    ids, ts, vecs, texts = self._read(name)
                except Exception:  # unreadable: nothing in it can be used; it goes
                    self._delete(name)
                    dropped += 1
                    continue
                keep = ts >= cut
                if not keep.all():
                    dropped += int((~keep).sum())
                    self._write(name, (ids[keep], ts[keep], vecs[keep], texts[keep]))
        if dropped:
            logger.info("query embeddings expired dropped=%d", dropped)
        return dropped

    def sweep(self, store: EventStoreAPI | None = None) -> int:
        """Delete every file of another pseudonym-key generation (a key rotation re-keyed the
        shoppers) or of the older layout; returns the files deleted.

        Args:
            store: unused (entries no longer depend on stored events); kept for callers.
        """
        del store
        with self._lock:
            prefix = self._prefix()
            stale = [n for n in self._known() if not n.startswith(prefix)]
            for name in stale:
                self._delete(name)
        if stale:
            logger.info("query embeddings swept files=%d", len(stale))
        return len(stale)

    def count(self) -> int:
        """Shoppers with kept query embeddings (a metric; no personal data)."""
        with self._lock:
            return len(self._known())
