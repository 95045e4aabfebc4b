"""Shoppers' rights and data lifecycle: access, erasure that reaches the models, retention, keys.

Erasure deletes a shopper's events, consent record, in-memory history, cached lists and
experiment rows at once, then takes their trained events out of every active model that can
unlearn exactly (`Recommender.can_forget`): the downdated state is saved as a new active version
and every older version, which still holds the shopper, is deleted. Models that cannot unlearn
exactly are recorded as owing a retrain before the deadline the receipt names; so are the
content encoder's LoRA adapters trained on the removed events (`privrec.service.adapters`).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import StoreError, ValidationError
from privrec.core.types import EVENT_TYPES
from privrec.data.dataset import InteractionDataset
from privrec.events import rejects, rotation
from privrec.events.rotation import StagePart
from privrec.models.base import Recommender
from privrec.models.zoo import create_model
from privrec.privacy import consent as policy
from privrec.privacy.audit_log import erasure_receipt
from privrec.privacy.consent_store import ConsentStore
from privrec.service.adapters import AdapterStore
from privrec.service.consent import ConsentBook
from privrec.service.context import ServiceContext
from privrec.service.feedback_rotation import stage_rekey as stage_feedback_rekey
from privrec.service.pending import PendingRetrains, now_iso
from privrec.service.registry import ModelRegistry
from privrec.service.serving import Serving

logger = logging.getLogger(__name__)

_UNLEARN_THREADS = 4
_PER_USER_READS = 64  # above this many shoppers one read of the store is cheaper


class Rights:
    """Access, erasure, retention and key rotation over one data directory.

    Args:
        ctx: the data directory's context.
        registry: the model versions (erasure downdates and replaces them).
        consent: the consent levels (erasure deletes the record).
        serving: the serving memory (erasure drops the shopper's history and lists).
        pending: the models that owe a retrain.
    """

    def __init__(
        self,
        ctx: ServiceContext,
        registry: ModelRegistry,
        consent: ConsentBook,
        serving: Serving,
        pending: PendingRetrains,
    ) -> None:
        self.ctx = ctx
        self.registry = registry
        self.consent = consent
        self.serving = serving
        self.pending = pending
        self.adapters = AdapterStore(ctx, registry)
        self._jobs: list[threading.Thread] = []
        self._derived_writers: dict[str, threading.Thread] = {}
        self._unlearn_lock = threading.Lock()  # one model update at a time: they work in place

    # ---- access -----------------------------------------------------------------------------
    def export(self, user_id: str) -> dict[str, Any]:
        """Right of access: everything stored about this shopper, as JSON-ready data."""
        p = self.ctx.pseudonymise(user_id)
        ev = self.ctx.store.events(user=p)
        # the audit log is never rewritten: its entries name the pseudonym of their key generation
        every = set(self.ctx.pseudonymiser.pseudonyms_of(user_id))
        audit = [
            e
            for e in self.ctx.audit_log().entries()
            if e.get("pseudonym") in every or every & set(e.get("pseudonyms") or ())
        ]
        return {
            "pseudonym": p,
            "exported_at": now_iso(),
            "events": json.loads(ev.to_json(orient="records")) if len(ev) else [],
            "n_events": len(ev),
            "consent": self.consent.level(p).value,
            "consent_record": self.consent.record(p),
            "experiments": self.serving.experiments.records_of(p),
            "served_lists": self.serving.experiments.feedback.records_of(p),
            "rejected_rows": rejects.lines_of(self.ctx.data_dir, [p], key=self.ctx.sidecar_key),
            "query_embeddings": self.serving.search_indexes.memory.export(p),
            "audit_log": audit,
            "models": "models hold no per-user state: a user's vector is derived from these "
            "events at request time; aggregate model statistics are not personal records "
            "(erasure removes the user's share of them)",
            "privacy_ledger": _accumulated(self.ctx.ledger.summary()),
        }

    # ---- erasure ---------------------------------------------------------------------------------
    def forget(self, user_ids: Iterable[str], *, background: bool = False) -> list[dict[str, Any]]:
        """Erase shoppers as one batch: one receipt each, appended to the audit log.

        The store is compacted once and every model updated once for all of them. With
        `background=True` it returns once no stored row of theirs is readable: the compaction
        and the exact model updates then run on a worker thread; until they finish, the affected
        models stand in the pending retrains with the deadline (a crash leaves a retrain due,
        never a silent gap). `wait` waits for the worker.
        """
        ids = list(dict.fromkeys(str(u) for u in user_ids))
        if not ids:
            return []
        erased_at = time.time()
        t0 = time.perf_counter()
        store = self.ctx.store
        pseudonyms = [self.ctx.pseudonymise(u) for u in ids]
        events = [store.events(user=p) for p in pseudonyms]  # first: what to take out of models
        deleted = [store.erase_user(p, compact=False) for p in pseudonyms]
        cleared = [self._forget_state(p) for p in pseudonyms]
        erased = pd.concat(events, ignore_index=True)
        generation = store.pseudonym_generation
        with ThreadPoolExecutor(1, thread_name_prefix="privrec-compact") as pool:
            # afterwards no block of the deleted rows is left in the file; DuckDB works without
            # the GIL, so the rewrite runs beside the model updates (they read no store row)
            compaction = pool.submit(store.compact) if any(deleted) and not background else None
            with self._unlearn_lock:
                models = self._unlearn(erased, plan_only=background, generation=generation)
                models += self.adapters.unlearn(erased)  # LoRA adapters cannot forget
            if compaction is not None:
                compaction.result()  # raises what the compaction raised
        exact = [m["model"] for m in models if m["status"] in ("exact", "unaffected")]
        scheduled = [m["model"] for m in models if m["status"] == "scheduled"]
        owing = [m["model"] for m in models if m["status"] in ("retrain", "scheduled")]
        secs = time.perf_counter() - t0
        receipts = []
        for p, n, state in zip(pseudonyms, deleted, cleared, strict=True):
            receipt = erasure_receipt(
                p,
                events_deleted=n,
                consent_deleted=bool(state["consent_record_deleted"]),
                cache_entries_deleted=int(bool(state["cached_results_deleted"])),
                models_updated=exact,
                models_pending=owing,
                retrain_within_days=self.ctx.settings.retrain_deadline_days,
                seconds=secs,
                erased_at=erased_at,
            )
            receipt["events_deleted"] = int(n)
            receipt.update(state)
            receipt["models"] = models
            if len(ids) > 1:
                receipt["batch_size"] = len(ids)
            if background:
                receipt["store_compaction"] = "scheduled" if any(deleted) else "not needed"
                receipt["models_updating_exactly"] = scheduled
            receipts.append(receipt)
        token = secrets.token_hex(8)  # names this erasure in the pending retrains
        if owing:
            self.pending.add(owing, receipts[0]["retrain_deadline"], token)
        log = self.ctx.audit_log()
        for receipt in receipts:
            log.append("erase", **receipt)
        if background and (scheduled or any(deleted)):
            job = threading.Thread(
                target=self._finish,
                args=(erased, pseudonyms, token, set(scheduled), any(deleted)),
                name="privrec-erasure",
                daemon=True,
            )
            job.start()
            self._jobs.append(job)
        return receipts

    def _forget_state(self, p: str) -> dict[str, Any]:
        """Delete a pseudonym's consent record, query embeddings, history, cached lists,
        experiment rows, rejects."""
        return {
            "consent_record_deleted": self.consent.delete(p),
            "query_embeddings_deleted": self.serving.search_indexes.memory.forget(p),
            "cached_results_deleted": self.serving.forget(p),
            "experiment_rows_deleted": self.serving.experiments.erase(p),
            "rejected_rows_deleted": rejects.erase_users(
                self.ctx.data_dir, [p], key=self.ctx.sidecar_key
            ),
        }

    def wait(self) -> None:
        """Wait until background erasures have finished and downdated versions are on disk."""
        for t in list(self._jobs):
            t.join()
        self._jobs = [t for t in self._jobs if t.is_alive()]
        for name in list(self._derived_writers):
            self._wait_derived(name)

    def _wait_derived(self, name: str) -> None:
        t = self._derived_writers.pop(name, None)
        if t is not None:
            t.join()

    def _finish(
        self,
        erased: pd.DataFrame,
        pseudonyms: list[str],
        token: str,
        models: set[str],
        compact: bool,
    ) -> None:
        """The background half of an erasure: compact the store, update models exactly."""
        t0 = time.perf_counter()
        try:
            if compact:
                self.ctx.store.compact()
            generation = self.ctx.store.pseudonym_generation
            done = []
            if models:
                with self._unlearn_lock:
                    done = self._unlearn(erased, only=models, generation=generation)
            for m in done:
                if m["status"] in ("exact", "unaffected"):
                    self.pending.settle(m["model"], token)
            self.ctx.audit_log().append(
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
        exact: bool = True,
    ) -> list[dict[str, Any]]:
        """Take erased shoppers' trained events out of every active model that allows it.

        `plan_only` decides each model's status without changing it ("scheduled" where an exact
        update is possible); `only` limits the models looked at. Each downdated version is saved
        without its derived arrays (EASE's B: 586 MB on Beauty), which a writer thread adds
        right after; `Recommender.load` waits for them, and a crash before they land costs a
        recomputation, never exactness.
        """
        todo = [
            (name, info.active)
            for name, info in self.registry.models().items()
            if info.active and (only is None or name in only)
        ]
        if plan_only or not exact or len(todo) < 2:
            return [
                self._unlearn_one(n, v, events, generation, plan_only, exact=exact) for n, v in todo
            ]
        # Models are independent and their updates are numpy/scipy work that releases the GIL:
        # on several cores the erasure takes as long as the slowest model, not the sum.
        with ThreadPoolExecutor(min(len(todo), _UNLEARN_THREADS)) as pool:
            return list(
                pool.map(
                    lambda nv: self._unlearn_one(nv[0], nv[1], events, generation, False), todo
                )
            )

    def _model_of(self, name: str, version: str, plan_only: bool) -> Recommender | None:
        path = self.registry.path(name, version)
        try:
            if plan_only:  # an unfitted twin: whether it can forget is all that is asked
                cfg = self.registry.config_of(name, version)
                return create_model(cfg["model"], **cfg["config"])
            live = self.registry.live.get((name, version))
            return live if live is not None else self.registry.load_path(path)
        except Exception as exc:  # an unreadable artifact must not stop the erasure
            logger.warning("forget: model load failed model=%s error=%s", name, type(exc).__name__)
            return None

    def _quarantine(self, name: str, active: str) -> None:
        """Every version of `name` holds the erased shoppers: the inactive ones are deleted now,
        the active one serves until the retrain and can never be activated again."""
        self.registry.quarantine(name, active, "trained on events of an erased shopper")
        self.registry.drop_versions(name, keep=active)

    def _unlearn_one(
        self,
        name: str,
        version: str,
        events: pd.DataFrame,
        generation: int | None,
        plan_only: bool,
        *,
        exact: bool = True,
    ) -> dict[str, Any]:
        """`_unlearn` for one model's active version: its entry of the receipt's model list."""
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"model": name, "version": version}
        record = self.registry.training_record(name, version)
        model = self._model_of(name, version, plan_only)
        if model is None:
            return {**entry, "status": "retrain", "reason": "artifact unreadable"}
        if record is None or record.generation != generation:
            why = "no record of the events it was trained on (or the key was rotated since)"
            return {**entry, "status": "retrain", "reason": why}
        trained = record.contains(events["event_id"]) if len(events) else np.zeros(0, bool)
        if not trained.any():
            return {**entry, "status": "unaffected", "reason": "trained without this user's events"}
        if not model.can_forget or not exact:
            private = self.registry.config_of(name, version).get("privacy") is not None
            self._quarantine(name, version)
            why = _why_no_exact(private) if not model.can_forget else _PARTIAL
            return {**entry, "status": "retrain", "reason": why}
        if plan_only:
            return {
                **entry,
                "status": "scheduled",
                "reason": "exact update on the background worker",
            }
        mine = events[trained]
        vocab = self.registry.items_of(name, version)
        removed = InteractionDataset.from_events(
            mine, items=vocab, event_weights=record.event_weights
        )
        try:
            self._wait_derived(name)  # the downdate works in place on the arrays being written
            self.registry.live.pop((name, version), None)  # kept again only if it all succeeds
            res = model.forget(removed)
            new = self.registry.save(
                model,
                vocab,
                name=name,
                training=record.without(mine["event_id"]),
                derived=False,
            )
            writer = threading.Thread(
                target=_save_derived,
                args=(model, new, self.registry.key),
                name="privrec-save-derived",
                daemon=True,
            )
            writer.start()
            self._derived_writers[name] = writer
        except Exception as exc:
            logger.warning(
                "forget: exact unlearning failed model=%s error=%s", name, type(exc).__name__
            )
            why = f"exact update failed ({type(exc).__name__})"
            return {**entry, "status": "retrain", "reason": why}
        self.registry.live[(name, new.name)] = model
        self.serving.activate_pointer(name, new.name)
        removed_versions = self.registry.drop_versions(name, keep=new.name)
        return {
            "model": name,
            "version": new.name,
            "previous_version": version,
            "status": "exact",
            "method": res.method,
            "items_touched": res.items_touched,
            "old_versions_deleted": removed_versions,
            "seconds": round(time.perf_counter() - t0, 4),
        }

    # ---- lifecycle -------------------------------------------------------------------------------
    def _remove(
        self, events: pd.DataFrame, action: str, *, whole_users: bool, **audit: Any
    ) -> dict[str, Any]:
        """Take deleted events out of the models as an erasure does: exactly where a model can,
        else a retrain owed before the deadline (and its other versions removed).

        Exact unlearning takes out whole shoppers (their rows of the model's input, where one
        event can change what another contributes). With `whole_users` the affected shoppers'
        remaining events leave the models too, until the next retrain brings them back;
        otherwise a shopper who keeps some events makes every model owe a retrain.
        """
        out: dict[str, Any] = {"events_deleted": len(events), "models": []}
        out["models_pending_retrain"] = []
        out["retrain_deadline"] = None
        if len(events):
            generation = self.ctx.store.pseudonym_generation
            users = set(events["user"].astype(str))
            left = self._events_of(users)
            exact = whole_users or not len(left)
            if whole_users and len(left):
                events = pd.concat([events, left], ignore_index=True)
            with self._unlearn_lock:
                out["models"] = self._unlearn(events, generation=generation, exact=exact)
                out["models"] += self.adapters.unlearn(events)
            owing = [m["model"] for m in out["models"] if m["status"] == "retrain"]
            if owing:
                days = self.ctx.settings.retrain_deadline_days
                deadline = time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + days * 86_400.0)
                )
                self.pending.add(owing, deadline, secrets.token_hex(8))
                out["models_pending_retrain"] = owing
                out["retrain_deadline"] = deadline
        self.ctx.audit_log().append(action, **audit, **out)
        return out

    def _events_of(self, users: set[str]) -> pd.DataFrame:
        """The stored events of `users`: one query each for a few (a consent change, on the
        request path), one read of the store for many (a retention run)."""
        store = self.ctx.store
        if len(users) <= _PER_USER_READS:
            return pd.concat([store.events(user=u) for u in sorted(users)], ignore_index=True)
        every = store.events()
        return every[every["user"].astype(str).isin(users)] if len(every) else every

    def retention(self, days: int | None = None) -> dict[str, Any]:
        """Delete events older than `days` (or the per-type retention of the settings) and take
        them out of the models like an erasure; returns what was deleted and updated."""
        spec: int | dict[str, int] | None = days
        if spec is None:
            configured = self.ctx.settings.retention_days.items()
            spec = {t: d for t, d in configured if d is not None}
            if not spec:
                raise ValidationError("days", "give --days N or set retention_days in privrec.toml")
        now = time.time()
        store = self.ctx.store
        expired = store.expired(spec, now)  # read first (the store's own rule): what leaves models
        n = store.retention(spec, now=now)
        # query embeddings have no event of their own: the rule of search events applies
        self.serving.search_indexes.memory.expire(spec, now)
        self.serving.reload_history()
        done = self._remove(expired, "retention", whole_users=False, rule=spec)
        return {"deleted": int(n), **done}

    def lower_consent(self, pseudonym: str, level: policy.ConsentLevel) -> dict[str, Any]:
        """Delete at once the stored events a shopper's new consent level does not keep, and take
        them out of the models like an erasure."""
        drop = sorted(set(EVENT_TYPES) - policy.allowed_types(level))
        store = self.ctx.store
        events = store.events(user=pseudonym)
        gone = events[events["type"].astype(str).isin(drop)] if len(events) else events
        if not len(gone):  # nothing stored that the level drops: nothing to record
            return {"events_deleted": 0, "models": [], "models_pending_retrain": []}
        store.delete_events(pseudonym, drop)
        self.serving.reload_history()
        return self._remove(
            gone, "consent-lowered", whole_users=True, pseudonym=pseudonym, level=level.value
        )

    def rotate_key(self) -> int:
        """Rotate the pseudonym key and re-key every record keyed by pseudonym, as one unit.

        Events, consent records, experiment units and variants, and rejects files move together
        or not at all (`privrec.events.rotation`); an interrupted rotation is finished instead.

        Returns:
            The events re-keyed.

        Raises:
            StoreError: the store is held by another process, or a store refused its re-keying
                (nothing changed either way).
        """
        store = self.ctx.store  # first: a store held elsewhere fails here, before any change
        experiments = self.serving.experiments
        parts: dict[str, StagePart] = {}
        if experiments.exists:
            parts["experiment_units"] = lambda rotated, known: experiments.store.stage_rekey(
                known, rotated.generation
            )
        if experiments.feedback.exists:  # the lists shown to shoppers follow them too
            parts["feedback_shoppers"] = lambda rotated, known: stage_feedback_rekey(
                experiments.feedback, known, rotated.generation
            )
        key = self.ctx.settings.pseudonym_key
        report = rotation.rotate(
            self.ctx.data_dir,
            lambda: self.ctx.pseudonymiser,
            store,
            ConsentStore.open(self.ctx.data_dir, key=self.ctx.sidecar_key),
            parts=parts,
            env_key=key.get_secret_value() if key else None,
            rejects_key=self.ctx.sidecar_key,
            key_dir=self.ctx.key_dir,
        )
        self.ctx.replace_pseudonymiser(report.pseudonymiser)
        self.serving.reload_history()
        try:  # the old pseudonyms' blocks leave the file; the rotation stands either way
            store.compact()
        except StoreError as exc:
            logger.warning("rotate-key: compaction failed error=%s", exc)
        self.ctx.audit_log().append(
            "rotate-key", generation=report.generation, resumed=report.resumed, **report.counts
        )
        return int(report.counts.get("events", 0))


_PARTIAL = (
    "part of some shoppers' histories was deleted: an exact update takes out whole shoppers, "
    "so the model is retrained instead"
)


def _accumulated(summary: dict[str, Any]) -> dict[str, Any]:
    """What the DP releases of this data directory have cost one shopper (user-level DP: each
    shopper has accumulated the composed total of every release)."""
    return {
        "epsilon": summary.get("per_shopper_epsilon", 0.0),
        "delta": summary.get("per_shopper_delta", 0.0),
        "releases": summary.get("releases", 0),
        "unit": summary.get("unit") or "user",
        "note": "user-level differential privacy: every release over all shoppers counts for "
        "each of them; the ledger holds nothing about one shopper",
    }


def _why_no_exact(private: bool) -> str:
    if private:
        return "differentially private: the guarantee bounds the user's influence until the retrain"
    return (
        "no exact unlearning: the user's vector is derived from their (deleted) history at "
        "request time and is gone; the item parameters carry the user until the retrain"
    )


def _save_derived(model: Recommender, path: Path, key: bytes | None = None) -> None:
    """`model.save_derived(path)` on a worker thread: a failure is logged; loading recomputes."""
    try:
        model.save_derived(path, key=key)
    except Exception as exc:
        logger.error(
            "saving derived arrays failed model=%s error=%s; loading will recompute them",
            model.name,
            type(exc).__name__,
        )
