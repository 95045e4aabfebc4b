"""The on-disk embedding cache: nothing is encoded twice, models never mix, no text on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from privrec.text.cache import CACHE_ENV, EmbeddingCache, default_cache_dir
from privrec.text.encoder import SentenceEncoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def test_put_and_get_round_trip(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put_many("m1", ["a", "b", "c"], vecs)
    got, found = cache.get_many("m1", ["c", "x", "a", "c"])
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(got[[0, 2, 3]], vecs[[2, 0, 2]])
    assert not got[1].any()
    other, found = cache.get_many("m2", ["a"])  # another model never sees m1's vectors
    assert other is None and not found.any()
    assert cache.count() == 3 and cache.count("m1") == 3 and cache.models() == {"m1": 3}
    assert cache.size_bytes() > 0
    assert cache.clear("m1") == 3 and cache.count() == 0


def test_the_cache_avoids_re_encoding(tmp_path: Path) -> None:
    texts = ["OPI red nail polish", "coconut shampoo", "OPI red nail polish"]
    first = SentenceEncoder(device="cpu", cache=EmbeddingCache(tmp_path))
    a = first.encode(texts)
    assert first.texts_encoded == 2
    second = SentenceEncoder(device="cpu", cache=EmbeddingCache(tmp_path))  # a new run, same folder
    b = second.encode([*texts, "razor blades"])
    assert second.texts_encoded == 1  # only the new text
    np.testing.assert_array_equal(a, b[:3])
    second.encode(["private query"], use_cache=False)
    assert second.cache.count() == 3  # the query was not stored


def test_no_text_reaches_the_disk(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put_many("m", ["secret-plaintext-marker"], np.ones((1, 4), np.float32))
    cache.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"secret-plaintext-marker" not in blob


def test_default_directory_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("PRIVREC_DATA_DIR", str(tmp_path / "data"))
    assert default_cache_dir() == tmp_path / "data" / "cache" / "embeddings"
