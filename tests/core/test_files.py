"""Private files: mode 0600 whatever the umask, atomic replacement, nothing partial on failure."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from privrec.core import files
from privrec.core.files import (
    ensure_private,
    open_private_append,
    open_private_write,
    private_dir,
    write_private,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o277], ids=["permissive", "usual", "strict"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under a umask; 0o000 would give the world access, 0o277 the owner no write."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_write_private_mode_and_content(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "key"
    write_private(path, "secret\n")
    assert path.read_text() == "secret\n" and _mode(path) == 0o600
    write_private(path, b"\x00\x01")  # replacing keeps the mode
    assert path.read_bytes() == b"\x00\x01" and _mode(path) == 0o600
    assert os.listdir(tmp_path) == ["key"]  # no temporary file left behind


def test_write_private_narrows_a_wider_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o600


def test_write_private_exclusive_creates_once(tmp_path: Path) -> None:
    path = tmp_path / "session.key"
    write_private(path, "first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_private(path, "second", exclusive=True)
    assert path.read_text() == "first" and _mode(path) == 0o600
    assert os.listdir(tmp_path) == ["session.key"]


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_no_partial_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    path = tmp_path / "keys.json"
    write_private(path, "old content")
    real_write = os.write

    def half_write(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data)[: len(data) // 2])  # some bytes reach the disk first
        raise OSError(28, "No space left on device")

    def fail(*_: object) -> None:
        raise OSError(5, "Input/output error")

    target = {"write": ("write", half_write), "fsync": ("fsync", fail)}.get(
        fail_at, ("replace", fail)
    )
    monkeypatch.setattr(files.os, target[0], target[1])
    with pytest.raises(OSError):
        write_private(path, "new content that is longer than the old")
    monkeypatch.undo()
    assert path.read_text() == "old content"
    assert os.listdir(tmp_path) == ["keys.json"]


def test_no_file_at_all_when_the_first_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files.os, "fsync", fail)
    with pytest.raises(OSError):
        write_private(tmp_path / "new.key", "secret")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_open_private_append(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "audit.log"
    with open_private_append(path) as fh:
        fh.write("one\n")
    with open_private_append(path) as fh:
        fh.seek(0)
        assert fh.read() == "one\n"
        fh.seek(0)
        fh.write("two\n")  # O_APPEND: lands at the end despite the seek
    assert path.read_text() == "one\ntwo\n" and _mode(path) == 0o600


def test_open_private_append_narrows_an_older_wider_log(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_text("x\n")
    path.chmod(0o666)
    with open_private_append(path) as fh:
        fh.write("y\n")
    assert _mode(path) == 0o600 and path.read_text() == "x\ny\n"


def test_open_private_write_truncates(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "rejects.jsonl"
    path.write_text("old rejects\n")
    path.chmod(0o644)
    with open_private_write(path) as fh:
        fh.write("new\n")
    assert path.read_text() == "new\n" and _mode(path) == 0o600


def test_ensure_private(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "consent.sqlite"
    assert ensure_private(path) is True
    assert path.read_bytes() == b"" and _mode(path) == 0o600
    path.write_bytes(b"db")
    path.chmod(0o644)
    assert ensure_private(path) is False
    assert path.read_bytes() == b"db" and _mode(path) == 0o600  # kept, narrowed


def test_ensure_private_leaves_a_directory_alone(tmp_path: Path) -> None:
    d = tmp_path / "consent.sqlite"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    assert ensure_private(d) is False and _mode(d) == 0o755


def test_private_dir(tmp_path: Path, umask: int) -> None:
    d = private_dir(tmp_path / "a" / "keys")
    assert d.is_dir() and _mode(d) == 0o700
    d.chmod(0o755)
    private_dir(d)
    assert _mode(d) == 0o700
