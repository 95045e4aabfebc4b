"""File ingestion: every format, every kind of bad line, nothing lost silently, idempotent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from privrec.core.errors import NotFoundError, ValidationError
from privrec.events.gate import Gate
from privrec.events.ingest import BatchReport, ingest_file, ingest_frame, ingest_records
from privrec.events.store import EventStore
from privrec.privacy.pseudonym import Pseudonymiser

RAW = "carol.hidden-3141@example.net"
TS = 1_600_000_000


def _good(i: int, user: str = RAW) -> dict:
    return {"user": user, "item": f"sku-{i}", "type": "view", "timestamp": TS + i}


@pytest.fixture()
def env(data_dir: Path) -> Iterator[tuple[Gate, EventStore]]:
    gate = Gate(Pseudonymiser.from_data_dir(data_dir), max_line_bytes=1_000_000)
    with EventStore.open(data_dir) as store:
        yield gate, store


def _rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _check(
    report: BatchReport,
    rejects_path: Path,
    *,
    read: int,
    accepted: int,
    rejected: int,
    lines: list[int],
) -> list[dict]:
    assert (report.read, report.accepted, report.rejected) == (read, accepted, rejected)
    assert report.read == report.accepted + report.rejected + report.duplicates  # nothing vanishes
    rej = _rejects(rejects_path)
    assert sorted(r["line"] for r in rej) == lines and all(r["reason"] for r in rej)
    assert RAW not in rejects_path.read_text(encoding="utf-8")
    return rej


def test_jsonl_with_every_kind_of_bad_line(env: tuple[Gate, EventStore], tmp_path: Path) -> None:
    gate, store = env
    lines = [
        json.dumps(_good(1)).encode(),  # 1 good
        json.dumps({"user": RAW, "item": "x", "type": "view"}).encode(),  # 2 missing timestamp
        json.dumps({**_good(3), "timestamp": "last tuesday"}).encode(),  # 3 bad timestamp
        json.dumps({**_good(4), "type": "click"}).encode(),  # 4 unknown type
        # 5 invalid UTF-8
        b'{"user": "caf\xe9", "item": "x", "type": "view", "timestamp": 1600000000}',
        b'{"user": "'
        + RAW.encode()
        + b'", "item": "'
        + b"x" * 10_000_000
        + b'"}',  # 6 a 10 MB line
        b"",  # blank: skipped, not a row
        b'{"user": "' + RAW.encode() + b'", "item": ',  # 8 malformed JSON
        b"[1, 2, 3]",  # 9 not an object
        b"[" * 5000 + b"]" * 5000,  # 10 nested too deeply
        json.dumps(_good(11)).encode(),  # 11 good
        json.dumps(_good(11)).encode(),  # 12 duplicate of 11
        json.dumps({**_good(13), "colour": "red"}).encode(),  # 13 unknown field
        json.dumps({**_good(14), "colour": None}).encode(),  # 14 good (null means absent)
    ]
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"\n".join(lines))  # no newline after the last line
    rp = tmp_path / "rejects.jsonl"
    seen: list[int] = []
    report = ingest_file(src, gate, store, rejects_path=rp, batch_size=4, progress=seen.append)
    rej = _check(report, rp, read=13, accepted=3, rejected=9, lines=[2, 3, 4, 5, 6, 8, 9, 10, 13])
    assert report.duplicates == 1 and seen[-1] == 13 and seen == sorted(seen)
    by_line = {r["line"]: r for r in rej}
    assert "timestamp" in by_line[2]["reason"] and "missing" in by_line[2]["reason"]
    assert "timestamp" in by_line[3]["reason"] and "type" in by_line[4]["reason"]
    assert "UTF-8" in by_line[5]["reason"] and "longer than 1000000 bytes" in by_line[6]["reason"]
    assert (
        "JSON" in by_line[8]["reason"]
        and "array" in by_line[9]["reason"]
        and "nested" in by_line[10]["reason"]
    )
    assert "not a known field" in by_line[13]["reason"] and "colour" not in by_line[13]["reason"]
    pseudonym = gate.pseudonymiser.pseudonymise(RAW)
    assert (
        by_line[3]["user"] == pseudonym
        and by_line[6]["user"] is None
        and by_line[8]["user"] is None
    )
    assert sorted(store.events()["item"]) == ["sku-1", "sku-11", "sku-14"]


def test_csv_with_ragged_quoted_and_crlf_rows(env: tuple[Gate, EventStore], tmp_path: Path) -> None:
    gate, store = env
    text = (
        "user,item,type,timestamp,rating,query\r\n"
        f"{RAW},sku-1,view,{TS},,\r\n"  # 2 good
        f"{RAW},sku-2,view\r\n"  # 3 ragged (too few)
        f"{RAW},sku-3,view,{TS},,,extra\r\n"  # 4 ragged (too many)
        f'{RAW},"sku,4",rating,{TS},5,"tea, green"\r\n'  # 5 good, quoted commas
        f'{RAW},"sku-5,view,{TS},,\r\n'  # 6 unclosed quote: only this line is lost
        f"{RAW},sku-6,view,2020-09-13T12:26:40Z,,\r\n"  # 7 good, ISO time
        f"{RAW},sku-7,view,{TS * 1000},,\r\n"  # 8 milliseconds: in the future
    )
    src = tmp_path / "events.csv"
    src.write_bytes(text.encode())
    rp = tmp_path / "r.jsonl"
    rej = _check(
        ingest_file(src, gate, store, rejects_path=rp),
        rp,
        read=7,
        accepted=3,
        rejected=4,
        lines=[3, 4, 6, 8],
    )
    assert "3 fields but the header has 6" in rej[0]["reason"] and "quot" in rej[2]["reason"]
    assert sorted(store.events()["item"]) == ["sku,4", "sku-1", "sku-6"]
    # The fast (unquoted) path gives the same line numbers for ragged rows.
    fast = tmp_path / "fast.csv"
    fast.write_text(f"user,item,type,timestamp\n\n{RAW},a,view,{TS}\n{RAW},b\n{RAW},c,view,{TS}\n")
    rp2 = tmp_path / "r2.jsonl"
    _check(
        ingest_file(fast, gate, store, rejects_path=rp2),
        rp2,
        read=3,
        accepted=2,
        rejected=1,
        lines=[4],
    )


def test_invalid_utf8_and_long_lines_in_csv(env: tuple[Gate, EventStore], tmp_path: Path) -> None:
    gate, store = env
    src = tmp_path / "events.csv"
    src.write_bytes(
        b"user,item,type,timestamp\n"
        + f"{RAW},sku-1,view,{TS}\n".encode()
        + b"caf\xe9,sku-2,view,1600000000\n"
        + f"{RAW},{'x' * 2_000_000},view,{TS}\n".encode()
        + f"{RAW},sku-3,view,{TS}\n".encode()
    )
    rp = tmp_path / "r.jsonl"
    _check(
        ingest_file(src, gate, store, rejects_path=rp),
        rp,
        read=4,
        accepted=2,
        rejected=2,
        lines=[3, 4],
    )


def test_empty_files(env: tuple[Gate, EventStore], tmp_path: Path) -> None:
    gate, store = env
    for name, content in (
        ("e.jsonl", b""),
        ("e.csv", b""),
        ("h.csv", b"user,item,type,timestamp\n"),
        ("b.jsonl", b"\n\n  \n"),
    ):
        (tmp_path / name).write_bytes(content)
        rp = tmp_path / f"{name}.rejects"
        report = ingest_file(tmp_path / name, gate, store, rejects_path=rp)
        assert (report.read, report.accepted, report.rejected, report.duplicates) == (0, 0, 0, 0)
        assert rp.read_text() == ""
    assert store.count() == 0


def test_all_formats_store_the_same_events_and_twice_changes_nothing(
    env: tuple[Gate, EventStore], tmp_path: Path
) -> None:
    gate, store = env
    records = [_good(i, user=f"{RAW}-{i % 3}") for i in range(30)] + [{**_good(99), "type": "nope"}]
    frame = pd.DataFrame(records)
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    frame.to_csv(tmp_path / "e.csv", index=False)
    frame.to_parquet(tmp_path / "e.parquet")
    first = ingest_file(tmp_path / "e.csv", gate, store, rejects_path=tmp_path / "r0", batch_size=7)
    assert (first.accepted, first.rejected) == (30, 1)
    snapshot = store.events()
    for name in ("e.csv", "e.jsonl", "e.parquet"):
        again = ingest_file(tmp_path / name, gate, store, rejects_path=tmp_path / f"r-{name}")
        assert (again.read, again.accepted, again.rejected, again.duplicates) == (31, 0, 1, 30), (
            name
        )
    again = ingest_records(records, gate, store, batch_size=4)
    assert (again.accepted, again.duplicates, again.rejected) == (0, 30, 1)
    again = ingest_frame(frame, gate, store)
    assert (again.accepted, again.duplicates) == (0, 30)
    pd.testing.assert_frame_equal(store.events(), snapshot)
    assert first.to_dict()["accepted"] == 30


def test_bad_paths(env: tuple[Gate, EventStore], tmp_path: Path) -> None:
    gate, store = env
    (tmp_path / "e.xlsx").write_text("x")
    with pytest.raises(ValidationError, match="unknown file type"):
        ingest_file(tmp_path / "e.xlsx", gate, store)
    with pytest.raises(NotFoundError):
        ingest_file(tmp_path / "missing.csv", gate, store)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValidationError, match="Parquet"):
        ingest_file(tmp_path / "bad.parquet", gate, store)
    (tmp_path / "dup.csv").write_text("user,user,item\n")
    with pytest.raises(ValidationError, match="appears twice"):
        ingest_file(tmp_path / "dup.csv", gate, store)
    report = ingest_records(
        [{"user": RAW, "item": "a", "type": "view", "timestamp": TS}], gate, store
    )
    assert (
        report.rejects_path is None and report.accepted == 1
    )  # default rejects path for files only


def test_default_rejects_path_is_inside_the_data_dir(
    env: tuple[Gate, EventStore], tmp_path: Path, data_dir: Path
) -> None:
    gate, store = env
    (tmp_path / "x.jsonl").write_text('{"user": "u1", "type": "view"}\n')
    report = ingest_file(tmp_path / "x.jsonl", gate, store)
    assert Path(report.rejects_path) == data_dir / "rejects" / "x.jsonl.rejects.jsonl"
    assert len(_rejects(Path(report.rejects_path))) == 1


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 20])
def test_line_framing_across_block_boundaries(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """The streaming line splitter agrees with a plain split, whatever the read block size."""
    import io
    import random

    from privrec.events import framing

    rng = random.Random(block)
    lines = []
    for _ in range(300):
        kind = rng.random()
        if kind < 0.1:
            lines.append(b"")
        elif kind < 0.2:
            lines.append(b"x" * rng.randint(41, 300))  # over the limit
        elif kind < 0.25:
            lines.append(b"bad \xff utf8")
        else:
            lines.append(b"y" * rng.randint(1, 40))
    data = b"\n".join(lines) + (b"" if block % 2 else b"\n")
    monkeypatch.setattr(framing, "_READ_BLOCK", block)
    kept, rejected = [], []
    for chunk, rejects in framing.line_batches(io.BytesIO(data), 17, max_line_bytes=40):
        assert len(chunk) <= 17
        kept += list(zip(chunk.numbers.tolist(), chunk.data.split(b"\n")[:-1], strict=True))
        rejected += [r.line for r in rejects]
    expect_kept = [
        (i + 1, ln) for i, ln in enumerate(lines) if ln and len(ln) <= 40 and b"\xff" not in ln
    ]
    expect_rejected = [i + 1 for i, ln in enumerate(lines) if len(ln) > 40 or b"\xff" in ln]
    assert kept == expect_kept and sorted(rejected) == expect_rejected


def test_records_report_rejects_without_a_file(env: tuple[Gate, EventStore]) -> None:
    gate, store = env
    rows = [_good(1), {"user": RAW, "item": "a", "type": "teleport", "timestamp": TS}, "junk"]
    report = ingest_records(rows, gate, store)
    assert (report.read, report.accepted, report.rejected) == (3, 1, 2)
    assert [r["line"] for r in report.sample_rejects] == [2, 3]
    assert "type" in report.sample_rejects[0]["reason"] and RAW not in json.dumps(report.to_dict())


def test_a_failing_batch_stops_ingestion_cleanly(
    env: tuple[Gate, EventStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store error surfaces as StoreError; batches before it stay stored; re-running resumes."""
    import threading

    from privrec.core.errors import StoreError

    gate, store = env
    src = tmp_path / "e.csv"
    pd.DataFrame([_good(i) for i in range(50)]).to_csv(src, index=False)
    real = store.append
    calls = {"n": 0}

    def flaky(frame: pd.DataFrame) -> tuple[int, int]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise StoreError("event store: disk full (simulated)")
        return real(frame)

    monkeypatch.setattr(store, "append", flaky)
    with pytest.raises(StoreError, match="disk full"):
        ingest_file(src, gate, store, rejects_path=tmp_path / "r", batch_size=10)
    assert store.count() == 10
    assert not [t for t in threading.enumerate() if t.name.startswith("privrec-ingest")]
    monkeypatch.setattr(store, "append", real)
    again = ingest_file(src, gate, store, rejects_path=tmp_path / "r", batch_size=10)
    assert (again.accepted, again.duplicates, store.count()) == (40, 10, 50)
