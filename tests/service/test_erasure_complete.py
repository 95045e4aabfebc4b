"""An erased shopper survives in no version that can ever be served again."""

from __future__ import annotations

from pathlib import Path

import pytest

from privrec.core.errors import ConflictError, NotFoundError
from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.service import RecSys

ALS = {"epochs": 2, "embedding_size": 8}


def _shop(d: Path) -> RecSys:
    events, catalogue = generate_shop(n_items=120, n_users=80, seed=4)
    rs = RecSys(Settings(data_dir=d))
    rs.add_items(catalogue)
    rs.ingest_frame(events)
    return rs


@pytest.mark.parametrize("background", [False, True])
def test_versions_that_cannot_unlearn_are_quarantined_then_removed(
    tmp_path: Path, background: bool
) -> None:
    with _shop(tmp_path / "d") as rs:
        old = rs.train("als", params=ALS).version
        active = rs.train("als", params=ALS).version
        receipt = rs.forget("shopper-00002", background=background)
        rs.wait_for_erasures()
        assert "als" in receipt["models_pending_retrain"]
        info = rs.registry.models()["als"]
        # the older version held the shopper too and cannot be downdated: gone at once
        assert old not in info.versions and not (rs.models_dir / "als" / old).exists()
        # the active one serves until the retrain, but can never be activated again
        assert info.active == active and info.quarantined == [active]
        retrained = rs.train("als", params=ALS).version
        with pytest.raises(NotFoundError):
            rs.registry.activate("als", active)
        after = rs.registry.models()["als"]
        assert after.active == retrained and after.versions == [retrained]
        assert "als" not in rs.rights.pending.read()


def test_a_retrain_that_is_not_activated_keeps_the_obligation(tmp_path: Path) -> None:
    with _shop(tmp_path / "d") as rs:
        active = rs.train("als", params=ALS).version
        rs.forget("shopper-00003")
        rs.train("als", params=ALS, activate=False)
        assert "als" in rs.rights.pending.read()  # the served version still holds the shopper
        assert rs.registry.models()["als"].active == active


def test_a_quarantined_version_can_never_be_activated_again(tmp_path: Path) -> None:
    with _shop(tmp_path / "d") as rs:
        held = rs.train("als", params=ALS).version
        rs.forget("shopper-00004")
        new = rs.train("als", params=ALS, activate=False).version
        rs.registry.activate("als", new)  # an operator switches by hand
        with pytest.raises(ConflictError, match="erased shoppers"):
            rs.registry.activate("als", held)
        assert rs.registry.active("als") == new
