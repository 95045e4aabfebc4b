"""DDP training in 2 local processes (gloo) agrees with single-process training on the same
global batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privrec.data.dataset import InteractionDataset
from privrec.data.loaders import load_dataset
from privrec.data.splitters import leave_one_out
from privrec.models.base import Recommender
from privrec.models.distributed import Job, fit_local
from privrec.models.nn.runtime import free_port
from privrec.models.zoo import create_model

from .seq_fixtures import N_CHAIN, chain_dataset

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

# dropout 0: the only randomness left is the data order, masks and negatives, drawn from the seed
# identically on every rank; batch 15 splits unevenly over 2 ranks (8 + 7 rows)
TINY: dict[str, Any] = {
    "embedding_size": 8,
    "num_blocks": 1,
    "num_heads": 2,
    "epochs": 2,
    "batch_size": 15,
    "learning_rate": 0.01,
    "dropout": 0.0,
    "num_threads": 1,
    "device": "cpu",
}


def _assert_same_model(a: Recommender, b: Recommender) -> None:
    sa, sb = a._state(), b._state()  # type: ignore[attr-defined]
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_allclose(sa[key], sb[key], rtol=0, atol=1e-5, err_msg=key)
    hs = [np.array([1, 2, 3]), np.array([7])]
    np.testing.assert_allclose(a.score_sequences(hs), b.score_sequences(hs), rtol=0, atol=1e-4)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def chain() -> InteractionDataset:
    return chain_dataset(n_users=30)


def test_two_processes_match_one_process(chain: InteractionDataset) -> None:
    """SASRec (full softmax, validation + early stopping), BERT4Rec (sampled softmax): one spawn."""
    sub, valid, _ = leave_one_out(chain)
    sas = {**TINY, "loss": "full_softmax", "eval_every": 1, "patience": 5}
    bert = {**TINY, "loss": "sampled_softmax", "n_negatives": 6}
    ddp_sas, ddp_bert = fit_local(
        [Job("sasrec", sub, sas, valid, seed=5), Job("bert4rec", chain, bert, seed=5)], world_size=2
    )
    single_sas = create_model("sasrec", **sas).fit(sub, rng=5, validation=valid)
    single_bert = create_model("bert4rec", **bert).fit(chain, rng=5)
    _assert_same_model(single_sas, ddp_sas)
    _assert_same_model(single_bert, ddp_bert)
    # validation is shared out over the ranks and summed: the same figures, the same best epoch
    for e1, e2 in zip(single_sas.train_log, ddp_sas.train_log, strict=True):  # type: ignore[attr-defined]
        assert e1["ndcg@10"] == pytest.approx(e2["ndcg@10"], abs=1e-9)
        # the logged loss is the global batches' mean (summed over the ranks), not rank 0's share
        assert e1["loss"] == pytest.approx(e2["loss"], rel=1e-5)
    assert single_sas.best_epoch == ddp_sas.best_epoch  # type: ignore[attr-defined]


def test_torchrun_entry_point_agrees_with_one_process(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node=2 -m privrec.models.distributed` on an S3-Rec style file."""
    rng = np.random.default_rng(0)
    lines = []
    for u in range(1, 25):
        start = int(rng.integers(0, N_CHAIN))
        lines.append(
            " ".join(
                [str(u)] + [str((start + k) % N_CHAIN + 1) for k in range(int(rng.integers(4, 9)))]
            )
        )
    data = tmp_path / "Chain.txt"
    data.write_text("\n".join(lines) + "\n")
    params = {**TINY, "loss": "bce"}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "privrec.models.distributed",
        "--model",
        "sasrec",
        "--dataset",
        str(data),
        "--out",
        str(tmp_path / "ddp"),
        "--config",
        json.dumps(params),
        "--seed",
        "9",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    ddp = Recommender.load(tmp_path / "ddp")
    single = create_model("sasrec", **params).fit(load_dataset(data), rng=9)
    _assert_same_model(single, ddp)
