"""Batch precomputation of every shopper's top-k list (`privrec precompute`).

The active version of a model scores every shopper of the store (what their consent allows,
as training reads it) in user shards, as Ray tasks when asked (`models/sharded.py`), with the
items they touched excluded. The lists are written sealed (AES-GCM with the data directory's
sidecar key, like the model artifacts) to
``DATA_DIR/precomputed/<model>/<version>/top<k>.npz.sealed``: an npz of ``users`` (pseudonyms,
never raw ids), ``items`` (indices into the version's items.json, -1 where a shopper has fewer
than k unseen items) and ``scores``. `read_lists` opens it.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privrec.core.errors import ValidationError
from privrec.data.dataset import InteractionDataset
from privrec.models.sharded import ShardedFit, sharded_topk
from privrec.privacy.sealed import read_sealed, write_sealed
from privrec.service.context import ServiceContext
from privrec.service.registry import ModelRegistry
from privrec.service.training import Training

PRECOMPUTED_DIR = "precomputed"


@dataclass
class PrecomputeResult:
    """What `Precompute.run` wrote.

    Attributes:
        model: the model name.
        version: its active version that scored the lists.
        k: list length.
        users: shoppers with a list.
        shards: user shards scored.
        ray: whether the shards ran as Ray tasks.
        seconds: wall time of the scoring.
        path: the sealed file.
    """

    model: str
    version: str
    k: int
    users: int
    shards: int
    ray: bool
    seconds: float
    path: str

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready values."""
        return asdict(self)


class Precompute:
    """Writes every shopper's top-k list of a model's active version (see the module docstring).

    Args:
        ctx: the data directory's context (sidecar key, data directory).
        registry: where the versions are.
        training: reads the store's usable events.
    """

    def __init__(self, ctx: ServiceContext, registry: ModelRegistry, training: Training) -> None:
        self.ctx = ctx
        self.registry = registry
        self.training = training

    def run(
        self, k: int = 50, *, model: str | None = None, sharded: ShardedFit | None = None
    ) -> PrecomputeResult:
        """Score every shopper with the active version of `model` (None: the default model)."""
        if k < 1:
            raise ValidationError("k", f"{k} is not a positive list length")
        name = model or self.registry.default_name()
        if name is None:
            raise ValidationError("model", "no model trained yet; train one first")
        version = self.registry.require_active(name)
        fitted, items = self.registry.load(name, version)
        _, events = self.training.dataset_with_events("store")
        if not len(events):
            raise ValidationError("store", "holds no events; ingest some first")
        # the version's own item numbering (events on items it does not know are left out)
        ds = InteractionDataset.from_events(
            events, event_weights=self.ctx.settings.event_weights, name="store", items=items
        )
        plan = sharded or ShardedFit(1)
        t0 = time.perf_counter()
        lists = sharded_topk(fitted, ds, k, n_shards=plan.n_shards, runner=plan.runner)
        secs = time.perf_counter() - t0
        path = self.path(name, version, k)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(
            buf,
            users=np.asarray(ds.users.keys, dtype=str),
            items=lists.items,
            scores=lists.scores,
        )
        write_sealed(path, buf.getvalue(), self.ctx.sidecar_key)
        return PrecomputeResult(
            name,
            version,
            int(k),
            ds.n_users,
            plan.n_shards,
            plan.runner.use_ray,
            round(secs, 3),
            str(path),
        )

    def path(self, model: str, version: str, k: int) -> Path:
        """Where the lists of `model` `version` at length `k` are written."""
        return self.ctx.data_dir / PRECOMPUTED_DIR / model / version / f"top{int(k)}.npz.sealed"

    def read_lists(self, path: str | Path) -> dict[str, np.ndarray]:
        """The arrays of a file `run` wrote (decrypted with the sidecar key)."""
        with np.load(io.BytesIO(read_sealed(path, self.ctx.sidecar_key))) as z:
            return {name: z[name] for name in z.files}
