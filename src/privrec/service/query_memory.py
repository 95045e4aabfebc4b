"""Shoppers' search-query embeddings, sealed at rest: the content models' query signal.

"Query embeddings are kept; query text only where the shop opts in." When a shopper who
consented to personalisation searches, the search is stored as a `search` event through the
gate (its text dropped unless `keep_query_text`) and the query's embedding is kept here, beside
the event store, so `UserHistory.query_embeddings` can use it.

Layout: one sealed file per pseudonym, `<data_dir>/search/queries/<name>.sealed`, where `name`
is a keyed hash of the pseudonym (HMAC-SHA256 with the sidecar key), so a file name says
nothing about who searched. The file is AES-256-GCM sealed (`privacy.sealed`, its name
authenticated) and holds an `.npz` (no pickle) of the stored search events' ids, their times
and the float32 unit vectors, newest last, at most `MAX_PER_SHOPPER`.

Every entry names the `search` event it came with, and lives only as long as that event:

- erasure (`forget`) and a consent level without personalisation delete the shopper's file;
- `sweep` (after retention, a consent change, a key rotation or a bulk ingest) keeps only the
  entries whose event is still in the store under the same pseudonym. A key rotation re-keys
  pseudonyms and event ids, so the sweep drops every entry then: query embeddings are
  re-learnt from new searches rather than carried across keys.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import threading
from collections import OrderedDict
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


class QueryMemory:
    """Sealed per-shopper query embeddings under `<data_dir>/search/queries`.

    Args:
        data_dir: the data directory.
        key: the sidecar key (32 bytes) that seals the files and keys their names.
    """

    def __init__(self, data_dir: Path, key: bytes) -> None:
        self.directory = Path(data_dir) / "search" / "queries"
        self._key = key
        self._lock = threading.RLock()
        self._names: set[str] | None = None  # files on disk (listed once)
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()

    # ---- files -----------------------------------------------------------------------------
    def _name(self, pseudonym: str) -> str:
        mac = hmac.new(self._key, _NAME_DOMAIN + pseudonym.encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}{FILE_SUFFIX}"

    def _known(self) -> set[str]:
        if self._names is None:
            self._names = (
                {p.name[: -len(FILE_SUFFIX)] for p in self.directory.glob(f"*{FILE_SUFFIX}")}
                if self.directory.is_dir()
                else set()
            )
        return self._names

    def _read(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        got = self._cache.get(name)
        if got is not None:
            return got
        raw = read_sealed(self._path(name), self._key)
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            got = (z["event_ids"].astype(str), z["ts"].astype(np.float64), z["vectors"])
        self._remember(name, got)
        return got

    def _remember(self, name: str, got: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self._cache[name] = got
        self._cache.move_to_end(name)
        while len(self._cache) > _CACHE:
            self._cache.popitem(last=False)

    def _write(self, name: str, ids: np.ndarray, ts: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            self._delete(name)
            return
        buf = io.BytesIO()
        np.savez(buf, event_ids=ids.astype(str), ts=ts.astype(np.float64), vectors=vectors)
        private_dir(self.directory)
        write_sealed(self._path(name), buf.getvalue(), self._key)
        self._known().add(name)
        self._remember(name, (ids.astype(str), ts.astype(np.float64), vectors))

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
    def add(self, pseudonym: str, event_id: str, ts: float, vector: np.ndarray) -> None:
        """Keep the embedding of one stored search event (the oldest beyond the cap go)."""
        vec = np.asarray(vector, np.float32).reshape(1, -1)
        with self._lock:
            name = self._name(pseudonym)
            if name in self._known():
                ids, times, vecs = self._read(name)
                if vecs.shape[1] != vec.shape[1]:  # a new encoder: old vectors are not comparable
                    ids, times, vecs = ids[:0], times[:0], vecs[:0, : vec.shape[1]]
            else:
                ids = np.zeros(0, str)
                times = np.zeros(0, np.float64)
                vecs = np.zeros((0, vec.shape[1]), np.float32)
            ids = np.append(ids, str(event_id))[-MAX_PER_SHOPPER:]
            times = np.append(times, float(ts))[-MAX_PER_SHOPPER:]
            vecs = np.vstack([vecs, vec]).astype(np.float32)[-MAX_PER_SHOPPER:]
            self._write(name, ids, times, vecs)

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
            _, _, vecs = self._read(name)
        if not len(vecs) or (dim is not None and vecs.shape[1] != dim):
            return None
        return vecs[-n:]

    def export(self, pseudonym: str) -> list[dict[str, Any]]:
        """Right of access: each kept query embedding with its event id and time."""
        with self._lock:
            name = self._name(pseudonym)
            if name not in self._known():
                return []
            ids, ts, vecs = self._read(name)
        return [
            {"event_id": e, "ts": float(t), "embedding": [round(float(x), 6) for x in v]}
            for e, t, v in zip(ids.tolist(), ts.tolist(), vecs, strict=True)
        ]

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
    def sweep(self, store: EventStoreAPI) -> int:
        """Drop every entry whose search event is no longer stored under the same pseudonym
        (retention, a consent change, erasure, a key rotation); returns the entries dropped."""
        with self._lock:
            names = set(self._known())
            if not names:
                return 0
            ev = store.events()
            searches = ev[ev["type"].astype(str) == "search"] if len(ev) else ev
            live: dict[str, set[str]] = {}
            for user, eid in zip(
                searches["user"].astype(str), searches["event_id"].astype(str), strict=True
            ):
                live.setdefault(self._name(user), set()).add(eid)
            dropped = 0
            for name in names:
                keep_ids = live.get(name)
                if not keep_ids:
                    try:
                        dropped += len(self._read(name)[0])
                    except Exception:
                        dropped += 1
                    self._delete(name)
                    continue
                ids, ts, vecs = self._read(name)
                keep = np.fromiter((e in keep_ids for e in ids.tolist()), bool, count=len(ids))
                if not keep.all():
                    dropped += int((~keep).sum())
                    self._write(name, ids[keep], ts[keep], vecs[keep])
            if dropped:
                logger.info("query embeddings swept dropped=%d", dropped)
            return dropped

    def count(self) -> int:
        """Shoppers with kept query embeddings (a metric; no personal data)."""
        with self._lock:
            return len(self._known())
