"""Flood limiting at the gate: one pseudonym's excess rows go, everyone else's stay."""

from __future__ import annotations

import pandas as pd
import pytest

from privrec.core.errors import ConfigError
from privrec.core.settings import Settings
from privrec.events.gate import Gate
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
                rows.append({"user": f"shopper-{s}", "item": f"sku-{i}", "type": "view", "timestamp": T0 + i})
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
    rows = [{"user": BOT, "item": f"i{k}", "type": "view", "timestamp": T0 + t} for k, t in enumerate([0, 10, 20, 61, 75, 200])]
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
