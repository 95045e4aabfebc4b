"""LoRA fine-tuning: co-interaction pairs, a tiny seeded run, an adapter saved, loaded by name."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privrec.core.errors import ValidationError
from privrec.data.dataset import InteractionDataset
from privrec.text.cache import EmbeddingCache
from privrec.text.encoder import SentenceEncoder
from privrec.text.lora import LoraTrainConfig, co_interaction_pairs, finetune_lora

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TITLES = [f"product {c} number {i}" for c in "abcdef" for i in range(3)]


def _shop() -> InteractionDataset:
    rows = []
    ts = 1_700_000_000.0
    rng = np.random.default_rng(0)
    for u in range(12):
        for it in rng.permutation(len(TITLES))[:5]:
            ts += 1.0
            rows.append((f"u{u}", f"i{it}", "purchase", ts))
    meta = pd.DataFrame({"item": [f"i{i}" for i in range(len(TITLES))], "title": TITLES})
    from privrec.data.vocab import Vocabulary

    return InteractionDataset.from_events(
        pd.DataFrame(rows, columns=["user", "item", "type", "ts"]),
        item_meta=meta,
        items=Vocabulary(list(meta["item"])),
    )


def test_pairs_are_consecutive_items_of_one_user() -> None:
    ds = _shop()
    pairs = co_interaction_pairs(ds, max_pairs=None, seed=1)
    seqs = ds.sequences()
    expected = set()
    for s in seqs:
        for a, b in itertools.pairwise(s):
            if a != b:
                expected.add((min(a, b), max(a, b)))
    assert {tuple(p) for p in pairs.tolist()} == expected
    assert len(pairs) == len(expected)  # deduplicated
    again = co_interaction_pairs(ds, max_pairs=10, seed=1)
    np.testing.assert_array_equal(again, co_interaction_pairs(ds, max_pairs=10, seed=1))
    assert len(again) == 10
    wider = co_interaction_pairs(ds, max_pairs=None, seed=1, window=2)
    assert len(wider) > len(pairs)


def test_a_tiny_fine_tune_changes_saves_and_reloads(tmp_path: Path) -> None:
    ds = _shop()
    cfg = LoraTrainConfig(
        max_pairs=40, max_steps=3, batch_size=8, max_seq_length=16, learning_rate=5e-3, device="cpu"
    )
    info = finetune_lora(ds, name="tiny", root=tmp_path, config=cfg)
    assert info.path == tmp_path / "adapters" / "tiny" and info.steps == 3 and len(info.losses) >= 1
    files = {p.name for p in info.path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "privrec_adapter.json"} <= files
    assert not any(p.suffix in (".bin", ".pkl", ".pt") for p in info.path.iterdir())
    meta = json.loads((info.path / "privrec_adapter.json").read_text())
    assert meta["steps"] == 3 and meta["base_model"].startswith("all-MiniLM-L6-v2@")

    texts = TITLES[:4]
    tuned_in_memory = np.asarray(info.model.encode(texts, normalize_embeddings=True), np.float32)
    base = SentenceEncoder(device="cpu").encode(texts)
    loaded_enc = SentenceEncoder(
        adapter="tiny", adapters_dir=tmp_path, device="cpu", cache=EmbeddingCache(tmp_path / "c")
    )
    loaded = loaded_enc.encode(texts)
    assert np.abs(tuned_in_memory - base).max() > 1e-4  # training changed the embeddings
    np.testing.assert_allclose(loaded, tuned_in_memory, atol=2e-5)  # the adapter reproduces them
    assert "+lora@" in loaded_enc.model_id  # cache keys never mix base and tuned vectors

    # the same seed gives the same adapter
    again = finetune_lora(ds, name="tiny2", root=tmp_path, config=cfg)
    np.testing.assert_allclose(
        np.asarray(again.model.encode(texts, normalize_embeddings=True)), tuned_in_memory, atol=1e-6
    )


def test_too_few_pairs_is_refused(tmp_path: Path) -> None:
    from privrec.text.lora import train_lora_on_pairs

    with pytest.raises(ValidationError, match="too few"):
        train_lora_on_pairs(["a", "b"], np.array([[0, 1]]), name="x", root=tmp_path)
