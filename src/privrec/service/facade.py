"""The RecSys facade: privrec as one object over one data directory.

It wires the service modules together and offers the everyday calls; the parts are reachable
for the rest: `registry` (model versions), `serving` (the one serving path), `ingestion`,
`training`, `rights` (access, erasure, retention, keys), `experiments` and `reports`. Raw user
ids are pseudonymised on entry (in `ServiceContext.pseudonymise`) and go no further.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from privrec.core.rng import DEFAULT_SEED
from privrec.core.settings import Settings
from privrec.data.dataset import InteractionDataset
from privrec.events.ingest import BatchReport
from privrec.events.store_api import EventStoreAPI
from privrec.models.sharded import ShardedFit
from privrec.privacy import consent as policy
from privrec.privacy.consent import parse_level
from privrec.service.catalogue import Catalogue
from privrec.service.consent import ConsentBook
from privrec.service.context import ServiceContext
from privrec.service.experiments import Experiments
from privrec.service.finetune import FinetuneOptions, FinetuneResult, Finetuning, StageProgress
from privrec.service.ingestion import Ingestion
from privrec.service.jobs import JobHistory
from privrec.service.pending import PendingRetrains, now_iso
from privrec.service.precompute import Precompute, PrecomputeResult
from privrec.service.registry import ModelRegistry
from privrec.service.reports import Reports
from privrec.service.results import (
    ConsentChange,
    ExplainedItem,
    RecommendationList,
    SearchResult,
    TrainResult,
)
from privrec.service.rights import Rights
from privrec.service.scheduler import Scheduler
from privrec.service.serving import Serving
from privrec.service.training import Training


class RecSys:
    """privrec over one data directory.

    Args:
        settings: runtime settings (defaults < privrec.toml < PRIVREC_* environment).
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.ctx = ServiceContext(settings)
        self.settings = self.ctx.settings
        self.data_dir = self.ctx.data_dir
        self._wire()

    def _wire(self) -> None:
        """Build the service parts over the context (again after `reset`)."""
        self.registry = ModelRegistry(self.ctx.models_dir, key=self.ctx.sidecar_key)
        self.consent_book = ConsentBook(self.data_dir, key=self.ctx.sidecar_key)
        self.experiments = Experiments(
            self.data_dir, self.registry, key=self.ctx.sidecar_key, settings=self.settings
        )
        self.serving = Serving(self.ctx, self.registry, self.consent_book, self.experiments)
        self.experiments.feedback.catalogue_size = self.serving.catalogue_size  # coverage
        self.ingestion = Ingestion(self.ctx, self.consent_book, self.serving)
        self.serving.search_indexes.attach(self.ingestion)  # a shopper's searches pass its gate
        self.catalogue = Catalogue(self.ctx, self.serving)
        pending = PendingRetrains(self.data_dir)
        self.rights = Rights(self.ctx, self.registry, self.consent_book, self.serving, pending)
        self.training = Training(self.ctx, self.registry, self.consent_book, self.serving, pending)
        self.finetuning = Finetuning(self.training, self.registry)
        self.reports = Reports(self.ctx, self.registry, pending)
        # the job history and the retrain scheduler (`privrec serve` starts it; see scheduler.py)
        self.jobs = JobHistory(self.data_dir, key=self.ctx.sidecar_key, budget=self._budget_used)
        self.scheduler = Scheduler(
            self.ctx, self.registry, self.training, self.serving, pending, self.jobs
        )

    def _budget_used(self) -> tuple[float, float]:
        """(epsilon spent, epsilon budget) of the privacy ledger, for a refused job's reason."""
        spent = self.ctx.ledger.spent()
        return spent.epsilon, spent.budget.epsilon

    # ---- plumbing ---------------------------------------------------------------------------
    @property
    def store(self) -> EventStoreAPI:
        """The encrypted event store (opened on first use)."""
        return self.ctx.store

    @property
    def models_dir(self) -> Path:
        """Where versioned model artifacts live."""
        return self.ctx.models_dir

    @property
    def reports_dir(self) -> Path:
        """Default folder for evaluation reports."""
        return self.ctx.reports_dir

    def close(self) -> None:
        """Finish background erasures and deletions, flush experiments, close the store."""
        self.rights.wait()
        self.registry.close()
        self.experiments.close()
        self.ctx.close()

    def __enter__(self) -> RecSys:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self) -> None:
        """Delete the whole data directory and start empty (the demo starts clean)."""
        self.close()
        self.ctx.wipe()
        self._wire()

    # ---- events ----------------------------------------------------------------------------------
    def ingest_file(
        self, path: str | Path, *, progress: Callable[[int], None] | None = None
    ) -> BatchReport:
        """Ingest a JSONL, CSV or Parquet file through the gate and the consent check."""
        return self.ingestion.file(path, progress=progress)

    def ingest_events(self, records: Iterable[Mapping[str, Any]]) -> BatchReport:
        """Ingest Python event records through the gate and the consent check."""
        return self.ingestion.records(records)

    def ingest_frame(self, frame: pd.DataFrame) -> BatchReport:
        """Ingest a raw event frame through the gate's bulk path and the consent check."""
        return self.ingestion.frame(frame)

    def add_items(self, catalogue: pd.DataFrame) -> int:
        """Insert or update catalogue rows (item, title, category, brand, price, in_stock, text)."""
        return self.ctx.store.upsert_items(catalogue)

    def dataset(self, name: str = "store") -> InteractionDataset:
        """Everything in the store that the users' consent allows (pseudonymous users)."""
        return self.training.dataset(name)

    # ---- models ----------------------------------------------------------------------------------
    def train(
        self,
        model_name: str,
        *,
        params: Mapping[str, Any] | None = None,
        activate: bool = True,
        seed: int = DEFAULT_SEED,
        sharded: ShardedFit | None = None,
    ) -> TrainResult:
        """Fit `model_name` on the store, save it as a new version and activate it."""
        return self.training.train(
            model_name, params=params, activate=activate, seed=seed, sharded=sharded
        )

    def precompute(
        self, k: int = 50, *, model: str | None = None, sharded: ShardedFit | None = None
    ) -> PrecomputeResult:
        """Every shopper's top-k list of the active `model` (None: the default), written sealed
        to the data directory; users scored in shards (Ray tasks with a Ray runner)."""
        return Precompute(self.ctx, self.registry, self.training).run(
            k, model=model, sharded=sharded
        )

    def finetune(
        self,
        options: FinetuneOptions | None = None,
        *,
        progress: StageProgress | None = None,
    ) -> FinetuneResult:
        """Fine-tune the content encoder on the store's co-interactions; deploy it if better."""
        return self.finetuning.run(options, progress=progress)

    def set_default_model(self, name: str) -> None:
        """The model served when a request names none."""
        self.registry.set_default(name)
        self.serving.forget_default()

    # ---- serving (the one path of the CLI, the HTTP API and the pages) ---------------------------
    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        model: str | None = None,
        rules: Mapping[str, Any] | None = None,
        context_item: str | None = None,
        experiment: str | None = None,
        anonymous: bool = False,
    ) -> RecommendationList:
        """Top-k for a shopper with business rules, explanations and A/B assignment
        (`anonymous`: the list of an anonymous shopper, for a caller that could not show who)."""
        return self.serving.recommend(
            user_id,
            k,
            model=model,
            rules=rules,
            context_item=context_item,
            experiment=experiment,
            anonymous=anonymous,
        )

    def explain(self, user_id: str, item: str, *, model: str | None = None) -> ExplainedItem:
        """Why `item` would be shown to this shopper (score, rank, explanation)."""
        return self.serving.explain(user_id, item, model=model)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        user_id: str | None = None,
        rules: Mapping[str, Any] | None = None,
        mode: str = "hybrid",
    ) -> SearchResult:
        """Product search (hybrid, lexical or dense), re-ranked for a shopper who consented to
        personalisation."""
        result = self.serving.search(query, k, user_id=user_id, rules=rules, mode=mode)
        self.serving.log_search(result, user_id)  # the impression
        return result

    # ---- consent and rights ----------------------------------------------------------------------
    def consent(self, user_id: str) -> str:
        """A shopper's consent level (personalized, purchases_only or anonymous)."""
        return self.consent_book.level(self.ctx.pseudonymise(user_id)).value

    def set_consent(self, user_id: str, level: str) -> ConsentChange:
        """Set a shopper's consent level; it applies from the next request on.

        Stored events the new level does not keep are deleted at once and taken out of the
        models like an erasure.
        """
        new = parse_level(level)
        p = self.ctx.pseudonymise(user_id)
        previous = self.consent_book.set(p, new)
        self.serving.consent_changed(p)
        removed = self.rights.lower_consent(p, new)
        if not policy.enrolled_in_experiments(new):  # anonymous: no per-shopper record stays
            self.experiments.erase(p)
        return ConsentChange(
            level=new.value,
            previous=previous.value,
            updated_at=now_iso(),
            events_deleted=removed["events_deleted"],
            models_pending_retrain=removed["models_pending_retrain"],
        )

    def export_user(self, user_id: str) -> dict[str, Any]:
        """Right of access: everything stored about this shopper, as JSON-ready data."""
        return self.rights.export(user_id)

    def forget(self, user_id: str, *, background: bool = False) -> dict[str, Any]:
        """Right to erasure for one shopper; returns the receipt (see `Rights.forget`)."""
        return self.rights.forget([user_id], background=background)[0]

    def forget_many(
        self, user_ids: Iterable[str], *, background: bool = False
    ) -> list[dict[str, Any]]:
        """Erase several shoppers as one batch: one receipt each."""
        return self.rights.forget(user_ids, background=background)

    def wait_for_erasures(self) -> None:
        """Wait until background erasures have finished."""
        self.rights.wait()

    def retention(self, days: int | None = None) -> dict[str, Any]:
        """Delete events older than `days` (or the settings' rule), out of the models too."""
        return self.rights.retention(days)

    def rotate_key(self) -> int:
        """Rotate the pseudonym key and re-key every record keyed by pseudonym, as one unit.

        Returns the events re-keyed; see `Rights.rotate_key` (a failure changes nothing, and an
        interrupted rotation is finished instead).
        """
        n = self.rights.rotate_key()
        self.ingestion.reset_gate()
        return n

    def replay_experiment(self, name: str, **options: Any) -> dict[str, Any]:
        """Estimate an experiment offline on the store (see `Experiments.replay`)."""
        default = self.serving.default_model_name
        ledger = self.ctx.ledger
        data = self.dataset()
        return self.experiments.replay(name, data, default_model=default, ledger=ledger, **options)

    # ---- privacy reports -------------------------------------------------------------------------
    def privacy_budget(self) -> dict[str, Any]:
        """The ledger, each model's guarantee and the pending retrains."""
        return self.reports.privacy_budget()

    def privacy_report(
        self,
        out_dir: str | Path | None = None,
        *,
        dataset: InteractionDataset | None = None,
        **options: Any,
    ) -> dict[str, Path]:
        """The DP models' privacy-utility frontier on `dataset` (default: the store's data)."""
        ds = dataset if dataset is not None else self.dataset()
        return self.reports.privacy_report(ds, out_dir, from_store=dataset is None, **options)
