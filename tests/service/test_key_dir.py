"""Keys can live outside the data directory: a copy of the data directory alone opens nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.service import RecSys


def test_every_key_of_the_service_lives_in_key_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("PRIVREC_STORE_KEY", "PRIVREC_PSEUDONYM_KEY", "PRIVREC_KEY_DIR"):
        monkeypatch.delenv(var, raising=False)
    data, keys = tmp_path / "data", tmp_path / "secrets"
    events, catalogue = generate_shop(n_items=60, n_users=40, seed=6)
    with RecSys(Settings(data_dir=data, key_dir=keys)) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train("itemknn", params={"k": 10})
        rs.forget("shopper-00002")
        rs.rotate_key()
        assert rs.recommend("shopper-00003", 3).personalized
    from fastapi.testclient import TestClient

    from privrec.server.app import create_app
    from privrec.server.settings import ServerSettings

    app = create_app(Settings(data_dir=data, key_dir=keys), server=ServerSettings(pages="on"))
    with TestClient(app) as http:  # API keys, session and shopper-token secrets made there too
        assert http.get("/health/live").status_code == 200
    assert not (data / "keys").exists() or not any((data / "keys").iterdir())
    made = {p.name for p in keys.iterdir()}
    assert made >= {"store.key", "pseudonym.keys", "sidecar.key", "audit.key", "api-keys.json"}
    # without the key directory the copied data directory cannot be opened
    with (
        RecSys(Settings(data_dir=data, key_dir=tmp_path / "elsewhere")) as rs,
        pytest.raises(Exception, match="store"),
    ):
        _ = rs.store.count()
