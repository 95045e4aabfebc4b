"""One serving path: the CLI and the HTTP API give the same shopper the same list.

Same items, scores, flags and explanation text for a new shopper, a warm one, an anonymous one,
a purchases-only one, with business rules and with a context item, with and without a DP
popularity release for the anonymous.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from privrec.cli import app as cli
from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.server.personal import redact_items
from privrec.service import RecSys
from tests.server.conftest import C, make_app, shopper_headers

runner = CliRunner()

WARM = "shopper-00003"
BUYER = "shopper-00007"
ANON = "shopper-00011"
NEW = "someone-who-never-visited"
# (user, k, rules, context item)
CASES: list[tuple[str, int, dict[str, Any], str | None]] = [
    (WARM, 5, {}, None),
    (WARM, 8, {"in_stock": True, "category_cap": 2}, None),
    (WARM, 5, {"exclude_seen": False, "price_max": 40.0}, None),
    (BUYER, 5, {}, None),
    (ANON, 5, {}, None),
    (NEW, 5, {}, None),
    (NEW, 4, {"in_stock": True}, None),
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    d = tmp_path_factory.mktemp("one-path") / "data"
    events, catalogue = generate_shop(n_items=200, n_users=120, seed=11)
    with RecSys(Settings(data_dir=d)) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train("itemknn", params={"k": 40})
        rs.set_consent(BUYER, "purchases_only")
        rs.set_consent(ANON, "anonymous")
        context = str(catalogue["item"].iloc[3])
    return d, context


def _cli(data_dir: Path, user: str, k: int, rules: dict[str, Any], ctx: str | None) -> dict:
    args = ["recommend", user, "-k", str(k), "--json", "--data-dir", str(data_dir)]
    for name, value in rules.items():
        args += ["--rule", f"{name}={json.dumps(value)}"]
    if ctx:
        args += ["--context-item", ctx]
    res = runner.invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def _comparable(doc: dict) -> dict:
    doc = dict(doc)
    doc.pop("recommendation_id")  # fresh for every list served
    return doc


@pytest.mark.parametrize("with_dp", [False, True])
def test_cli_and_http_serve_identical_lists(shop: tuple[Path, str], with_dp: bool) -> None:
    data_dir, context = shop
    if with_dp:
        with RecSys(Settings(data_dir=data_dir)) as rs:
            rs.train("dp_popularity", params={"epsilon": 1.0})
            rs.set_default_model("itemknn")
    cases = [*CASES, (WARM, 5, {}, context), (NEW, 5, {}, context)]
    from_cli = [_comparable(_cli(data_dir, *case)) for case in cases]

    from fastapi.testclient import TestClient

    with TestClient(make_app(data_dir, pages="off")) as http:
        from_http = []
        for user, k, rules, ctx in cases:
            body: dict[str, Any] = {"user": user, "k": k}
            if rules:
                body["rules"] = rules
            if ctx:
                body["context_item"] = ctx
            # the shopper's own token: the same list as the CLI, explanations and all
            r = http.post("/v1/recommendations", json=body, headers=shopper_headers(http, user))
            assert r.status_code == 200, r.text
            from_http.append(_comparable(r.json()))
            # a client key alone: the same list with the one redaction applied on the way out
            alone = http.post("/v1/recommendations", json=body, headers=C)
            assert alone.status_code == 200, alone.text
            want = {**from_http[-1], "items": redact_items(from_http[-1]["items"])}
            assert _comparable(alone.json()) == want

    for case, a, b in zip(cases, from_cli, from_http, strict=True):
        assert a == b, f"CLI and HTTP disagree for {case}"
    by_user = {case[0]: doc for case, doc in zip(cases, from_cli, strict=True) if not case[3]}
    # the flags say what really happened
    assert by_user[WARM]["personalized"] and by_user[WARM]["model"] == "itemknn"
    assert by_user[BUYER]["personalized"] and by_user[BUYER]["consent"] == "purchases_only"
    assert not by_user[NEW]["personalized"] and by_user[NEW]["model"] == "popularity"
    assert not by_user[ANON]["personalized"] and by_user[ANON]["consent"] == "anonymous"
    assert by_user[ANON]["model"] == ("dp_popularity" if with_dp else "popularity")
    for doc in (by_user[NEW], by_user[ANON]):
        assert all(i["explanation"]["kind"] == "popular" for i in doc["items"])
    assert any("because you" in i["explanation"]["text"] for i in by_user[WARM]["items"])
