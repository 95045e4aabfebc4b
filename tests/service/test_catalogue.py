"""Catalogue changes reach serving at once: titles, price and stock rules, deletion."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from privrec.core.errors import NotFoundError, ValidationError
from privrec.core.settings import Settings
from privrec.service import RecSys


def _shop(data_dir: Path) -> RecSys:
    """A shop with its own events and no catalogue: lists show bare ids."""
    rows = []
    for u in range(12):
        for i in range(6):
            if (u + i) % 3:
                rows.append(
                    {"user": f"u{u}", "item": f"p{i}", "type": "view", "timestamp": 1e9 + u + i}
                )
    rs = RecSys(Settings(data_dir=data_dir))
    rs.ingest_frame(pd.DataFrame(rows))
    rs.train("popularity")
    rs.train("itemknn")
    rs.set_default_model("itemknn")
    return rs


def _ids(rs: RecSys, user: str, **rules: object) -> list[str]:
    return [r["item"] for r in rs.recommend(user, 6, rules=rules or None).items]


def test_import_then_recommend_shows_titles_and_price_rule(data_dir: Path, tmp_path: Path) -> None:
    with _shop(data_dir) as rs:
        before = rs.recommend("newcomer", 3).items
        assert all(r["title"] is None for r in before)
        f = tmp_path / "cat.jsonl"
        f.write_text(
            "\n".join(
                json.dumps({"item": f"p{i}", "title": f"Product {i}", "price": 10.0 * i})
                for i in range(6)
            )
            + "\n"
        )
        report = rs.catalogue.import_file(f)
        assert report["accepted"] == 6 and report["rejected"] == 0
        items = rs.recommend("newcomer", 6).items
        assert {r["item"]: r["title"] for r in items} == {f"p{i}": f"Product {i}" for i in range(6)}
        cheap = rs.recommend("newcomer", 6, rules={"price_max": 25}).items
        assert {r["item"] for r in cheap} == {"p0", "p1", "p2"}
        personal = rs.recommend("u1", 6, rules={"price_max": 25, "exclude_seen": False}).items
        assert personal and all(r["price"] <= 25 for r in personal)


def test_patch_stock_applies_at_once(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        rs.catalogue.upsert(
            [{"item": f"p{i}", "title": f"P{i}", "in_stock": True} for i in range(6)]
        )
        assert "p2" in _ids(rs, "newcomer", in_stock=True)
        row = rs.catalogue.patch("p2", {"stock": 0})
        assert row["in_stock"] is False and row["title"] == "P2"
        assert "p2" not in _ids(rs, "newcomer", in_stock=True)
        assert "p2" not in _ids(rs, "u0", in_stock=True)
        assert rs.serving.item("p2")["in_stock"] is False


def test_delete_removes_from_lists_and_upsert_revives(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        rs.catalogue.upsert([{"item": f"p{i}", "title": f"P{i}"} for i in range(6)])
        assert "p3" in _ids(rs, "newcomer")
        assert rs.catalogue.delete("p3") == {"item": "p3", "deleted": True}
        assert "p3" not in _ids(rs, "newcomer")
        for u in range(12):
            assert "p3" not in _ids(rs, f"u{u}", exclude_seen=False)
        with pytest.raises(NotFoundError):
            rs.catalogue.patch("p3", {"title": "x"})
        with pytest.raises(NotFoundError):
            rs.catalogue.delete("p3")
    with RecSys(Settings(data_dir=data_dir)) as rs:  # a restart: the in_stock rule still holds
        assert "p3" not in _ids(rs, "newcomer", in_stock=True)
        rs.catalogue.upsert([{"item": "p3", "title": "Back"}])
        assert "p3" in _ids(rs, "newcomer")


def test_patch_errors_name_the_field(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        rs.catalogue.upsert([{"item": "p1", "title": "P1"}])
        with pytest.raises(ValidationError) as e:
            rs.catalogue.patch("p1", {"price": -3})
        assert e.value.field == "price" and "-3" not in str(e.value)
        with pytest.raises(ValidationError):
            rs.catalogue.patch("p1", {"item": "p9"})
        with pytest.raises(NotFoundError):
            rs.catalogue.patch("nope", {"title": "x"})


def test_upsert_report_numbers_records(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        report = rs.catalogue.upsert(
            [{"item": "p1", "title": "ok"}, {"item": "p2", "currency": "EURO"}, {"title": "x"}]
        )
        assert report["accepted"] == 1 and report["items_written"] == 1
        assert [(r["line"], r["field"]) for r in report["rejects"]] == [
            (2, "currency"),
            (3, "item"),
        ]
        assert "EURO" not in json.dumps(report)


def test_a_deleted_item_stays_out_after_a_restart_and_from_the_dp_release(
    data_dir: Path,
) -> None:
    with _shop(data_dir) as rs:
        rs.catalogue.upsert([{"item": f"p{i}", "title": f"Thing {i}"} for i in range(6)])
        rs.train("dp_popularity", params={"epsilon": 0.05})  # noise: any item may come first
        rs.catalogue.delete("p1")
        rs.set_consent("u5", "anonymous")
        assert "p1" not in [r["item"] for r in rs.recommend("u5", 6).items]
    with RecSys(Settings(data_dir=data_dir)) as rs:  # a new process loads the versions again
        for user in ("u1", "u2", "newcomer"):
            assert "p1" not in _ids(rs, user)
        anonymous = rs.recommend("u5", 6)
        assert anonymous.model == "dp_popularity"
        assert "p1" not in [r["item"] for r in anonymous.items]
        rs.serving.refresh_popularity()  # the server's periodic recount
        assert "p1" not in _ids(rs, "newcomer")


def test_search_never_finds_a_deleted_item(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        rs.catalogue.upsert([{"item": f"p{i}", "title": f"Blue lamp {i}"} for i in range(6)])
        rs.catalogue.delete("p2")
        found = [r["item"] for r in rs.search("blue lamp", 6).items]
        assert found and "p2" not in found
