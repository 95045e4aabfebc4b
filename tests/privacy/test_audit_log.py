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
