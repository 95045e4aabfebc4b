"""The CLI end to end on a small shop: every command, and no raw id anywhere on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from privrec.cli import app
from privrec.data.synthetic import generate_shop
from tests.conftest import assert_no_raw_ids

runner = CliRunner()


@pytest.fixture(scope="module")
def shop_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    events, _catalogue = generate_shop(n_items=150, n_users=120, seed=3)
    path = tmp_path_factory.mktemp("shop") / "events.jsonl"
    cols = [
        c
        for c in ("user", "item", "type", "timestamp", "rating", "query", "session", "event_id")
        if c in events
    ]
    events[cols].to_json(path, orient="records", lines=True)
    return path, sorted(set(events["user"].astype(str)))


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_round_trip_and_no_raw_ids_on_disk(
    shop_file: tuple[Path, list[str]], data_dir: Path
) -> None:
    path, users = shop_file
    dd = str(data_dir)
    out = _run("ingest", str(path), "--data-dir", dd)
    report = json.loads(out[out.index("{") :])
    assert report["accepted"] > 0 and report["rejected"] == 0
    again = _run("ingest", str(path), "--data-dir", dd)
    assert json.loads(again[again.index("{") :])["accepted"] == 0  # idempotent

    _run("train", "--model", "itemknn", "--data-dir", dd)
    out = _run("recommend", users[0], "-k", "5", "--data-dir", dd)
    assert "because you" in out

    out = _run("export-user", users[0], "--data-dir", dd)
    exported = json.loads(out[out.index("{") :])
    assert exported["n_events"] > 0

    # Nothing in the data directory holds a raw user id (store, keys, models, rejects, logs).
    assert_no_raw_ids(data_dir, users)

    out = _run("forget", users[0], "--data-dir", dd)
    receipt = json.loads(out[out.index("{") :])
    assert receipt["events_deleted"] == exported["n_events"]
    out = _run("export-user", users[0], "--data-dir", dd)
    assert json.loads(out[out.index("{") :])["n_events"] == 0

    _run("rotate-key", "--data-dir", dd)
    out = _run("export-user", users[1], "--data-dir", dd)
    assert json.loads(out[out.index("{") :])["n_events"] > 0  # same user still found after rotation

    out = _run("retention", "--days", "0", "--data-dir", dd)
    assert "deleted" in out


def test_cli_errors_are_one_clear_line(data_dir: Path) -> None:
    result = runner.invoke(app, ["recommend", "nobody", "--data-dir", str(data_dir)])
    assert result.exit_code == 2
    assert "no model has been trained yet" in result.output


@pytest.mark.parametrize("content", ["", "user,item,type,timestamp\n"])
def test_ingest_of_a_file_without_events_fails_with_a_message(
    tmp_path: Path, data_dir: Path, content: str
) -> None:
    f = tmp_path / "events.csv"
    f.write_text(content)
    result = runner.invoke(app, ["ingest", str(f), "--data-dir", str(data_dir)])
    assert result.exit_code == 2
    assert "holds no events" in result.output


def test_cli_output_turns_no_text_into_emoji() -> None:
    from privrec.cli.common import console, err

    with console.capture() as cap:
        console.print("model :train: v1")
    assert ":train:" in cap.get()
    assert err._emoji is False
