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
