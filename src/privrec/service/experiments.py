"""A/B experiments as the service runs them: create, stop, assign, log, report and replay.

The experiment store (``experiments.sqlite``) is opened on first use; exposures and outcomes
are keyed by a unit id derived from the shopper's pseudonym and the experiment's salt, so the
rows can be exported and erased per shopper without storing the pseudonym itself. With the
sidecar key those unit ids are stored as keyed hashes and the rows are sealed
(`privrec.experiments.store`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from privrec.core.errors import ConflictError, ValidationError
from privrec.core.rng import DEFAULT_SEED
from privrec.core.settings import Settings
from privrec.data.dataset import InteractionDataset
from privrec.experiments.assignment import Experiment, Variant, assign, unit_id
from privrec.experiments.store import ExperimentStore
from privrec.models.base import Recommender
from privrec.models.zoo import create_model
from privrec.privacy.ledger import PrivacyLedger
from privrec.service.feedback import FEEDBACK_FILE, FeedbackLog
from privrec.service.registry import ModelRegistry
from privrec.service.rule_spec import rules_from

EXPERIMENTS_FILE = "experiments.sqlite"


class Experiments:
    """The data directory's experiments.

    Args:
        data_dir: the data directory.
        registry: the model registry (variants must name models with an active version).
        key: the sidecar key that seals what the store holds about shoppers (None: plaintext).
        settings: the attribution window and retention of the feedback log (None: defaults).

    Attributes:
        feedback: the feedback log of every served list and its outcomes; experiments read
            their arms' impressions and outcomes from it.
    """

    def __init__(
        self,
        data_dir: Path,
        registry: ModelRegistry,
        key: bytes | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.path = data_dir / EXPERIMENTS_FILE
        self.registry = registry
        self._key = key
        window = settings.attribution_window_hours if settings else 24.0
        keep = settings.feedback_retention_days if settings else 90
        self.feedback = FeedbackLog(
            data_dir / FEEDBACK_FILE, key=key, window_hours=window, retention_days=keep
        )
        self._store: ExperimentStore | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> ExperimentStore:
        """The experiment store (created on first use)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = ExperimentStore(self.path, key=self._key)
        return self._store

    @property
    def exists(self) -> bool:
        """Whether any experiment was ever created here (no store is created to find out)."""
        return self._store is not None or self.path.exists()

    # ---- lifecycle ----------------------------------------------------------------------------
    def create(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create and start an experiment {name, variants: [{name, model, weight, params}]}."""
        fields = ("name", "variants", "description", "primary", "alpha", "tau2", "guardrails")
        exp = Experiment.from_dict({k: v for k, v in spec.items() if k in fields})
        for v in exp.variants:
            if v.model is not None and self.registry.active(v.model) is None:
                raise ValidationError(
                    "variants.model",
                    f"variant {v.name!r} names model {v.model!r}, which has no active version",
                )
            rules_from(v.params)  # validates the params
        # started on the loop's clock, like its lists and outcomes (a fast-time run moves it)
        exp = replace(exp, created_at=self.feedback.clock())
        return self.store.create(exp).to_dict(with_salt=False)

    def all(self) -> list[dict[str, Any]]:
        """All experiments (without their salts)."""
        return [e.to_dict(with_salt=False) for e in self.store.all()]

    def get(self, name: str) -> dict[str, Any]:
        """One experiment (without its salt); NotFoundError if unknown."""
        return self.store.get(name).to_dict(with_salt=False)

    def stop(self, name: str) -> dict[str, Any]:
        """Stop an experiment: shoppers get the default again; its data stays for the report."""
        return self.store.set_status(name, "stopped").to_dict(with_salt=False)

    # ---- serving ---------------------------------------------------------------------------------
    def running(self, name: str) -> Experiment | None:
        """The experiment `name` if it is running (NotFoundError if unknown)."""
        exp = self.store.get(name)
        return exp if exp.status == "running" else None

    @staticmethod
    def variant_of(exp: Experiment, pseudonym: str) -> Variant:
        """The shopper's variant (deterministic from their pseudonym and the salt)."""
        return assign(exp, pseudonym)

    def log_exposure(
        self, rec_id: str, exp: Experiment, variant: str, pseudonym: str, items: list[str]
    ) -> None:
        """Record that a shopper in `variant` was shown `items` under list id `rec_id`."""
        self.store.record_exposure(rec_id, exp.name, variant, unit_id(exp.salt, pseudonym), items)

    def log_outcomes(self, outcomes: Iterable[Mapping[str, Any]]) -> int:
        """Attribute outcome events to the lists they answer; returns how many matched."""
        return self.store.record_outcomes(outcomes) if self.exists else 0

    def flush(self) -> None:
        """Write buffered exposures."""
        if self._store is not None:
            self._store.flush()

    # ---- data rights -----------------------------------------------------------------------------
    def _units(self, pseudonym: str) -> dict[str, str]:
        return {e.name: unit_id(e.salt, pseudonym) for e in self.store.all()}

    def records_of(self, pseudonym: str) -> list[dict[str, Any]]:
        """Every experiment row about one shopper (right of access; the lists served to them
        are in `feedback.records_of`)."""
        return self.store.unit_records(self._units(pseudonym)) if self.exists else []

    def erase(self, pseudonym: str) -> int:
        """Delete every experiment and feedback row about one shopper; returns the rows."""
        n = self.store.erase_units(self._units(pseudonym)) if self.exists else 0
        return n + self.feedback.erase(pseudonym)

    # ---- analysis --------------------------------------------------------------------------------
    def report(self, name: str, *, alpha: float | None = None) -> dict[str, Any]:
        """An experiment's report: fixed-horizon figures, sequential tests, guardrails, verdict.

        Fields: ``experiment`` (its definition); ``control``, ``alpha``, ``variants`` and
        ``srm`` (per-variant CTR, conversion and revenue with intervals and fixed-horizon tests,
        `stats.analyse`); ``online`` (per arm from the feedback log over the experiment's whole
        run: impressions, ctr, conversion, revenue_per_shopper, coverage, ...); ``sequential``
        (per treatment arm: the always-valid mSPRT of the primary metric and of the other rate
        against the control); ``guardrails`` (per treatment arm: each guardrail's control value,
        value, relative change and whether it is breached); ``daily`` (the feedback metrics per
        arm and day); ``decision`` ({concluded, winner, blocked_by, reason}: what a promotion
        would do now).
        """
        from privrec.experiments.decision import decide
        from privrec.experiments.stats import analyse, counts_from_records

        exp = self.store.get(name)
        level = exp.alpha if alpha is None else alpha
        exposures, outcomes = self.store.records(name)
        data = counts_from_records([v.name for v in exp.variants], exposures, outcomes)
        lists, outs = self.feedback.experiment_rows(name)
        days = self._days_running(exp)
        online = self.feedback.summary("arm", days, experiment=name)
        return {
            "experiment": exp.to_dict(with_salt=False),
            **analyse(data, exp.shares, alpha=level),
            **decide(exp, lists, outs, online, now=self.feedback.clock()),
            "daily": self.feedback.metrics("arm", days, experiment=name),
        }

    def _days_running(self, exp: Experiment) -> int:
        start = exp.created_at or self.feedback.clock()
        return max(1, min(3660, int((self.feedback.clock() - start) // 86400) + 2))

    def promote(
        self,
        name: str,
        *,
        activate: Callable[[str, str], Any],
        set_default: Callable[[str], None],
        default_model: Callable[[], str],
        force: bool = False,
        arm: str | None = None,
    ) -> dict[str, Any]:
        """Make the winning arm's model version the default and end the experiment.

        Args:
            name: the experiment.
            activate: activates (model, version) (the serving path's hot swap).
            set_default: makes a model the default.
            default_model: the default model's name (for arms that name none).
            force: promote although the sequential test has not concluded or a guardrail is
                breached (the result records what was overridden).
            arm: the arm to promote with `force` (default: the decision's winner, else the best
                arm so far).

        Raises:
            ConflictError: the experiment is already promoted, or (without `force`) its test
                has not concluded or a guardrail blocks the winner.
        """
        exp = self.store.get(name)
        if exp.status == "promoted":
            arm_done = (exp.promoted or {}).get("arm")
            raise ConflictError(f"experiment {name!r} was already promoted (arm {arm_done!r})")
        rep = self.report(name)
        d = rep["decision"]
        overridden = []
        if not d["concluded"]:
            overridden.append("not concluded")
        if d["blocked_by"]:
            overridden.append("guardrails: " + ", ".join(d["blocked_by"]))
        if overridden and not force:
            raise ConflictError(
                f"experiment {name!r} cannot be promoted yet: {d['reason']}; keep it running, "
                "or promote with force=true to override"
            )
        chosen = arm or d["winner"] or d["leader"]
        variant = next((v for v in exp.variants if v.name == chosen), None)
        if variant is None:
            raise ValidationError("arm", f"{chosen!r} is not an arm of experiment {name!r}")
        model = variant.model or default_model()
        served = self.feedback.served_version(name, variant.name)
        version = served[1] if served and served[0] == model else None
        version = version or self.registry.require_active(model)
        activate(model, version)
        set_default(model)
        promoted = {
            "arm": variant.name,
            "model": model,
            "version": version,
            "at": self.feedback.clock(),
            "forced": bool(overridden),
            "overridden": overridden,
            "params_not_carried": dict(variant.params),
        }
        done = self.store.set_status(name, "promoted", promoted=promoted)
        return {"experiment": done.to_dict(with_salt=False), "promoted": promoted}

    def replay(
        self,
        name: str,
        dataset: InteractionDataset,
        *,
        default_model: Callable[[], str],
        ledger: PrivacyLedger,
        k: int = 10,
        paired: bool = False,
        max_users: int | None = 5000,
        seed: int = DEFAULT_SEED,
    ) -> dict[str, Any]:
        """Estimate an experiment offline: leave-one-out on `dataset`, variants refitted.

        A differentially private variant is a new release of the shop's data, so its refit is
        charged to `ledger` like any other (and refused when the budget cannot afford it).
        """
        from privrec.data.splitters import leave_one_out_test
        from privrec.experiments.replay import replay

        exp = self.store.get(name)
        if dataset.n_events == 0:
            raise ValidationError("store", "holds no events; nothing to replay")
        train, test = leave_one_out_test(dataset)

        def fit(variant: Variant, data: InteractionDataset) -> Recommender:
            mname = variant.model or default_model()
            cfg = self.registry.config_of(mname, self.registry.require_active(mname))["config"]
            return create_model(mname, **cfg).fit(data, rng=seed, ledger=ledger)

        report = replay(exp, train, test, fit, k=k, paired=paired, max_users=max_users)
        report["experiment"] = exp.to_dict(with_salt=False)
        report["replay"]["protocol"] = "leave-one-out: each shopper's last event is held out"
        return report

    def promote_served(
        self, serving: Any, name: str, *, force: bool = False, arm: str | None = None
    ) -> dict[str, Any]:
        """`promote` through the serving path (`privrec.service.serving.Serving`): the winner's
        version is hot-swapped in and its model becomes the default at once (HTTP and CLI)."""

        def set_default(model: str) -> None:
            self.registry.set_default(model)
            serving.forget_default()

        return self.promote(
            name,
            activate=serving.activate_pointer,
            set_default=set_default,
            default_model=serving.default_model_name,
            force=force,
            arm=arm,
        )

    def close(self) -> None:
        """Flush and close the store and the feedback log."""
        self.feedback.close()
        if self._store is not None:
            self._store.close()
            self._store = None
