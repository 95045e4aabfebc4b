"""Key rotation moves every record keyed by pseudonym as one unit, or changes nothing."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from privrec.core.errors import ConfigError, StoreError
from privrec.core.settings import Settings
from privrec.events import maintenance, pg_store, rejects
from privrec.experiments import store as experiment_store
from privrec.privacy import consent_store as consent_store_mod
from privrec.privacy.pseudonym import KEY_FILE, Pseudonymiser
from privrec.privacy.sealed import unseal_line
from privrec.service import RecSys

USERS = [f"shopper-{i:03d}" for i in range(40)]
LEVELS = {
    "shopper-000": "anonymous",
    "shopper-001": "purchases_only",
    "shopper-002": "anonymous",
    "shopper-003": "purchases_only",
}


def _events() -> pd.DataFrame:
    rows = []
    for i, u in enumerate(USERS):
        for j in range(3):
            rows.append(
                {
                    "user": u,
                    "item": f"item-{(i + j) % 25}",
                    "type": "purchase" if j == 0 else "view",
                    "timestamp": 1_700_000_000 + 60 * (3 * i + j),
                }
            )
    return pd.DataFrame(rows)


def _settings(d: Path, store_url: str | None = None) -> Settings:
    """The shop's settings: the embedded store, or PostgreSQL at `store_url`."""
    return Settings(data_dir=d, store_url=store_url)


def _shop(d: Path, tmp: Path, store_url: str | None = None) -> RecSys:
    """A shop with events, consent levels, an experiment with exposures and a rejects file."""
    rs = RecSys(_settings(d, store_url))
    rs.ingest_frame(_events())
    for u, level in LEVELS.items():
        rs.set_consent(u, level)
    exp = rs.experiments.store.create(
        experiment_store.Experiment.from_dict(
            {"name": "ab", "variants": [{"name": "control"}, {"name": "treatment"}]}
        )
    )
    for i, u in enumerate(USERS[4:20]):
        p = rs.ctx.pseudonymise(u)
        rs.experiments.log_exposure(f"rec-{i}", exp, exp.variant_of(p).name, p, ["item-1"])
    rs.experiments.flush()
    bad = tmp / "bad.csv"
    bad.write_text("user,item,type,timestamp\nshopper-010,item-1,bogus,1700000000\n")
    rs.ingest_file(bad)
    return rs


def _state(rs: RecSys) -> dict[str, Any]:
    """Everything the rotation must keep as seen through the raw ids."""
    exp = rs.experiments.store.get("ab")
    out: dict[str, Any] = {}
    for u in USERS:
        p = rs.ctx.pseudonymise(u)
        out[u] = {
            "consent": rs.consent(u),
            "events": len(rs.store.events(user=p)),
            "variant": exp.variant_of(p).name,
            "exposures": len(rs.experiments.records_of(p)),
            "rejects": len(rejects.lines_of(rs.data_dir, [p], key=rs.ctx.sidecar_key)),
        }
    return out


def _files(d: Path) -> dict[str, str]:
    """What a failed rotation must leave as it was: key and rejects files, SQLite contents."""
    names = ["keys/" + KEY_FILE] + [f"rejects/{p.name}" for p in sorted((d / "rejects").glob("*"))]
    out = {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in names}
    for db in ("consent.sqlite", "experiments.sqlite"):
        con = sqlite3.connect(d / db)
        try:  # the content, not the bytes: a WAL checkpoint rewrites the file
            out[db] = "\n".join(con.iterdump())
        finally:
            con.close()
    return out


def test_consent_and_experiments_survive_rotation(tmp_path: Path, store_url: str | None) -> None:
    d = tmp_path / "d"
    with _shop(d, tmp_path, store_url) as rs:
        before = _state(rs)
        old = {u: rs.ctx.pseudonymise(u) for u in USERS}
        assert before["shopper-010"]["rejects"] == 1
        stored = rs.store.count()
        assert rs.rotate_key() == stored
        assert rs.ctx.pseudonymiser.generation == 1
        assert all(rs.ctx.pseudonymise(u) != old[u] for u in USERS)
        assert _state(rs) == before  # an anonymous shopper stays anonymous, same variant
        assert rs.consent("shopper-000") == "anonymous"
        assert rs.consent("shopper-001") == "purchases_only"
        # nothing names an old pseudonym any more
        text = "".join(
            str(unseal_line(x, rs.ctx.sidecar_key, aad=rejects.REJECTS_AAD))
            for f in (d / "rejects").glob("*.rejects.jsonl")
            for x in f.read_text().splitlines()
        )
        assert old["shopper-010"] not in text
        assert rs.consent_book.levels([old["shopper-000"]])  # no error on a stale pseudonym
    with RecSys(_settings(d, store_url)) as rs:  # and after a restart
        assert _state(rs) == before
        # ingesting again with the new key lands on the same shoppers
        report = rs.ingest_frame(_events())
        assert report.accepted == 0
        assert report.consent_dropped + report.duplicates == len(_events())


def test_store_held_by_another_process_changes_nothing(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with _shop(d, tmp_path) as rs:
        before = _state(rs)
    files = _files(d)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from privrec.events.store import EventStore
                store = EventStore.open({str(d)!r})
                print("open", flush=True)
                sys.stdin.read()
                store.close()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with RecSys(Settings(data_dir=d)) as rs:
            with pytest.raises(StoreError, match="open in another process"):
                rs.rotate_key()
            assert _files(d) == files
            assert not (d / "keys" / (KEY_FILE + ".pending")).exists()
    finally:
        holder.communicate("", timeout=60)
    with RecSys(Settings(data_dir=d)) as rs:
        assert rs.ctx.pseudonymiser.generation == 0
        assert _state(rs) == before


@pytest.mark.parametrize(
    "target",
    [
        (consent_store_mod.ConsentStore, "stage_rekey"),
        (experiment_store.ExperimentStore, "stage_rekey"),
        (rejects, "stage_rekey"),
        (maintenance, "_rekey_rows"),
        (Pseudonymiser, "write_pending"),
    ],
    ids=["consent", "experiments", "rejects", "events", "commit-point"],
)
@pytest.mark.parametrize("store_url", ["duckdb", "postgresql"], indirect=True)
def test_a_failure_while_staging_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: tuple[Any, str], store_url: str | None
) -> None:
    if store_url and target[0] is maintenance:
        target = (pg_store, "_rekey_rows")  # the PostgreSQL store's re-keying of events
    d = tmp_path / "d"
    with _shop(d, tmp_path, store_url) as rs:
        before = _state(rs)
        files_before = _files(d)
        events_before = rs.store.events()

        def boom(*args: Any, **kwargs: Any) -> Any:
            raise OSError("injected")

        with monkeypatch.context() as m:
            m.setattr(*target, boom)
            with pytest.raises(OSError, match="injected"):
                rs.rotate_key()
        assert rs.ctx.pseudonymiser.generation == 0
        pd.testing.assert_frame_equal(rs.store.events(), events_before)
        assert rs.store.pseudonym_generation == 0
        assert _state(rs) == before  # still usable: every lookup works as before
        assert not list((d / "rejects").glob(".*"))
        assert not (d / "keys" / (KEY_FILE + ".pending")).exists()
    assert _files(d) == files_before
    with RecSys(_settings(d, store_url)) as rs:
        assert _state(rs) == before
        rs.rotate_key()  # and a later rotation succeeds
        assert _state(rs) == before


def test_a_failure_after_the_commit_point_is_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str | None
) -> None:
    d = tmp_path / "d"
    with _shop(d, tmp_path, store_url) as rs:
        before = _state(rs)
        # the event store's commit fails every time: consent and experiments have committed
        with monkeypatch.context() as m:
            m.setattr(maintenance.StagedRekey, "commit", _failing_commit)
            with pytest.raises(StoreError, match="run privrec rotate-key again"):
                rs.rotate_key()
        # fail closed: nothing loads the old key while the stores disagree
        with pytest.raises(ConfigError, match="interrupted"):
            Pseudonymiser.from_data_dir(d)
    with RecSys(_settings(d, store_url)) as rs:
        assert rs.rotate_key() == 110  # finishes the interrupted rotation
        assert rs.ctx.pseudonymiser.generation == 1
        assert _state(rs) == before
        entry = rs.ctx.audit_log().entries("rotate-key")[-1]
        assert entry["resumed"] is True and entry["generation"] == 1
    with RecSys(_settings(d, store_url)) as rs:
        assert rs.ctx.pseudonymiser.generation == 1
        assert _state(rs) == before


def test_a_transient_commit_failure_is_finished_in_the_same_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "d"
    with _shop(d, tmp_path) as rs:
        before = _state(rs)
        real = maintenance.StagedRekey.commit
        calls = []

        def flaky(self: maintenance.StagedRekey) -> None:
            calls.append(1)
            if len(calls) == 1:
                self.rollback()
                _fail()
            real(self)

        monkeypatch.setattr(maintenance.StagedRekey, "commit", flaky)
        rs.rotate_key()
        assert len(calls) == 2
        assert rs.ctx.pseudonymiser.generation == 1
        assert not (d / "keys" / (KEY_FILE + ".pending")).exists()
        assert _state(rs) == before


def _fail() -> None:
    raise StoreError("injected commit failure")


def _failing_commit(self: maintenance.StagedRekey) -> None:
    """A commit that fails as a real one does: rolled back, lock released, StoreError."""
    self.rollback()
    _fail()
