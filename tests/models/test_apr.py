"""APR: adversarial training on BPR-MF (He et al. 2018)."""

from __future__ import annotations

import numpy as np
import pytest

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.models.apr import APR
from privrec.models.bpr import BPR
from privrec.models.zoo import create_model

FAST = {"embedding_size": 8, "epochs": 8, "batch_size": 32, "learning_rate": 0.02}


def test_registered_in_the_zoo() -> None:
    assert isinstance(create_model("apr", **FAST), APR)


@pytest.mark.parametrize("off", [{"reg_adv": 0.0}, {"eps": 0.0}, {"adv_start_epoch": 100}])
def test_without_an_adversary_apr_is_bpr_bit_for_bit(
    two_groups: InteractionDataset, off: dict
) -> None:
    x = two_groups.matrix()
    a = APR(**FAST, **off).fit(two_groups, rng=5)
    b = BPR(**FAST).fit(two_groups, rng=5)
    np.testing.assert_array_equal(a.score_matrix(x), b.score_matrix(x))
    assert a.train_losses == b.train_losses


def test_the_adversarial_term_changes_training(two_groups: InteractionDataset) -> None:
    x = two_groups.matrix()
    a = APR(**FAST, eps=0.5, reg_adv=1.0).fit(two_groups, rng=5)
    b = BPR(**FAST).fit(two_groups, rng=5)
    assert not np.allclose(a.score_matrix(x), b.score_matrix(x))
    # the recorded loss includes the adversarial term, so it sits above BPR's
    assert all(np.isfinite(a.train_losses)) and a.train_losses[-1] > b.train_losses[-1]


def test_pretraining_epochs_match_bpr_until_the_adversary_starts(
    two_groups: InteractionDataset,
) -> None:
    a = APR(**FAST, eps=0.5, adv_start_epoch=3).fit(two_groups, rng=5)
    b = BPR(**FAST).fit(two_groups, rng=5)
    assert a.train_losses[:3] == b.train_losses[:3]
    assert a.train_losses[3] != b.train_losses[3]


@pytest.mark.parametrize("perturb", ["user_item", "tables"])
def test_apr_is_more_robust_to_its_own_adversary(
    two_groups: InteractionDataset, perturb: str
) -> None:
    """The claim APR is trained for: under a worst-case embedding perturbation of size eps, the
    BPR loss grows less than for a plain BPR model."""
    import torch
    import torch.nn.functional as F

    from privrec.models.bpr import _TrainData

    eps = 0.5
    params = {**FAST, "epochs": 20}
    models = {
        "bpr": BPR(**params).fit(two_groups, rng=1),
        "apr": APR(**params, eps=eps, reg_adv=1.0, perturb=perturb).fit(two_groups, rng=1),
    }
    x = BPR(**params)._clean_matrix(two_groups.matrix())
    data = _TrainData(x)

    def step(g: torch.Tensor) -> torch.Tensor:
        return eps * g / g.norm(dim=1, keepdim=True).clamp(min=1e-12)

    growth = {}
    for name, m in models.items():
        batch = m._make_batch(data, data.active, np.random.default_rng(0))
        t = {
            k: torch.nn.Parameter(torch.from_numpy(getattr(m, k).copy()))
            for k in ("target", "context", "bias")
        }
        u = m.user_vectors_torch(t, batch)
        xp, xn, _ = m.scores_for(u, t, batch)
        clean = -F.logsigmoid(xp - xn).mean()
        if perturb == "tables":
            g_t, g_c = torch.autograd.grad(clean, [t["target"], t["context"]])
            xp, xn, _ = m.pair_scores(
                {**t, "target": t["target"] + step(g_t), "context": t["context"] + step(g_c)}, batch
            )
        else:
            g_u, g_t = torch.autograd.grad(clean, [u, t["target"]])
            xp, xn, _ = m.scores_for(u + step(g_u), {**t, "target": t["target"] + step(g_t)}, batch)
        growth[name] = float((-F.logsigmoid(xp - xn).mean() - clean).detach())
    assert growth["apr"] < growth["bpr"]


def test_config_names_the_bad_field() -> None:
    with pytest.raises(ConfigError, match="eps"):
        APR(eps=-1.0)


# ---- the same adversarial training as a SASRec option --------------------------------------------
SEQ = {
    "embedding_size": 16,
    "num_blocks": 1,
    "epochs": 15,
    "batch_size": 16,
    "learning_rate": 0.01,
    "dropout": 0.0,
    "num_threads": 1,
}


def test_sasrec_adversarial_option() -> None:
    from privrec.models.sasrec import SASRec

    from .seq_fixtures import chain_dataset, next_item_hit_rate

    chain = chain_dataset()
    x = chain.matrix()[:8]
    plain = SASRec(**SEQ).fit(chain, rng=3)
    off = SASRec(**SEQ, adv_eps=0.0, adv_reg=1.0).fit(chain, rng=3)
    np.testing.assert_array_equal(plain.score_matrix(x), off.score_matrix(x))
    adv = SASRec(**SEQ, adv_eps=0.05, adv_reg=1.0).fit(chain, rng=3)
    assert not np.allclose(adv.score_matrix(x), plain.score_matrix(x))
    assert next_item_hit_rate(adv) >= 0.8  # still learns the chain
    with pytest.raises(ConfigError, match="adv_eps"):
        SASRec(adv_eps=-0.1)


def test_dp_sasrec_refuses_the_adversarial_option() -> None:
    with pytest.raises(ConfigError, match="adv_eps"):
        create_model("dp_sasrec", adv_eps=0.1)
