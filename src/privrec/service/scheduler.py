"""Scheduled retraining: per-model policies, an evaluation gate, rollback, a job history.

A policy says when a model is retrained: every N new events, every T hours; and every model that
owes a retrain after erasures (`PendingRetrains`) is retrained before its deadline, policy or not.
`Scheduler.tick(now)` runs whatever is due, one job at a time, and records each job in the
`JobHistory`; `start` runs `tick` on an APScheduler ``BackgroundScheduler`` inside the process
that holds the store.

Why inside the server: the embedded DuckDB store admits one writer process. While `privrec
serve` runs, no other process can open the store, so the scheduler runs in the server itself;
`privrec worker` runs it on its own only when no server is running.

The evaluation gate compares a retrain with the active version ITSELF (its saved artifact) on
events neither has seen: the events of the last ``holdout_days`` days that the active version's
training record does not hold are split in time at their midpoint; the candidate (the active
version's hyper-parameters, overridden by the policy's ``params``) is fitted on everything before
it, both are scored on the events after it (full-ranking `evaluate_ranking`), and the new version
(fitted on everything) is activated only if its metric is at least ``(1 - gate_tolerance)`` times
the active one's. Otherwise the version is saved inactive and the job is ``gated`` with the
reason. A differentially private model is not gated: an exact comparison on shoppers' held-out
events would itself be a release outside the ledger, so a DP retrain is charged once. A retrain
owed to an erasure deadline is never gated: the version holding erased shoppers must go.

After an activation, post-activation checks run (the artifact reloads from disk and scores
probe histories to numbers; more can be passed in, e.g. an online-metric guardrail); a failed
check rolls the model back to its previous good version (`ModelRegistry.rollback`).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from privrec.core.errors import ConflictError, NotFoundError, PrivrecError, ValidationError
from privrec.core.rng import DEFAULT_SEED
from privrec.data.splitters import temporal_split
from privrec.evaluation.full_ranking import evaluate_ranking
from privrec.evaluation.metric_spec import parse_metric
from privrec.evaluation.scoring import mapped_scorer
from privrec.models.zoo import available_models, create_model
from privrec.privacy.sealed import FILE_SUFFIX, read_sealed, write_sealed
from privrec.service.adapters import PENDING_PREFIX as ADAPTER_PENDING
from privrec.service.context import ServiceContext
from privrec.service.jobs import JobHistory, JobOutcome
from privrec.service.pending import PendingRetrains
from privrec.service.registry import ModelRegistry
from privrec.service.serving import Serving
from privrec.service.training import Training

logger = logging.getLogger(__name__)

SCHEDULE_FILE = "schedule.json" + FILE_SUFFIX
# A job that failed or was refused is not retried for this long (a refused DP retrain would
# otherwise be refused again at every tick).
RETRY_SECONDS = 3600.0

Check = Callable[[str, str], str | None]
"""A post-activation check: (model, version) -> None when fine, else the reason it failed."""


class RetrainPolicy(BaseModel):
    """When and how one model is retrained. Unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")

    every_events: int | None = Field(default=None, ge=1, description="retrain after N new events")
    every_hours: float | None = Field(default=None, gt=0, description="retrain every T hours")
    deadline_margin_hours: float = Field(
        default=24.0, ge=0, description="retrain this long before an erasure deadline"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="hyper-parameters over the active version's"
    )
    gate: bool = Field(default=True, description="compare with the active version first")
    gate_metric: str = Field(default="ndcg@10", description="the gate's full-ranking metric")
    gate_tolerance: float = Field(
        default=0.02, ge=0, lt=1, description="relative: activate if >= (1 - tol) * active"
    )
    holdout_days: float = Field(default=7.0, gt=0, description="recent days held out")
    enabled: bool = True


def policy_from(name: str, fields: Mapping[str, Any]) -> RetrainPolicy:
    """A validated policy for model `name` (ValidationError naming the field otherwise)."""
    if name not in available_models():
        raise NotFoundError(
            f"schedule: {name!r} is not a known model; known: {', '.join(available_models())}"
        )
    try:
        policy = RetrainPolicy.model_validate(dict(fields))
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "policy"
        raise ValidationError(f"schedule.{name}.{where}", first["msg"]) from None
    # an unknown metric or parameter is refused now, not at the first retrain
    try:
        parse_metric(policy.gate_metric)
    except ValueError as exc:
        raise ValidationError(f"schedule.{name}.gate_metric", str(exc)) from None
    try:
        create_model(name, **policy.params)
    except (PrivrecError, ValueError, TypeError) as exc:
        problem = " ".join(str(exc).split())[:300]
        raise ValidationError(f"schedule.{name}.params", problem) from None
    return policy


def _is_dp(name: str, params: Mapping[str, Any]) -> bool:
    """Whether `name` with `params` is a differentially private model (it takes an epsilon)."""
    return "epsilon" in type(create_model(name, **dict(params)).config).model_fields


def _deadline_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Scheduler:
    """Retrain policies, the retrain jobs they trigger, the evaluation gate and rollback.

    Args:
        ctx: the data directory's context.
        registry: the model versions.
        training: fits and saves models.
        serving: the serving state (activations and rollbacks are hot-swapped in).
        pending: the models owing a retrain after erasures, with deadlines.
        history: the job history every job is recorded in.
        checks: extra post-activation checks (after the built-in artifact check).
        seed: the seed of every fit.
    """

    def __init__(
        self,
        ctx: ServiceContext,
        registry: ModelRegistry,
        training: Training,
        serving: Serving,
        pending: PendingRetrains,
        history: JobHistory,
        *,
        checks: Sequence[Check] = (),
        seed: int = DEFAULT_SEED,
    ) -> None:
        self.ctx = ctx
        self.registry = registry
        self.training = training
        self.serving = serving
        self.pending = pending
        self.history = history
        self.checks: list[Check] = [self.artifact_check, *checks]
        self.seed = seed
        self.path = ctx.data_dir / SCHEDULE_FILE
        self.lock = threading.RLock()  # one retrain at a time in this process
        self._file_lock = threading.Lock()
        self._aps: Any = None

    # ---- policies (persisted, sealed) -----------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"policies": {}, "state": {}}
        doc: dict[str, Any] = json.loads(read_sealed(self.path, self.ctx.sidecar_key))
        doc.setdefault("policies", {})
        doc.setdefault("state", {})
        return doc

    def _write(self, doc: dict[str, Any]) -> None:
        write_sealed(self.path, json.dumps(doc, sort_keys=True).encode(), self.ctx.sidecar_key)

    def policies(self) -> dict[str, dict[str, Any]]:
        """Every model's policy, JSON-ready: {model: {every_events, every_hours, ...}}.

        What ``GET /v1/schedule``, ``privrec schedule show`` and the operator console show.
        """
        return {
            k: RetrainPolicy.model_validate(v).model_dump()
            for k, v in self._read()["policies"].items()
        }

    def policy(self, name: str) -> RetrainPolicy | None:
        """Model `name`'s policy, or None."""
        got = self._read()["policies"].get(name)
        return None if got is None else RetrainPolicy.model_validate(got)

    def set_policy(
        self, name: str, fields: Mapping[str, Any], *, now: float | None = None
    ) -> dict[str, Any]:
        """Create or change `name`'s policy (fields not given keep their value); returns it.

        New events and hours are counted from when a model's policy is first set.
        """
        with self._file_lock:
            doc = self._read()
            merged = {**doc["policies"].get(name, {}), **dict(fields)}
            policy = policy_from(name, merged)
            doc["policies"][name] = policy.model_dump()
            if name not in doc["state"]:
                doc["state"][name] = self._fresh_state(now)
            self._write(doc)
        return policy.model_dump()

    def replace_policies(
        self, policies: Mapping[str, Mapping[str, Any]], *, now: float | None = None
    ) -> dict[str, dict[str, Any]]:
        """Replace every policy at once (``PUT /v1/schedule``); all are validated first."""
        checked = {
            name: policy_from(name, fields).model_dump() for name, fields in policies.items()
        }
        with self._file_lock:
            doc = self._read()
            doc["policies"] = checked
            for name in checked:
                doc["state"].setdefault(name, self._fresh_state(now))
            self._write(doc)
        return checked

    def remove_policy(self, name: str) -> bool:
        """Drop `name`'s policy; whether there was one (erasure deadlines still apply)."""
        with self._file_lock:
            doc = self._read()
            had = doc["policies"].pop(name, None) is not None
            self._write(doc)
        return had

    def _fresh_state(self, now: float | None) -> dict[str, Any]:
        return {
            "events_at_last": self.ctx.store.count(),
            "last_trained_at": time.time() if now is None else now,
            "last_attempt": None,
        }

    def _note(self, name: str, **fields: Any) -> None:
        with self._file_lock:
            doc = self._read()
            doc["state"].setdefault(name, {}).update(fields)
            self._write(doc)

    def status(self, now: float | None = None) -> dict[str, Any]:
        """Policies, per-model counters, erasure deadlines and what is due now (JSON-ready)."""
        now = time.time() if now is None else now
        doc = self._read()
        events = self.ctx.store.count()
        models = {}
        for name, p in doc["policies"].items():
            st = doc["state"].get(name, {})
            models[name] = {
                "policy": RetrainPolicy.model_validate(p).model_dump(),
                "new_events": max(0, events - int(st.get("events_at_last", events))),
                "hours_since_retrain": round(
                    (now - float(st.get("last_trained_at", now))) / 3600, 3
                ),
                "last_attempt": st.get("last_attempt"),
            }
        deadlines = {m: e.get("deadline") for m, e in self.pending.read().items()}
        due = [{"model": m, "trigger": t, "why": w} for m, t, w in self.due(now)]
        return {"models": models, "erasure_deadlines": deadlines, "due": due}

    # ---- what is due ----------------------------------------------------------------------------
    def due(self, now: float | None = None) -> list[tuple[str, str, str]]:
        """(model, trigger, why) for each retrain due at `now`; a model at most once.

        Triggers: ``deadline`` (an erasure deadline within the margin), ``events``, ``hours``.
        """
        now = time.time() if now is None else now
        doc = self._read()
        out: dict[str, tuple[str, str]] = {}
        for name, entry in self.pending.read().items():
            if name.startswith(ADAPTER_PENDING):
                continue  # an adapter is refitted by `privrec finetune`, not retrained here
            p = doc["policies"].get(name)
            margin = RetrainPolicy.model_validate(p).deadline_margin_hours if p else 24.0
            deadline = _deadline_ts(str(entry["deadline"]))
            if now >= deadline - margin * 3600 and not self._backing_off(doc, name, now):
                out[name] = ("deadline", f"erasure deadline {entry['deadline']}")
        events: int | None = None
        for name, raw in doc["policies"].items():
            p = RetrainPolicy.model_validate(raw)
            if name in out or not p.enabled or self._backing_off(doc, name, now):
                continue
            st = doc["state"].get(name) or {}
            if p.every_events is not None:
                events = self.ctx.store.count() if events is None else events
                new = events - int(st.get("events_at_last", events))
                if new >= p.every_events:
                    out[name] = ("events", f"{new} new events (policy: every {p.every_events})")
                    continue
            if p.every_hours is not None:
                hours = (now - float(st.get("last_trained_at", now))) / 3600
                if hours >= p.every_hours:
                    out[name] = (
                        "hours",
                        f"{hours:.1f} h since the last retrain (policy: every {p.every_hours:g} h)",
                    )
        return [(m, t, w) for m, (t, w) in out.items()]

    @staticmethod
    def _backing_off(doc: dict[str, Any], name: str, now: float) -> bool:
        st = doc["state"].get(name) or {}
        last = st.get("last_attempt")
        return bool(
            last
            and last.get("status") in ("failed", "refused")
            and now - float(last["at"]) < RETRY_SECONDS
        )

    # ---- running --------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[dict[str, Any]]:
        """Run every retrain due at `now` (default: the clock), one after another.

        Returns the finished jobs' records. A tick while another runs in this process does nothing.
        """
        if not self.lock.acquire(blocking=False):
            return []
        try:
            now = time.time() if now is None else now
            return [
                self.retrain(name, trigger=t, reason=w, now=now) for name, t, w in self.due(now)
            ]
        finally:
            self.lock.release()

    def retrain(
        self,
        name: str,
        *,
        trigger: str = "manual",
        reason: str | None = None,
        now: float | None = None,
    ) -> dict[str, Any]:
        """Retrain `name` now as a job: gate, activate or keep inactive, check, record."""
        now = time.time() if now is None else now
        job = self.history.new("retrain", model=name, trigger=trigger)
        if reason:
            job = self.history.update(job["id"], reason=f"due: {reason}")
        with self.lock:
            events = self.ctx.store.count()
            done = self.history.run(job, lambda: self._retrain(name, trigger))
        attempt = {"at": now, "status": done["status"], "job": done["id"]}
        if done["status"] in ("succeeded", "gated"):
            self._note(name, events_at_last=events, last_trained_at=now, last_attempt=attempt)
        else:
            self._note(name, last_attempt=attempt)
        return done

    def _retrain(self, name: str, trigger: str) -> dict[str, Any]:
        policy = self.policy(name) or RetrainPolicy()
        active = self.registry.active(name)
        params = dict(policy.params)
        if active is not None:
            params = {**self.registry.config_of(name, active).get("config", {}), **params}
        if trigger == "deadline":
            # the deadline is met with the frozen encoder where an adapter awaits its refit
            params = self.training.adapters.drop_stale(
                params, self.training.dataset_with_events()[1]
            )
            gate: dict[str, Any] = {
                "skipped": "erasure deadline: the version holding erased shoppers must be replaced"
            }
        elif _is_dp(name, params):
            # Comparing two DP fits on shoppers' exact held-out events would release the
            # comparison (and the exact number of test shoppers) outside the ledger; the
            # ledger-charged way to choose is the private selection of privacy/selection.py.
            gate = {
                "skipped": "a DP model is not compared on shoppers' held-out events "
                "(that comparison would be a release the ledger does not account for)"
            }
        elif not policy.gate or active is None:
            gate = {
                "skipped": "gate off in the policy"
                if active
                else "no active version to compare with"
            }
        else:
            gate = self.evaluate_gate(name, params, policy, active)
        passed = bool(gate.get("passed", True))
        res = self.training.train(name, params=params, activate=passed, seed=self.seed).to_dict()
        version = res["version"]
        if not passed:
            raise JobOutcome(
                "gated",
                f"kept inactive: {gate['reason']}",
                version=version,
                gate=gate,
                result=res,
            )
        for check in self.checks:
            why = check(name, version)
            if why is not None:
                back = self.rollback(
                    name, reason=f"post-activation check failed: {why}", record=False
                )
                raise JobOutcome(
                    "failed",
                    f"post-activation check failed: {why}; rolled back to {back['active']}",
                    version=version,
                    gate=gate,
                    result={**res, "rolled_back_to": back["active"]},
                )
        return {**res, "gate": gate, "reason": self._summary(gate)}

    @staticmethod
    def _summary(gate: Mapping[str, Any]) -> str:
        if "skipped" in gate:
            return f"activated (gate skipped: {gate['skipped']})"
        return f"activated: {gate['reason']}"

    def evaluate_gate(
        self, name: str, params: Mapping[str, Any], policy: RetrainPolicy, active: str
    ) -> dict[str, Any]:
        """Compare a retrain with the ACTIVE VERSION ITSELF on events neither has seen.

        The events the active version was not trained on (its training record) within the last
        `policy.holdout_days` days are split in time at their midpoint: the candidate (these
        hyper-parameters) is fitted on everything before the midpoint, so it has the newer data
        the active version lacks, and both are scored on the events after it (full ranking,
        shoppers seen before). Comparing two fits of hyper-parameters on one split instead
        would pass every retrain with unchanged settings, whatever its new data did.
        """
        ds = self.training.dataset("store")
        if ds.n_events == 0:
            raise ValidationError("store", "holds no events; ingest some first")
        since = float(ds.ts.max()) - policy.holdout_days * 86400
        record = self.registry.training_record(name, active)
        if record is not None:
            events = self.ctx.store.events()
            seen = record.contains(events["event_id"].astype(str))
            if seen.any():
                since = max(since, float(events["ts"].to_numpy()[seen].max()))
        new_ts = ds.ts[ds.ts > since]
        if len(new_ts) < 2:
            return {"skipped": "no events that the active version has not seen"}
        cutoff = float(np.quantile(new_ts, 0.5))
        train, test = temporal_split(ds, cutoff_ts=cutoff, drop_unseen=True)
        spec = parse_metric(policy.gate_metric)
        if train.n_events == 0 or test.n_events == 0:
            return {"skipped": "too few new events to compare on"}
        k = spec.k or 10
        candidate = create_model(name, **dict(params)).fit(train, rng=self.seed)
        got = evaluate_ranking(candidate, train, test, k=k, metrics=[spec.key])
        cand, n_users = float(got[spec.key]), int(got["n_users"])
        model, vocab = self.registry.load(name, active)
        act_got = evaluate_ranking(
            None, train, test, k=k, metrics=[spec.key], scorer=mapped_scorer(model, vocab, train)
        )
        act = float(act_got[spec.key])
        tol = policy.gate_tolerance
        passed = bool(math.isfinite(cand) and cand >= act * (1 - tol) - 1e-12)
        rel = "not worse than" if passed else "worse than"
        reason = (
            f"{spec.key} {cand:.4f} on events the active version has not seen is {rel} the "
            f"active version {active}'s {act:.4f} (tolerance {tol:.0%})"
        )
        return {
            "metric": spec.key,
            "candidate": round(cand, 6),
            "active": round(act, 6),
            "active_version": active,
            "compared_with": "the active version's saved artifact",
            "tolerance": tol,
            "holdout_days": policy.holdout_days,
            "test_users": n_users,
            "passed": passed,
            "reason": reason,
        }

    # ---- checks and rollback --------------------------------------------------------------------
    def artifact_check(self, name: str, version: str) -> str | None:
        """The built-in post-activation check: the saved version reloads from disk and scores
        probe histories (one item each) without NaN or +inf."""
        try:
            model, items = self.registry.load(name, version)
        except Exception as exc:  # any failure to load is what this check is for
            return f"version {version} does not load from disk ({type(exc).__name__})"
        n = len(items)
        if n == 0:
            return None
        rows = min(n, 16)
        probe = sp.csr_matrix(
            (np.ones(rows, np.float32), (np.arange(rows), np.arange(rows))), shape=(rows, n)
        )
        try:
            scores = np.asarray(model.score_matrix(probe), dtype=np.float64)
        except Exception as exc:
            return f"version {version} fails to score ({type(exc).__name__})"
        if np.isnan(scores).any() or np.isposinf(scores).any():
            return f"version {version} scores NaN or +inf"
        return None

    def rollback(
        self, name: str, *, reason: str = "rolled back by the operator", record: bool = True
    ) -> dict[str, Any]:
        """Serve `name`'s previous good version at once (hot swap where this process serves it).

        Recorded in the job history (kind ``rollback``) unless `record` is False (a retrain's own
        rollback is part of that job's record).

        Raises:
            ConflictError: no earlier good version exists.
            NotFoundError: the model has no active version.
        """
        if not record:
            return self.registry.rollback(
                name, reason=reason, activate=self.serving.activate_pointer
            )
        job = self.history.new("rollback", model=name, trigger="operator")
        out: dict[str, Any] = {}

        def go() -> dict[str, Any]:
            out.update(
                self.registry.rollback(name, reason=reason, activate=self.serving.activate_pointer)
            )
            return {
                **out,
                "version": out["active"],
                "reason": f"{out['previous']} -> {out['active']}: {reason}",
            }

        done = self.history.run(job, go)
        if done["status"] != "succeeded":
            self.registry.require_active(name)
            raise ConflictError(done["reason"] or "rollback failed")
        return out

    # ---- running in the background --------------------------------------------------------------
    def start(
        self,
        interval_seconds: float = 60.0,
        *,
        run: Callable[[Callable[[], Any]], Any] | None = None,
    ) -> None:
        """Run `tick` every `interval_seconds` on an APScheduler BackgroundScheduler.

        Args:
            interval_seconds: how often to look for due retrains.
            run: how a tick is run (the server passes its job runner, so that scheduled retrains
                and HTTP training jobs take turns on one worker thread).
        """
        from apscheduler.schedulers.background import BackgroundScheduler

        def job() -> None:
            try:
                (run or (lambda f: f()))(self.tick)
            except Exception as exc:  # keep the schedule alive; the job history has the details
                logger.warning("scheduler tick failed error=%s", type(exc).__name__)

        # a tick skipped because a retrain is still running is expected, not a warning
        aps_log = logging.getLogger("apscheduler.scheduler")
        if aps_log.level == logging.NOTSET:
            aps_log.setLevel(logging.ERROR)
        aps = BackgroundScheduler(daemon=True, timezone="UTC")
        aps.add_job(
            job,
            "interval",
            seconds=interval_seconds,
            id="privrec-retrain",
            max_instances=1,
            coalesce=True,
        )
        aps.start()
        self._aps = aps

    def shutdown(self) -> None:
        """Stop the background scheduler (a running retrain finishes first)."""
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None


def schedule_path(data_dir: Path) -> Path:
    """Where a data directory's schedule is kept (sealed)."""
    return Path(data_dir) / SCHEDULE_FILE


__all__ = [
    "Check",
    "RetrainPolicy",
    "Scheduler",
    "policy_from",
    "schedule_path",
]
