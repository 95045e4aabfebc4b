"""Sealed files and lines: round trip, tamper detection, wrong key, old plaintext lines."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import ClassVar

import pytest

from privrec.core.settings import Settings
from privrec.privacy.audit_log import AuditLog
from privrec.privacy.keys import key_dir, sidecar_key
from privrec.privacy.ledger import PrivacyLedger
from privrec.privacy.sealed import (
    SealedDataError,
    read_sealed,
    seal,
    seal_line,
    unseal,
    unseal_line,
    write_sealed,
)

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def test_seal_round_trip_with_fresh_nonce() -> None:
    a = seal(b"purchases_only", KEY, aad=b"x")
    b = seal(b"purchases_only", KEY, aad=b"x")
    assert a != b  # a fresh nonce per message
    assert b"purchases_only" not in a
    assert unseal(a, KEY, aad=b"x") == b"purchases_only"


@pytest.mark.parametrize("where", [0, 5, 20, -1])
def test_any_changed_byte_is_refused(where: int) -> None:
    sealed = bytearray(seal(b"hello world", KEY, aad=b"x"))
    sealed[where] ^= 1
    with pytest.raises(SealedDataError):
        unseal(bytes(sealed), KEY, aad=b"x")


def test_wrong_key_and_wrong_aad_are_refused() -> None:
    sealed = seal(b"data", KEY, aad=b"x")
    with pytest.raises(SealedDataError, match="another key"):
        unseal(sealed, OTHER, aad=b"x")
    with pytest.raises(SealedDataError):
        unseal(sealed, KEY, aad=b"y")
    with pytest.raises(SealedDataError, match="bytes"):
        seal(b"data", KEY[:16], aad=b"x")


def test_sealed_file_round_trip_mode_and_tamper(tmp_path: Path) -> None:
    path = tmp_path / "training.json.sealed"
    write_sealed(path, b'{"a": 1}', KEY)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_sealed(path, KEY) == b'{"a": 1}'
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(SealedDataError, match=r"training\.json\.sealed"):
        read_sealed(path, KEY)


def test_a_sealed_file_renamed_does_not_open(tmp_path: Path) -> None:
    write_sealed(tmp_path / "a.sealed", b"x", KEY)
    os.replace(tmp_path / "a.sealed", tmp_path / "b.sealed")
    with pytest.raises(SealedDataError):
        read_sealed(tmp_path / "b.sealed", KEY)


def test_lines_round_trip_and_old_plaintext_lines() -> None:
    line = seal_line({"user": "ab12", "level": "anonymous"}, KEY)
    assert "\n" not in line and "anonymous" not in line and "ab12" not in line
    assert unseal_line(line, KEY) == {"user": "ab12", "level": "anonymous"}
    assert unseal_line('{"old": true}\n', KEY) == {"old": True}
    assert unseal_line('{"old": true}', None) == {"old": True}
    with pytest.raises(SealedDataError, match="give the sidecar key"):
        unseal_line(line, None)
    with pytest.raises(SealedDataError, match=r"f\.jsonl line 3"):
        unseal_line(line, OTHER, where="f.jsonl line 3")
    with pytest.raises(SealedDataError):
        unseal_line("not base64 !!", KEY)
    flipped = bytearray(base64.b64decode(line))
    flipped[14] ^= 1
    with pytest.raises(SealedDataError):
        unseal_line(base64.b64encode(bytes(flipped)).decode(), KEY)


def test_key_dir_setting_and_sidecar_key(tmp_path: Path) -> None:
    assert key_dir(tmp_path) == tmp_path / "keys"
    assert key_dir(Settings(data_dir=tmp_path)) == tmp_path / "keys"
    outside = tmp_path / "elsewhere"
    assert key_dir(Settings(data_dir=tmp_path, key_dir=outside)) == outside
    key = sidecar_key(outside)
    assert len(key) == 32 and sidecar_key(outside) == key
    assert os.stat(outside / "sidecar.key").st_mode & 0o777 == 0o600


def test_key_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIVREC_KEY_DIR", str(tmp_path / "k"))
    assert key_dir(Settings(data_dir=tmp_path)) == tmp_path / "k"


class _Release:
    name = "r"
    epsilon = 1.0
    delta = 1e-6
    mechanism = "laplace"
    accountant = "basic"
    unit = "user"
    details: ClassVar[dict[str, float]] = {"count_bound": 7.0}


def test_ledger_sealed_lines_mixed_with_old_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "privacy-ledger.jsonl"
    old = {"epsilon": 0.5, "delta": 0.0, "release": "old", "unit": "user"}
    path.write_text(json.dumps(old) + "\n")
    ledger = PrivacyLedger(path, (10.0, 1e-5), key=KEY)
    ledger.charge(_Release(), model="dp_ease")
    text = path.read_text()
    assert "dp_ease" not in text and "count_bound" not in text
    entries = ledger.entries()
    assert [e["release"] for e in entries] == ["old", "r"]
    assert ledger.spent().releases == 2
    with pytest.raises(SealedDataError):
        PrivacyLedger(path, (10.0, 1e-5), key=OTHER).entries()


def test_audit_log_sealed_chain_verifies_and_detects_tamper(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, key=b"h" * 32, seal_key=KEY)
    log.append("erase", pseudonym="feedbeef")
    log.append("consent", pseudonym="c0ffee")
    assert b"feedbeef" not in (tmp_path / "audit.log").read_bytes()
    assert [e["pseudonym"] for e in log.entries()] == ["feedbeef", "c0ffee"]
    assert log.verify() == (True, None)
    lines = (tmp_path / "audit.log").read_text().splitlines()
    raw = bytearray(base64.b64decode(lines[1]))
    raw[20] ^= 1
    lines[1] = base64.b64encode(bytes(raw)).decode()
    (tmp_path / "audit.log").write_text("\n".join(lines) + "\n")
    assert log.verify() == (False, 1)


def test_audit_log_continues_an_old_plaintext_chain(tmp_path: Path) -> None:
    AuditLog(tmp_path, key=b"h" * 32).append("erase", pseudonym="a1")
    log = AuditLog(tmp_path, key=b"h" * 32, seal_key=KEY)
    log.append("erase", pseudonym="b2")
    assert log.verify() == (True, None)
    assert [e["seq"] for e in log.entries()] == [0, 1]
