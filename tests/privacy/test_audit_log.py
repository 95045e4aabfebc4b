"""The append-only, hash-chained audit log and the erasure receipt."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from privrec.core.errors import ValidationError
from privrec.privacy.audit_log import AuditLog, erasure_receipt


def test_append_chain_and_verify(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    r = erasure_receipt(
        "ab" * 16,
        events_deleted=12,
        consent_deleted=True,
        models_updated=["ease"],
        models_pending=["bpr"],
        retrain_within_days=7,
        erased_at=0.0,
    )
    assert r["retrain_deadline"] == "1970-01-08T00:00:00Z"
    assert r["deleted"] == {"events": 12, "consent_record": True, "cached_results": 0}
    log.append("erase", **r)
    log.append("erase", **erasure_receipt("cd" * 16, events_deleted=1))
    entries = log.entries("erase")
    assert [e["seq"] for e in entries] == [0, 1] and entries[1]["prev"] == entries[0]["hash"]
    assert log.verify() == (True, None)
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600


def test_tampering_is_detected(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    for i in range(3):
        log.append("erase", pseudonym=f"{i:032x}", events_deleted=i)
    lines = log.path.read_text().splitlines()
    doc = json.loads(lines[1])
    doc["events_deleted"] = 99
    lines[1] = json.dumps(doc, sort_keys=True)
    log.path.write_text("\n".join(lines) + "\n")
    assert log.verify() == (False, 1)


def test_personal_fields_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        AuditLog(tmp_path).append("erase", user_id="alice@example.com")
    assert not (tmp_path / "audit.log").exists()


def test_no_deadline_when_every_model_was_updated() -> None:
    assert (
        erasure_receipt("ef" * 16, events_deleted=0, models_updated=["popularity"])[
            "retrain_deadline"
        ]
        is None
    )


class _MemoryAnchor:
    def __init__(self) -> None:
        self.value: tuple[int, str] | None = None

    def get(self) -> tuple[int, str] | None:
        return self.value

    def set(self, count: int, last_hash: str) -> None:
        self.value = (count, last_hash)


def _keyed(tmp_path, anchor=None):
    from privrec.privacy.audit_log import AuditLog

    return AuditLog(tmp_path, key=b"k" * 32, anchor=anchor)


def test_cutting_entries_off_the_end_is_detected_with_an_anchor(tmp_path) -> None:
    anchor = _MemoryAnchor()
    log = _keyed(tmp_path, anchor)
    for i in range(4):
        log.append("erase", pseudonym=f"{i:032x}")
    assert log.verify() == (True, None)
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(lines[:2]) + "\n")  # the last two receipts vanish
    assert _keyed(tmp_path).verify() == (True, None)  # the chain alone cannot tell
    assert log.verify() == (False, 2)


def test_an_edit_with_a_recomputed_plain_hash_does_not_verify_without_the_key(tmp_path) -> None:
    import hashlib
    import json

    from privrec.privacy.audit_log import _canonical

    log = _keyed(tmp_path)
    log.append("erase", pseudonym="a" * 32, events_deleted=3)
    entry = json.loads(log.path.read_text())
    entry["events_deleted"] = 0  # an insider rewrites the receipt and its hash
    body = {k: v for k, v in entry.items() if k != "hash"}
    entry["hash"] = hashlib.sha256(_canonical(body)).hexdigest()
    log.path.write_text(json.dumps(entry) + "\n")
    assert log.verify() == (False, 0)


def test_a_replaced_tail_is_detected(tmp_path) -> None:
    anchor = _MemoryAnchor()
    log = _keyed(tmp_path, anchor)
    for i in range(3):
        log.append("erase", pseudonym=f"{i:032x}")
    recorded = anchor.value
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join(lines[:2]) + "\n")
    _keyed(tmp_path).append("erase", pseudonym="f" * 32)  # a different third entry, no anchor
    anchor.value = recorded
    assert log.verify() == (False, 2)
