"""The console's events per day come from the store's SQL aggregate, not from reading events."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from privrec.core.settings import Settings
from privrec.service import RecSys
from privrec.service.insights import Insights

DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def test_events_per_day_uses_the_store_aggregate(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = []
    for d, (views, buys) in enumerate([(3, 0), (0, 0), (5, 2), (1, 1)]):  # day 1 has none
        for i in range(views):
            records.append(
                {"user": f"u{i}", "item": f"i{i}", "type": "view", "timestamp": T0 + d * DAY + i}
            )
        for i in range(buys):
            records.append(
                {
                    "user": f"u{i}",
                    "item": f"i{i}",
                    "type": "purchase",
                    "timestamp": T0 + d * DAY + 60 + i,
                }
            )
    with RecSys(Settings(data_dir=data_dir)) as rs:
        rs.ingestion.batch(records)
        insights = Insights(rs.serving)

        def no_rows(*_: object, **__: object) -> pd.DataFrame:
            raise AssertionError("events per day read the event rows")

        monkeypatch.setattr(type(rs.serving.ctx.store), "events", no_rows)
        got = insights.events_per_day(30)
        # at least a week ending at the last event's day; days without events count 0
        assert got["days"] == [f"2025-12-{d}" for d in (29, 30, 31)] + [
            f"2026-01-0{d}" for d in (1, 2, 3, 4)
        ]
        assert got["series"]["view"] == [0, 0, 0, 3, 0, 5, 1]
        assert got["series"]["purchase"] == [0, 0, 0, 0, 0, 2, 1]
        assert got["total"] == 12
        assert insights.events_per_day(2)["series"]["view"] == [5, 1]  # cached per days asked
        rs.ingestion.batch(
            [{"user": "u9", "item": "i9", "type": "view", "timestamp": T0 + 3 * DAY + 500}]
        )
        assert insights.events_per_day(30)["series"]["view"][-1] == 2  # a new event shows at once


def _shop(n_pair: int) -> list[dict[str, object]]:
    """`n_pair` shoppers buy a and b; one shopper buys a and z; others browse."""
    rows: list[dict[str, object]] = []
    for i in range(n_pair):
        for j, item in enumerate(("a", "b")):
            ts = T0 + i + j
            rows.append({"user": f"p{i}", "item": item, "type": "purchase", "timestamp": ts})
    rows += [
        {"user": "lone", "item": "a", "type": "purchase", "timestamp": T0 + 1},
        {"user": "lone", "item": "z", "type": "purchase", "timestamp": T0 + 2},
    ]
    rows += [{"user": f"v{i}", "item": "c", "type": "view", "timestamp": T0 + i} for i in range(5)]
    return rows


def test_bought_together_shows_popular_pairs_hides_a_single_buyers_and_spends_once(
    data_dir: Path,
) -> None:
    settings = Settings(data_dir=data_dir, privacy_budget_epsilon=1.2, expected_users=10_000)
    with RecSys(settings) as rs:
        rs.ingestion.batch(_shop(300))
        rs.train("popularity")
        insights = Insights(rs.serving)
        got = insights.bought_together("a", 5)
        assert [o["item"] for o in got["items"]] == ["b"]  # never z: one shopper bought it
        assert [o["item"] for o in insights.bought_together("z", 5)["items"]] == []
        entries = rs.ctx.ledger.entries()
        assert [e["release"] for e in entries] == ["bought_together:pairs"]
        assert entries[0]["details"]["max_keys_per_user"] == settings.bought_together_max_pairs

        # a restart reads the sealed release: no second charge, the same list
        again = Insights(rs.serving)
        assert again.bought_together("a", 5)["items"] == got["items"]
        assert len(rs.ctx.ledger.entries()) == 1
        raw = (data_dir / "bought-together.sealed").read_bytes()
        assert b'"b"' not in raw and b"partners" not in raw

        # events changed and the release is old: a new one, refused by the budget, keeps the old
        rs.ingestion.batch([{"user": "w", "item": "c", "type": "view", "timestamp": T0 + 9}])
        again._release["time"] -= 31 * DAY  # type: ignore[index]
        assert [o["item"] for o in again.bought_together("a", 5)["items"]] == ["b"]
        assert len(rs.ctx.ledger.entries()) == 1


def test_bought_together_off_shows_nothing_and_spends_nothing(data_dir: Path) -> None:
    with RecSys(Settings(data_dir=data_dir, bought_together_epsilon=0)) as rs:
        rs.ingestion.batch(_shop(300))
        rs.train("popularity")
        got = Insights(rs.serving).bought_together("a", 5)
        assert got["items"] == [] and got["privacy"] is None
        assert rs.ctx.ledger.entries() == []
