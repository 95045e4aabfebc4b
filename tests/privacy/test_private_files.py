"""Every file the privacy layer writes is private (0600, keys directory 0700) whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from privrec.privacy import keys
from privrec.privacy.audit_log import AuditLog
from privrec.privacy.consent_store import ConsentStore
from privrec.privacy.dp import Release
from privrec.privacy.ledger import Budget, PrivacyLedger


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """Umask 0: a file created with the default mode would be world-readable and writable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_ledger_and_audit_log_are_private(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", Budget(10.0, 1e-5))
    ledger.charge(Release("m:counts", 1.0, 1e-7, "gaussian", "pld"))
    log = AuditLog(tmp_path)
    log.append("erase", pseudonym="ab" * 16)
    assert _mode(ledger.path) == 0o600 and _mode(log.path) == 0o600


def test_an_older_wider_log_is_narrowed_on_the_next_append(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.path.write_text("")
    log.path.chmod(0o644)
    log.append("erase", pseudonym="ab" * 16)
    assert _mode(log.path) == 0o600


def test_keys_are_private_and_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pseudonym.key"
    chain = keys.load_or_create_keys(path)
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    chain = keys.append_key(path, chain)
    assert _mode(path) == 0o600 and keys.load_or_create_keys(path) == chain
    assert sorted(os.listdir(path.parent)) == ["pseudonym.key"]  # no temporary file left


def test_two_processes_creating_the_key_agree_on_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If another process writes the key first, its key is used, not a second one."""
    path = tmp_path / "keys" / "pseudonym.key"
    theirs = bytes(range(32))
    real = keys.write_private

    def racing(p: Path, data: str, *, exclusive: bool = False) -> None:
        real(p, theirs.hex() + "\n", exclusive=True)  # the other process wins the race
        real(p, data, exclusive=exclusive)

    monkeypatch.setattr(keys, "write_private", racing)
    assert keys.load_or_create_keys(path) == [theirs]
    assert path.read_text() == theirs.hex() + "\n"


def test_consent_table_is_private(tmp_path: Path) -> None:
    store = ConsentStore.open(tmp_path)
    store.set("ab" * 16, "anonymous")
    assert _mode(store.path) == 0o600
