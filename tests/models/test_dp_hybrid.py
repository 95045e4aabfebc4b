"""DP hybrid: the content part reads no other shopper's data, the DP part is the only release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.data.synthetic import generate_shop_dataset
from privrec.models.base import Recommender
from privrec.models.dp.hybrid import DPHybrid
from privrec.privacy.ledger import Budget, PrivacyLedger

TEXT = {"cache": False}


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return generate_shop_dataset(n_items=120, n_users=300, seed=5)


@pytest.fixture(scope="module")
def without_user0(shop: InteractionDataset) -> InteractionDataset:
    return shop.subset(shop.user_idx != 0)


def test_content_part_is_the_same_with_or_without_another_shopper(
    shop: InteractionDataset, without_user0: InteractionDataset
) -> None:
    params = {
        "epsilon": 1.0,
        "content_params": TEXT,
        "cf_weight": 0.0,
        "popularity_weight": 0.0,
        "cf_params": {"top_items": 60},
    }
    a = DPHybrid(**params).fit(shop, rng=1)
    b = DPHybrid(**params).fit(without_user0, rng=1)
    np.testing.assert_array_equal(a.content.item_embeddings, b.content.item_embeddings)
    h = a.history_matrix([shop.history(u) for u in range(1, 40)])
    np.testing.assert_array_equal(a.score_matrix(h), b.score_matrix(h))
    # and the DP part does depend on the data (so the check above can fail)
    full = {**params, "cf_weight": 1.0}
    assert not np.array_equal(
        DPHybrid(**full).fit(shop, rng=1).score_matrix(h),
        DPHybrid(**full).fit(without_user0, rng=1).score_matrix(h),
    )


def test_the_guarantee_and_the_ledger_entry_are_the_dp_part_s(
    shop: InteractionDataset, tmp_path: Path
) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(10.0, 1e-2))
    m = DPHybrid(epsilon=2.0, cf="dp_ease", cf_params={"top_items": 50}, content_params=TEXT).fit(
        shop, rng=3, ledger=ledger
    )
    entries = ledger.entries()
    assert len(entries) == 1 and entries[0]["model"] == "dp_ease" and entries[0]["epsilon"] == 2.0
    assert m.privacy is not None and m.privacy == m.cf.privacy and m.privacy.unit == "user"
    assert m.release is m.cf.release
    m.save(tmp_path / "model")
    back = Recommender.load(tmp_path / "model")
    assert back.privacy == m.privacy
    h = m.history_matrix([shop.history(u) for u in range(30)])
    np.testing.assert_allclose(back.score_matrix(h), m.score_matrix(h), rtol=1e-6, atol=1e-6)


def test_with_only_the_dp_part_the_ranking_is_the_dp_model_s(shop: InteractionDataset) -> None:
    m = DPHybrid(
        epsilon=4.0,
        cf_params={"top_items": 60, "k": 20},
        content_params=TEXT,
        content_weight=0.0,
        popularity_weight=0.0,
    ).fit(shop, rng=2)
    h = m.history_matrix([shop.history(u) for u in range(20)])
    mine = m.score_matrix(h)[:, m.cf.selected]
    theirs = m.cf.selected_scores(h)
    for a, b in zip(mine, theirs, strict=True):
        assert np.array_equal(
            np.argsort(-a, kind="stable")[:10], np.argsort(-b, kind="stable")[:10]
        )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"content_params": {"adapter": "shop"}}, "adapter"),
        ({"cf_params": {"epsilon": 3.0}}, "epsilon"),
        ({"cf": "ease"}, "cf"),
        ({"cf_params": {"no_such_field": 1}}, "no_such_field"),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(params: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DPHybrid(**params)


def test_a_fine_tuned_encoder_folder_is_refused() -> None:
    import pytest

    from privrec.models.zoo import create_model

    with pytest.raises(Exception, match="model_path"):
        create_model("dp_hybrid", epsilon=1.0, content_params={"model_path": "/some/fine-tuned"})
