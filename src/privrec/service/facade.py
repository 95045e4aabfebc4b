"""The RecSys facade (layer 7): ingest, train, recommend, explain, forget, export.

Everything the CLI and the HTTP server do goes through here, so privacy rules live in one
place: raw user ids are pseudonymised on entry and never leave this object.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import NotFoundError, ValidationError
from privrec.core.settings import Settings
from privrec.core.types import EVENT_CODE, EVENT_TYPES, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.events.gate import ArrivalRateLimiter, Gate
from privrec.events.ingest import BatchReport, ingest_file, ingest_frame, ingest_records
from privrec.events.store import EventStore
from privrec.models.base import Recommender
from privrec.models.zoo import create_model
from privrec.privacy.audit_log import AuditLog, erasure_receipt
from privrec.privacy.consent import allowed_types
from privrec.privacy.ledger import Budget, PrivacyLedger
from privrec.privacy.pseudonym import Pseudonymiser

logger = logging.getLogger(__name__)

ACTIVE_FILE = "ACTIVE"
# Beside each saved model version: what it was trained on, so `forget` can take out exactly the
# events the model saw. Event ids are keyed HMACs; only their first 64 bits are kept (no user id).
TRAINED_EVENTS_FILE = "trained_events.npy"
TRAINING_FILE = "training.json"
PENDING_RETRAINS_FILE = "pending-retrains.json"


@dataclass(frozen=True)
class Recommendation:
    """One recommended item with its score and the reason, ready for JSON."""

    item: str
    score: float
    title: str | None
    category: str | None
    explanation: str
    explanation_kind: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


@dataclass
class ServedModel:
    """An artifact loaded for serving: the model, its item vocabulary and its version."""

    name: str
    version: str
    model: Recommender
    items: Vocabulary
    item_meta: pd.DataFrame


class RecSys:
    """privrec as one object over one data directory.

    Args:
        settings: runtime settings (defaults < privrec.toml < PRIVREC_* environment).
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.data_dir = Path(self.settings.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._pseudonymiser: Pseudonymiser | None = None
        self._store: EventStore | None = None
        self._served: dict[str, ServedModel] = {}
        self._live: dict[
            tuple[str, str], Recommender
        ] = {}  # (model, version) -> in memory, for exact erasures
        self._deleters: list[threading.Thread] = []  # background removal of superseded versions
        self._erasure_jobs: list[
            threading.Thread
        ] = []  # background model updates (forget(background=True))
        self._derived_writers: dict[
            str, threading.Thread
        ] = {}  # model -> writer of a downdated version's derived arrays
        self._unlearn_lock = threading.Lock()  # one model update at a time (they work in place)
        self._pending_lock = threading.Lock()  # read-modify-write of the pending retrains file

    # ---- plumbing ------------------------------------------------------------------------
    @property
    def pseudonymiser(self) -> Pseudonymiser:
        """The data directory's pseudonymiser (key created on first use, mode 0600)."""
        if self._pseudonymiser is None:
            env = (
                self.settings.pseudonym_key.get_secret_value()
                if self.settings.pseudonym_key
                else None
            )
            self._pseudonymiser = Pseudonymiser.from_data_dir(self.data_dir, env_key=env)
        return self._pseudonymiser

    @property
    def gate(self) -> Gate:
        """The privacy gate every event passes."""
        return Gate.from_settings(self.settings, self.pseudonymiser)

    @property
    def store(self) -> EventStore:
        """The encrypted event store (opened on first use)."""
        if self._store is None:
            key = self.settings.store_key.get_secret_value() if self.settings.store_key else None
            self._store = EventStore.open(self.data_dir, key=key)
        return self._store

    def close(self) -> None:
        """Close the store (checkpointing it), after background erasures and version deletions finish."""
        self.wait_for_erasures()
        for t in self._deleters:
            t.join()
        self._deleters.clear()
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> RecSys:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def models_dir(self) -> Path:
        """Where versioned model artifacts live."""
        return self.data_dir / "models"

    @property
    def reports_dir(self) -> Path:
        """Default folder for evaluation reports."""
        return self.data_dir / "reports"

    # ---- ingestion ---------------------------------------------------------------------------
    def ingest_file(
        self, path: str | Path, *, progress: Callable[[int], None] | None = None
    ) -> BatchReport:
        """Ingest a JSONL, CSV or Parquet file through the gate and the consent check; rejects go beside the store."""
        rejects = self.data_dir / "rejects" / f"{Path(path).name}.{int(time.time())}.rejects.jsonl"
        return ingest_file(
            Path(path),
            self.gate,
            self.store,
            rejects_path=rejects,
            progress=progress,
            consent=self._consent_filter(),
        )

    def ingest_events(self, records: Iterable[Mapping[str, Any]]) -> BatchReport:
        """Ingest Python event records through the gate and the consent check."""
        rejects = self.data_dir / "rejects" / f"api.{int(time.time())}.rejects.jsonl"
        return ingest_records(
            records, self.gate, self.store, rejects_path=rejects, consent=self._consent_filter()
        )

    def ingest_frame(self, frame: pd.DataFrame) -> BatchReport:
        """Ingest a raw event frame (Event's fields as columns) through the gate's bulk path and the consent check."""
        rejects = self.data_dir / "rejects" / f"frame.{int(time.time())}.rejects.jsonl"
        return ingest_frame(
            frame, self.gate, self.store, rejects_path=rejects, consent=self._consent_filter()
        )

    def _consent_book(self) -> Any:
        """The consent registry (the serving state's when it exists, so both see one table)."""
        st = self.__dict__.get("_serving")
        return st.consent if st is not None else _Consent(self.data_dir)

    def _consent_filter(self) -> Callable[[pd.DataFrame], np.ndarray]:
        """Which rows of a gated frame the users' stored consent lets the store keep.

        Read from the consent table on every batch, so a change applies to the next ingestion.
        """
        book = self._consent_book()

        def keep(frame: pd.DataFrame) -> np.ndarray:
            users = frame["user"].astype(str)
            levels = book.levels(pd.unique(users).tolist())
            restricted = {p: lv for p, lv in levels.items() if lv != DEFAULT_CONSENT}
            if not restricted:
                return np.ones(len(frame), dtype=bool)
            lv = users.map(restricted).fillna(DEFAULT_CONSENT).to_numpy(dtype=object)
            types = frame["type"].astype(str).to_numpy(dtype=object)
            ok = lv == DEFAULT_CONSENT
            for level in set(restricted.values()):
                ok |= (lv == level) & np.isin(types, sorted(allowed_types(level)))
            return ok

        return keep

    def add_items(self, catalogue: pd.DataFrame) -> int:
        """Insert or update catalogue rows (item, title, category, brand, price, in_stock, text)."""
        return self.store.upsert_items(catalogue)

    def dataset(self, name: str = "store") -> InteractionDataset:
        """Everything in the store that the users' consent allows, as an InteractionDataset (pseudonymous users)."""
        events = self.store.events()
        if len(events):
            events = events[self._consent_filter()(events)].reset_index(drop=True)
        items = self.store.items()
        return InteractionDataset.from_events(
            events,
            item_meta=items if len(items) else None,
            event_weights=self.settings.event_weights,
            name=name,
        )

    # ---- models ---------------------------------------------------------------------------------
    def save_model(
        self,
        model: Recommender,
        dataset: InteractionDataset,
        *,
        name: str | None = None,
        activate: bool = True,
        training: _TrainingRecord | None = None,
        items: Vocabulary | None = None,
        derived: bool = True,
    ) -> Path:
        """Save a fitted model as a new version with its item vocabulary; optionally activate it.

        `training` (what the model was trained on) lets `forget` unlearn exactly later;
        `derived=False` leaves the derived arrays to `model.save_derived` (see `Recommender.save`).
        """
        name = name or model.name
        base = self.models_dir / name
        base.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        n = (
            max(
                [
                    int(p.name.rsplit("-", 1)[-1])
                    for p in base.glob("v*-*")
                    if p.name.rsplit("-", 1)[-1].isdigit()
                ]
                + [0]
            )
            + 1
        )
        version = f"{stamp}-{n:03d}"
        path = base / f"v{version}"
        tmp = base / f".tmp-{version}"
        try:
            model.save(tmp, derived=derived)
            # Item keys are public catalogue ids; no user data goes into an artifact.
            (tmp / "items.json").write_text(json.dumps((items or dataset.items).keys))
            if training is not None:
                training.write(tmp)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a half-written version must not linger
            raise
        if activate:
            self.activate(name, path.name)
        return path

    def activate(self, name: str, version: str) -> None:
        """Make `version` the served version of model `name` (atomic pointer swap)."""
        base = self.models_dir / name
        if not (base / version / "config.json").exists():
            raise NotFoundError(f"model {name!r} has no version {version!r}")
        tmp = base / f".{ACTIVE_FILE}.tmp"
        tmp.write_text(version)
        tmp.replace(base / ACTIVE_FILE)
        self._served.pop(name, None)
        (self.models_dir / "DEFAULT").parent.mkdir(parents=True, exist_ok=True)

    def set_default_model(self, name: str) -> None:
        """The model `recommend` uses when none is named."""
        (self.models_dir / "DEFAULT").write_text(name)
        if "_serving" in self.__dict__:
            self.__dict__["_serving"].default_name = None

    def list_models(self) -> dict[str, dict[str, Any]]:
        """Every saved model with its versions and the active one."""
        out: dict[str, dict[str, Any]] = {}
        if not self.models_dir.exists():
            return out
        for base in sorted(p for p in self.models_dir.iterdir() if p.is_dir()):
            versions = sorted(p.name for p in base.glob("v*") if (p / "config.json").exists())
            active = (
                (base / ACTIVE_FILE).read_text().strip() if (base / ACTIVE_FILE).exists() else None
            )
            out[base.name] = {"versions": versions, "active": active}
        return out

    def served(self, name: str | None = None) -> ServedModel:
        """The active version of model `name` (or the default model), loaded once."""
        if name is None:
            default = self.models_dir / "DEFAULT"
            if not default.exists():
                raise NotFoundError(
                    "no model has been trained yet; run `privrec train` or `privrec demo`"
                )
            name = default.read_text().strip()
        if name in self._served:
            return self._served[name]
        active = self.models_dir / name / ACTIVE_FILE
        if not active.exists():
            raise NotFoundError(
                f"model {name!r} has no active version; run `privrec train --model {name}`"
            )
        version = active.read_text().strip()
        path = self.models_dir / name / version
        model = Recommender.load(path)
        items = Vocabulary(json.loads((path / "items.json").read_text()))
        meta = InteractionDataset._align_meta(items, self.store.items())
        served = ServedModel(name=name, version=version, model=model, items=items, item_meta=meta)
        self._served[name] = served
        return served

    @property
    def ledger(self) -> PrivacyLedger:
        """The data directory's privacy-budget ledger, with the configured total budget."""
        return PrivacyLedger(
            self.data_dir,
            Budget(self.settings.privacy_budget_epsilon, self.settings.privacy_budget_delta),
        )

    def train(
        self,
        model_name: str,
        *,
        params: Mapping[str, Any] | None = None,
        activate: bool = True,
        seed: int = 42,
    ) -> tuple[Path, float]:
        """Fit `model_name` on everything in the store and save it; returns (artifact, seconds).

        A differentially private model charges the ledger before it draws noise; a release the
        budget cannot afford raises BudgetExceededError and nothing is saved.
        """
        from privrec.models.unlearning import supports_exact_unlearning

        events = self.store.events()
        if len(events):
            # events stored before a user lowered their consent are not trained on
            events = events[self._consent_filter()(events)].reset_index(drop=True)
        items = self.store.items()
        ds = InteractionDataset.from_events(
            events,
            item_meta=items if len(items) else None,
            event_weights=self.settings.event_weights,
            name="store",
        )
        if ds.n_events == 0:
            raise ValidationError(
                "store", "holds no events; ingest some first (`privrec ingest FILE`)"
            )
        model = create_model(model_name, **dict(params or {}))
        t0 = time.perf_counter()
        if "ledger" in inspect.signature(model.fit).parameters:
            model.fit(ds, rng=seed, ledger=self.ledger)  # type: ignore[call-arg]
        else:
            model.fit(ds, rng=seed)
        secs = time.perf_counter() - t0
        record = _TrainingRecord.of(
            events, self.store.pseudonym_generation, self.settings.event_weights
        )
        path = self.save_model(model, ds, activate=activate, training=record)
        if supports_exact_unlearning(model):  # kept, so an erasure need not load it first
            self._live = {k: v for k, v in self._live.items() if k[0] != model.name}
            self._live[(model.name, path.name)] = model
        self._clear_pending_retrain(model.name)
        if not (self.models_dir / "DEFAULT").exists():
            self.set_default_model(model.name)
        return path, secs

    # ---- serving -------------------------------------------------------------------------------
    def user_history(
        self, user_id: str, items: Vocabulary, weights: Mapping[str, float] | None = None
    ) -> UserHistory:
        """The stored history of a raw user id, in `items`' index space (unknown items dropped)."""
        pseudonym = self.pseudonymiser.pseudonymise(user_id)
        return self._history_of(pseudonym, items, weights)

    def _history_of(
        self, pseudonym: str, items: Vocabulary, weights: Mapping[str, float] | None = None
    ) -> UserHistory:
        ev = self.store.events(user=pseudonym)
        if not len(ev):
            return UserHistory.of([])
        idx = items.encode(ev["item"].astype(str).tolist())
        types = ev["type"].map(EVENT_CODE).to_numpy(np.int8)
        w = dict(weights or self.settings.event_weights)
        wv = np.array([float(w.get(t, 1.0)) for t in ev["type"]], dtype=np.float32)
        keep = idx >= 0
        return UserHistory(items=idx[keep], weights=wv[keep], event_types=types[keep])

    def recommend(
        self, user_id: str, k: int = 10, *, model: str | None = None
    ) -> list[Recommendation]:
        """Top-k recommendations for a raw user id, each with its explanation."""
        if k < 1 or k > 1000:
            raise ValidationError("k", f"{k} is out of range; ask for 1 to 1000 items")
        served = self.served(model)
        level = self.consent(user_id)
        history = self.user_history(user_id, served.items)
        if level == "anonymous":
            history = UserHistory.of([])
        elif level == "purchases_only" and len(history) and history.event_types is not None:
            keep = history.event_types == _PURCHASE_CODE
            history = UserHistory(
                items=history.items[keep],
                weights=None if history.weights is None else history.weights[keep],
                event_types=history.event_types[keep],
            )
        idx, scores = served.model.recommend(history, k)
        out = []
        for i, s in zip(idx.tolist(), scores.tolist(), strict=True):
            exp = served.model.explain(history, i)
            text = exp.text
            if exp.contributors:
                names = [self._title(served, j) for j, _ in exp.contributors[:2]]
                text = "because you interacted with " + " and ".join(f"'{n}'" for n in names)
            row = served.item_meta.iloc[i]
            out.append(
                Recommendation(
                    item=served.items.key(i),
                    score=float(s),
                    title=row["title"] if isinstance(row["title"], str) else None,
                    category=row["category"] if isinstance(row["category"], str) else None,
                    explanation=text,
                    explanation_kind=exp.kind,
                )
            )
        return out

    @staticmethod
    def _title(served: ServedModel, i: int) -> str:
        t = served.item_meta.iloc[int(i)]["title"]
        return t if isinstance(t, str) and t else served.items.key(int(i))

    # ---- data-subject rights ---------------------------------------------------------------------
    def export_user(self, user_id: str) -> dict[str, Any]:
        """Right of access: everything stored about this user, as JSON-ready data."""
        pseudonym = self.pseudonymiser.pseudonymise(user_id)
        ev = self.store.events(user=pseudonym)
        book = self._consent_book()
        experiments: list[dict[str, Any]] = []
        exp_path = self.data_dir / "experiments.sqlite"
        if exp_path.exists():
            from privrec.experiments.assignment import unit_id

            st = self.__dict__.get("_serving")
            store = st.experiments if st is not None else _open_experiments(exp_path)
            experiments = store.unit_records(
                {e.name: unit_id(e.salt, pseudonym) for e in store.list()}
            )
            if st is None:
                store.close()
        audit = [
            e
            for e in AuditLog(self.data_dir).entries()
            if e.get("pseudonym") == pseudonym or pseudonym in (e.get("pseudonyms") or ())
        ]
        return {
            "pseudonym": pseudonym,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "events": json.loads(ev.to_json(orient="records")) if len(ev) else [],
            "n_events": len(ev),
            "consent_record": book.record(pseudonym),
            "experiments": experiments,
            "audit_log": audit,
            "models": "models hold no per-user state: a user's vector is derived from these events at request time; "
            "aggregate model statistics are not personal records (erasure removes the user's share of them)",
            "privacy_ledger": "global (releases over all users), holds nothing about one user",
        }

    def forget(self, user_id: str, *, background: bool = False) -> dict[str, Any]:
        """Right to erasure: events, consent record and cached results go at once; then the models.

        Each active model that can unlearn exactly (popularity counts, item-kNN co-occurrences,
        the EASE Gram matrix and inverse) is downdated by the user's trained events and saved as
        a new active version (older versions, which still hold the user, are deleted). The
        others are recorded as pending a retrain before the deadline of `retrain_deadline_days`.
        The receipt is appended to the hash-chained audit log and returned.

        With `background=True` it returns once the events, consent record and cached results are
        gone (no stored row of the user is readable any more): the store compaction and the exact
        model updates then run on a worker thread. Until they finish, the affected models stand
        in the pending retrains with the deadline (so a crash leaves a retrain due, never a
        silent gap); the worker clears them and appends an `erase-models` audit entry.
        `wait_for_erasures` waits for the worker.
        """
        return self.forget_many([user_id], background=background)[0]

    def wait_for_erasures(self) -> None:
        """Wait until background erasures (`forget(..., background=True)`) have finished and the
        downdated versions are fully on disk."""
        for t in list(self._erasure_jobs):
            t.join()
        self._erasure_jobs = [t for t in self._erasure_jobs if t.is_alive()]
        for name in list(self._derived_writers):
            self._wait_derived(name)

    def _wait_derived(self, name: str) -> None:
        """Wait for the writer of `name`'s derived arrays: the next downdate changes them in place."""
        t = self._derived_writers.pop(name, None)
        if t is not None:
            t.join()

    def forget_many(
        self, user_ids: Iterable[str], *, background: bool = False
    ) -> list[dict[str, Any]]:
        """Erase several users as one batch (an operator's queue of requests): one receipt each.

        Same guarantees as `forget`, but the store is compacted once and every model is updated
        once for all of them (one rank-k update of EASE, one new version per model).
        """
        ids = list(dict.fromkeys(str(u) for u in user_ids))
        if not ids:
            return []
        erased_at = time.time()
        t0 = time.perf_counter()
        pseudonyms = [self.pseudonymiser.pseudonymise(u) for u in ids]
        events = [
            self.store.events(user=p) for p in pseudonyms
        ]  # read first: what to take out of the models
        deleted = [self.store.erase_user(p, compact=False) for p in pseudonyms]
        serving = [self._forget_serving_state(p) for p in pseudonyms]
        erased = pd.concat(events, ignore_index=True)
        generation = self.store.pseudonym_generation
        with ThreadPoolExecutor(1, thread_name_prefix="privrec-compact") as pool:
            # afterwards no block of the deleted rows is left in the file; DuckDB works without the
            # GIL, so the rewrite runs beside the model updates (they read no store row)
            compaction = (
                pool.submit(self.store.compact) if any(deleted) and not background else None
            )
            with self._unlearn_lock:
                models = self._unlearn(erased, plan_only=background, generation=generation)
            if compaction is not None:
                compaction.result()  # raises what the compaction raised
        exact = [m["model"] for m in models if m["status"] in ("exact", "unaffected")]
        scheduled = [m["model"] for m in models if m["status"] == "scheduled"]
        pending = [m["model"] for m in models if m["status"] in ("retrain", "scheduled")]
        secs = time.perf_counter() - t0
        receipts = []
        for p, n, srv in zip(pseudonyms, deleted, serving, strict=True):
            receipt = erasure_receipt(
                p,
                events_deleted=n,
                consent_deleted=bool(srv.get("consent_record_deleted")),
                cache_entries_deleted=int(bool(srv.get("cached_results_deleted"))),
                models_updated=exact,
                models_pending=pending,
                retrain_within_days=self.settings.retrain_deadline_days,
                seconds=secs,
                erased_at=erased_at,
            )
            receipt["events_deleted"] = int(n)  # flat copy, as the HTTP API has always returned it
            receipt.update(srv)
            receipt["models"] = models
            if len(ids) > 1:
                receipt["batch_size"] = len(ids)
            if background:
                receipt["store_compaction"] = "scheduled" if any(deleted) else "not needed"
                receipt["models_updating_exactly"] = scheduled
            receipts.append(receipt)
        token = secrets.token_hex(
            8
        )  # names this erasure in the pending retrains (no personal data)
        if pending:
            self._add_pending_retrains(pending, receipts[0]["retrain_deadline"], token)
        log = AuditLog(self.data_dir)
        for receipt in receipts:
            log.append("erase", **receipt)
        if background and (scheduled or any(deleted)):
            job = threading.Thread(
                target=self._finish_erasure,
                args=(erased, pseudonyms, token, set(scheduled), any(deleted)),
                name="privrec-erasure",
                daemon=True,
            )
            job.start()
            self._erasure_jobs.append(job)
        return receipts

    def _finish_erasure(
        self,
        erased: pd.DataFrame,
        pseudonyms: list[str],
        token: str,
        models: set[str],
        compact: bool,
    ) -> None:
        """The background half of an erasure: compact the store, update the scheduled models exactly."""
        t0 = time.perf_counter()
        try:
            if compact:
                self.store.compact()
            with self._unlearn_lock:
                done = (
                    self._unlearn(erased, only=models, generation=self.store.pseudonym_generation)
                    if models
                    else []
                )
            for m in done:
                if m["status"] in ("exact", "unaffected"):
                    self._remove_pending_retrain(m["model"], token)
            AuditLog(self.data_dir).append(
                "erase-models",
                erasure=token,
                pseudonyms=pseudonyms,
                models=done,
                store_compacted=compact,
                seconds=round(time.perf_counter() - t0, 4),
            )
        except Exception as exc:  # the pending retrains stay: the deadline still holds
            logger.error(
                "background erasure failed error=%s; the affected models stay pending a retrain",
                type(exc).__name__,
            )

    def _unlearn(
        self,
        events: pd.DataFrame,
        *,
        generation: int | None,
        plan_only: bool = False,
        only: set[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Take the erased users' trained events out of every active model that allows it exactly.

        `generation`: the store's pseudonym key generation. `plan_only`: decide each model's status
        without changing it ("scheduled" where an exact update is possible). `only`: look at these
        models only.

        Each downdated version is saved without its derived arrays (EASE's B: 586 MB on Beauty),
        which a writer thread adds right after; `Recommender.load` waits for them (see
        `Recommender.save`), and a crash before they land costs a recomputation, never exactness.
        """
        todo = [
            (name, info["active"])
            for name, info in self.list_models().items()
            if info["active"] and (only is None or name in only)
        ]
        if plan_only or len(todo) < 2:
            return [
                self._unlearn_one(name, version, events, generation, plan_only)
                for name, version in todo
            ]
        # Models are independent and their updates are numpy/scipy work that releases the GIL: on
        # several cores the erasure takes as long as the slowest model instead of the sum.
        with ThreadPoolExecutor(min(len(todo), 4), thread_name_prefix="privrec-unlearn") as pool:
            return list(
                pool.map(
                    lambda nv: self._unlearn_one(nv[0], nv[1], events, generation, plan_only), todo
                )
            )

    def _unlearn_one(
        self, name: str, version: str, events: pd.DataFrame, generation: int | None, plan_only: bool
    ) -> dict[str, Any]:
        """`_unlearn` for one model's active version: its entry of the receipt's model list."""
        from privrec.models.unlearning import forget as forget_exact
        from privrec.models.unlearning import supports_exact_unlearning, user_rows

        path = self.models_dir / name / version
        t0 = time.perf_counter()
        record = _TrainingRecord.read(path)
        if plan_only:
            try:
                cfg = json.loads((path / "config.json").read_text())
                model = create_model(
                    cfg["model"], **cfg["config"]
                )  # an unfitted twin: the kind is all we need
            except Exception:
                return {
                    "model": name,
                    "version": version,
                    "status": "retrain",
                    "reason": "artifact unreadable",
                }
        else:
            try:
                live = self._live.get((name, version))
                model = live if live is not None else Recommender.load(path)
            except Exception as exc:  # an unreadable artifact must not stop the erasure
                logger.warning(
                    "forget: model load failed model=%s error=%s", name, type(exc).__name__
                )
                return {
                    "model": name,
                    "version": version,
                    "status": "retrain",
                    "reason": "artifact unreadable",
                }
        if record is None or record.generation != generation:
            return {
                "model": name,
                "version": version,
                "status": "retrain",
                "reason": "no record of the events it was trained on (or the key was rotated since)",
            }
        trained = record.contains(events["event_id"]) if len(events) else np.zeros(0, bool)
        if not trained.any():
            return {
                "model": name,
                "version": version,
                "status": "unaffected",
                "reason": "trained without this user's events",
            }
        if not supports_exact_unlearning(model):
            dp = model.privacy is not None or name.startswith("dp_")
            why = (
                "differentially private: the guarantee bounds the user's influence until the retrain"
                if dp
                else "no exact unlearning: the user's vector is derived from their (deleted) history at request time and is gone; "
                "the item parameters carry the user until the retrain"
            )
            return {"model": name, "version": version, "status": "retrain", "reason": why}
        if plan_only:
            return {
                "model": name,
                "version": version,
                "status": "scheduled",
                "reason": "exact update on the background worker",
            }
        mine = events[trained]
        vocab = Vocabulary(json.loads((path / "items.json").read_text()))
        uds = InteractionDataset.from_events(mine, items=vocab, event_weights=record.event_weights)
        try:
            self._wait_derived(name)  # the downdate works in place on the arrays being written
            self._live.pop(
                (name, version), None
            )  # in place too: kept again only if it all succeeds
            res = forget_exact(model, user_rows(model, uds, np.arange(uds.n_users)))
            new = self.save_model(
                model,
                uds,
                name=name,
                activate=False,
                training=record.without(mine["event_id"]),
                items=vocab,
                derived=False,
            )
            writer = threading.Thread(
                target=_save_derived, args=(model, new), name="privrec-save-derived", daemon=True
            )
            writer.start()
            self._derived_writers[name] = writer
        except Exception as exc:
            logger.warning(
                "forget: exact unlearning failed model=%s error=%s", name, type(exc).__name__
            )
            return {
                "model": name,
                "version": version,
                "status": "retrain",
                "reason": f"exact update failed ({type(exc).__name__})",
            }
        self._live[(name, new.name)] = model
        self._activate_after_forget(name, new.name)
        removed = self._drop_versions(name, keep=new.name)
        return {
            "model": name,
            "version": new.name,
            "previous_version": version,
            "status": "exact",
            "method": res.method,
            "items_touched": res.items_touched,
            "old_versions_deleted": removed,
            "seconds": round(time.perf_counter() - t0, 4),
        }

    def _activate_after_forget(self, name: str, version: str) -> None:
        """Point ACTIVE at the downdated version; a serving process swaps it in too."""
        st = self.__dict__.get("_serving")
        if st is not None and name in st.loaded:
            self.activate_model(name, version)
        else:
            self.activate(name, version)

    def _drop_versions(self, name: str, *, keep: str) -> int:
        """Delete every other version of `name`: they were trained with the erased user's data.

        Each is renamed out of the way at once (no longer listed, loadable or activatable) and its
        files are unlinked on a background thread: unlinking a 1 GB EASE artifact takes ~0.4 s.
        """
        base = self.models_dir / name
        doomed = []
        for p in base.glob("v*"):
            if p.is_dir() and p.name != keep:
                trash = base / f".trash-{p.name}"
                p.rename(trash)
                doomed.append(trash)
                self._live.pop((name, p.name), None)
        renamed = len(doomed)
        doomed += [
            p for p in base.glob(".trash-*") if p not in doomed
        ]  # left by an interrupted run
        if doomed:
            t = threading.Thread(
                target=lambda: [shutil.rmtree(p, ignore_errors=True) for p in doomed],
                name="privrec-drop-versions",
                daemon=True,
            )
            t.start()
            self._deleters.append(t)
        return renamed

    # ---- pending retrains ---------------------------------------------------------------------------
    def pending_retrains(self) -> dict[str, dict[str, Any]]:
        """Models that still carry erased users' influence: {model: {deadline, since, erasures}}."""
        path = self.data_dir / PENDING_RETRAINS_FILE
        if not path.exists():
            return {}
        try:
            return dict(json.loads(path.read_text()))
        except ValueError:
            raise ValidationError(
                PENDING_RETRAINS_FILE,
                "is not valid JSON; retrain every model, then delete the file",
            ) from None

    def _write_pending(self, doc: Mapping[str, Any]) -> None:
        path = self.data_dir / PENDING_RETRAINS_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(dict(doc), indent=2, sort_keys=True))
        tmp.replace(path)

    def _add_pending_retrains(self, models: Iterable[str], deadline: str, token: str) -> None:
        with self._pending_lock:
            doc = self.pending_retrains()
            for m in models:
                cur = doc.get(m)
                if cur is None:
                    doc[m] = {
                        "deadline": deadline,
                        "since": _now_iso(),
                        "erasures": 1,
                        "erasure_ids": [token],
                    }
                else:  # the earliest deadline stands: a retrain clears every erasure before it
                    cur["erasures"] = int(cur.get("erasures", 0)) + 1
                    cur["erasure_ids"] = [*cur.get("erasure_ids", []), token]
            self._write_pending(doc)

    def _remove_pending_retrain(self, name: str, token: str) -> None:
        """One erasure's claim on `name` is settled (updated exactly); drop the entry when none is left."""
        with self._pending_lock:
            doc = self.pending_retrains()
            cur = doc.get(name)
            if cur is None or token not in cur.get("erasure_ids", []):
                return
            cur["erasure_ids"] = [t for t in cur["erasure_ids"] if t != token]
            cur["erasures"] = max(0, int(cur.get("erasures", 1)) - 1)
            if not cur["erasure_ids"]:
                doc.pop(name)
            self._write_pending(doc)

    def _clear_pending_retrain(self, name: str) -> None:
        with self._pending_lock:
            doc = self.pending_retrains()
            if doc.pop(name, None) is not None:
                self._write_pending(doc)

    def retention(self, days: int | None = None) -> int:
        """Delete events older than `days` (or the per-type retention of the settings)."""
        spec: int | dict[str, int] | None = days
        if spec is None:
            spec = {t: d for t, d in self.settings.retention_days.items() if d is not None}
            if not spec:
                raise ValidationError("days", "give --days N or set retention_days in privrec.toml")
        return self.store.retention(spec)

    def rotate_key(self) -> int:
        """Rotate the pseudonym key and re-key every stored pseudonym; returns rows re-keyed."""
        rotated = self.pseudonymiser.rotate()
        n = self.store.rekey(rotated)
        self._pseudonymiser = rotated
        return n

    def reset(self) -> None:
        """Delete the whole data directory (used by the demo to start clean)."""
        self.close()
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        self.data_dir.chmod(0o700)
        self._pseudonymiser = None
        self._served.clear()

    # ==== serving (issue 5): what the HTTP server needs ==========================================
    # Requests are served from memory: every user's history (by pseudonym), the loaded model
    # versions with their compiled catalogue, and a cache of finished top-k lists keyed by the
    # user's history generation, so a new event, a consent change or an erasure invalidates
    # exactly that user's lists. The store is only written (events) and read at start-up.

    def _serving_state(self) -> _ServingState:
        state = self.__dict__.get("_serving")
        if state is None:
            with _SERVING_INIT_LOCK:
                state = self.__dict__.get("_serving")
                if state is None:
                    state = _ServingState(self)
                    self.__dict__["_serving"] = state
        return state

    def warm(self, *, preload_max_events: int = 5_000_000) -> dict[str, Any]:
        """Load histories and the default model into memory before serving; returns what was loaded."""
        st = self._serving_state()
        st.history.load(self.store, preload_max_events=preload_max_events)
        loaded = {}
        for name, info in self.list_models().items():
            if info["active"]:
                try:
                    loaded[name] = self.serving_model(name).served.version
                except Exception as exc:  # a broken artifact must not stop the others
                    logger.warning("model load failed model=%s error=%s", name, type(exc).__name__)
        return {"users": st.history.n_users, "events": st.history.n_events, "models": loaded}

    def default_model_name(self) -> str:
        """The model `recommend` uses when none is named (read once; `refresh_models` re-reads it)."""
        st = self.__dict__.get("_serving")
        if st is not None and st.default_name is not None:
            return st.default_name
        default = self.models_dir / "DEFAULT"
        if not default.exists():
            raise NotFoundError(
                "no model has been trained yet; run `privrec train` or `privrec demo`"
            )
        name = default.read_text().strip()
        if st is not None:
            st.default_name = name
        return name

    def serving_model(self, name: str | None = None) -> LoadedModel:
        """The active version of a model with its compiled catalogue, loaded once."""
        st = self._serving_state()
        name = name or self.default_model_name()
        got = st.loaded.get(name)
        if got is not None:
            return got
        with st.load_lock:
            got = st.loaded.get(name)
            if got is None:
                active = self.models_dir / name / ACTIVE_FILE
                if not active.exists():
                    raise NotFoundError(
                        f"model {name!r} has no active version; train it first (POST /v1/models/{name}/train)"
                    )
                got = st.load(name, active.read_text().strip())
                st.loaded[name] = got
        return got

    def activate_model(self, name: str, version: str) -> dict[str, Any]:
        """Hot swap: load `version` fully, then switch the pointer and the served reference at once.

        Requests that already hold the old version finish on it; requests that start after the
        swap get the new one; none waits for the load or fails during it.
        """
        st = self._serving_state()
        with st.swap_lock:
            previous = st.loaded.get(name)
            loaded = st.load(name, version)  # slow part, outside any lock requests take
            self.activate(name, version)
            self._served[name] = loaded.served
            st.loaded[name] = loaded  # one reference assignment: atomic for readers
        return {
            "model": name,
            "active": version,
            "previous": previous.served.version if previous else None,
            "load_seconds": loaded.load_seconds,
        }

    def refresh_models(self) -> list[str]:
        """Pick up versions activated outside this process (and new default models); returns swapped names."""
        st = self._serving_state()
        st.default_name = None
        swapped = []
        for name, info in self.list_models().items():
            cur = st.loaded.get(name)
            if cur is not None and info["active"] and info["active"] != cur.served.version:
                self.activate_model(name, info["active"])
                swapped.append(name)
        return swapped

    def train_and_activate(
        self, name: str, *, params: Mapping[str, Any] | None = None, seed: int = 42
    ) -> dict[str, Any]:
        """Train on the store while serving continues, then hot-swap the new version in."""
        path, secs = self.train(name, params=params, activate=False, seed=seed)
        swap = self.activate_model(name, path.name)
        return {
            "model": name,
            "version": path.name,
            "train_seconds": round(secs, 3),
            **{k: v for k, v in swap.items() if k != "model"},
        }

    def configure_serving(self, *, cache_entries: int | None = None) -> None:
        """Serving options: how many finished lists the cache keeps (0 turns it off)."""
        if cache_entries is not None:
            self._serving_state().cache.max_entries = max(0, int(cache_entries))

    def serving_stats(self) -> dict[str, Any]:
        """Counters for the metrics endpoint (no personal data)."""
        st = self.__dict__.get("_serving")
        if st is None:
            return {}
        return {
            "cache_hits": st.cache.hits,
            "cache_misses": st.cache.misses,
            "cache_entries": len(st.cache),
            "users_in_memory": st.history.n_users,
            "events_in_memory": st.history.n_events,
            "models": {n: m.served.version for n, m in st.loaded.items()},
        }

    def flush_experiments(self) -> None:
        """Write buffered experiment exposures."""
        st = self.__dict__.get("_serving")
        if st is not None and st._experiments is not None:
            st._experiments.flush()

    def refresh_popularity(self) -> None:
        """Recount item popularity from the in-memory histories."""
        st = self.__dict__.get("_serving")
        if st is not None:
            st.refresh_popularity()

    def model_versions(self) -> dict[str, Any]:
        """Every saved model with its versions, the active one, the one served, and its privacy guarantee."""
        st = self._serving_state()
        out = {}
        default = (
            (self.models_dir / "DEFAULT").read_text().strip()
            if (self.models_dir / "DEFAULT").exists()
            else None
        )
        for name, info in self.list_models().items():
            cur = st.loaded.get(name)
            privacy = None
            if info["active"]:
                try:
                    privacy = json.loads(
                        (self.models_dir / name / info["active"] / "config.json").read_text()
                    ).get("privacy")
                except (OSError, ValueError):
                    privacy = None
            out[name] = {
                **info,
                "served": cur.served.version if cur else None,
                "default": name == default,
                "privacy": privacy,
            }
        return out

    # ---- consent -----------------------------------------------------------------------------
    def consent(self, user_id: str) -> str:
        """The consent level of a raw user id (personalized, purchases_only or anonymous)."""
        return self._serving_state().consent_of(self.pseudonymiser.pseudonymise(user_id))

    def set_consent(self, user_id: str, level: str) -> dict[str, Any]:
        """Set a user's consent level; it applies from the next request on.

        `anonymous`: nothing more is stored and results are non-personalised; `purchases_only`:
        only purchases are stored and used; `personalized`: every event type.
        """
        if level not in CONSENT_LEVELS:
            raise ValidationError(
                "level", f"{level!r} is not a consent level; use one of {', '.join(CONSENT_LEVELS)}"
            )
        p = self.pseudonymiser.pseudonymise(user_id)
        st = self._serving_state()
        previous = st.consent_of(p)
        st.consent.set(p, level)
        st.consent_cache[p] = level
        st.history.bump(p)
        return {
            "level": level,
            "previous": previous,
            "updated_at": _now_iso(),
            "applies": "from the next request",
        }

    # ---- ingestion with consent, outcomes and cache invalidation --------------------------------
    def ingest_api(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Ingest events from the HTTP API.

        Per record, after the consent check: `recommendation_id` (and optional `value`) attribute
        the event as an experiment outcome (view = click, cart, purchase); the rest goes through
        the privacy gate into the store, and into the in-memory histories at once.
        """
        st = self._serving_state()
        t0 = time.perf_counter()
        n = len(records)
        keep: list[dict[str, Any]] = []
        lines: list[int] = []
        outcomes: list[dict[str, Any]] = []
        dropped = 0
        # every sender's consent level in one query (a new shopper costs no connection of their own)
        users = {
            str(r["user"]).strip()
            for r in records
            if isinstance(r, dict)
            and isinstance(r.get("user"), (str, int))
            and not isinstance(r.get("user"), bool)
        }
        users.discard("")
        pseudo = {u: self.pseudonymiser.pseudonymise(u) for u in users}
        known = st.consent_of_many(list(pseudo.values()))
        levels = {u: known[p] for u, p in pseudo.items()}
        for line, rec in enumerate(records, start=1):
            if not isinstance(rec, dict):
                keep.append({"_bad": True})
                lines.append(line)
                continue
            rid = rec.pop("recommendation_id", None)
            value = rec.pop("value", None)
            user = rec.get("user")
            if isinstance(user, (str, int)) and not isinstance(user, bool):
                lvl = levels.get(str(user).strip(), DEFAULT_CONSENT)
                # before the gate (the gate would keep the event): a dropped event must not count
                # as an experiment outcome either; the policy itself is `allowed_types`
                if lvl != DEFAULT_CONSENT and rec.get("type") not in allowed_types(lvl):
                    dropped += 1
                    continue
            if rid is not None and rec.get("type") in _OUTCOME_OF:
                outcomes.append(
                    {
                        "rec_id": str(rid),
                        "type": _OUTCOME_OF[rec["type"]],
                        "item": str(rec.get("item")),
                        "value": value,
                    }
                )
            keep.append(rec)
            lines.append(line)
        frame = pd.DataFrame.from_records(keep) if keep else pd.DataFrame({"user": []})
        if "_bad" in frame.columns:
            frame = frame.rename(columns={"_bad": "record_is_not_an_object"})
        result = (
            st.gate.process_frame(frame, line_numbers=np.asarray(lines, dtype=np.int64))
            if keep
            else None
        )
        inserted = duplicates = 0
        if result is not None and len(result.accepted):
            inserted, duplicates = self.store.append(result.accepted)
            st.history.add(result.accepted)
        attributed = 0
        if outcomes and st.experiments_ready():
            cat = self.serving_model() if self.models_dir.joinpath("DEFAULT").exists() else None
            for o in outcomes:
                if o["value"] is None and cat is not None and o["type"] == "purchase":
                    i = cat.index.get(o["item"], -1)
                    price = float(cat.table.price[i]) if i >= 0 else float("nan")
                    o["value"] = price if np.isfinite(price) else 0.0
            attributed = st.experiments.record_outcomes(outcomes)
        # by input position, whatever order the gate's checks found them in
        rejects = (
            []
            if result is None
            else sorted((r.to_dict() for r in result.rejects), key=lambda r: r.get("line") or 0)
        )
        secs = time.perf_counter() - t0
        return {
            "received": n,
            "accepted": int(inserted),
            "duplicates": int(duplicates + (result.duplicates if result is not None else 0)),
            "rejected": len(rejects),
            "consent_dropped": dropped,
            "outcomes_attributed": attributed,
            "rejects": rejects[:100],
            "seconds": round(secs, 4),
        }

    # ---- recommendations -------------------------------------------------------------------------
    def recommend_for(
        self,
        user_id: str,
        k: int = 10,
        *,
        model: str | None = None,
        rules: Mapping[str, Any] | None = None,
        context_item: str | None = None,
        experiment: str | None = None,
    ) -> dict[str, Any]:
        """Top-k for a raw user id with business rules, explanations, and A/B assignment.

        Args:
            user_id: the shop's user id (pseudonymised here, never stored raw).
            k: 1 to 1000 items.
            model: a model name (default: the default model, or the experiment variant's).
            rules: `Rules` fields; `exclude_items` as item keys.
            context_item: the item the shopper is looking at.
            experiment: a running experiment's name: the variant decides model and rules.

        Returns:
            {recommendation_id, model, version, personalized, consent, experiment, variant, items}.
        """
        if k < 1 or k > 1000:
            raise ValidationError("k", f"{k} is out of range; ask for 1 to 1000 items")
        st = self._serving_state()
        p = self.pseudonymiser.pseudonymise(user_id)
        level = st.consent_of(p)
        exp_name = variant = None
        rules = dict(rules or {})
        note = None
        if experiment:
            exp = st.experiments.get(experiment)
            if exp.status != "running":
                note = "experiment is stopped; serving the default"
            elif level == "anonymous":
                note = "anonymous shoppers are not enrolled in experiments"
            else:
                from privrec.experiments.assignment import assign

                v = assign(exp, p)
                exp_name, variant = exp.name, v.name
                model = v.model or model
                rules = {**rules, **v.params}
        base_scores = None
        if level == "anonymous":
            # nothing personal: the DP popularity release where one is trained (its noisy counts
            # bound any one shopper's influence), else the model's catalogue popularity
            dp = self._dp_popularity()
            if dp is not None:
                loaded, base_scores = dp
            else:
                loaded = self.serving_model(model)
                note = (
                    note or "no dp_popularity model is trained; serving catalogue popularity counts"
                )
        else:
            loaded = self.serving_model(model)
        items = st.top_items(loaded, p, level, k, rules, context_item, base_scores=base_scores)
        rec_id = secrets.token_hex(8)
        if exp_name is not None:
            from privrec.experiments.assignment import unit_id

            st.experiments.record_exposure(
                rec_id,
                exp_name,
                str(variant),
                unit_id(st.experiments.get(exp_name).salt, p),
                [r["item"] for r in items],
            )
        out = {
            "recommendation_id": rec_id,
            "model": loaded.served.name
            if level != "anonymous" or base_scores is not None
            else "popularity",
            "version": loaded.served.version,
            "personalized": level != "anonymous",
            "consent": level,
            "experiment": exp_name,
            "variant": variant,
            "items": items,
        }
        if note:
            out["note"] = note
        return out

    def _dp_popularity(self) -> tuple[LoadedModel, np.ndarray] | None:
        """The active dp_popularity model and its released (noisy) counts, or None."""
        if not (self.models_dir / "dp_popularity" / ACTIVE_FILE).exists():
            return None
        loaded = self.serving_model("dp_popularity")
        pop = getattr(loaded.served.model, "popularity", None)
        return (loaded, np.asarray(pop, dtype=np.float64)) if pop is not None else None

    def similar_items(
        self,
        item: str,
        k: int = 10,
        *,
        model: str | None = None,
        rules: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Items like `item` for a product page (no personal data involved)."""
        if k < 1 or k > 1000:
            raise ValidationError("k", f"{k} is out of range; ask for 1 to 1000 items")
        st = self._serving_state()
        loaded = self.serving_model(model)
        if loaded.index.get(item, -1) < 0:
            raise NotFoundError(
                f"item: {item!r} is not in the catalogue of model {loaded.served.name!r}"
            )
        items = st.top_items(
            loaded, None, "anonymous", k, {**dict(rules or {}), "exclude_items": [item]}, item
        )
        return {
            "item": item,
            "model": loaded.served.name,
            "version": loaded.served.version,
            "items": items,
        }

    def explain_for(self, user_id: str, item: str, *, model: str | None = None) -> dict[str, Any]:
        """Why `item` would be shown to this user (their score, rank and the explanation)."""
        from privrec.explain.explanations import explain_items

        st = self._serving_state()
        loaded = self.serving_model(model)
        i = loaded.index.get(item, -1)
        if i < 0:
            raise NotFoundError(
                f"item: {item!r} is not in the catalogue of model {loaded.served.name!r}"
            )
        p = self.pseudonymiser.pseudonymise(user_id)
        level = st.consent_of(p)
        history = st.history_for(loaded, p, level)
        personalized = level != "anonymous" and len(history) > 0
        scores = st.scores(loaded, history) if personalized else loaded.table.popularity
        s = float(scores[i])
        rank = int(np.count_nonzero(scores > s)) + 1
        exp = explain_items(
            loaded.served.model if personalized else None,
            history,
            [i],
            loaded.table,
            personalized=personalized,
        )[0]
        return {
            "item": item,
            "model": loaded.served.name if personalized else "popularity",
            "version": loaded.served.version,
            "score": s,
            "rank": rank,
            "personalized": personalized,
            "explanation": exp.to_dict(),
        }

    # ---- catalogue and search ------------------------------------------------------------------------
    def catalogue(
        self, *, q: str | None = None, category: str | None = None, limit: int = 24, offset: int = 0
    ) -> dict[str, Any]:
        """Browse the catalogue of the default model: optional title filter and category prefix."""
        loaded = self.serving_model()
        t = loaded.table
        mask = np.ones(t.n_items, bool)
        if category:
            mask &= t.category_mask([category])
        if q:
            mask &= loaded.title_match(q) > 0
        idx = np.flatnonzero(mask)
        idx = idx[np.lexsort((idx, -t.popularity[idx]))]
        page = idx[offset : offset + limit]
        return {
            "total": len(idx),
            "offset": offset,
            "limit": limit,
            "items": [loaded.item_dict(int(i)) for i in page],
        }

    def categories(self) -> list[dict[str, Any]]:
        """Categories of the default model's catalogue with their item counts."""
        t = self.serving_model().table
        counts = np.bincount(t.category[t.category >= 0], minlength=len(t.categories))
        return [
            {"category": c, "items": int(n)}
            for c, n in zip(t.categories, counts.tolist(), strict=True)
        ]

    def item(self, item: str) -> dict[str, Any]:
        """One catalogue item (public data)."""
        loaded = self.serving_model()
        i = loaded.index.get(item, -1)
        if i < 0:
            raise NotFoundError(f"item: {item!r} is not in the catalogue")
        return loaded.item_dict(i)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        user_id: str | None = None,
        rules: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Product search: semantic where a text model is available, else title substring match.

        With a user who consented to personalisation, matches are re-ranked by their model score.
        """
        query = (query or "").strip()
        if not query:
            raise ValidationError("query", "is empty; type what you are looking for")
        if k < 1 or k > 1000:
            raise ValidationError("k", f"{k} is out of range; ask for 1 to 1000 items")
        st = self._serving_state()
        loaded = self.serving_model()
        match, mode, note = st.search_scores(loaded, query)
        level = "anonymous"
        p = None
        if user_id:
            p = self.pseudonymiser.pseudonymise(user_id)
            level = st.consent_of(p)
        personalized = bool(p) and level != "anonymous"
        items = st.top_items(
            loaded,
            p,
            level,
            k,
            {**dict(rules or {}), "exclude_seen": False, "exclude_purchased": False},
            None,
            query=query,
            match=match,
            personal_search=personalized,
        )
        return {
            "query": query,
            "mode": mode,
            "note": note,
            "personalized": personalized,
            "model": loaded.served.name,
            "version": loaded.served.version,
            "items": items,
        }

    # ---- experiments ------------------------------------------------------------------------------------
    def create_experiment(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create and start an A/B experiment {name, variants: [{name, model, weight, params}], description}."""
        from privrec.experiments.assignment import Experiment

        exp = Experiment.from_dict(
            {k: v for k, v in spec.items() if k in ("name", "variants", "description")}
        )
        known = self.list_models()
        for v in exp.variants:
            if v.model is not None and not (known.get(v.model) or {}).get("active"):
                raise ValidationError(
                    "variants.model",
                    f"variant {v.name!r} names model {v.model!r}, which has no active version",
                )
            _rules_from(v.params, None)  # validates the params
        return self._serving_state().experiments.create(exp).to_dict(with_salt=False)

    def list_experiments(self) -> list[dict[str, Any]]:
        """All experiments (without their salts)."""
        return [e.to_dict(with_salt=False) for e in self._serving_state().experiments.list()]

    def get_experiment(self, name: str) -> dict[str, Any]:
        """One experiment (without its salt); NotFoundError if unknown."""
        return self._serving_state().experiments.get(name).to_dict(with_salt=False)

    def stop_experiment(self, name: str) -> dict[str, Any]:
        """Stop an experiment: shoppers get the default again; its data stays for the report."""
        return (
            self._serving_state().experiments.set_status(name, "stopped").to_dict(with_salt=False)
        )

    def experiment_report(self, name: str, *, alpha: float = 0.05) -> dict[str, Any]:
        """CTR, conversion and revenue per variant with intervals, tests and the SRM check."""
        from privrec.experiments.stats import analyse, counts_from_records

        store = self._serving_state().experiments
        exp = store.get(name)
        exposures, outcomes = store.records(name)
        data = counts_from_records([v.name for v in exp.variants], exposures, outcomes)
        return {
            "experiment": exp.to_dict(with_salt=False),
            **analyse(data, exp.shares, alpha=alpha),
        }

    def replay_experiment(
        self, name: str, *, k: int = 10, paired: bool = False, max_users: int | None = 5000
    ) -> dict[str, Any]:
        """Estimate an experiment offline: leave-one-out on the store, variants refitted on the rest."""
        from privrec.data.splitters import leave_one_out_test
        from privrec.experiments.replay import replay

        exp = self._serving_state().experiments.get(name)
        ds = self.dataset()
        if ds.n_events == 0:
            raise ValidationError("store", "holds no events; nothing to replay")
        train, test = leave_one_out_test(ds)

        def fit(variant: Any, data: InteractionDataset) -> Recommender:
            mname = variant.model or self.default_model_name()
            version = (self.models_dir / mname / ACTIVE_FILE).read_text().strip()
            cfg = json.loads((self.models_dir / mname / version / "config.json").read_text())[
                "config"
            ]
            return create_model(mname, **cfg).fit(data, rng=42)

        report = replay(exp, train, test, fit, k=k, paired=paired, max_users=max_users)
        report["experiment"] = exp.to_dict(with_salt=False)
        report["replay"]["protocol"] = "leave-one-out: each shopper's last event is held out"
        return report

    # ---- privacy ----------------------------------------------------------------------------------------
    def privacy_budget(self) -> dict[str, Any]:
        """The privacy-budget ledger (spent, left, releases), each model's guarantee and pending retrains."""
        out: dict[str, Any] = {"ledger": None, "models": {}}
        led = self.ledger
        out["ledger"] = led.summary()
        if not led.path.exists():
            out["ledger_note"] = (
                "no differentially private release recorded in this data directory yet"
            )
        for name, info in self.model_versions().items():
            out["models"][name] = {"version": info["active"], "privacy": info["privacy"]}
        out["pending_retrains"] = self.pending_retrains()
        return out

    def load_public_dataset(self, name_or_path: str | Path) -> InteractionDataset:
        """A public dataset by alias (`ml100k`, `beauty`: under $PRIVREC_SHARED_DATA or ../shared/data) or folder."""
        from privrec.data.loaders import load_dataset

        folder = Path(name_or_path)
        alias = PUBLIC_DATASETS.get(str(name_or_path).lower())
        if alias is not None:
            roots = (
                [Path(os.environ["PRIVREC_SHARED_DATA"])]
                if os.environ.get("PRIVREC_SHARED_DATA")
                else []
            )
            roots += [Path("shared/data"), Path("../shared/data")]
            found = [r / alias for r in roots if (r / alias).is_dir()]
            if not found:
                raise NotFoundError(
                    f"dataset: {name_or_path!r} ({alias}) not found under {', '.join(map(str, roots))}; set PRIVREC_SHARED_DATA"
                )
            folder = found[0]
        if not folder.is_dir():
            raise ValidationError(
                "dataset",
                f"{str(name_or_path)!r} is neither {' nor '.join(PUBLIC_DATASETS)} nor a dataset folder",
            )
        return load_dataset(folder, gate=self.gate)

    def privacy_report(
        self,
        out_dir: str | Path | None = None,
        *,
        dataset: InteractionDataset | None = None,
        epsilons: Iterable[float] | None = None,
        models: Iterable[str] | None = None,
        protocol: str = "loo",
        audit: bool = True,
        audit_users: int | None = None,
        seed: int = 42,
        on_point: Callable[[Any], None] | None = None,
    ) -> dict[str, Path]:
        """The privacy-utility frontier of the DP models (with the attack AUC): PNG, HTML and JSON.

        Measures `dataset` (default: the store's data). The frontier's own releases are charged to
        a ledger beside the report (they train evaluation models and are never served); the data
        directory's ledger (what was released for serving) is included in the report.

        Args:
            out_dir: where the files go (default DATA_DIR/reports/privacy).
            dataset: the data to measure (default: everything in the store).
            epsilons: the privacy levels (default 0.5, 1, 2, 4, 8, inf).
            models: DP models of the roster to run (default: all of them).
            protocol: "loo" (leave-one-out) or "ranking" (stratified 75/25 split).
            audit: run the membership-inference audit at each point.
            audit_users: at most this many users in each audit (bounds its cost).
            seed: seeds the split, the models and the audit.
            on_point: called with each measured point (progress display).
        """
        import math

        from privrec.evaluation.privacy_report import DEFAULT_ROSTER, EPSILONS, write_privacy_report

        if protocol not in ("loo", "ranking"):
            raise ValidationError("protocol", f"{protocol!r} is not a protocol; use loo or ranking")
        eps = [float(e) for e in (EPSILONS if epsilons is None else epsilons)]
        if not eps or any(not (e > 0) for e in eps):
            raise ValidationError(
                "epsilons", "give one or more positive numbers (inf for the non-private model)"
            )
        wanted = (
            list(DEFAULT_ROSTER) if models is None else [m.strip() for m in models if m.strip()]
        )
        unknown = [m for m in wanted if m not in DEFAULT_ROSTER]
        if unknown or not wanted:
            raise ValidationError(
                "models",
                f"{', '.join(unknown) or '(none)'}: choose from {', '.join(DEFAULT_ROSTER)}",
            )
        ds = dataset if dataset is not None else self.dataset()
        if ds.n_events == 0:
            raise ValidationError("store", "holds no events; ingest some first or give --dataset")
        out = Path(out_dir) if out_dir is not None else self.reports_dir / "privacy"
        out.mkdir(parents=True, exist_ok=True)
        frontier_ledger = PrivacyLedger(out / "frontier-ledger.jsonl", Budget(math.inf, 0.99))
        frontier_ledger.path.unlink(missing_ok=True)  # one report, one ledger of its releases
        extra = {
            "dataset": {
                "name": ds.name,
                "users": ds.n_users,
                "items": ds.n_items,
                "events": ds.n_events,
                "protocol": protocol,
            },
            "frontier_ledger_note": "the frontier's models are evaluation models, never served; their releases are in 'ledger'",
            "data_dir_ledger": self.ledger.summary() if dataset is None else None,
        }
        return write_privacy_report(
            out,
            dataset=ds,
            protocol=protocol,
            ledger=frontier_ledger,
            extra=extra,
            roster={m: DEFAULT_ROSTER[m] for m in wanted},
            epsilons=eps,
            audit=audit,
            audit_kwargs={"max_users": audit_users} if audit_users else None,
            seed=seed,
            on_point=on_point,
        )

    def _forget_serving_state(self, pseudonym: str) -> dict[str, Any]:
        """Erase a pseudonym's consent record, in-memory history, cached lists and experiment rows."""
        state = self.__dict__.get("_serving")
        consent = state.consent if state is not None else _Consent(self.data_dir)
        out: dict[str, Any] = {"consent_record_deleted": bool(consent.delete(pseudonym))}
        if state is not None:
            state.consent_cache.pop(pseudonym, None)
            out["cached_results_deleted"] = state.history.drop(pseudonym)
        exp_path = self.data_dir / "experiments.sqlite"
        if exp_path.exists():
            from privrec.experiments.assignment import unit_id

            store = state.experiments if state is not None else _open_experiments(exp_path)
            units = {e.name: unit_id(e.salt, pseudonym) for e in store.list()}
            out["experiment_rows_deleted"] = store.erase_units(units)
            if state is None:
                store.close()
        return out


PUBLIC_DATASETS: dict[str, str] = {"ml100k": "movielens-100k", "beauty": "amazon-beauty"}

# ==== serving helpers (issue 5) ==================================================================
CONSENT_LEVELS: tuple[str, ...] = ("personalized", "purchases_only", "anonymous")
DEFAULT_CONSENT = "personalized"
# Outcome of an event that carries a recommendation id: a view of a recommended item is a click.
_OUTCOME_OF = {"view": "click", "cart": "cart", "purchase": "purchase"}
_RULE_FIELDS = (
    "exclude_items",
    "exclude_purchased",
    "exclude_seen",
    "include_categories",
    "exclude_categories",
    "in_stock",
    "price_min",
    "price_max",
    "diversity",
    "category_cap",
)
_SERVING_INIT_LOCK = threading.Lock()
_PURCHASE_CODE = EVENT_CODE["purchase"]


def _save_derived(model: Recommender, path: Path) -> None:
    """`model.save_derived(path)` on a worker thread: a failure is logged, and loading recomputes."""
    try:
        model.save_derived(path)
    except Exception as exc:
        logger.error(
            "saving derived arrays failed model=%s error=%s; loading will recompute them",
            model.name,
            type(exc).__name__,
        )


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _freeze(rules: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(
        sorted((k, tuple(v) if isinstance(v, (list, tuple, set)) else v) for k, v in rules.items())
    )


def _rules_from(spec: Mapping[str, Any], loaded: LoadedModel | None) -> Any:
    """A `Rules` object from request fields (item keys mapped to the model's indices)."""
    from privrec.models.rules import Rules

    unknown = sorted(set(spec) - set(_RULE_FIELDS))
    if unknown:
        raise ValidationError(unknown[0], f"is not a rule; the rules are {', '.join(_RULE_FIELDS)}")
    kw: dict[str, Any] = {}
    for key, v in spec.items():
        if v is None:
            continue
        if key == "exclude_items":
            keys = [str(x) for x in v]
            kw[key] = (
                tuple(i for i in (loaded.index.get(x, -1) for x in keys) if i >= 0)
                if loaded is not None
                else ()
            )
        elif key in ("include_categories", "exclude_categories"):
            kw[key] = tuple(str(x) for x in v)
        elif key in ("exclude_purchased", "exclude_seen", "in_stock"):
            kw[key] = bool(v)
        elif key in ("price_min", "price_max", "diversity"):
            kw[key] = float(v)
        elif key == "category_cap":
            kw[key] = int(v)
    return Rules(**kw)


@dataclass
class LoadedModel:
    """A model version ready to serve: the artifact, its compiled catalogue and item index."""

    served: ServedModel
    table: Any  # privrec.models.rules.ItemTable
    index: dict[str, int]
    pop_ranking: np.ndarray
    load_seconds: float
    _titles: list[str] | None = None

    _static: list[dict[str, Any] | None] | None = None

    def item_dict(
        self, i: int, score: float | None = None, explanation: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Public facts of item `i` (plus its score and explanation) as JSON-ready data."""
        if self._static is None:
            self._static = [None] * self.table.n_items
        base = self._static[i]
        if base is None:
            t = self.table
            price = float(t.price[i])
            base = self._static[i] = {
                "item": t.keys[i],
                "title": t.titles[i] or None,
                "category": t.category_name(i),
                "price": price if np.isfinite(price) else None,
                "in_stock": bool(t.in_stock[i]),
            }
        d = dict(base)
        if score is not None:
            d["score"] = round(float(score), 6)
        if explanation is not None:
            d["explanation"] = explanation
        return d

    def title_match(self, query: str) -> np.ndarray:
        """Substring match of the query's words in titles: 0 no match, 1 all words, 1.5 the whole phrase."""
        if self._titles is None:
            t = self.table
            self._titles = [
                f"{t.titles[i]} {t.category_name(i) or ''}".lower() for i in range(t.n_items)
            ]
        q = " ".join(query.lower().split())
        words = q.split()
        out = np.zeros(len(self._titles), np.float32)
        for i, title in enumerate(self._titles):
            if all(w in title for w in words):
                out[i] = 1.5 if q in title else 1.0
        return out


class _HistoryIndex:
    """Every user's events in memory by pseudonym (item keys and type codes, oldest first), the
    number of distinct users per item, and a generation per user that changes with their data."""

    def __init__(self) -> None:
        self._users: dict[str, tuple[list[str], list[int]]] = {}
        self._gen: dict[str, int] = {}
        self._pop: dict[str, int] = {}
        self._lock = threading.Lock()
        self._store: EventStore | None = None
        self.preloaded = False
        self.loaded = False
        self.n_events = 0

    @property
    def n_users(self) -> int:
        """Users held in memory."""
        return len(self._users)

    def load(self, store: EventStore, *, preload_max_events: int = 5_000_000) -> None:
        """Read every history from the store (or, above the limit, read users on demand)."""
        with self._lock:
            if self.loaded:
                return
            self._store = store
            n = store.count()
            if n <= preload_max_events:
                ev = store.events()
                codes = ev["type"].map(EVENT_CODE).fillna(0).astype(np.int8).to_numpy()
                users = ev["user"].astype(str).to_numpy(dtype=object)
                items = ev["item"].astype(str).to_numpy(dtype=object)
                ucodes, uniq = pd.factorize(users)
                order = np.argsort(ucodes, kind="stable")
                bounds = np.searchsorted(ucodes[order], np.arange(len(uniq) + 1))
                for u, p in enumerate(uniq):
                    sel = order[bounds[u] : bounds[u + 1]]
                    keys = items[sel].tolist()
                    self._users[str(p)] = (keys, codes[sel].tolist())
                    for k in set(keys):
                        self._pop[k] = self._pop.get(k, 0) + 1
                self.n_events = len(ev)
                self.preloaded = True
            else:
                counts = store.events().groupby("item")["user"].nunique()
                self._pop = {str(k): int(v) for k, v in counts.items()}
                self.n_events = n
            self.loaded = True

    def get(self, pseudonym: str) -> tuple[list[str], list[int]]:
        """(item keys, type codes) of a pseudonym; empty lists for an unknown one."""
        got = self._users.get(pseudonym)
        if got is not None:
            return got
        if self.preloaded or self._store is None:
            return [], []
        ev = self._store.events(user=pseudonym)
        got = (
            ev["item"].astype(str).tolist(),
            ev["type"].map(EVENT_CODE).fillna(0).astype(int).tolist(),
        )
        with self._lock:
            if len(self._users) > 200_000:
                self._users.pop(next(iter(self._users)))
            self._users[pseudonym] = got
        return got

    def add(self, accepted: pd.DataFrame) -> None:
        """Append gated events (pseudonymous users) and invalidate those users' cached lists."""
        users = accepted["user"].astype(str).tolist()
        items = accepted["item"].astype(str).tolist()
        types = accepted["type"].map(EVENT_CODE).fillna(0).astype(int).tolist()
        with self._lock:
            for p, it, t in zip(users, items, types, strict=True):
                got = self._users.get(p)
                if got is None:
                    if not self.preloaded and self._store is not None:
                        self._gen[p] = (
                            self._gen.get(p, 0) + 1
                        )  # read again from the store next time
                        continue
                    got = self._users[p] = ([], [])
                if it not in got[0]:
                    self._pop[it] = self._pop.get(it, 0) + 1
                got[0].append(it)
                got[1].append(t)
                self._gen[p] = self._gen.get(p, 0) + 1
            self.n_events += len(users)

    def drop(self, pseudonym: str) -> bool:
        """Forget a pseudonym's history; returns whether anything was held."""
        with self._lock:
            got = self._users.pop(pseudonym, None)
            self._gen[pseudonym] = self._gen.get(pseudonym, 0) + 1
            if got is None:
                return False
            for k in set(got[0]):
                self._pop[k] = max(0, self._pop.get(k, 0) - 1)
            self.n_events -= len(got[0])
            return True

    def bump(self, pseudonym: str) -> None:
        """Invalidate a pseudonym's cached lists (consent changed)."""
        with self._lock:
            self._gen[pseudonym] = self._gen.get(pseudonym, 0) + 1

    def generation(self, pseudonym: str) -> int:
        """Changes whenever the pseudonym's data or consent changes."""
        return self._gen.get(pseudonym, 0)

    def popularity_for(self, keys: list[str]) -> np.ndarray:
        """Distinct users per item key."""
        pop = self._pop
        return np.fromiter((pop.get(k, 0) for k in keys), dtype=np.float64, count=len(keys))


class _Consent:
    """The privacy layer's consent store (`privacy.consent.ConsentStore`), levels as strings.

    No fallback: if the store cannot be opened, consent is not silently taken as `personalized`
    (an anonymous shopper's events would then be stored); the error reaches the caller.
    """

    def __init__(self, data_dir: Path) -> None:
        from privrec.privacy.consent import ConsentStore

        self._store = ConsentStore.from_data_dir(data_dir)
        self._migrate(data_dir / "consent.json")

    def get(self, pseudonym: str) -> str:
        return self._store.get(pseudonym).value

    def levels(self, pseudonyms: list[str]) -> dict[str, str]:
        """Levels of many pseudonyms at once (one query per chunk, not per user)."""
        return {p: v.value for p, v in self._store.levels(pseudonyms).items()}

    def set(self, pseudonym: str, level: str) -> None:
        self._store.set(pseudonym, level)

    def record(self, pseudonym: str) -> dict[str, Any] | None:
        """The stored consent record (level and time of the change), or None."""
        return self._store.record(pseudonym)

    def delete(self, pseudonym: str) -> bool:
        return self._store.delete(pseudonym)

    def _migrate(self, old: Path) -> None:
        """Levels from an older version's consent.json move into the store once; the file goes."""
        if not old.exists():
            return
        try:
            levels = json.loads(old.read_text())
        except ValueError:
            raise ValidationError(
                "consent.json", "is not valid JSON; restore it from a backup"
            ) from None
        for p, rec in levels.items():
            if self._store.record(p) is None:
                self._store.set(p, str(rec["level"]))
        old.unlink()


@dataclass(frozen=True)
class _TrainingRecord:
    """What a model version was trained on: 64-bit prefixes of the event ids, key generation, weights."""

    event_ids: np.ndarray  # sorted unique uint64
    generation: int | None
    event_weights: dict[str, float]

    @staticmethod
    def _keys(event_ids: Iterable[str]) -> np.ndarray:
        return np.unique(np.fromiter((int(str(e)[:16], 16) for e in event_ids), dtype=np.uint64))

    @classmethod
    def of(
        cls, events: pd.DataFrame, generation: int | None, weights: Mapping[str, float]
    ) -> _TrainingRecord:
        return cls(cls._keys(events["event_id"]), generation, dict(weights))

    def contains(self, event_ids: Iterable[str]) -> np.ndarray:
        keys = np.fromiter((int(str(e)[:16], 16) for e in event_ids), dtype=np.uint64)
        pos = np.minimum(np.searchsorted(self.event_ids, keys), max(len(self.event_ids) - 1, 0))
        return (self.event_ids[pos] == keys) if len(self.event_ids) else np.zeros(len(keys), bool)

    def without(self, event_ids: Iterable[str]) -> _TrainingRecord:
        return _TrainingRecord(
            np.setdiff1d(self.event_ids, self._keys(event_ids), assume_unique=True),
            self.generation,
            self.event_weights,
        )

    def write(self, path: Path) -> None:
        np.save(path / TRAINED_EVENTS_FILE, self.event_ids, allow_pickle=False)
        (path / TRAINING_FILE).write_text(
            json.dumps(
                {
                    "events": len(self.event_ids),
                    "pseudonym_generation": self.generation,
                    "event_weights": self.event_weights,
                }
            )
        )

    @classmethod
    def read(cls, path: Path) -> _TrainingRecord | None:
        try:
            doc = json.loads((path / TRAINING_FILE).read_text())
            ids = np.load(path / TRAINED_EVENTS_FILE, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return cls(
            ids.astype(np.uint64),
            doc.get("pseudonym_generation"),
            dict(doc.get("event_weights") or {}),
        )


def _open_experiments(path: Path) -> Any:
    from privrec.experiments.store import ExperimentStore

    return ExperimentStore(path)


class _RecCache:
    """A bounded LRU of finished recommendation lists."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._d: OrderedDict[tuple[Any, ...], list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Any, ...]) -> list[dict[str, Any]] | None:
        got = self._d.get(key)
        if got is None:
            self.misses += 1
            return None
        self.hits += 1
        return got

    def put(self, key: tuple[Any, ...], value: list[dict[str, Any]]) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._d[key] = value
            if len(self._d) > self.max_entries:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


class _ServingState:
    """The in-memory side of serving for one RecSys."""

    def __init__(self, rs: RecSys) -> None:
        self.rs = rs
        self.history = _HistoryIndex()
        self.loaded: dict[str, LoadedModel] = {}
        self.load_lock = threading.Lock()
        self.swap_lock = threading.Lock()
        self.cache = _RecCache()
        self.consent = _Consent(rs.data_dir)
        self.consent_cache: dict[str, str] = {}
        self.gate = rs.gate
        if (
            rs.settings.max_events_per_user_per_minute is not None
        ):  # across requests, by arrival time
            self.gate.arrivals = ArrivalRateLimiter(rs.settings.max_events_per_user_per_minute)
        self._experiments: Any = None
        self.default_name: str | None = None
        self._versions: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()

    # -- parts ------------------------------------------------------------------------------------
    @property
    def experiments(self) -> Any:
        if self._experiments is None:
            with self.load_lock:
                if self._experiments is None:
                    self._experiments = _open_experiments(self.rs.data_dir / "experiments.sqlite")
        return self._experiments

    def experiments_ready(self) -> bool:
        return self._experiments is not None or (self.rs.data_dir / "experiments.sqlite").exists()

    def consent_of(self, pseudonym: str) -> str:
        lvl = self.consent_cache.get(pseudonym)  # the hot path of every request: a dict lookup
        return lvl if lvl is not None else self.consent_of_many([pseudonym])[pseudonym]

    def consent_of_many(self, pseudonyms: list[str]) -> dict[str, str]:
        """Consent levels of pseudonyms: the cached ones, the others in one query (then cached)."""
        out = {p: lvl for p in pseudonyms if (lvl := self.consent_cache.get(p)) is not None}
        missing = [p for p in dict.fromkeys(pseudonyms) if p not in out]
        if missing:
            got = self.consent.levels(missing)
            if len(self.consent_cache) + len(missing) > 500_000:
                self.consent_cache.clear()
            for p in missing:
                out[p] = self.consent_cache[p] = got.get(p) or DEFAULT_CONSENT
        return out

    def load(self, name: str, version: str) -> LoadedModel:
        """Load a version (or reuse it if it was loaded recently) with its compiled catalogue."""
        from privrec.models.rules import ItemTable

        got = self._versions.get((name, version))
        if got is not None:
            return got
        if not self.history.loaded:
            self.history.load(self.rs.store)
        t0 = time.perf_counter()
        path = self.rs.models_dir / name / version
        if not (path / "config.json").exists():
            raise NotFoundError(
                f"model {name!r} has no version {version!r}; list them with GET /v1/models"
            )
        # Read the artifact once in chunks first (file reads release the GIL): the loader then
        # copies from the page cache instead of holding the GIL through the disk reads, so
        # requests keep flowing while a large model (EASE: ~1 GB) loads for a hot swap.
        for f in path.glob("*.safetensors"):
            with open(f, "rb", buffering=0) as fh:
                buf = bytearray(8 << 20)
                while fh.readinto(buf):
                    time.sleep(0)
        model = Recommender.load(path)
        items = Vocabulary(json.loads((path / "items.json").read_text()))
        meta = InteractionDataset._align_meta(items, self.rs.store.items())
        served = ServedModel(name=name, version=version, model=model, items=items, item_meta=meta)
        keys = items.keys
        table = ItemTable.from_meta(meta, popularity=self.history.popularity_for(keys))
        got = LoadedModel(
            served=served,
            table=table,
            index={k: i for i, k in enumerate(keys)},
            pop_ranking=table.popularity_ranking(),
            load_seconds=round(time.perf_counter() - t0, 3),
        )
        self._versions[(name, version)] = got
        # keep the two latest versions per model, so a swap back is instant
        same = [key for key in self._versions if key[0] == name]
        for key in same[:-2]:
            self._versions.pop(key, None)
        return got

    def refresh_popularity(self) -> None:
        """Recount popularity from the in-memory histories (new events move it)."""
        for loaded in list(self.loaded.values()):
            pop = self.history.popularity_for(loaded.table.keys)
            loaded.table.popularity[:] = pop
            loaded.pop_ranking = loaded.table.popularity_ranking()

    # -- scoring ------------------------------------------------------------------------------------
    def history_for(self, loaded: LoadedModel, pseudonym: str | None, level: str) -> UserHistory:
        if pseudonym is None or level == "anonymous":
            return UserHistory.of([])
        keys, types = self.history.get(pseudonym)
        if not keys:
            return UserHistory.of([])
        if level == "purchases_only":
            pairs = [(k, t) for k, t in zip(keys, types, strict=True) if t == _PURCHASE_CODE]
            keys, types = [k for k, _ in pairs], [t for _, t in pairs]
        idx_map = loaded.index
        w_of = self.rs.settings.event_weights
        items, ws, ts = [], [], []
        for k, t in zip(keys, types, strict=True):
            i = idx_map.get(k)
            if i is not None:
                items.append(i)
                ts.append(t)
                ws.append(float(w_of.get(EVENT_TYPES[t], 1.0)))
        return UserHistory(
            items=np.asarray(items, np.int64),
            weights=np.asarray(ws, np.float32),
            event_types=np.asarray(ts, np.int8),
        )

    def scores(self, loaded: LoadedModel, history: UserHistory) -> np.ndarray:
        from privrec.models.rules import fast_scores

        s = fast_scores(
            loaded.served.model,
            history.items,
            history.weights if history.weights is not None else np.ones(len(history), np.float32),
        )
        return s if s is not None else loaded.served.model.score(history)

    def search_scores(self, loaded: LoadedModel, query: str) -> tuple[np.ndarray, str, str | None]:
        """Per item, how well it matches the query (0: not at all), the mode and a note."""
        for cand in self.loaded.values():
            fn = getattr(cand.served.model, "search_scores", None) or getattr(
                cand.served.model, "score_query", None
            )
            if callable(fn) and cand.served.items.keys == loaded.served.items.keys:
                try:
                    s = np.asarray(fn(query), dtype=np.float32)
                    if s.shape == (loaded.table.n_items,):
                        top = np.zeros_like(s)
                        best = np.argsort(-s)[:200]
                        top[best] = np.maximum(s[best] - s[best].min(), 0) + 1.0
                        return top, "semantic", f"semantic search by model {cand.served.name!r}"
                except Exception as exc:
                    logger.warning(
                        "semantic search failed model=%s error=%s",
                        cand.served.name,
                        type(exc).__name__,
                    )
        return (
            loaded.title_match(query),
            "substring",
            "title substring search (no semantic search model is served)",
        )

    def top_items(
        self,
        loaded: LoadedModel,
        pseudonym: str | None,
        level: str,
        k: int,
        rules_spec: Mapping[str, Any],
        context_item: str | None,
        *,
        query: str | None = None,
        match: np.ndarray | None = None,
        personal_search: bool = False,
        base_scores: np.ndarray | None = None,
    ) -> list[dict[str, Any]]:
        """The finished list (items with explanations), from the cache when nothing changed.

        `base_scores` replaces the catalogue popularity for non-personal lists (the DP release).
        """
        from privrec.explain.explanations import explain_items
        from privrec.models.rules import apply_rules

        key = None
        if query is None:
            gen = self.history.generation(pseudonym) if pseudonym else 0
            key = (
                pseudonym,
                loaded.served.name,
                loaded.served.version,
                gen,
                level,
                k,
                _freeze(rules_spec),
                context_item,
                base_scores is not None,
            )
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        rules = _rules_from(rules_spec, loaded)
        table = loaded.table
        history = self.history_for(loaded, pseudonym, level)
        ctx = None
        if context_item is not None:
            ctx = loaded.index.get(context_item, -1)
            if ctx < 0:
                raise NotFoundError(f"context_item: {context_item!r} is not in the catalogue")
        purchased = (
            history.items[history.event_types == _PURCHASE_CODE]
            if len(history) and history.event_types is not None
            else None
        )
        seen = history.items if len(history) else None
        personal = len(history) > 0
        model = loaded.served.model
        if match is not None:
            s = np.where(match > 0, match, -np.inf).astype(np.float32)
            if personal_search and personal:
                ps = self.scores(loaded, history)
                m = match > 0
                if m.any():
                    lo, hi = float(ps[m].min()), float(ps[m].max())
                    if hi > lo:
                        s[m] += 0.5 * (ps[m] - lo) / (hi - lo)
            res = apply_rules(s, k, rules, table, purchased=purchased, seen=seen, floor=-np.inf)
            exps = explain_items(
                model if personal_search else None,
                history,
                res.items,
                table,
                personalized=personal_search,
                query=query,
                matched=match[res.items] > 0,
            )
        elif personal or ctx is not None:
            h = history
            if ctx is not None:
                w = float(self.rs.settings.event_weights.get("purchase", 5.0))
                h = UserHistory(
                    items=np.append(history.items, ctx).astype(np.int64),
                    weights=np.append(
                        history.weights
                        if history.weights is not None
                        else np.ones(len(history), np.float32),
                        w,
                    ).astype(np.float32),
                    event_types=np.append(
                        history.event_types
                        if history.event_types is not None
                        else np.zeros(len(history), np.int8),
                        EVENT_CODE["view"],
                    ).astype(np.int8),
                )
                seen = np.append(seen if seen is not None else np.empty(0, np.int64), ctx)
            s = self.scores(loaded, h)
            res = apply_rules(s, k, rules, table, purchased=purchased, seen=seen)
            exps = explain_items(
                model, h, res.items, table, personalized=True, filled=res.filled, context_item=ctx
            )
        elif base_scores is not None:
            res = apply_rules(base_scores, k, rules, table, purchased=purchased, seen=seen)
            exps = explain_items(None, history, res.items, table, personalized=False)
        else:
            res = apply_rules(
                table.popularity,
                k,
                rules,
                table,
                purchased=purchased,
                seen=seen,
                ranking=loaded.pop_ranking,
            )
            exps = explain_items(None, history, res.items, table, personalized=False)
        items = [
            loaded.item_dict(i, sc, e.to_dict())
            for i, sc, e in zip(res.items.tolist(), res.scores.tolist(), exps, strict=True)
        ]
        if key is not None:
            self.cache.put(key, items)
        return items
