"""Fine-tuning the content encoder on the shop's own co-interactions, with held-out evaluation.

The life cycle behind `privrec finetune` and `POST /v1/models/content/finetune`:

1. Prepare (`prepare`): the usable events of the store (what consent allows) give
   co-interaction pairs, items the same shopper interacted with within `window` steps
   (`privrec.text.lora.co_interaction_pairs`). A seeded share `holdout` of the items in pairs is
   held out: no pair touching a held-out item is trained on. Too few pairs: ConflictError (409)
   naming how many are needed.
2. Train (`run`): a LoRA adapter on the training pairs, saved in `DATA_DIR/adapters/<name>`
   with a sealed record of the events it was built from.
3. Evaluate: for each held-out pair (held-out item -> its partner) the partner is ranked among
   every item with text by cosine similarity, with the frozen encoder and with the adapter:
   recall@10, MRR and nDCG@10.
4. Deploy only if better: when the adapter's recall@10 beats the frozen encoder's by at least
   `min_gain` and its MRR is not lower (or with `force`), the content model is re-encoded with
   the adapter and the new version activated (item vectors are a few seconds of encoding, so the
   adapter serves at once; a hybrid keeps the content part it was trained with until it is
   retrained with `content_params={"adapter": NAME}`, since that refits its CF parts too).
   Otherwise the adapter stays on disk, undeployed, and the result says why.

Every run, deployed or not, lands in the adapter's `privrec_adapter.json` and the audit log.
The adapter is a model of personal data, not a DP release: see `privrec.service.adapters` for
how erasure reaches it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from privrec.core.errors import ConflictError
from privrec.data.dataset import InteractionDataset
from privrec.service.adapters import PENDING_PREFIX, AdapterStore
from privrec.service.registry import ModelRegistry
from privrec.service.training import Training
from privrec.text.cache import EmbeddingCache
from privrec.text.encoder import ADAPTER_NAME_PATTERN, SentenceEncoder
from privrec.text.lora import LoraTrainConfig, co_interaction_pairs, train_lora_on_pairs

log = logging.getLogger(__name__)

__all__ = ["FinetuneOptions", "FinetuneResult", "Finetuning", "Prepared", "StageProgress"]

MIN_PAIRS = 40  # fewer distinct pairs leave too few to train on and too few to judge by
MIN_TRAIN_PAIRS = 8
MAX_EVAL_QUERIES = 2000  # a seeded sample keeps the evaluation a few seconds on a big shop
K = 10
# progress(stage, done, total): stage is "prepare", "train", "evaluate" or "deploy"
StageProgress = Callable[[str, int, int], None]


class FinetuneOptions(BaseModel):
    """How to fine-tune (unknown fields rejected; the HTTP body and the CLI options).

    Attributes:
        epochs: passes over the training pairs.
        rank: the LoRA rank.
        max_pairs: at most this many training pairs (a seeded sample).
        holdout: the share of items held out for the evaluation.
        seed: every random step (held-out items, pair sample, training).
        name: the adapter's name (None: `content-<UTC time>`).
        force: deploy even when the adapter is not better than the frozen encoder.
        min_gain: how much higher the adapter's held-out recall@10 must be to deploy.
        window: items up to this many steps apart in a shopper's history form a pair.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=1, ge=1, le=20)
    rank: int = Field(default=8, ge=1, le=64)
    max_pairs: int = Field(default=2000, ge=MIN_TRAIN_PAIRS, le=200_000)
    holdout: float = Field(default=0.1, gt=0.0, le=0.5)
    seed: int = Field(default=42, ge=0)
    name: str | None = Field(default=None, pattern=ADAPTER_NAME_PATTERN.pattern)
    force: bool = False
    min_gain: float = Field(default=0.01, ge=0.0, le=1.0)
    window: int = Field(default=2, ge=1, le=10)


@dataclass
class Prepared:
    """Training and evaluation data of one run (item indices of `dataset`)."""

    options: FinetuneOptions
    name: str
    dataset: InteractionDataset
    events: pd.DataFrame
    texts: list[str]
    train_pairs: np.ndarray  # (m, 2)
    queries: np.ndarray  # (q, 2): held-out item, its partner
    heldout_items: np.ndarray
    n_pairs: int

    def summary(self) -> dict[str, Any]:
        """Counts for the report (never an id)."""
        return {
            "events": int(self.dataset.n_events),
            "items": int(self.dataset.n_items),
            "pairs": self.n_pairs,
            "train_pairs": len(self.train_pairs),
            "heldout_items": len(self.heldout_items),
            "eval_queries": len(self.queries),
            "window": self.options.window,
        }


@dataclass
class FinetuneResult:
    """What a run did: the data, the training, the held-out comparison and the decision."""

    adapter: str
    path: str
    data: dict[str, Any]
    training: dict[str, Any]
    frozen: dict[str, float]
    adapted: dict[str, float]
    gain: dict[str, float]
    min_gain: float
    better: bool
    deployed: bool
    forced: bool
    reason: str
    content: dict[str, Any] | None = None
    pruned: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the CLI's --json prints and the job's result holds)."""
        return asdict(self)


class Finetuning:
    """The fine-tuning life cycle over one data directory (see the module docstring).

    Args:
        training: the training service (the store's dataset; deployment trains content).
        registry: the model versions.
    """

    def __init__(self, training: Training, registry: ModelRegistry) -> None:
        self.training = training
        self.registry = registry
        self.ctx = training.ctx
        self.adapters: AdapterStore = training.adapters

    # ---- 1. data ---------------------------------------------------------------------------------
    def prepare(self, options: FinetuneOptions | None = None) -> Prepared:
        """Co-interaction pairs of the store, split by held-out items (ConflictError if too few)."""
        o = options or FinetuneOptions()
        name = o.name or time.strftime("content-%Y%m%d-%H%M%S", time.gmtime())
        path = self.adapters.path(name)  # checks the name
        used = self.adapters.in_use()
        if name in used and path.exists():
            raise ConflictError(
                f"name: adapter {name!r} is used by the active {', '.join(used[name])} model; "
                "choose another name (replacing it would change the served vectors)"
            )
        ds, events = self.training.dataset_with_events("store")
        texts = ds.item_text()
        pairs = co_interaction_pairs(ds, max_pairs=None, seed=o.seed, window=o.window, texts=texts)
        if len(pairs) < MIN_PAIRS:
            raise ConflictError(
                f"store: {ds.n_events} usable events give {len(pairs)} co-interaction pairs "
                f"(two items with text that one shopper interacted with within {o.window} "
                f"steps); fine-tuning needs at least {MIN_PAIRS}: ingest more events of "
                "shoppers with several items (or the catalogue's titles)"
            )
        rng = np.random.default_rng(o.seed)
        items = np.unique(pairs)
        n_hold = min(len(items) - 2, max(1, round(o.holdout * len(items))))
        held = np.zeros(ds.n_items, bool)
        held[rng.choice(items, size=n_hold, replace=False)] = True
        touches = held[pairs[:, 0]] | held[pairs[:, 1]]
        train = pairs[~touches][: o.max_pairs]  # pairs come in seeded random order
        ev = pairs[touches]
        queries = np.concatenate(
            [ev[held[ev[:, 0]]], ev[held[ev[:, 1]]][:, ::-1]]  # held-out item first
        )
        queries = queries[rng.permutation(len(queries))][:MAX_EVAL_QUERIES]
        if len(train) < MIN_TRAIN_PAIRS:
            raise ConflictError(
                f"store: only {len(train)} co-interaction pairs are left for training after "
                f"holding out {n_hold} items (holdout={o.holdout}); at least {MIN_TRAIN_PAIRS} "
                "are needed: lower holdout or ingest more events"
            )
        return Prepared(
            options=o,
            name=name,
            dataset=ds,
            events=events,
            texts=texts,
            train_pairs=train,
            queries=queries,
            heldout_items=np.nonzero(held)[0],
            n_pairs=len(pairs),
        )

    # ---- 2-4. train, evaluate, deploy ------------------------------------------------------------
    def run(
        self,
        options: FinetuneOptions | Prepared | None = None,
        *,
        progress: StageProgress | None = None,
    ) -> FinetuneResult:
        """Prepare (unless given), train, evaluate against the frozen encoder, deploy if better."""
        report = progress or (lambda _s, _d, _t: None)
        prep = options if isinstance(options, Prepared) else self.prepare(options)
        o = prep.options
        report("prepare", 1, 1)
        pruned = self.prune(prep.events)
        cfg = LoraTrainConfig(
            r=o.rank,
            alpha=2.0 * o.rank,
            epochs=o.epochs,
            max_pairs=max(2, len(prep.train_pairs)),
            window=o.window,
            seed=o.seed,
        )
        info = train_lora_on_pairs(
            prep.texts,
            prep.train_pairs,
            name=prep.name,
            root=self.adapters.root,
            config=cfg,
            progress=lambda d, t: report("train", d, t),
        )
        info.model = None  # the evaluation loads the saved adapter, merged, as serving will
        self.adapters.write_record(prep.name, prep.events)
        # a refit under this name settles what an earlier adapter of that name owed
        self.training.pending.clear(PENDING_PREFIX + prep.name)
        frozen, adapted = self._evaluate(prep, report)
        gain = {k: round(adapted[k] - frozen[k], 6) for k in ("recall@10", "mrr", "ndcg@10")}
        better = gain["recall@10"] >= o.min_gain and gain["mrr"] >= 0.0
        deploy = better or o.force
        if better:
            reason = (
                f"deployed: held-out recall@10 {adapted['recall@10']:.4f} vs frozen "
                f"{frozen['recall@10']:.4f} (gain {gain['recall@10']:+.4f} >= {o.min_gain}), "
                f"MRR {adapted['mrr']:.4f} vs {frozen['mrr']:.4f}"
            )
        else:
            reason = (
                f"held-out recall@10 {adapted['recall@10']:.4f} vs frozen "
                f"{frozen['recall@10']:.4f} (gain {gain['recall@10']:+.4f}, needed "
                f">= {o.min_gain}), MRR {adapted['mrr']:.4f} vs {frozen['mrr']:.4f}"
            )
            reason = ("deployed anyway (--force): " if o.force else "not deployed: ") + reason
            if not o.force:
                reason += "; the adapter is kept on disk"
        content = None
        if deploy:
            report("deploy", 0, 1)
            content = self._deploy(prep.name, o.seed)
            report("deploy", 1, 1)
        result = FinetuneResult(
            adapter=prep.name,
            path=str(info.path),
            data=prep.summary(),
            training={
                "epochs": o.epochs,
                "rank": o.rank,
                "steps": info.steps,
                "seconds": round(info.seconds, 2),
                "loss_first": round(info.losses[0], 5) if info.losses else None,
                "loss_last": round(info.losses[-1], 5) if info.losses else None,
                "seed": o.seed,
            },
            frozen=frozen,
            adapted=adapted,
            gain=gain,
            min_gain=o.min_gain,
            better=better,
            deployed=deploy,
            forced=bool(o.force and not better),
            reason=reason,
            content=content,
            pruned=pruned,
        )
        self._record(result)
        return result

    def prune(self, events: pd.DataFrame) -> list[str]:
        """Delete stale adapters that no active model uses (`events`: the usable events now);
        what they owed after an erasure is settled with them."""
        pruned = self.adapters.prune(events)
        for gone in pruned:
            self.training.pending.clear(PENDING_PREFIX + gone)
        return pruned

    def _evaluate(
        self, prep: Prepared, report: StageProgress
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Held-out ranking metrics of the frozen encoder and of the adapter."""
        cache = EmbeddingCache(self.adapters.cache_dir)  # catalogue text only
        has_text = np.array([bool(t and t.strip()) for t in prep.texts], bool)
        out = []
        for i, adapter in enumerate((None, prep.name)):
            enc = SentenceEncoder(adapter=adapter, adapters_dir=self.adapters.root, cache=cache)
            report("evaluate", i, 2)
            emb = enc.encode(prep.texts)
            out.append(rank_metrics(emb, prep.queries, has_text))
        report("evaluate", 2, 2)
        return out[0], out[1]

    def _deploy(self, name: str, seed: int) -> dict[str, Any]:
        """Re-encode the content model with adapter `name` and activate the new version."""
        params: dict[str, Any] = {}
        active = self.registry.active("content")
        if active is not None:  # keep the operator's content settings, swap the encoder
            cfg = dict(self.registry.config_of("content", active).get("config") or {})
            params = {k: v for k, v in cfg.items() if k not in ("adapter", "adapters_dir")}
            params.pop("cache_dir", None)
        params["adapter"] = name
        res = self.training.train("content", params=params, seed=seed)
        return res.to_dict()

    def _record(self, r: FinetuneResult) -> None:
        """Keep the run's evaluation and decision beside the adapter and in the audit log."""
        meta_file = self.adapters.path(r.adapter) / "privrec_adapter.json"
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            meta = {}
        meta["finetune"] = {
            k: v for k, v in r.to_dict().items() if k not in ("adapter", "path", "pruned")
        }
        meta["finetune"]["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        meta_file.write_text(json.dumps(meta, indent=2))
        self.ctx.audit_log().append(
            "finetune",
            adapter=r.adapter,
            deployed=r.deployed,
            forced=r.forced,
            frozen=r.frozen,
            adapted=r.adapted,
            train_pairs=r.data["train_pairs"],
            content_version=(r.content or {}).get("version"),
        )
        log.info(
            "finetune adapter=%s deployed=%s recall_frozen=%.4f recall_adapted=%.4f",
            r.adapter,
            r.deployed,
            r.frozen["recall@10"],
            r.adapted["recall@10"],
        )


def rank_metrics(emb: np.ndarray, queries: np.ndarray, candidates: np.ndarray) -> dict[str, float]:
    """Recall@10, MRR and nDCG@10 of ranking each query's partner by cosine similarity.

    Args:
        emb: (n, d) unit item vectors.
        queries: (q, 2) item pairs: the query item, the partner to find.
        candidates: (n,) bool, the items that may be ranked (the query itself never is).
    """
    if not len(queries):
        return {"recall@10": 0.0, "mrr": 0.0, "ndcg@10": 0.0, "queries": 0.0}
    ranks = np.empty(len(queries), np.int64)
    for s in range(0, len(queries), 512):
        q = queries[s : s + 512]
        scores = emb[q[:, 0]] @ emb.T
        scores[:, ~candidates] = -np.inf
        scores[np.arange(len(q)), q[:, 0]] = -np.inf
        target = scores[np.arange(len(q)), q[:, 1]][:, None]
        ranks[s : s + len(q)] = (scores > target).sum(axis=1) + 1  # ties count in its favour
    hit = ranks <= K
    return {
        "recall@10": round(float(hit.mean()), 6),
        "mrr": round(float((1.0 / ranks).mean()), 6),
        "ndcg@10": round(float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean()), 6),
        "queries": float(len(queries)),
    }
