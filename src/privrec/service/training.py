"""Training jobs: fit a model on what the store's consent allows, save it, activate it.

A differentially private model charges the ledger through the model contract
(`fit(..., ledger=)`) before it draws noise; a release the budget cannot afford raises
`BudgetExceededError` and nothing is saved.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from privrec.core.errors import ValidationError
from privrec.core.rng import DEFAULT_SEED
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.models.dp.release import in_public_item_order
from privrec.models.sharded import ShardedFit
from privrec.models.zoo import create_model
from privrec.service.adapters import AdapterStore
from privrec.service.consent import ConsentBook
from privrec.service.context import ServiceContext
from privrec.service.pending import PendingRetrains
from privrec.service.registry import ModelRegistry, TrainingRecord
from privrec.service.results import TrainResult
from privrec.service.serving import Serving


class Training:
    """Fits models on the store's data.

    Args:
        ctx: the data directory's context.
        registry: where versions are saved.
        consent: the consent levels (events a shopper withdrew are not trained on).
        serving: the serving state (a new version is hot-swapped in).
        pending: the models that owe a retrain after erasures.
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

    def dataset(self, name: str = "store") -> InteractionDataset:
        """Everything in the store that the users' consent allows, as an InteractionDataset."""
        return self._dataset(name)[0]

    def dataset_with_events(self, name: str = "store") -> tuple[InteractionDataset, Any]:
        """`dataset` and the usable events it was built from (their event ids name them)."""
        return self._dataset(name)

    def _dataset(self, name: str) -> tuple[InteractionDataset, Any]:
        store = self.ctx.store
        events = self.consent.usable(store.events())
        catalogue = store.items()
        # items in sorted key order: the order in which shoppers first met items would tell
        # who came first (and adding one shopper would change it)
        keys = set(events["item"].astype(str)) if len(events) else set()
        if len(catalogue):
            keys |= set(catalogue["item"].astype(str))
        ds = InteractionDataset.from_events(
            events,
            item_meta=catalogue if len(catalogue) else None,
            event_weights=self.ctx.settings.event_weights,
            name=name,
            items=Vocabulary(sorted(keys)),
        )
        return ds, events

    def train(
        self,
        model_name: str,
        *,
        params: Mapping[str, Any] | None = None,
        activate: bool = True,
        seed: int = DEFAULT_SEED,
        sharded: ShardedFit | None = None,
    ) -> TrainResult:
        """Fit `model_name` on the store, save it as a new version and (by default) activate it.

        The new version is hot-swapped in where this process serves the model. The first model
        trained in a data directory becomes its default. `sharded`: fit from statistics summed
        over user shards (Ray tasks with a Ray runner; `models/sharded.py`), the same model.
        """
        ds, events = self._dataset("store")
        if ds.n_events == 0:
            raise ValidationError(
                "store", "holds no events; ingest some first (`privrec ingest FILE`)"
            )
        # text models keep adapters and embedding caches in this data directory, never the cwd
        model = create_model(model_name, **self.adapters.with_paths(model_name, params))
        adapter = _adapter_of(model)
        if adapter is not None:  # an adapter that still holds erased events is never used again
            self.adapters.check_fresh(adapter, events)
        if "epsilon" in type(model.config).model_fields:
            # a DP release: its arrays follow the public catalogue, in sorted order, and events
            # on items outside it (whose existence is not public) are left out
            ds = in_public_item_order(ds)
        t0 = time.perf_counter()
        if sharded is None:
            model.fit(ds, rng=seed, ledger=self.ctx.ledger)
        else:
            sharded.fit(model, ds, rng=seed, ledger=self.ctx.ledger)
        secs = time.perf_counter() - t0
        record = TrainingRecord.of(
            events, self.ctx.store.pseudonym_generation, self.ctx.settings.event_weights
        )
        if adapter is not None and model.name == "content":
            # the content model reads item text only: the adapter's events are all it holds
            record = self.adapters.record(adapter) or record
        path = self.registry.save(model, ds.items, training=record)
        if model.can_forget:  # kept in memory, so an erasure need not load it first
            self.registry.keep_live(model.name, path.name, model)
        if self.registry.default_name() is None:
            self.registry.set_default(model.name)
            self.serving.forget_default()
        previous = self.registry.active(model.name)
        swap: dict[str, Any] = {}
        if activate:
            if model.name in self.serving.loaded:  # served here: load fully, then swap
                swap = self.serving.activate(model.name, path.name)
            else:
                self.registry.activate(model.name, path.name)
            # the served model no longer holds erased shoppers: nothing owed, and the versions
            # that still hold them go
            self.pending.clear(model.name)
            self.registry.drop_quarantined(model.name)
        return TrainResult(
            model=model.name,
            version=path.name,
            train_seconds=round(secs, 3),
            active=activate,
            previous=previous,
            load_seconds=swap.get("load_seconds"),
        )


def _adapter_of(model: Any) -> str | None:
    """The LoRA adapter a text model (or a hybrid's content part) encodes with, if any."""
    cfg = model.config
    name = getattr(cfg, "adapter", None)
    if name is None:
        name = dict(getattr(cfg, "content_params", None) or {}).get("adapter")
    return None if name is None else str(name)
