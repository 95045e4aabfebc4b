"""What the service serves as a DP release, and what an artifact may reveal about shoppers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privrec.core.errors import ConflictError
from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.privacy.sealed import read_sealed, write_sealed
from privrec.service import RecSys


@pytest.fixture()
def rs(tmp_path: Path):
    events, catalogue = generate_shop(n_items=90, n_users=60, seed=8)
    with RecSys(Settings(data_dir=tmp_path / "d")) as r:
        r.add_items(catalogue)
        r.ingest_frame(events)
        r.train("popularity")
        yield r


def test_epsilon_infinity_is_never_served_as_the_dp_release(rs: RecSys) -> None:
    rs.train("dp_popularity", params={"epsilon": float("inf")})
    rs.set_consent("shopper-00001", "anonymous")
    out = rs.recommend("shopper-00001", 5)
    assert out.model == "popularity" and out.model != "dp_popularity"
    assert "no dp_popularity" in (out.note or "")


def test_a_version_with_reproducible_noise_cannot_be_activated(rs: RecSys) -> None:
    v = rs.train("dp_popularity", params={"epsilon": 1.0}, activate=False).version
    cfg = rs.models_dir / "dp_popularity" / v / "config.json.sealed"
    doc = json.loads(read_sealed(cfg, rs.ctx.sidecar_key))
    doc["reproducible_noise"] = True  # what a fit with a fixed noise seed records
    write_sealed(cfg, json.dumps(doc).encode(), rs.ctx.sidecar_key)
    with pytest.raises(ConflictError, match="not a differentially private release"):
        rs.registry.activate("dp_popularity", v)


def test_item_order_in_artifacts_says_nothing_about_who_came_first(rs: RecSys) -> None:
    version = rs.registry.active("popularity")
    assert version is not None
    keys = json.loads((rs.models_dir / "popularity" / version / "items.json").read_text())
    assert keys == sorted(keys)


def test_model_files_are_private(rs: RecSys) -> None:
    version = rs.registry.active("popularity")
    assert version is not None
    path = rs.models_dir / "popularity" / version
    assert path.stat().st_mode & 0o077 == 0
    assert all(f.stat().st_mode & 0o077 == 0 for f in path.iterdir())


def test_export_shows_the_epsilon_a_shopper_has_accumulated(rs: RecSys) -> None:
    assert rs.export_user("shopper-00002")["privacy_ledger"]["releases"] == 0
    rs.train("dp_popularity", params={"epsilon": 1.0})
    rs.train("dp_popularity", params={"epsilon": 0.5})
    dp = rs.export_user("shopper-00002")["privacy_ledger"]
    assert dp["releases"] == 2 and dp["unit"] == "user"
    assert 1.0 < dp["epsilon"] <= 1.5 + 1e-9  # composed by the accountant, at most the sum


def test_a_dp_list_is_explained_without_exact_statistics(rs: RecSys) -> None:
    # at a tiny epsilon the noise dominates: items nobody touched rank high; an explanation read
    # from the exact counts would call them "new arrival" and so tell that nobody touched them
    rs.train("dp_popularity", params={"epsilon": 0.05})
    rs.set_consent("shopper-00003", "anonymous")
    out = rs.recommend("shopper-00003", 60)
    assert out.model == "dp_popularity"
    assert {i["explanation"]["kind"] for i in out.items} == {"popular"}


def test_an_experiment_replay_of_a_dp_variant_is_charged(rs: RecSys) -> None:
    rs.train("dp_popularity", params={"epsilon": 1.0})
    before = len(rs.ctx.ledger.entries())
    rs.experiments.create(
        {
            "name": "pop-vs-dp",
            "variants": [
                {"name": "a", "model": "popularity"},
                {"name": "b", "model": "dp_popularity"},
            ],
        }
    )
    rs.replay_experiment("pop-vs-dp", k=5, max_users=30)
    # refitting the DP variant on the shop's data is a release like any other
    assert len(rs.ctx.ledger.entries()) == before + 1
