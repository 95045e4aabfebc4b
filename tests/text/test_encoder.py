"""The sentence encoder: bundled MiniLM, unit vectors, meaning, errors that name the fix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from privrec.core.errors import ConfigError
from privrec.text.encoder import SentenceEncoder, adapter_path, default_model_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(device="cpu")


def test_bundled_model_gives_unit_384_d_float32(encoder: SentenceEncoder) -> None:
    v = encoder.encode(["red nail polish", "anti-dandruff shampoo"])
    assert v.shape == (2, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert encoder.model_id.startswith("all-MiniLM-L6-v2@")


def test_similar_texts_are_closer_than_unrelated_ones(encoder: SentenceEncoder) -> None:
    a, b, c = encoder.encode(
        ["glossy red nail polish", "crimson nail lacquer", "men's shaving foam"]
    )
    assert a @ b > a @ c + 0.2


def test_duplicates_are_encoded_once_and_empty_text_is_zero(encoder: SentenceEncoder) -> None:
    before = encoder.texts_encoded
    seen: list[tuple[int, int]] = []
    v = encoder.encode(
        ["lipstick", "", "lipstick", "   "], progress=lambda d, t: seen.append((d, t))
    )
    assert encoder.texts_encoded - before == 1
    assert seen == [(1, 1)]
    np.testing.assert_array_equal(v[0], v[2])
    assert not v[1].any() and not v[3].any()
    assert encoder.encode([]).shape == (0, 384)


def test_missing_model_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model_path"):
        SentenceEncoder(tmp_path / "no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"modules\.json"):
        SentenceEncoder(tmp_path / "empty")


def test_adapters_are_found_by_plain_names_only(tmp_path: Path) -> None:
    assert adapter_path("shop-v1", tmp_path) == tmp_path / "adapters" / "shop-v1"
    for bad in ("../escape", "a/b", "", "."):
        with pytest.raises(ConfigError, match="adapter name"):
            adapter_path(bad, tmp_path)
    with pytest.raises(ConfigError, match="no adapter 'missing'"):
        SentenceEncoder(adapter="missing", adapters_dir=tmp_path)


def test_any_sentence_transformers_folder_is_accepted() -> None:
    enc = SentenceEncoder(str(default_model_path()), device="cpu", max_seq_length=16)
    assert enc.model_id.startswith("all-MiniLM-L6-v2@") and enc.model_id.endswith("/len16")
    assert enc.encode(["a short text"]).shape == (1, 384)
