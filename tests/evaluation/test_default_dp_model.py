"""The default DP model (issue 16): DP EASE with the text prior where items have text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from privrec.data.dataset import ITEM_META_COLUMNS, InteractionDataset
from privrec.data.synthetic import generate_shop_dataset
from privrec.evaluation.privacy_tuning import (
    DEFAULT_ROSTER,
    default_dp_model,
    default_roster,
    has_item_text,
)
from privrec.models.zoo import create_model
from privrec.pipeline import demo_dp_spec
from privrec.privacy.ledger import Budget, PrivacyLedger


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return generate_shop_dataset(n_items=60, n_users=120, seed=3)


def without_text(ds: InteractionDataset) -> InteractionDataset:
    """The same events with a catalogue that has no title, category, brand or description."""
    return InteractionDataset(
        users=ds.users,
        items=ds.items,
        user_idx=ds.user_idx,
        item_idx=ds.item_idx,
        event_type=ds.event_type,
        ts=ds.ts,
        rating=ds.rating,
        item_meta=pd.DataFrame(
            {c: ds.items.keys if c == "item" else None for c in ITEM_META_COLUMNS}
        ),
        event_weights=dict(ds.event_weights),
    )


def test_the_default_is_the_text_prior_with_item_text_and_dp_ease_without(
    shop: InteractionDataset, tmp_path: Path
) -> None:
    bare = without_text(shop)
    assert has_item_text(shop) and not has_item_text(bare)
    assert default_dp_model(shop) == "dp_ease_prior"
    assert default_dp_model(bare) == "dp_ease"
    # the privacy report's default roster holds exactly one DP EASE, the one that fits the data
    with_text_roster, bare_roster = default_roster(shop), default_roster(bare)
    assert "dp_ease_prior" in with_text_roster and "dp_ease" not in with_text_roster
    assert "dp_ease" in bare_roster and "dp_ease_prior" not in bare_roster
    assert set(with_text_roster) - {"dp_ease_prior"} == set(bare_roster) - {"dp_ease"}
    # the main job's DP model follows the same rule (and reuses the demo's text cache)
    spec = demo_dp_spec(shop, tmp_path)
    assert spec.name == "dp_ease_prior" and spec.params["epsilon"] == 1.0
    assert spec.params["content_params"] == {"cache_dir": str(tmp_path)}
    assert demo_dp_spec(bare, tmp_path).name == "dp_ease"


@pytest.mark.parametrize("text", [True, False])
def test_the_default_dp_model_is_charged_to_the_ledger(
    shop: InteractionDataset, tmp_path: Path, text: bool
) -> None:
    ds = shop if text else without_text(shop)
    name = default_dp_model(ds)
    params = dict(DEFAULT_ROSTER[name](2.0))
    if name == "dp_ease_prior":
        params["content_params"] = {"cache": False}
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", Budget(8.0, 1e-5))
    model = create_model(name, **params).fit(ds, rng=0, ledger=ledger)
    entries = ledger.entries()
    assert entries and {e["model"] for e in entries} == {name}
    assert model.privacy is not None and model.privacy.epsilon == pytest.approx(2.0)
    # one release, charged at the model's epsilon (the summary composes at the budget's delta)
    assert [e["epsilon"] for e in entries] == [pytest.approx(2.0)]
    assert ledger.summary()["releases"] == 1
