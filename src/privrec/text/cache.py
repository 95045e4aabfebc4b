"""An on-disk embedding cache, so re-runs never encode the same text twice with the same model.

Vectors live in one SQLite file, `<directory>/vectors.sqlite`, keyed by (model id, sha256 of the
UTF-8 text); the model id comes from `SentenceEncoder.model_id` and names the model weights, the
LoRA adapter and the maximum sequence length, so a different model never sees another's vectors.
Vectors are stored as raw little-endian float32 bytes (no pickle), and the text itself is never
stored, only its hash. Model ids are kept once in a small table; 16 KiB pages hold about ten
384-d vectors each, so the file is close to the raw size of the vectors (1.6 KB per vector).

Only catalogue text (public product titles and categories) should go through the cache. Search
queries are personal data: encode them with `use_cache=False` (the content model does).

The default directory is `$PRIVREC_TEXT_CACHE_DIR` when set, otherwise
`<data_dir>/cache/embeddings` (data_dir from privrec's settings). SQLite makes concurrent readers
and writers (several processes) safe.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from privrec.core.errors import ConfigError

__all__ = ["CACHE_ENV", "EmbeddingCache", "default_cache_dir", "text_hash"]

CACHE_ENV = "PRIVREC_TEXT_CACHE_DIR"
_FILE = "vectors.sqlite"
_CHUNK = 500  # keys per SELECT (SQLite's variable limit is 999 on old builds)


def default_cache_dir() -> Path:
    """`$PRIVREC_TEXT_CACHE_DIR`, else `<data_dir>/cache/embeddings`."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from privrec.core.settings import Settings

    return Path(Settings().data_dir) / "cache" / "embeddings"


def text_hash(text: str) -> bytes:
    """The 32-byte sha256 of a text's UTF-8 bytes (the cache key next to the model id)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """Embeddings keyed by (model id, text hash) in `<directory>/vectors.sqlite`.

    Args:
        directory: where the cache file lives (created on first use); None: `default_cache_dir()`.

    Attributes:
        hits / misses: lookups answered / not answered since this object was made.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.path = self.directory / _FILE
        self.hits = 0
        self.misses = 0
        self._local = threading.local()

    # ---- connection -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), timeout=60.0)
                conn.execute("PRAGMA page_size=16384")  # takes effect only on a new file
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS models (id INTEGER PRIMARY KEY, name "
                    "TEXT NOT NULL UNIQUE)"
                )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS embeddings ( model INTEGER NOT NULL, hash BLOB "
                    "NOT NULL, dim INTEGER NOT NULL, vec BLOB NOT NULL, UNIQUE (model, hash))"
                )
                conn.commit()
            except (OSError, sqlite3.Error) as exc:
                raise ConfigError(
                    f"text.cache_dir: cannot use {str(self.directory)!r} for the embedding cache "
                    f"({exc}); give a writable folder (or set {CACHE_ENV})"
                ) from exc
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (it reopens on the next use)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _model_key(self, model_id: str, *, create: bool) -> int | None:
        conn = self._conn()
        row = conn.execute("SELECT id FROM models WHERE name = ?", (model_id,)).fetchone()
        if row is None and create:
            with conn:
                conn.execute("INSERT OR IGNORE INTO models (name) VALUES (?)", (model_id,))
            row = conn.execute("SELECT id FROM models WHERE name = ?", (model_id,)).fetchone()
        return None if row is None else int(row[0])

    # ---- reading and writing ------------------------------------------------------------------
    def get_many(self, model_id: str, texts: Sequence[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """Look up `texts` for `model_id`.

        Returns:
            (vectors, found): vectors is (n, dim) float32 with zero rows where not found, or None
            when nothing was found; found is a bool array per text.
        """
        n = len(texts)
        found = np.zeros(n, dtype=bool)
        if n == 0:
            return None, found
        hashes = [text_hash(t) for t in texts]
        where: dict[bytes, list[int]] = {}
        for i, h in enumerate(hashes):
            where.setdefault(h, []).append(i)
        keys = list(where)
        out: np.ndarray | None = None
        conn = self._conn()
        mkey = self._model_key(model_id, create=False)
        for start in range(0, len(keys) if mkey is not None else 0, _CHUNK):
            part = keys[start : start + _CHUNK]
            q = (
                "SELECT hash, dim, vec FROM embeddings WHERE model = ? AND hash IN "
                f"({','.join('?' * len(part))})"
            )
            for h, dim, blob in conn.execute(q, [mkey, *part]):
                if out is None:
                    out = np.zeros((n, int(dim)), dtype=np.float32)
                if int(dim) != out.shape[1]:
                    continue  # a corrupt row: treat as missing, it will be re-encoded
                vec = np.frombuffer(blob, dtype="<f4")
                for i in where[bytes(h)]:
                    out[i] = vec
                    found[i] = True
        self.hits += int(found.sum())
        self.misses += int(n - found.sum())
        return out, found

    def put_many(self, model_id: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store one vector per text for `model_id` (existing entries are replaced)."""
        vectors = np.asarray(vectors, dtype="<f4")
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(
                f"vectors: shape {vectors.shape} does not give one row per text ({len(texts)})"
            )
        dim = int(vectors.shape[1])
        mkey = self._model_key(model_id, create=True)
        rows = [
            (mkey, text_hash(t), dim, np.ascontiguousarray(v).tobytes())
            for t, v in zip(texts, vectors, strict=True)
        ]
        conn = self._conn()
        with conn:
            conn.executemany(
                "INSERT OR REPLACE INTO embeddings (model, hash, dim, vec) VALUES (?, ?, ?, ?)",
                rows,
            )
        if len(rows) >= 1000:  # fold a large write into the main file so the log stays small
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ---- housekeeping ------------------------------------------------------------------------
    def count(self, model_id: str | None = None) -> int:
        """How many vectors are stored (for one model id, or in all)."""
        if not self.path.exists():
            return 0
        conn = self._conn()
        if model_id is None:
            return int(conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
        mkey = self._model_key(model_id, create=False)
        return (
            0
            if mkey is None
            else int(
                conn.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", (mkey,)).fetchone()[
                    0
                ]
            )
        )

    def models(self) -> dict[str, int]:
        """Model id -> number of vectors stored for it."""
        if not self.path.exists():
            return {}
        q = (
            "SELECT m.name, COUNT(*) FROM embeddings e JOIN models m ON m.id = e.model GROUP "
            "BY m.name"
        )
        return {m: int(c) for m, c in self._conn().execute(q)}

    def clear(self, model_id: str | None = None) -> int:
        """Delete the vectors of one model id (or all); returns how many were deleted."""
        if not self.path.exists():
            return 0
        conn = self._conn()
        with conn:
            if model_id is None:
                cur = conn.execute("DELETE FROM embeddings")
            else:
                cur = conn.execute(
                    "DELETE FROM embeddings WHERE model = (SELECT id FROM models WHERE name = ?)",
                    (model_id,),
                )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        return int(cur.rowcount)

    def size_bytes(self) -> int:
        """Bytes the cache takes on disk (the SQLite file with its write-ahead log)."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = self.path.with_name(self.path.name + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r})"
