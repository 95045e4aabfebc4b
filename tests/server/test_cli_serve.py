"""`privrec serve`: keys created once (mode 0600) and never printed; uvicorn on loopback."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner


def test_serve_creates_keys_and_never_prints_them(
    shop_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from privrec.cli import app

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **kw: calls.append(kw))
    runner = CliRunner()
    first = runner.invoke(app, ["serve", "--data-dir", str(shop_dir), "--port", "8123"])
    assert first.exit_code == 0, first.output
    flat = first.output.replace("\n", "")
    assert "API keys created" in flat and "api-keys.json" in flat
    assert "prk_" not in flat  # a service's stdout lands in logs that others read
    assert (
        calls[0]["host"] == "127.0.0.1"
        and calls[0]["port"] == 8123
        and calls[0]["access_log"] is False
    )
    path = shop_dir / "keys" / "api-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = runner.invoke(app, ["serve", "--data-dir", str(shop_dir)])
    flat = second.output.replace("\n", "")
    assert second.exit_code == 0 and "prk_" not in flat and "api-keys.json" in flat


def test_access_log_lines_are_written_once(shop_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    import uvicorn

    from privrec.cli import app

    monkeypatch.setattr(uvicorn, "run", lambda application, **kw: None)
    log = logging.getLogger("privrec.server.access")
    monkeypatch.setattr(log, "handlers", [])
    monkeypatch.setattr(log, "propagate", True)
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(shop_dir), "--access-log"])
    assert result.exit_code == 0, result.output
    # its own handler writes each line; passing it on to the root handler would write it twice
    assert len(log.handlers) == 1 and log.propagate is False
