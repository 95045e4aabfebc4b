"""The service's audit log: edits and a cut tail are both detected."""

from __future__ import annotations

from pathlib import Path

from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.service import RecSys


def test_cutting_erasure_receipts_off_the_log_is_detected(tmp_path: Path) -> None:
    events, catalogue = generate_shop(n_items=60, n_users=30, seed=2)
    with RecSys(Settings(data_dir=tmp_path / "d")) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        for user in ("shopper-00001", "shopper-00002", "shopper-00003"):
            rs.forget(user)
        log = rs.ctx.audit_log()
        assert log.verify() == (True, None)
        lines = log.path.read_text().splitlines()
        log.path.write_text("\n".join(lines[:-1]) + "\n")  # the last receipt disappears
        assert rs.ctx.audit_log().verify() == (False, len(lines) - 1)
        assert (rs.data_dir / "keys" / "audit.key").stat().st_mode & 0o077 == 0
