"""The content encoder's LoRA adapters in the data directory: paths, training records, erasure.

Adapters live in `DATA_DIR/adapters/<name>` (peft's adapter files, `privrec_adapter.json` with
how it was trained and evaluated) and the encoder's embedding cache in
`DATA_DIR/cache/embeddings`; models trained through the service are given these folders
explicitly, so nothing depends on the working directory.

An adapter is trained on shoppers' co-interactions: a model of personal data like the CF models,
with no DP guarantee and no exact unlearning. Each adapter trained by the service keeps a sealed
`TrainingRecord` (the 64-bit prefixes of the event ids it was built from). An erasure (or a
retention or consent change) that removes one of those events makes the adapter owe a refit:
an adapter that an active model version uses stays (the version serves until it is retrained,
like every model that cannot forget) and is listed as `adapter:<name>` in the pending retrains;
one that nothing uses is deleted at once. A stale adapter is never deployed or trained with
again (`check_fresh`); the scheduler meets the erasure deadline of a model that used one with the
frozen encoder (`drop_stale`), and the next fine-tuning run deletes stale adapters nothing uses.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import ConflictError
from privrec.models.zoo import model_class
from privrec.service.context import ServiceContext
from privrec.service.registry import ModelRegistry, TrainingRecord
from privrec.text.encoder import adapter_path, adapters_root

log = logging.getLogger(__name__)

__all__ = ["PENDING_PREFIX", "AdapterStore"]

PENDING_PREFIX = "adapter:"  # an adapter's name in the pending retrains
_PATH_FIELDS = ("adapters_dir", "cache_dir")


class AdapterStore:
    """The data directory's adapters and what each was trained on.

    Args:
        ctx: the data directory's context (its folder and sidecar key).
        registry: the model versions (an adapter is "in use" while an active version names it).
    """

    def __init__(self, ctx: ServiceContext, registry: ModelRegistry) -> None:
        self.ctx = ctx
        self.registry = registry

    # ---- places ----------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The folder above `adapters/` (the data directory)."""
        return self.ctx.data_dir

    @property
    def cache_dir(self) -> Path:
        """The embedding cache of this data directory."""
        return self.ctx.data_dir / "cache" / "embeddings"

    def path(self, name: str) -> Path:
        """`DATA_DIR/adapters/<name>` (ConfigError for a name that is not a plain name)."""
        return adapter_path(name, self.root)

    def names(self) -> list[str]:
        """The adapters on disk, sorted."""
        d = adapters_root(self.root)
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if (p / "adapter_config.json").exists())

    def with_paths(self, model_name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """`params` with the data directory's adapter and cache folders filled in where a text
        model (or a hybrid's content part) leaves them unset."""
        out = dict(params or {})
        fields = model_class(model_name).Config.model_fields
        defaults = {"adapters_dir": str(self.root), "cache_dir": str(self.cache_dir)}
        if all(f in fields for f in _PATH_FIELDS):
            for k, v in defaults.items():
                if out.get(k) is None:
                    out[k] = v
        if "content_params" in fields:
            inner = dict(out.get("content_params") or {})
            for k, v in defaults.items():
                if inner.get(k) is None:
                    inner[k] = v
            out["content_params"] = inner
        return out

    # ---- what an adapter was trained on ----------------------------------------------------------
    def write_record(self, name: str, events: pd.DataFrame) -> TrainingRecord:
        """Seal the record of the events adapter `name` was built from into its folder."""
        rec = TrainingRecord.of(
            events, self.ctx.store.pseudonym_generation, self.ctx.settings.event_weights
        )
        rec.write(self.path(name), key=self.ctx.sidecar_key)
        return rec

    def record(self, name: str) -> TrainingRecord | None:
        """The record of adapter `name` (None: not trained by the service, or unreadable)."""
        return TrainingRecord.read(self.path(name), key=self.ctx.sidecar_key)

    def stale_reason(self, name: str, events: pd.DataFrame) -> str | None:
        """Why adapter `name` may no longer be used with the usable `events` (None: it may)."""
        rec = self.record(name)
        if rec is None:
            return None  # trained outside the service: the operator vouches for it
        if rec.generation != self.ctx.store.pseudonym_generation:
            return "the pseudonym key was rotated since it was trained"
        if not len(rec.event_ids):
            return None
        now = TrainingRecord.of(events, None, {}).event_ids if len(events) else np.zeros(0)
        gone = int((~np.isin(rec.event_ids, now)).sum())
        if gone:
            return f"{gone} of the events it was trained on have been erased, expired or withdrawn"
        return None

    def check_fresh(self, name: str, events: pd.DataFrame) -> None:
        """ConflictError when adapter `name` still holds events the store no longer allows."""
        why = self.stale_reason(name, events)
        if why is not None:
            raise ConflictError(
                f"adapter: {name!r} must be refitted before use: {why}; run `privrec finetune` "
                "(or train without the adapter)"
            )

    def drop_stale(self, params: Mapping[str, Any], events: pd.DataFrame) -> dict[str, Any]:
        """`params` without an adapter that may no longer be used (the frozen encoder instead):
        a retrain for an erasure deadline must not wait for a refit."""
        out = dict(params)
        a = out.get("adapter")
        if a is not None and self.stale_reason(str(a), events) is not None:
            out["adapter"] = None
        inner = dict(out.get("content_params") or {})
        a = inner.get("adapter")
        if a is not None and self.stale_reason(str(a), events) is not None:
            inner["adapter"] = None
            out["content_params"] = inner
        return out

    # ---- use and erasure -------------------------------------------------------------------------
    def in_use(self) -> dict[str, list[str]]:
        """Adapter name -> the models whose active version encodes with it."""
        out: dict[str, list[str]] = {}
        for name, info in self.registry.models().items():
            if not info.active:
                continue
            try:
                cfg = dict(self.registry.config_of(name, info.active).get("config") or {})
            except Exception:  # an unreadable version is the registry's problem, not ours
                continue
            used = {cfg.get("adapter"), dict(cfg.get("content_params") or {}).get("adapter")}
            for a in used - {None}:
                out.setdefault(str(a), []).append(name)
        return out

    def unlearn(self, events: pd.DataFrame) -> list[dict[str, Any]]:
        """Entries for an erasure receipt: adapters trained on any of `events` (removed events).

        An adapter in use owes a refit (status "retrain": the caller records the deadline); an
        unused one is deleted now (status "deleted").
        """
        if not len(events):
            return []
        out: list[dict[str, Any]] = []
        used = self.in_use()
        generation = self.ctx.store.pseudonym_generation
        for name in self.names():
            rec = self.record(name)
            if rec is None:
                continue
            hit = rec.generation != generation or bool(rec.contains(events["event_id"]).any())
            if not hit:
                continue
            entry: dict[str, Any] = {"model": PENDING_PREFIX + name}
            if name in used:
                entry["status"] = "retrain"
                entry["reason"] = (
                    "a LoRA adapter cannot unlearn exactly; used by "
                    f"{', '.join(used[name])}: refit it with `privrec finetune`"
                )
            else:
                shutil.rmtree(self.path(name), ignore_errors=True)
                entry["status"] = "deleted"
                entry["reason"] = "not used by any active model: deleted with its training data"
            log.info("adapter erasure adapter=%s status=%s", name, entry["status"])
            out.append(entry)
        return out

    def prune(self, events: pd.DataFrame) -> list[str]:
        """Delete stale adapters that no active model uses; returns their names."""
        used = self.in_use()
        gone = []
        for name in self.names():
            if name not in used and self.stale_reason(name, events) is not None:
                shutil.rmtree(self.path(name), ignore_errors=True)
                gone.append(name)
        return gone
