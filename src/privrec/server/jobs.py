"""Background jobs (training, offline replay) that run while the server keeps serving."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from privrec.core.errors import NotFoundError, PrivrecError

logger = logging.getLogger(__name__)


class JobRunner:
    """One worker thread; jobs are kept (bounded) so their result can be fetched."""

    def __init__(self, max_jobs: int = 200) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="privrec-job")
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.max_jobs = max_jobs

    def submit(self, kind: str, fn: Callable[[], Any]) -> dict[str, Any]:
        """Queue `fn`; returns the job record."""
        job_id = secrets.token_hex(6)
        rec: dict[str, Any] = {
            "id": job_id,
            "kind": kind,
            "status": "queued",
            "created_at": time.time(),
            "result": None,
            "error": None,
        }
        with self._lock:
            self._jobs[job_id] = rec
            while len(self._jobs) > self.max_jobs:
                self._jobs.pop(next(iter(self._jobs)))

        def run() -> None:
            rec["status"] = "running"
            rec["started_at"] = time.time()
            try:
                rec["result"] = fn()
                rec["status"] = "done"
            except PrivrecError as exc:
                rec["status"], rec["error"] = "failed", str(exc)
            except Exception as exc:
                rec["status"], rec["error"] = (
                    "failed",
                    f"internal error ({type(exc).__name__}); see the server log",
                )
                logger.error("job failed kind=%s job=%s error=%s", kind, job_id, type(exc).__name__)
            rec["finished_at"] = time.time()

        self._pool.submit(run)
        return dict(rec)

    def get(self, job_id: str) -> dict[str, Any]:
        """A job's record (NotFoundError if unknown)."""
        rec = self._jobs.get(job_id)
        if rec is None:
            raise NotFoundError(
                f"job: no job with id {job_id!r} (jobs are kept for the last {self.max_jobs} only)"
            )
        return dict(rec)

    def shutdown(self) -> None:
        """Stop accepting jobs; running ones finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)
