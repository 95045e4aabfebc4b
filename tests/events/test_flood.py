"""Flood limiting at the gate: one pseudonym's excess rows go, everyone else's stay."""

from __future__ import annotations

import pandas as pd
import pytest

from privrec.core.errors import ConfigError
from privrec.core.settings import Settings
from privrec.events.gate import ArrivalRateLimiter, Gate
from privrec.privacy.pseudonym import Pseudonymiser

T0 = 1_600_000_000.0
BOT = "bot.flooder@example.com"


def _gate(limit: int | None) -> Gate:
    return Gate(Pseudonymiser([b"k" * 32]), max_events_per_user_per_minute=limit)


def _batch() -> pd.DataFrame:
    """A bot with 30 events in 30 seconds, interleaved with 3 shoppers' ordinary events."""
    rows = []
    for i in range(30):
        rows.append({"user": BOT, "item": f"push-{i}", "type": "view", "timestamp": T0 + i})
        if i % 10 == 0:
            for s in range(3):
                rows.append(
                    {
                        "user": f"shopper-{s}",
                        "item": f"sku-{i}",
                        "type": "view",
                        "timestamp": T0 + i,
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("path", ["frame", "records"])
def test_only_the_flooding_pseudonyms_excess_rows_are_rejected(path: str) -> None:
    gate = _gate(10)
    df = _batch()
    res = gate.process_frame(df) if path == "frame" else gate.process_records(df.to_dict("records"))
    bot = gate.pseudonymiser.pseudonymise(BOT)
    acc = res.accepted
    assert (acc["user"] == bot).sum() == 10  # the first 10 in the minute
    assert sorted(acc.loc[acc["user"] == bot, "item"]) == sorted(f"push-{i}" for i in range(10))
    assert (acc["user"] != bot).sum() == 9  # every other shopper's event survives
    assert len(res.rejects) == 20
    lines = [i + 1 for i, u in enumerate(df["user"]) if u == BOT][10:]
    assert [r.line for r in res.rejects] == lines  # in input order, pointing at the source rows
    for r in res.rejects:
        assert r.user == bot
        assert r.reason.startswith("user:") and "max_events_per_user_per_minute" in r.reason
        assert BOT not in r.reason


def test_the_window_slides_with_event_time() -> None:
    gate = _gate(2)
    rows = [
        {"user": BOT, "item": f"i{k}", "type": "view", "timestamp": T0 + t}
        for k, t in enumerate([0, 10, 20, 61, 75, 200])
    ]
    res = gate.process_frame(pd.DataFrame(rows))
    # t=20 has 2 earlier rows within 60 s (0, 10); t=61 has 10 and 20 before it -> rejected too;
    # t=75 has 20, 61 (rejected rows still count); t=200 is alone
    assert sorted(res.accepted["item"]) == ["i0", "i1", "i5"]
    assert [r.line for r in res.rejects] == [3, 4, 5]


def test_no_limit_keeps_everything_and_settings_configure_it() -> None:
    assert len(_gate(None).process_frame(_batch()).accepted) == 39
    s = Settings(max_events_per_user_per_minute=5)
    g = Gate.from_settings(s, Pseudonymiser([b"k" * 32]))
    assert g.max_events_per_minute == 5
    assert Settings().max_events_per_user_per_minute is not None  # a generous default is on
    with pytest.raises(ConfigError, match="max_events_per_user_per_minute"):
        _gate(0)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_arrival_limit_holds_across_batches_and_slides_with_wall_time() -> None:
    """A bot sending one event per request, each with a fresh timestamp, is still cut off."""
    gate, clock = _gate(1000), _Clock()
    gate.arrivals = ArrivalRateLimiter(3, clock=clock)
    bot = gate.pseudonymiser.pseudonymise(BOT)
    kept = []
    for i in range(5):  # five requests within one second; timestamps a day apart
        clock.now = i * 0.2
        res = gate.process_frame(
            pd.DataFrame(
                [
                    {
                        "user": BOT,
                        "item": f"push-{i}",
                        "type": "view",
                        "timestamp": T0 + 86_400 * i,
                    },
                    {"user": f"shopper-{i}", "item": "sku", "type": "view", "timestamp": T0},
                ]
            )
        )
        kept += list(res.accepted.loc[res.accepted["user"] == bot, "item"])
        assert (res.accepted["user"] != bot).sum() == 1  # the other shopper's event always stays
        if i >= 3:
            assert [r.line for r in res.rejects] == [
                1
            ] and "arrived within 60 seconds" in res.rejects[0].reason
            assert BOT not in res.rejects[0].reason and res.rejects[0].user == bot
    assert kept == ["push-0", "push-1", "push-2"]
    clock.now = 61.0  # a minute later the bot may send again
    res = gate.process_frame(
        pd.DataFrame([{"user": BOT, "item": "late", "type": "view", "timestamp": T0}])
    )
    assert list(res.accepted["item"]) == ["late"]


def test_the_server_gate_limits_arrivals(tmp_path) -> None:
    from privrec.service import RecSys

    with RecSys(Settings(data_dir=tmp_path / "d", max_events_per_user_per_minute=4)) as rs:
        got = [
            rs.ingestion.batch(
                [{"user": BOT, "item": f"i{k}", "type": "view", "timestamp": T0 + 3600 * k}]
            )
            for k in range(6)
        ]
        assert [g["accepted"] for g in got] == [1, 1, 1, 1, 0, 0]
        assert (
            got[-1]["rejected"] == 1
            and "arrived within 60 seconds" in got[-1]["rejects"][0]["reason"]
        )
        assert (
            rs.ingestion.batch(
                [{"user": "someone-else", "item": "i0", "type": "view", "timestamp": T0}]
            )["accepted"]
            == 1
        )
