"""The privacy gate: one set of rules on both paths, pseudonyms out, raw ids never out."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from privrec.core.errors import ConfigError, ValidationError
from privrec.events.gate import EVENT_COLUMNS, Gate, Reject
from privrec.events.schema import MAX_ID_LEN, MAX_QUERY_LEN
from privrec.privacy.pseudonym import Pseudonymiser

RAW = "alice.secret-7781@example.com"
HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture()
def gate() -> Gate:
    return Gate(Pseudonymiser([b"k" * 32]))


def _row(**kw: object) -> dict:
    return {"user": RAW, "item": "sku-1", "type": "view", "timestamp": 1_600_000_000, **kw}


def test_accepted_frame_is_pseudonymous_and_minimised(gate: Gate) -> None:
    df = pd.DataFrame(
        [
            _row(session="sess-1", query="green tea"),
            _row(type="rating", rating=4, timestamp="2020-09-13T12:26:41Z"),
            _row(user=42, item=7, type="search", query="x", session=""),
        ]
    )
    res = gate.process_frame(df)
    acc = res.accepted
    assert tuple(acc.columns) == EVENT_COLUMNS and len(acc) == 3 and not res.rejects
    assert all(HEX32.fullmatch(u) for u in acc["user"]) and all(
        HEX32.fullmatch(e) for e in acc["event_id"]
    )
    assert acc["user"].iloc[0] == gate.pseudonymiser.pseudonymise(RAW)
    assert acc["user"].iloc[2] == gate.pseudonymiser.pseudonymise("42")
    assert acc["query"].tolist() == [None, None, None]  # minimisation: no query text by default
    assert HEX32.fullmatch(acc["session"].iloc[0]) and acc["session"].iloc[0] != "sess-1"
    assert acc["session"].iloc[1] is None and acc["session"].iloc[2] is None  # "" means no session
    assert acc["ts"].tolist() == [1_600_000_000.0, 1_600_000_001.0, 1_600_000_000.0]
    assert np.isnan(acc["rating"].iloc[0]) and acc["rating"].iloc[1] == 4.0
    assert acc["item"].tolist() == ["sku-1", "sku-1", "7"]
    assert acc["ts"].dtype == np.float64 and acc["rating"].dtype == np.float64
    text = acc.to_csv()
    assert RAW not in text and "sess-1" not in text


def test_query_text_kept_only_when_configured() -> None:
    g = Gate(Pseudonymiser([b"k" * 32]), keep_query_text=True)
    acc = g.process_frame(pd.DataFrame([_row(type="search", query="green tea")])).accepted
    assert acc["query"].tolist() == ["green tea"]


def test_event_ids_are_keyed_idempotency_keys(gate: Gate) -> None:
    p = gate.pseudonymiser
    given = (
        gate.process_frame(pd.DataFrame([_row(event_id=f"{RAW}/order-1")]))
        .accepted["event_id"]
        .iloc[0]
    )
    assert given == p.derive(
        f"\x1fevent\x1f{RAW}\x1f{RAW}/order-1"
    )  # keyed: the raw id inside never reaches storage
    a = gate.process_frame(pd.DataFrame([_row(), _row(item="sku-2")])).accepted["event_id"].tolist()
    b = gate.process_frame(pd.DataFrame([_row()])).accepted["event_id"].tolist()
    assert a[0] == b[0] and a[0] != a[1]  # same content -> same id; other content -> other id
    other_key = (
        Gate(Pseudonymiser([b"j" * 32]))
        .process_frame(pd.DataFrame([_row()]))
        .accepted["event_id"]
        .iloc[0]
    )
    assert other_key != a[0]


def test_duplicates_in_a_batch_are_counted_and_kept_once(gate: Gate) -> None:
    res = gate.process_frame(
        pd.DataFrame([_row(), _row(), _row(event_id="e1"), _row(event_id="e1", item="other")])
    )
    assert len(res.accepted) == 2 and res.duplicates == 2 and res.read == 4


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"type": "click"}, "type", "is not one of"),
        ({"user": None}, "user", "is missing"),
        ({"user": ""}, "user", "at least 1"),
        ({"user": "x" * (MAX_ID_LEN + 1)}, "user", "at most"),
        ({"item": None}, "item", "is missing"),
        ({"timestamp": "yesterday"}, "timestamp", "ISO-8601"),
        ({"timestamp": 1_600_000_000_000}, "timestamp", "future"),
        ({"timestamp": 5}, "timestamp", "before 1990"),
        ({"type": "rating"}, "rating", "required"),
        ({"type": "rating", "rating": 9}, "rating", "outside the rating scale"),
        ({"rating": "good"}, "rating", "number"),
        ({"query": "q" * (MAX_QUERY_LEN + 1)}, "query", "at most"),
        ({"session": "s" * (MAX_ID_LEN + 1)}, "session", "at most"),
        # an unknown field is named by its position: its name may be a value
        ({"colour": "red"}, "field 5", "not a known field"),
    ],
)
def test_rejects_name_field_and_problem_never_raw_values(
    gate: Gate, changes: dict, field: str, problem: str
) -> None:
    row = {k: v for k, v in _row(**changes).items() if v is not None}
    for res in (gate.process_frame(pd.DataFrame([row])), gate.process_records([row])):
        assert len(res.accepted) == 0 and len(res.rejects) == 1
        r = res.rejects[0]
        assert r.line == 1 and field in r.reason and problem in r.reason, r.reason
        assert (
            RAW not in r.reason and "yesterday" not in r.reason and "1600000000000" not in r.reason
        )
        valid_user = field != "user"
        assert (r.user == gate.pseudonymiser.pseudonymise(RAW)) if valid_user else r.user is None


def test_unknown_field_named_like_an_id_is_not_echoed(gate: Gate) -> None:
    r = gate.process_records([_row(**{RAW: 1, "bob-77": 2})]).rejects[0]
    assert "not a known field" in r.reason and RAW not in r.reason and "bob-77" not in r.reason


def test_line_numbers_and_invalid_config(gate: Gate) -> None:
    res = gate.process_frame(pd.DataFrame([_row(), _row(type="x")]), line_numbers=[10, 11])
    assert [r.line for r in res.rejects] == [11]
    assert [r.line for r in gate.process_records([_row(type="x")], first_line=5).rejects] == [5]
    with pytest.raises(ValidationError, match="line_numbers"):
        gate.process_frame(pd.DataFrame([_row()]), line_numbers=[1, 2])
    with pytest.raises(ConfigError, match="rating_min"):
        Gate(gate.pseudonymiser, rating_min=5, rating_max=1)
    assert gate.process_frame(pd.DataFrame()).read == 0
    assert gate.process_records(["not a mapping"]).rejects[0] == Reject(
        1, "record: is not a mapping of field names to values", None
    )


def test_loader_style_frames(gate: Gate) -> None:
    """What dataset loaders pass: object columns of text, int ids, datetime or int timestamps."""
    ts = pd.to_datetime([1_600_000_000, 1_600_000_060], unit="s")
    df = pd.DataFrame(
        {
            "user": [1, 2],
            "item": [10, 20],
            "type": ["rating", "rating"],
            "timestamp": ts,
            "rating": [4.0, 5.0],
        }
    )
    acc = gate.process_frame(df).accepted
    assert acc["ts"].tolist() == [1_600_000_000.0, 1_600_000_060.0] and acc["item"].tolist() == [
        "10",
        "20",
    ]
    obj = pd.DataFrame(
        [["u1", "i1", "view", "1600000000"]],
        columns=["user", "item", "type", "timestamp"],
        dtype=object,
    )
    assert len(gate.process_frame(obj).accepted) == 1


# ---- the bulk path agrees with pydantic --------------------------------------------------------
_MESSY: dict[str, list[object]] = {
    "user": [
        RAW,
        "bob",
        " carol ",
        "",
        "   ",
        17,
        17.0,
        True,
        None,
        "d\x1c",
        "x" * MAX_ID_LEN,
        "x" * (MAX_ID_LEN + 1),
        ["l"],
        np.int64(3),
    ],
    "item": ["sku-1", 5, "", " i ", None, 2.5, "\u00e9t\u00e9", "y" * 300],
    "type": [
        "view",
        "cart",
        "purchase",
        "rating",
        "search",
        "favorite",
        "VIEW",
        " view",
        "click",
        1,
        None,
    ],
    "timestamp": [
        1_600_000_000,
        1_600_000_000.5,
        "1600000000",
        " 1600000000 ",
        "1.6e9",
        "2020-09-13T12:26:40Z",
        "2020-09-13 12:26:40+02:00",
        "2020-09-13",
        "yesterday",
        "nan",
        "inf",
        12,
        10**15,
        2**70,
        -1,
        True,
        None,
        datetime(2020, 9, 13, tzinfo=UTC),
        "1_600_000_000",
    ],
    "rating": [None, 1, 5, 4.5, 0, 6, "3", " 3 ", "3.5", "x", True, float("nan"), "1e0", 10**20],
    "query": [None, "green tea", "", " padded ", 5, "q" * MAX_QUERY_LEN, "q" * (MAX_QUERY_LEN + 1)],
    "session": [None, "s1", "", 9, " s ", 1.5],
    "event_id": [None, "e-1", "", 12, " e ", "e" * 257],
    "extra": [None, None, None, "x"],
}


_GOOD = {"user": RAW, "item": "sku-1", "type": "view", "timestamp": 1_600_000_000}


def _messy_rows(n: int, seed: int) -> list[dict]:
    """Mostly valid rows with one or two odd values each, so both outcomes are common."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row: dict[str, object] = {k: _GOOD.get(k) for k in _MESSY}
        row["item"] = f"sku-{i}"  # distinct content, so valid rows are not duplicates
        for k, choices in _MESSY.items():
            if rng.random() < 0.15:
                row[k] = rng.choice(choices)
        rows.append(row)
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bulk_path_agrees_with_pydantic_on_random_messy_rows(gate: Gate, seed: int) -> None:
    rows = _messy_rows(300, seed)
    # Per column the frame holds Python objects exactly as given (what JSON ingestion builds).
    frame = pd.DataFrame({k: pd.Series([r[k] for r in rows], dtype=object) for k in _MESSY})
    bulk = gate.process_frame(frame)
    ref = gate.process_records(rows)
    assert bulk.read == ref.read == len(rows)
    assert len(bulk.accepted) + len(bulk.rejects) + bulk.duplicates == len(rows)
    assert [(r.line, r.reason, r.user) for r in bulk.rejects] == [
        (r.line, r.reason, r.user) for r in ref.rejects
    ]
    pd.testing.assert_frame_equal(bulk.accepted, ref.accepted)
    assert (
        0.2 * len(rows) < len(bulk.accepted) < 0.8 * len(rows)
    )  # the sample exercises both outcomes


def test_bulk_path_agrees_on_typed_columns(gate: Gate) -> None:
    """Columns with numpy dtypes (int, float with NaN, bool) as loaders and Parquet give them."""
    frame = pd.DataFrame(
        {
            "user": [1, 2, 3, 4],
            "item": [1.0, np.nan, 3.5, 4.0],
            "type": ["rating", "rating", "view", "view"],
            "timestamp": [1.6e9, np.nan, 1.6e9, 1.6e9],
            "rating": [True, False, True, False],
        }
    )
    bulk = gate.process_frame(frame)
    ref = gate.process_records(frame.astype(object).to_dict("records"))
    assert [(r.line, r.reason) for r in bulk.rejects] == [(r.line, r.reason) for r in ref.rejects]
    pd.testing.assert_frame_equal(bulk.accepted, ref.accepted)


def test_values_that_are_not_unicode_or_not_numbers_go_to_pydantic(gate: Gate) -> None:
    """Lone surrogates (JSON escapes), huge ints and nested values never crash the bulk path."""
    rows = [
        _row(user="\ud800x"),
        _row(item="i\udfff"),
        _row(rating="\ud800"),
        _row(timestamp=10**400),
        _row(rating=10**400),
        _row(item={"a": 1}),
        _row(timestamp=[1]),
        _row(),
    ]
    frame = pd.DataFrame(
        {
            k: pd.Series([r.get(k) for r in rows], dtype=object)
            for k in ("user", "item", "type", "timestamp", "rating")
        }
    )
    bulk = gate.process_frame(frame)
    ref = gate.process_records(rows)
    assert [(r.line, r.reason) for r in bulk.rejects] == [(r.line, r.reason) for r in ref.rejects]
    assert [r.line for r in bulk.rejects] == [1, 2, 3, 4, 5, 6, 7] and len(bulk.accepted) == 1


def test_event_ids_use_the_pseudonymiser_chain_so_rotation_rekeys_them() -> None:
    """derive == the HMAC-SHA256 chain of pseudonyms; rekey after rotation maps old ids to new."""
    import hashlib
    import hmac

    keys = [b"a" * 32, b"b" * 16, b"c" * 80]  # short and over-long keys too
    p = Pseudonymiser(keys)
    msg = f"\x1fevent\x1f{RAW}\x1fé-1"
    ref = msg
    for k in keys:
        ref = hmac.new(k, ref.encode(), hashlib.sha256).hexdigest()[:32]
    assert p.derive(msg) == ref == p.derive_many([msg.encode()])[0]
    before = Pseudonymiser(keys[:2])
    assert p.rekey_many([before.derive(msg)]) == [p.rekey(before.derive(msg))] == [ref]
    assert p.derive(RAW) == p.pseudonymise(RAW)
