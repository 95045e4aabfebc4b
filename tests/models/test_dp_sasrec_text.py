"""DP-SASRec on frozen public text item vectors (item_repr "text"): only the adaptor, positions
and transformer take DP-SGD's gradients and noise; the accounting is the ID model's."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender
from privrec.models.dp.sasrec import DPSASRec, DPSASRecConfig, trainable_parameters
from privrec.privacy.ledger import Budget, PrivacyLedger

PARAMS = {"epsilon": 6.0, "epochs": 2, "embedding_size": 8, "sample_rate": 0.5, "max_len": 8}
T = 16  # text width of the synthetic vectors


def text_of(ds: InteractionDataset, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(ds.n_items, T)).astype(np.float32)


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_text_table_is_frozen_and_takes_no_noise(two_groups: InteractionDataset, mode: str) -> None:
    text = text_of(two_groups)
    m = DPSASRec(**PARAMS, item_repr="text", grad_sample_mode=mode).fit(
        two_groups, rng=2, item_text_embeddings=text
    )
    items = m.net.items
    assert m.noise_multiplier > 0
    # the text matrix is a buffer, bit-for-bit the given one after noisy steps
    assert "text" in dict(items.named_buffers())
    assert not any(n.endswith("text") for n, _ in m.net.named_parameters())
    np.testing.assert_array_equal(items.text[1 : two_groups.n_items + 1].numpy(), text)
    assert not hasattr(items, "id_emb")
    trained = {n for n, p in m.net.named_parameters() if p.requires_grad}
    assert "items.adaptor.weight" in trained and "items.mask_emb" not in trained
    assert all(not n.startswith("items.") or n.startswith("items.adaptor.") for n in trained)
    # the ID model trains a (n_items + 2) x d table where this one trains a t x d (+ d) adaptor
    ids = DPSASRec(**PARAMS, grad_sample_mode=mode).fit(two_groups, rng=2)
    d = PARAMS["embedding_size"]
    assert trainable_parameters(ids.net) - trainable_parameters(m.net) == (
        (two_groups.n_items + 2) * d - (T * d + d)
    )
    assert np.isfinite(m.score_matrix(m.input_matrix(two_groups)[:4])).all()


def test_adaptor_is_trained_and_the_model_reloads(
    two_groups: InteractionDataset, tmp_path: Path
) -> None:
    import torch

    from privrec.models.sequential import build_sequence_net

    text = text_of(two_groups)
    c = DPSASRecConfig(**PARAMS, item_repr="text")
    torch.manual_seed(2)
    init = build_sequence_net(two_groups.n_items, c, True, text, None)
    m = DPSASRec(c).fit(two_groups, rng=2, item_text_embeddings=text)
    assert not torch.equal(m.net.items.adaptor.weight, init.items.adaptor.weight)
    m.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    x = m.input_matrix(two_groups)[:6]
    np.testing.assert_array_equal(loaded.score_matrix(x), m.score_matrix(x))


def test_per_user_gradients_of_the_text_loss_are_exact() -> None:
    """Opacus' per-user gradients through the frozen text and the adaptor equal each user's."""
    import torch
    from opacus import GradSampleModule

    from privrec.models.dp.sasrec_text import PerUserTextLoss
    from privrec.models.sequential import build_sequence_net

    c = DPSASRecConfig(embedding_size=8, max_len=6, dropout=0.0, item_repr="text")
    torch.manual_seed(0)
    text = np.random.default_rng(1).normal(size=(20, 5)).astype(np.float32)
    mod = PerUserTextLoss(build_sequence_net(20, c, True, text, None))
    ref = copy.deepcopy(mod)
    seq = torch.tensor([[0, 0, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 7, 8]])
    tgt = torch.tensor([[0, 0, 4, 5, 6, 7], [0, 2, 3, 4, 5, 6], [0, 0, 0, 0, 8, 9]])
    neg = torch.tensor([[0, 0, 11, 12, 13, 14], [0, 15, 16, 17, 18, 19], [0, 0, 0, 0, 10, 11]])
    params = {n: p for n, p in ref.named_parameters() if p.requires_grad}
    assert params and all(not n.endswith(("text", "mask_emb")) for n in params)
    per_user = []
    for i in range(3):
        loss = ref(seq[i : i + 1], tgt[i : i + 1], neg[i : i + 1]).sum()
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        per_user.append(dict(zip(params, grads, strict=True)))
    gsm = GradSampleModule(mod)
    gsm(seq, tgt, neg).mean().backward()
    checked = 0
    for name, p in gsm.named_parameters():
        if not p.requires_grad:
            assert p.grad is None and getattr(p, "grad_sample", None) is None
            continue
        n = name.removeprefix("_module.")
        for i in range(3):
            want = per_user[i][n] if per_user[i][n] is not None else torch.zeros_like(p)
            torch.testing.assert_close(p.grad_sample[i], want, rtol=1e-4, atol=1e-6)
        checked += 1
    assert checked == len(params)


def test_accounting_and_ledger_charge_match_the_id_model(
    two_groups: InteractionDataset, tmp_path: Path
) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(13.0, 3e-6))
    ids = DPSASRec(**PARAMS).fit(two_groups, rng=2, ledger=ledger)
    txt = DPSASRec(**PARAMS, item_repr="text").fit(
        two_groups, rng=2, ledger=ledger, item_text_embeddings=text_of(two_groups)
    )
    a, b = ledger.entries()
    assert a["model"] == b["model"] == "dp_sasrec"
    assert (a["epsilon"], a["delta"], a["unit"]) == (b["epsilon"], b["delta"], b["unit"])
    assert a["details"] == b["details"]
    assert ids.release is not None and txt.release is not None
    assert ids.release.event == txt.release.event
    assert txt.noise_multiplier == ids.noise_multiplier > 0


def test_text_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="item_repr"):
        DPSASRec(item_repr="id+text")
    with pytest.raises(ConfigError, match="text_adaptor"):
        DPSASRec(item_repr="text", text_adaptor="mlp")


def test_text_vectors_are_encoded_from_the_item_text(tmp_path: Path) -> None:
    """Without given vectors, the catalogue text is encoded (MiniLM, real) - public data."""
    from privrec.data.synthetic import generate_shop_dataset
    from privrec.models.content import ContentRecommender

    ds = generate_shop_dataset(n_items=60, n_users=40, seed=3)
    cache = str(tmp_path / "cache")
    m = DPSASRec(**PARAMS, item_repr="text", text_cache_dir=cache).fit(ds, rng=1)
    want = ContentRecommender(cache_dir=cache).fit(ds).item_embeddings
    assert want.shape == (ds.n_items, 384)
    np.testing.assert_array_equal(m.net.items.text[1 : ds.n_items + 1].numpy(), want)


def test_reachable_from_privrec_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`privrec evaluate -p dp_sasrec.item_repr="text"` trains and reports the text variant."""
    import json

    from typer.testing import CliRunner

    from privrec.cli import app
    from privrec.core.settings import Settings
    from privrec.data.synthetic import generate_shop
    from privrec.service import RecSys

    for var in ("PRIVREC_PSEUDONYM_KEY", "PRIVREC_STORE_KEY", "PRIVREC_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "privrec-data"
    events, catalogue = generate_shop(n_items=60, n_users=60, seed=3)
    with RecSys(Settings(data_dir=data)) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
    out = tmp_path / "reports"
    p = ['item_repr="text"', "epochs=1", "embedding_size=8", "max_len=8", "sample_rate=0.5"]
    p.append(f"text_cache_dir={json.dumps(str(tmp_path / 'cache'))}")
    args = ["evaluate", "--data-dir", str(data), "--out", str(out), "--models", "dp_sasrec"]
    for x in p:
        args += ["-p", f"dp_sasrec.{x}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert '"item_repr": "text"' in json.dumps(report)
