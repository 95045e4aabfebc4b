"""Background jobs (training, offline replay, fine-tuning) that run while the server serves.

Every job is recorded in the data directory's persistent job history
(`privrec.service.jobs.JobHistory`: queued, running, then succeeded, failed, refused or gated,
with the reason), the same history the retrain scheduler and the CLI write, so `GET /v1/jobs`
and the operator console show every job whoever started it, also after a restart. Jobs run one
at a time on one worker thread; the scheduler's ticks take their turn on it too
(`run_exclusive`), so a scheduled retrain never trains beside an HTTP one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from privrec.service.jobs import JobHistory

T = TypeVar("T")


class JobRunner:
    """One worker thread over the persistent job history.

    Args:
        history: the job history jobs are recorded in (`RecSys.jobs`).
    """

    def __init__(self, history: JobHistory) -> None:
        self.history = history
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="privrec-job")
        # the latest progress of running jobs: shown by `get`, not persisted (it changes often)
        self._progress: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def submit(
        self,
        kind: str,
        fn: Callable[..., Any],
        *,
        model: str | None = None,
        with_progress: bool = False,
    ) -> dict[str, Any]:
        """Queue `fn` as a job of `kind` (on `model`); returns its queued record.

        With `with_progress`, `fn` is called with a reporter `report(stage, done, total)` whose
        latest call the job record shows as `progress` ({stage, done, total, fraction}).
        """
        job = self.history.new(kind, model=model, trigger="api")
        job_id = job["id"]

        def report(stage: str, done: int, total: int) -> None:
            frac = round(done / total, 4) if total else None
            with self._lock:
                self._progress[job_id] = {
                    "stage": stage,
                    "done": done,
                    "total": total,
                    "fraction": frac,
                }

        def run() -> None:
            self.history.run(job, (lambda: fn(report)) if with_progress else fn)
            # persisted before it leaves memory: `get` merges the in-memory progress until
            # then, so no reader sees the finished job without it
            with self._lock:
                last = self._progress.get(job_id)
            if last is not None:
                self.history.update(job_id, progress=last)
            with self._lock:
                self._progress.pop(job_id, None)

        self._pool.submit(run)
        return job

    def run_exclusive(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the job thread, after the jobs queued before it, and return its result."""
        return self._pool.submit(fn).result()

    def get(self, job_id: str) -> dict[str, Any]:
        """A job's record with its latest progress (NotFoundError if unknown)."""
        rec = self.history.get(job_id)
        with self._lock:
            progress = self._progress.get(job_id)
        if progress is not None:
            rec["progress"] = progress
        return rec

    def shutdown(self) -> None:
        """Stop accepting jobs; running ones finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)
