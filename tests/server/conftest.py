"""A small shop served by the app, built once per test session (a few seconds)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CLIENT_KEY = "client-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef01"
KEYS = f"client:{CLIENT_KEY},admin:{ADMIN_KEY}"


def build_shop(data_dir: Path) -> None:
    """Generate a small demo shop, ingest it through the gate and train two models."""
    from privrec.core.settings import Settings
    from privrec.data.synthetic import generate_shop
    from privrec.service import RecSys

    events, catalogue = generate_shop(n_items=240, n_users=160, seed=5)
    with RecSys(Settings(data_dir=data_dir)) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train("popularity")
        rs.train("itemknn", params={"k": 50, "shrink": 5.0})
        rs.set_default_model("itemknn")
    (data_dir / "DEMO").write_text("{}")


@pytest.fixture(scope="session")
def shop_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shop-template") / "data"
    build_shop(d)
    return d


@pytest.fixture()
def shop_dir(shop_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the shop's data directory (tests may change it)."""
    for var in (
        "PRIVREC_PSEUDONYM_KEY",
        "PRIVREC_STORE_KEY",
        "PRIVREC_API_KEYS",
        "PRIVREC_PAGES",
        "PRIVREC_CORS_ORIGINS",
        "PRIVREC_SHOPPER_TOKEN_SECRET",
        "PRIVREC_SHOPPER_TOKEN_TTL",
    ):
        monkeypatch.delenv(var, raising=False)
    d = tmp_path / "data"
    shutil.copytree(shop_template, d)
    return d


def make_app(data_dir: Path, **server: object):
    from privrec.core.settings import Settings
    from privrec.server.app import create_app
    from privrec.server.settings import ServerSettings

    opts = {"api_keys": KEYS, "pages": "on", "refresh_seconds": 0.2, **server}
    return create_app(Settings(data_dir=data_dir), server=ServerSettings(**opts))


@pytest.fixture()
def app(shop_dir: Path):
    return make_app(shop_dir)


@pytest.fixture()
def client(app) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


C = {"Authorization": f"Bearer {CLIENT_KEY}"}
A = {"X-API-Key": ADMIN_KEY}


def shopper_headers(client, user: str) -> dict[str, str]:
    """The client key plus a shopper token for `user`, minted as a shop's backend would."""
    r = client.post("/v1/admin/shopper-tokens", json={"user": user}, headers=A)
    assert r.status_code == 200, r.text
    return {**C, "X-Shopper-Token": r.json()["token"]}
