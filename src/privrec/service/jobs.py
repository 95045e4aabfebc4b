"""The job history: every training, scheduled retrain, rollback and replay, with its outcome.

Persisted beside the store as ``jobs.log``: one sealed line (`privacy.sealed.seal_line`) per
change of a job's record, appended under an exclusive file lock; the last line of an id is its
record. No shopper's data goes in: model names, versions, triggers, reasons and gate metrics.

Statuses: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``refused`` (a differentially
private release the privacy budget cannot afford) | ``gated`` (trained, but kept inactive by the
evaluation gate). The HTTP server's `JobRunner`, the scheduler and the CLI all write here, so the
operator console (`JobHistory.recent`) shows one history whoever started the job.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privrec.core.errors import BudgetExceededError, NotFoundError, PrivrecError
from privrec.core.files import open_private_append, write_private
from privrec.privacy.sealed import seal_line, unseal_line

logger = logging.getLogger(__name__)

JOBS_FILE = "jobs.log"
STATUSES = ("queued", "running", "succeeded", "failed", "refused", "gated")
FINISHED = ("succeeded", "failed", "refused", "gated")
_AAD = b"privrec:jobs"


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot; None: no such process or no /proc).

    With the pid it names one process: a pid reused after the process ended has another start.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the command name
    except (IndexError, ValueError):
        return None


def process_identity() -> dict[str, Any]:
    """This process: host name, pid and start time (what `process_alive` checks)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _start_ticks(pid)}


def process_alive(owner: Any) -> bool:
    """Whether the process a job record names may still run it.

    True for a live process of this host with the same start time, and for any process of
    another host (it cannot be checked from here); False for a stopped one or a missing owner.
    """
    if not isinstance(owner, dict) or "pid" not in owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True
    started = _start_ticks(int(owner["pid"]))
    return started is not None and started == owner.get("started")


class JobOutcome(Exception):
    """Raised by a job's function to end it with a status other than ``succeeded``.

    Args:
        status: ``gated`` or ``failed``.
        reason: what an operator reads.
        fields: more of the record (version, gate metrics, result).
    """

    def __init__(self, status: str, reason: str, **fields: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.fields = fields


class JobHistory:
    """The persistent job history of one data directory.

    Args:
        data_dir: the data directory (the file is ``jobs.log``, mode 0600).
        key: the sidecar key that seals each line (None: plaintext JSON lines).
        budget: returns (epsilon spent, epsilon budget) for a refusal's reason.
        keep: how many jobs are kept when the file is compacted.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        key: bytes | None = None,
        budget: Callable[[], tuple[float, float]] | None = None,
        keep: int = 1000,
    ) -> None:
        self.path = Path(data_dir) / JOBS_FILE
        self._key = key
        self._budget = budget
        self.keep = keep
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] | None = None
        self._lines = 0

    # ---- storage --------------------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        if self._jobs is None:
            jobs: dict[str, dict[str, Any]] = {}
            lines = 0
            if self.path.exists():
                for n, line in enumerate(self.path.read_text().splitlines(), 1):
                    if not line.strip():
                        continue
                    rec = unseal_line(line, self._key, aad=_AAD, where=f"{JOBS_FILE} line {n}")
                    jobs.pop(rec["id"], None)  # re-inserted: the dict stays in update order
                    jobs[rec["id"]] = rec
                    lines += 1
            self._jobs, self._lines = jobs, lines
        return self._jobs

    def _line(self, rec: dict[str, Any]) -> str:
        if self._key is None:
            import json

            return json.dumps(rec, sort_keys=True, default=str)
        return seal_line(rec, self._key, aad=_AAD)

    def _append(self, rec: dict[str, Any]) -> None:
        jobs = self._load()
        jobs.pop(rec["id"], None)
        jobs[rec["id"]] = dict(rec)
        with open_private_append(self.path) as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                fh.write(self._line(rec) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        self._lines += 1
        if self._lines > 4 * self.keep:
            self._compact(jobs)

    def _compact(self, jobs: dict[str, dict[str, Any]]) -> None:
        """Rewrite the file with the last `keep` jobs, one line each (atomic replace)."""
        kept = list(jobs.values())[-self.keep :]
        write_private(self.path, "".join(self._line(r) + "\n" for r in kept))
        self._jobs = {r["id"]: r for r in kept}
        self._lines = len(kept)

    # ---- records --------------------------------------------------------------------------------
    def new(
        self, kind: str, *, model: str | None = None, trigger: str = "manual"
    ) -> dict[str, Any]:
        """Record a queued job and return its record (``id`` is 12 hex digits)."""
        rec: dict[str, Any] = {
            "id": secrets.token_hex(6),
            "kind": kind,
            "model": model,
            "trigger": trigger,
            "status": "queued",
            "reason": None,
            "created_at": time.time(),
            "started_at": None,
            "finished_at": None,
            "version": None,
            "gate": None,
            "result": None,
            "error": None,
            # the process that runs it: `interrupted` fails only the jobs of a stopped process
            "owner": process_identity(),
        }
        with self._lock:
            self._append(rec)
        return dict(rec)

    def update(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a job's record (persisted at once); the new record."""
        with self._lock:
            rec = dict(self._get(job_id))
            rec.update(fields)
            self._append(rec)
        return rec

    def _get(self, job_id: str) -> dict[str, Any]:
        rec = self._load().get(job_id)
        if rec is None:
            raise NotFoundError(
                f"job: no job with id {job_id!r} (the history keeps the last {self.keep} jobs)"
            )
        return rec

    def get(self, job_id: str) -> dict[str, Any]:
        """One job's record (NotFoundError if unknown)."""
        with self._lock:
            return dict(self._get(job_id))

    def recent(
        self, limit: int = 50, *, model: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """The latest jobs, newest first (optionally of one model or one status).

        This is what the operator console and ``GET /v1/jobs`` show.
        """
        with self._lock:
            jobs = sorted(self._load().values(), key=lambda r: r["created_at"], reverse=True)
        out = [
            dict(r)
            for r in jobs
            if (model is None or r.get("model") == model)
            and (status is None or r.get("status") == status)
        ]
        return out[: max(0, int(limit))]

    def interrupted(self) -> int:
        """Mark jobs left queued or running by a process that stopped as failed; how many.

        Call it when a process that runs jobs starts (the server, each API worker, the
        scheduler worker). A job whose owning process still runs (another API worker over the
        same data directory) is left alone; so is one owned on another host, which this host
        cannot check. A record without an owner (written before owners were kept) counts as
        stopped.
        """
        with self._lock:
            stale = [
                r
                for r in self._load().values()
                if r["status"] in ("queued", "running") and not process_alive(r.get("owner"))
            ]
            for rec in stale:
                reason = "interrupted: the process stopped before the job finished"
                self._append(
                    {
                        **rec,
                        "status": "failed",
                        "reason": reason,
                        "error": reason,
                        "finished_at": time.time(),
                    }
                )
        return len(stale)

    def reload(self) -> None:
        """Forget the cached records (another process may have appended)."""
        with self._lock:
            self._jobs = None

    # ---- running --------------------------------------------------------------------------------
    def refusal(self, exc: BudgetExceededError) -> str:
        """The reason recorded when the privacy ledger refuses a release."""
        if self._budget is None:
            return "refused: would exceed the privacy budget"
        spent, total = self._budget()
        return f"refused: would exceed the privacy budget (epsilon {spent:.4g} of {total:g} spent)"

    def run(self, job: dict[str, Any], fn: Callable[[], Any]) -> dict[str, Any]:
        """Run `fn` as job `job` (from `new`): running, then its outcome, each persisted.

        `fn` returns the job's result (a dict may carry ``version``, ``gate`` and ``reason``,
        which go into the record) or raises `JobOutcome` to end gated or failed. A
        `BudgetExceededError` ends it ``refused``; another privrec error ``failed`` with its
        message; any other error ``failed`` with its type only (details stay in the log).
        """
        job_id = job["id"]
        self.update(job_id, status="running", started_at=time.time())
        fields: dict[str, Any]
        try:
            result = fn()
            fields = {"status": "succeeded", "result": result}
            if isinstance(result, dict):
                for k in ("version", "gate", "reason"):
                    if result.get(k) is not None:
                        fields[k] = result[k]
        except JobOutcome as out:
            fields = {"status": out.status, "reason": out.reason, **out.fields}
            if out.status == "failed":
                fields["error"] = out.reason
        except BudgetExceededError as exc:
            reason = self.refusal(exc)
            fields = {"status": "refused", "reason": reason, "error": f"{reason}: {exc}"}
        except PrivrecError as exc:
            fields = {"status": "failed", "reason": str(exc), "error": str(exc)}
        except Exception as exc:
            msg = f"internal error ({type(exc).__name__}); see the log"
            fields = {"status": "failed", "reason": msg, "error": msg}
            logger.error(
                "job failed kind=%s job=%s error=%s", job.get("kind"), job_id, type(exc).__name__
            )
        return self.update(job_id, finished_at=time.time(), **fields)
