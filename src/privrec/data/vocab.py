"""Vocabularies: external keys (pseudonyms, item ids) <-> dense integer indices."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from privrec.core.errors import NotFoundError


class Vocabulary:
    """An ordered, immutable mapping between string keys and 0..n-1."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys: list[str] = list(keys)
        self._index: dict[str, int] = {k: i for i, k in enumerate(self._keys)}
        if len(self._index) != len(self._keys):
            raise ValueError("vocabulary keys must be unique")

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    @property
    def keys(self) -> list[str]:
        """The keys in index order (a copy)."""
        return list(self._keys)

    def index(self, key: str) -> int:
        """Index of one key; NotFoundError if unknown."""
        try:
            return self._index[key]
        except KeyError:
            raise NotFoundError(f"unknown key {key!r}") from None

    def get(self, key: str, default: int = -1) -> int:
        """Index of one key, or `default` if unknown."""
        return self._index.get(key, default)

    def encode(self, keys: Sequence[str], *, missing: int = -1) -> np.ndarray:
        """Indices of many keys (int64); unknown keys become `missing`."""
        idx = self._index
        return np.fromiter((idx.get(k, missing) for k in keys), dtype=np.int64, count=len(keys))

    def decode(self, indices: Iterable[int]) -> list[str]:
        """Keys of many indices."""
        return [self._keys[int(i)] for i in indices]

    def key(self, i: int) -> str:
        """The key at index i."""
        return self._keys[int(i)]
