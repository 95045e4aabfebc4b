"""The CLI beside a running `privrec serve`: commands go through its HTTP API, same output.

A real server runs as a subprocess on a free port over a temporary copy of a small shop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.server.browser import free_port
from tests.server.conftest import build_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("beside") / "data"
    build_shop(d)
    return d


@pytest.fixture()
def served(shop: Path, tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    data = tmp_path / "data"
    shutil.copytree(shop, data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIVREC_")}
    env["HF_HUB_OFFLINE"] = "1"
    port = free_port()
    exe = Path(sys.executable).parent / "privrec"
    proc = subprocess.Popen(
        [str(exe), "serve", "--data-dir", str(data), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < 120:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            with urllib.request.urlopen(url + "/health/live", timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("the server did not start")
    try:
        yield data, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _cli(*args: str) -> tuple[int, str]:
    from privrec.cli import app

    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def test_cli_commands_go_through_the_running_server(
    served: tuple[Path, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, proc = served
    for k in [k for k in os.environ if k.startswith("PRIVREC_")]:
        monkeypatch.delenv(k)
    dd = ["--data-dir", str(data)]

    runtime = data / "server.json"
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o600
    doc = json.loads(runtime.read_text())
    assert doc["pid"] == proc.pid and doc["url"].startswith("http://127.0.0.1:")
    assert doc["admin_key"]["source"] == "file" and doc["admin_key"]["key_id"].startswith("key-")
    assert "prk_" not in runtime.read_text()  # a reference to the key, never the key

    code, rec_remote = _cli("recommend", "shopper-00001", "-k", "5", "--json", *dd)
    assert code == 0, rec_remote
    original = json.loads(rec_remote)["version"]

    code, out = _cli("train", "-m", "itemknn", "-p", "k=20", *dd)
    assert code == 0, out
    assert "trained itemknn in" in out and "(active)" in out
    code, out = _cli("rollback", "itemknn", "--reason", "checking the CLI", *dd)
    assert code == 0, out
    assert f"itemknn: rolled back to {original}" in out

    code, out = _cli("jobs", "--json", *dd)
    assert code == 0, out
    kinds = [(j["kind"], j["status"]) for j in json.loads(out)]
    assert kinds[:2] == [("rollback", "succeeded"), ("train", "succeeded")]

    code, out = _cli("schedule", "set", "itemknn", "--every-events", "1000", *dd)
    assert code == 0 and json.loads(out)["itemknn"]["every_events"] == 1000, out
    code, out = _cli("schedule", "show", *dd)
    assert code == 0 and "itemknn" in out and "1000" in out, out

    code, out = _cli("privacy-budget", *dd)
    assert code == 0 and "ledger" in json.loads(out), out
    code, out = _cli("consent", "shopper-00003", "--set", "purchases_only", *dd)
    assert code == 0 and json.loads(out)["previous"] == "personalized", out
    assert _cli("consent", "shopper-00003", *dd) == (0, '{\n  "level": "purchases_only"\n}\n')
    code, out = _cli("forget", "shopper-00002", *dd)
    assert code == 0 and json.loads(out)["events_deleted"] > 0, out

    events = data.parent / "events.jsonl"
    events.write_text('{"user": "u", "item": "sku-000001", "type": "view", "timestamp": 1}\n')
    code, out = _cli("ingest", str(events), *dd)
    assert code == 2 and "stop the server or use the HTTP API: POST /v1/events/batch" in out
    code, out = _cli("retention", "--days", "1", *dd)
    assert code == 2 and "stop the server first" in out, out
    code, out = _cli("serve", *dd)
    assert code == 2 and "already" in out, out
    code, out = _cli("worker", "--once", *dd)
    assert code == 2 and "runs the retrain scheduler itself" in out, out

    code, models_remote = _cli("models", *dd)
    assert code == 0 and "itemknn" in models_remote and "popularity" in models_remote
    # after the erasure (itemknn unlearnt it exactly: a new version)
    code, rec_remote = _cli("recommend", "shopper-00001", "-k", "5", "--json", *dd)
    assert code == 0, rec_remote

    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert not runtime.exists()  # removed on shutdown

    # the same commands without a server: the same output
    assert _cli("models", *dd) == (0, models_remote)
    code, rec_local = _cli("recommend", "shopper-00001", "-k", "5", "--json", *dd)
    assert code == 0, rec_local
    remote_items = [(i["item"], i["score"]) for i in json.loads(rec_remote)["items"]]
    local = json.loads(rec_local)
    assert local["version"] == json.loads(rec_remote)["version"]
    assert [(i["item"], i["score"]) for i in local["items"]] == remote_items
    assert _cli("consent", "shopper-00003", *dd) == (0, '{\n  "level": "purchases_only"\n}\n')
    code, out = _cli("worker", "--once", *dd)
    assert code == 0, out


def test_a_stale_runtime_file_is_detected(shop: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(shop, data)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (data / "server.json").write_text(
        json.dumps({"url": "http://127.0.0.1:9", "pid": dead.pid, "admin_key": {}})
    )
    code, out = _cli("models", "--data-dir", str(data))
    assert code == 0 and "itemknn" in out, out
    assert not (data / "server.json").exists()
