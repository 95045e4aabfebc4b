"""A finished job never shows without its last progress (the job thread persists it before it
drops it from memory; a reader in between saw neither, a race CI once hit)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from privrec.server.jobs import JobRunner
from privrec.service.jobs import JobHistory


def test_every_read_of_a_finished_job_has_its_progress(tmp_path: Path) -> None:
    history = JobHistory(tmp_path)
    runner = JobRunner(history)
    seen: list[Any] = []
    update = history.update

    def watched_update(job_id: str, **fields: Any) -> dict[str, Any]:
        rec = runner.get(job_id)  # a reader at the moment the job thread persists something
        if rec["status"] == "succeeded":
            seen.append(rec.get("progress"))
        return update(job_id, **fields)

    history.update = watched_update  # type: ignore[method-assign]

    def work(report: Any) -> dict[str, Any]:
        for i in range(3):
            report("train", i + 1, 3)
        return {"ok": True}

    job = runner.submit("train", work, model="ease", with_progress=True)
    t0 = time.time()
    while runner.get(job["id"])["status"] != "succeeded":
        assert time.time() - t0 < 30
        time.sleep(0.01)
    time.sleep(0.2)
    final = runner.get(job["id"])
    assert final["progress"]["fraction"] == 1.0
    assert seen and all(p is not None and p["done"] == 3 for p in seen), seen
    runner.shutdown()
