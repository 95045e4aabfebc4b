"""Rejects files: reasons never echo input, and the shoppers' rights reach their lines."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from privrec.core.errors import ValidationError
from privrec.core.settings import Settings
from privrec.events.rejects import REJECTS_AAD
from privrec.privacy.keys import key_dir, sidecar_key
from privrec.privacy.sealed import unseal_line
from privrec.service import RecSys

GOOD = "{user},item-{i},view,{ts}\n"
TS = 1_700_000_000


def _lines(d: Path) -> list[dict]:
    key = sidecar_key(key_dir(d))  # rejects lines are sealed with the sidecar key
    return [
        unseal_line(x, key, aad=REJECTS_AAD)
        for f in sorted((d / "rejects").glob("*.rejects.jsonl"))
        for x in f.read_text().splitlines()
    ]


def _no_file_holds(d: Path, value: str) -> None:
    for f in d.rglob("*"):
        if f.is_file():
            assert value.encode() not in f.read_bytes(), f"{value!r} found in {f.relative_to(d)}"


def test_a_csv_without_header_is_refused_without_echoing_its_first_row(tmp_path: Path) -> None:
    src = tmp_path / "noheader.csv"
    src.write_text(f"johnsmith,item-1,view,{TS}\nmaryjones,item-2,view,{TS}\n")
    d = tmp_path / "d"
    with RecSys(Settings(data_dir=d)) as rs:
        with pytest.raises(ValidationError) as info:
            rs.ingest_file(src)
        assert "johnsmith" not in str(info.value) and "header" in str(info.value)
    _no_file_holds(d, "johnsmith")


def test_an_unknown_column_is_named_by_position_only(tmp_path: Path) -> None:
    src = tmp_path / "extra.csv"
    src.write_text(f"user,item,type,timestamp,johnsmith\nalice,item-1,view,{TS},x\n")
    src2 = tmp_path / "extra.jsonl"
    src2.write_text(
        json.dumps({"user": "bob", "item": "i", "type": "view", "timestamp": TS, "maryjones": 1})
        + "\n"
    )
    d = tmp_path / "d"
    with RecSys(Settings(data_dir=d)) as rs:
        rs.ingest_file(src)
        rs.ingest_file(src2)
        reasons = sorted(r["reason"] for r in _lines(d))
        assert reasons == ["field 5: is not a known field"] * 2
        # the user field was valid: the reject keeps the pseudonym, for access and erasure
        users = {r["user"] for r in _lines(d)}
        assert users == {rs.ctx.pseudonymise("alice"), rs.ctx.pseudonymise("bob")}
    _no_file_holds(d, "johnsmith")
    _no_file_holds(d, "maryjones")


def _shop_with_rejects(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "events.csv"
    rows = "".join(GOOD.format(user=u, i=i, ts=TS + i) for i, u in enumerate(["alice", "bob"]))
    rows += f"alice,item-9,bogus,{TS}\nbob,item-9,bogus,{TS}\nalice,item-9,view,12\n"
    src.write_text("user,item,type,timestamp\n" + rows)
    return src, tmp_path / "d"


def test_export_includes_the_shoppers_rejects(tmp_path: Path) -> None:
    src, d = _shop_with_rejects(tmp_path)
    with RecSys(Settings(data_dir=d)) as rs:
        rs.ingest_file(src)
        doc = rs.export_user("alice")
        rows = doc["rejected_rows"]
        assert sorted(r["line"] for r in rows) == [4, 6]
        assert all(r["file"].startswith("events.csv") for r in rows)
        assert any("type" in r["reason"] for r in rows)
        assert [r["line"] for r in rs.export_user("bob")["rejected_rows"]] == [5]
        rs.rotate_key()  # the rejects follow the shopper through a key rotation
        assert sorted(r["line"] for r in rs.export_user("alice")["rejected_rows"]) == [4, 6]


def test_forget_deletes_the_shoppers_reject_lines(tmp_path: Path) -> None:
    src, d = _shop_with_rejects(tmp_path)
    with RecSys(Settings(data_dir=d)) as rs:
        rs.ingest_file(src)
        alice = rs.ctx.pseudonymise("alice")
        receipt = rs.forget("alice")
        assert receipt["rejected_rows_deleted"] == 2
        left = _lines(d)
        assert [r["line"] for r in left] == [5] and alice not in {r["user"] for r in left}
        assert rs.export_user("alice")["rejected_rows"] == []
        for f in (d / "rejects").glob("*"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600
            assert not f.name.startswith(".")  # rewritten in place, no temporary left
    _no_file_holds(d / "rejects", alice)
