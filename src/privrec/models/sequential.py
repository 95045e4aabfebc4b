"""Shared pieces of the sequential transformers (SASRec, BERT4Rec): data, training, scoring.

A user is their *ordered* history (oldest first), so these models read `dataset.sequences()` to
train and a UserHistory's `items` (chronological) to score. Token ids inside the network:
0 = padding, 1..n_items = items (item index + 1), n_items + 1 = [MASK] (BERT4Rec).

Item representation (`item_repr`):
    "id":       a learned embedding per item (the classic models);
    "text":     a frozen text embedding per item (n_items, t) through a learned adaptor
                (linear or MLP), so an item never seen in training still has a representation;
    "id+text":  the sum of both; items absent from training get a zero ID part at the end of
                `fit`, so they are represented by their text alone.
The text matrix is given to `fit(item_text_embeddings=...)` or by path in the config; it is saved
with the model (it is needed to score), as one more safetensors array.

Network (`models.nn.sequence`): item embedding (scaled by sqrt(d)) + a learned position embedding
counted from the END of the sequence (the latest item is position 0, whatever the padding), dropout,
`num_blocks` pre-LayerNorm transformer blocks (multi-head self-attention; causal for SASRec,
bidirectional for BERT4Rec; padding is never attended to), a final LayerNorm. Scores are dot
products with the same item table (tied input/output embeddings). Because positions count from the
end and padding is masked, a user's scores do not depend on how much padding their batch holds.

Losses (`loss`): "full_softmax" (cross-entropy over all items, the strongest and the slowest),
"sampled_softmax" (cross-entropy over the target and `n_negatives` items drawn uniformly, shared
by the batch; a negative equal to a row's target is masked out) and "bce" (one uniform negative
per target, binary cross-entropy: the original SASRec loss). Only positions with a target are
projected onto the item table, so padding costs no softmax.

Order through the CSR contract: `score_matrix` receives CSR rows, which have no order. These
models therefore write order into the values: `input_matrix` and `history_matrix` put 1 + the
position of an item's LAST occurrence in the history, and `score_matrix` orders each row's
items by value (ties: by item index; a plain 0/1 matrix is read in item-index order). Repeats
collapse to their last occurrence there; `score(history)` and `score_sequences` keep them. For
evaluation with exact sequences use `sequence_scorer(model, dataset)` as the `scorer=` hook.

Training: Adam, an epoch visits each user's training window(s) once, in a seeded random order; with
`validation` (an InteractionDataset holding each user's next item) the model is checked every
`eval_every` epochs by full-ranking NDCG@10 and the best epoch's weights are kept; training stops
after `patience` checks without improvement. Runs under torch.distributed when a process group is
initialised (see `privrec.models.distributed` and `models.nn.runtime`): every rank builds the same
global batch from the same seed and trains on its share; gradients are averaged by DDP and the loss
is scaled so that the result equals single-process training on the global batch.

Reproducible on CPU for a seed: initialisation, dropout, batch order, masks and negatives all come
from the seed (torch's global RNG is forked, so the caller's state is untouched). Runs with
`num_threads=1` are bit-identical (tested); 2 threads were bit-identical too in our checks, but
threaded reductions are not guaranteed to be. Adam uses torch's fused kernel (about 10% faster
here). Attention has no key bias: it shifts every key's logit equally, so its true gradient is 0
and Adam would turn rounding noise into full-size steps (it also broke the DDP equality test).
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrec.core.errors import ConfigError
from privrec.core.rng import DEFAULT_SEED
from privrec.core.types import Explanation, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import ModelConfig, Recommender, history_explanation, seed_from
from privrec.models.nn.runtime import DistInfo, resolve_device, torch_threads
from privrec.models.nn.tokens import PAD
from privrec.privacy.ledger import PrivacyLedger

if TYPE_CHECKING:
    import torch
    from torch import nn

    from privrec.models.nn.sequence import SequenceNet

log = logging.getLogger(__name__)

__all__ = [
    "SequentialConfig",
    "SequentialRecommender",
    "TrainBatch",
    "batch_order",
    "build_sequence_net",
    "load_text_matrix",
    "order_matrix",
    "pad_left",
    "sequence_scorer",
    "windows",
]


class SequentialConfig(ModelConfig):
    """Settings shared by SASRec and BERT4Rec.

    Attributes:
        embedding_size: model width d.
        num_blocks: transformer blocks.
        num_heads: attention heads (must divide embedding_size).
        ffn_factor: feed-forward hidden size = ffn_factor * embedding_size.
        max_len: the longest history the network reads (older items are dropped).
        dropout: dropout on embeddings, attention weights, residual branches.
        epochs: maximum passes over the training sequences (give `fit` validation data to stop
            early and keep the best epoch).
        learning_rate: Adam step size.
        weight_decay: AdamW decoupled weight decay (0: plain Adam).
        batch_size: training sequences per step (the global batch under DDP).
        loss: "full_softmax", "sampled_softmax" or "bce" (see the module docstring).
        n_negatives: negatives per batch for "sampled_softmax".
        long_sequences: "last" trains on each user's latest window only (the published SASRec);
            "chunks" also on the earlier windows of long histories (every item trained once).
        length_pool: batches are formed from pools of this many batches sorted by length, so a
            batch holds sequences of similar length and little padding (1: plain random batches).
        eval_every: epochs between validation checks (when `fit` gets validation data).
        patience: validation checks without improvement before stopping.
        eval_mask_history: mask the user's history items (except the validation item itself)
            when ranking the validation item.
        time_budget_s: stop training after this many seconds (None: no limit; runs that hit it
            are no longer reproducible across machines).
        grad_clip: clip the global gradient norm to this (None: no clipping).
        item_repr: "id", "text" or "id+text".
        text_adaptor: "linear" or "mlp" (text -> d).
        item_text_embeddings: path of an (n_items, t) float32 matrix (.npy or .safetensors) used
            when `fit` is not given one.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        num_threads: torch CPU threads while training and scoring (1 by default: on the shared
            2-core machine 2 threads measured 5-7x slower per step while other jobs ran).
        score_batch_size: histories scored at once.
        seed: seeds everything; `fit(rng=...)` overrides it.
        adv_eps: adversarial training of the ID embeddings (APR, He et al. 2018): each
            step also takes the loss with the table moved by eps along its row-normalised
            gradient (0: off). Not for DP-SGD (its per-sample gradients) or DDP runs.
        adv_reg: weight of that adversarial loss.
    """

    embedding_size: int = Field(default=64, ge=1)
    num_blocks: int = Field(default=2, ge=1)
    num_heads: int = Field(default=1, ge=1)
    ffn_factor: int = Field(default=1, ge=1)
    max_len: int = Field(default=50, ge=2)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    epochs: int = Field(default=100, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=128, ge=1)
    loss: Literal["full_softmax", "sampled_softmax", "bce"] = "full_softmax"
    n_negatives: int = Field(default=256, ge=1)
    long_sequences: Literal["last", "chunks"] = "last"
    length_pool: int = Field(default=32, ge=1)
    eval_every: int = Field(default=1, ge=1)
    patience: int = Field(default=5, ge=1)
    eval_mask_history: bool = True
    time_budget_s: float | None = Field(default=None, gt=0.0)
    grad_clip: float | None = Field(default=None, gt=0.0)
    item_repr: Literal["id", "text", "id+text"] = "id"
    text_adaptor: Literal["linear", "mlp"] = "linear"
    item_text_embeddings: str | None = None
    device: str = "auto"
    num_threads: int = Field(default=1, ge=1)
    score_batch_size: int = Field(default=512, ge=1)
    seed: int = DEFAULT_SEED
    adv_eps: float = Field(default=0.0, ge=0.0)
    adv_reg: float = Field(default=1.0, ge=0.0)


# ---- item text --------------------------------------------------------------------------------
def load_text_matrix(path: str | Path) -> np.ndarray:
    """An (n_items, t) float32 matrix from .npy or .safetensors (its only or "embeddings" array)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"item_text_embeddings: {p} does not exist; give the path of an (n_items, d) "
            ".npy or .safetensors matrix"
        )
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif p.suffix == ".safetensors":
        from safetensors.numpy import load_file

        arrays = load_file(str(p))
        if "embeddings" in arrays:
            arr = arrays["embeddings"]
        elif len(arrays) == 1:
            arr = next(iter(arrays.values()))
        else:
            raise ConfigError(
                f"item_text_embeddings: {p} holds {sorted(arrays)}; name the matrix 'embeddings'"
            )
    else:
        raise ConfigError(f"item_text_embeddings: {p} is neither .npy nor .safetensors")
    return np.asarray(arr, dtype=np.float32)


# ---- the network --------------------------------------------------------------------------------
def build_sequence_net(
    n_items: int,
    c: SequentialConfig,
    causal: bool,
    text: np.ndarray | None,
    text_dim: int | None,
) -> SequenceNet:
    """The network for `n_items` items (text given at fit time, or only its width at load time)."""
    from privrec.models.nn.sequence import SequenceNet

    return SequenceNet(
        n_items,
        c.embedding_size,
        num_blocks=c.num_blocks,
        num_heads=c.num_heads,
        ffn_factor=c.ffn_factor,
        max_len=c.max_len,
        dropout=c.dropout,
        causal=causal,
        item_repr=c.item_repr,
        text_adaptor=c.text_adaptor,
        text=text,
        text_dim=text_dim,
        loss=c.loss,
        adv_eps=c.adv_eps,
        adv_reg=c.adv_reg,
    )


# ---- training batches ----------------------------------------------------------------------------
@dataclass
class TrainBatch:
    """One global step: left-padded inputs and targets (0 = no target) and the negatives."""

    seq: np.ndarray
    target: np.ndarray
    negatives: np.ndarray


def pad_left(seqs: Sequence[np.ndarray], length: int | None = None) -> np.ndarray:
    """Stack token sequences into int64, left-padded with 0 to `length` (default: the longest)."""
    n = max((len(s) for s in seqs), default=0) if length is None else int(length)
    out = np.zeros((len(seqs), max(n, 1)), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-out.shape[1] :]
        if len(s):
            out[r, out.shape[1] - len(s) :] = s
    return out


def batch_order(
    lengths: np.ndarray, batch_size: int, pool: int, gen: np.random.Generator
) -> list[np.ndarray]:
    """Indices of one epoch's batches: a seeded shuffle, then, inside pools of `pool` batches,
    sorted by length so each batch holds sequences of similar length (little padding), then the
    batches in a seeded random order. pool=1 gives plain random batches."""
    order = gen.permutation(len(lengths))
    if pool > 1:
        span = batch_size * pool
        parts = []
        for start in range(0, len(order), span):
            chunk = order[start : start + span]
            parts.append(chunk[np.argsort(lengths[chunk], kind="stable")])
        order = np.concatenate(parts) if parts else order
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    return [batches[i] for i in gen.permutation(len(batches))]


def windows(seq: np.ndarray, size: int, mode: str, step: int | None = None) -> list[np.ndarray]:
    """The latest `size` items of `seq` ("last"), or windows ending every `step` items from the end
    back to the start ("chunks"; default step = size: no overlap; SASRec uses step = size - 1 so
    every transition is a target exactly once)."""
    if mode == "last" or len(seq) <= size:
        return [seq[-size:]]
    step = size if step is None else int(step)
    out = []
    end = len(seq)
    while True:
        start = max(0, end - size)
        out.append(seq[start:end])
        if start == 0:
            break
        end -= step
    return out[::-1]


# ---- the model base class ------------------------------------------------------------------------
class SequentialRecommender(Recommender):
    """Base of the transformer sequence models; subclasses set `causal` and `_make_batches`."""

    Config: ClassVar[type[ModelConfig]] = SequentialConfig
    config: SequentialConfig
    causal: ClassVar[bool] = True

    def __init__(self, config: SequentialConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.net: SequenceNet | None = None
        self._table: torch.Tensor | None = None
        self.train_log: list[dict[str, float]] = []
        self.best_epoch: int = 0
        self.train_seconds: float = 0.0

    # ---- training -----------------------------------------------------------------------------
    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        validation: InteractionDataset | None = None,
        item_text_embeddings: np.ndarray | None = None,
    ) -> SequentialRecommender:
        """Train on the chronological sequences of `dataset`.

        Args:
            dataset: training events (each user's events in time order).
            rng: seed (overrides config.seed).
            ledger: where a DP subclass records its release before training (unused here).
            validation: each user's next item after `dataset` (e.g. `leave_one_out`'s valid
                part): enables model selection by NDCG@10 and early stopping.
            item_text_embeddings: (n_items, t) text vectors when item_repr uses text.
        """
        return self.fit_sequences(
            dataset.sequences(),
            dataset.n_items,
            rng=rng,
            ledger=ledger,
            validation=_validation_pairs(dataset, validation) if validation is not None else None,
            item_text_embeddings=item_text_embeddings,
        )

    def fit_sequences(
        self,
        sequences: Sequence[np.ndarray],
        n_items: int,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        validation: tuple[list[np.ndarray], np.ndarray] | None = None,
        item_text_embeddings: np.ndarray | None = None,
    ) -> SequentialRecommender:
        """Train on item-index sequences (oldest first); `validation` = (histories, next items)."""
        import torch

        c = self.config
        seed = seed_from(rng, c.seed)
        text = self._text_matrix(item_text_embeddings, n_items)
        info = DistInfo.current()
        device = resolve_device(c.device, info.local_rank)
        seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
        t0 = time.perf_counter()
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch_threads(c.num_threads), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            net = build_sequence_net(n_items, c, self.causal, text, None).to(device)
            self.n_items = int(n_items)
            self._train(net, seqs, n_items, seed, device, info, validation, t0, ledger=ledger)
            if "id" in c.item_repr.split("+") and "text" in c.item_repr.split("+"):
                seen = np.zeros(n_items + 2, dtype=bool)
                for s in seqs:
                    seen[s[(s >= 0) & (s < n_items)] + 1] = True
                with torch.no_grad():
                    net.items.id_emb.weight[torch.from_numpy(~seen).to(device)] = 0.0
        net.eval()
        self.net = net
        self._table = None
        self.train_seconds = time.perf_counter() - t0
        self._mark_fitted(n_items)
        return self

    def _text_matrix(self, given: np.ndarray | None, n_items: int) -> np.ndarray | None:
        c = self.config
        if "text" not in c.item_repr.split("+"):
            return None
        if given is None and c.item_text_embeddings is None:
            raise ConfigError(
                f"item_repr: {c.item_repr!r} needs item text embeddings; "
                "pass fit(item_text_embeddings=...) "
                "or set item_text_embeddings to a .npy/.safetensors path"
            )
        if given is not None:
            text = np.asarray(given, dtype=np.float32)
        else:
            text = load_text_matrix(str(c.item_text_embeddings))
        if text.ndim != 2 or text.shape[0] != n_items:
            raise ConfigError(
                f"item_text_embeddings: shape {text.shape}, expected ({n_items}, d): "
                "one row per item index"
            )
        if not np.isfinite(text).all():
            raise ConfigError("item_text_embeddings: holds NaN or infinite values")
        return text

    def _make_batches(
        self, seqs: list[np.ndarray], n_items: int, gen: np.random.Generator
    ) -> Iterator[TrainBatch]:
        """One epoch of global batches (subclasses define the task)."""
        raise NotImplementedError

    def _negatives(self, target: np.ndarray, n_items: int, gen: np.random.Generator) -> np.ndarray:
        """Negatives of a batch: shared uniform items (sampled softmax) or one per target (bce)."""
        c = self.config
        if c.loss == "sampled_softmax":
            return gen.integers(1, n_items + 1, size=c.n_negatives).astype(np.int64)
        if c.loss == "bce":
            return gen.integers(1, n_items + 1, size=int((target != PAD).sum())).astype(np.int64)
        return np.zeros(0, dtype=np.int64)

    def _train(
        self,
        net: SequenceNet,
        seqs: list[np.ndarray],
        n_items: int,
        seed: int,
        device: torch.device,
        info: DistInfo,
        validation: tuple[list[np.ndarray], np.ndarray] | None,
        t0: float,
        *,
        ledger: PrivacyLedger | None = None,
    ) -> None:
        """Train `net` in place (`ledger` is for DP subclasses, which charge it before noise)."""
        import torch

        c = self.config
        gen = np.random.default_rng(seed)
        model: nn.Module = net
        if info.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            # buffers (the frozen text matrix) are the same on every rank: no need to sync them
            sync = (
                "forward_sync_buffers"
                if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                else "broadcast_buffers"
            )
            no_sync: dict[str, Any] = {sync: False}
            model = DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None, **no_sync
            )
        params = [p for p in net.parameters() if p.requires_grad]
        # the fused kernel is ~10% faster on CPU for these small models (the usual choice on CUDA)
        fused: dict[str, Any] = {"fused": True} if device.type in ("cpu", "cuda") else {}
        opt: torch.optim.Optimizer
        if c.weight_decay > 0:
            opt = torch.optim.AdamW(
                params, lr=c.learning_rate, weight_decay=c.weight_decay, **fused
            )
        else:
            opt = torch.optim.Adam(params, lr=c.learning_rate, **fused)
        self.train_log = []
        best, best_state, bad = -1.0, None, 0
        self.best_epoch = c.epochs
        for epoch in range(1, c.epochs + 1):
            net.train()
            total, count = 0.0, 0
            for batch in self._make_batches(seqs, n_items, gen):
                rows = info.share(batch.seq.shape[0])
                if info.world_size > 1 and batch.seq.shape[0] < info.world_size:
                    continue  # a rank would hold no rows; skipped on every rank alike
                n_targets = int((batch.target != PAD).sum())
                if n_targets == 0:
                    continue
                seq = torch.from_numpy(batch.seq[rows]).to(device)
                tgt = torch.from_numpy(batch.target[rows]).to(device)
                neg = batch.negatives
                if c.loss == "bce":  # one negative per target: this rank's targets' share
                    owner = np.repeat(
                        np.arange(batch.seq.shape[0]), (batch.target != PAD).sum(axis=1)
                    )
                    neg = neg[np.isin(owner, rows)]
                negt = torch.from_numpy(neg).to(device)
                norm = torch.tensor(n_targets / info.world_size, dtype=torch.float32, device=device)
                loss = model(seq, tgt, negt, norm)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if c.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
                opt.step()
                total += float(loss.detach()) * float(norm)
                count += n_targets
            entry: dict[str, float] = {
                "epoch": epoch,
                "loss": total / max(count, 1) * info.world_size,
                "seconds": time.perf_counter() - t0,
            }
            out_of_time = c.time_budget_s is not None and time.perf_counter() - t0 > c.time_budget_s
            if info.world_size > 1:  # clocks differ per rank: all stop (and validate) together
                import torch.distributed as dist

                flag = torch.tensor([1.0 if out_of_time else 0.0], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                out_of_time = bool(flag.item() > 0)
            stop = out_of_time
            if validation is not None and (
                epoch % c.eval_every == 0 or epoch == c.epochs or out_of_time
            ):
                net.eval()
                self.net, self.n_items, self._table = net, n_items, None
                tv = time.perf_counter()
                metrics = self._validate(
                    validation, info, device
                )  # all-reduced: the same on every rank
                entry.update(metrics)
                entry["val_seconds"] = time.perf_counter() - tv
                if metrics["ndcg@10"] > best:
                    best, bad, self.best_epoch = metrics["ndcg@10"], 0, epoch
                    best_state = copy.deepcopy(net.state_dict())
                else:
                    bad += 1
                    stop = stop or bad >= c.patience
            self.train_log.append(entry)
            log.info(
                "%s epoch=%d %s",
                self.name,
                epoch,
                " ".join(f"{k}={v:.5g}" for k, v in entry.items() if k != "epoch"),
            )
            if stop:
                break
        if best_state is None:
            self.best_epoch = len(self.train_log)
        else:
            net.load_state_dict(best_state)

    def _validate(
        self, validation: tuple[list[np.ndarray], np.ndarray], info: DistInfo, device: torch.device
    ) -> dict[str, float]:
        """Full-ranking HR@10 / NDCG@10 of the next item (this rank's share, summed over ranks)."""
        histories, targets = validation
        mine = info.share(len(histories))
        totals = np.zeros(3, dtype=np.float64)
        for rows, st in self._score_batches([histories[r] for r in mine], device):
            s = st.float().cpu().numpy()
            tgt = targets[mine[rows]]
            if self.config.eval_mask_history:
                hs = [histories[r] for r in mine[rows]]
                lens = np.array([len(h) for h in hs], dtype=np.int64)
                flat = np.concatenate(hs) if hs else np.zeros(0, np.int64)
                owner = np.repeat(np.arange(len(hs)), lens)
                keep = (flat >= 0) & (flat < self.n_items) & (flat != np.repeat(tgt, lens))
                s[owner[keep], flat[keep]] = -np.inf
            ts = s[np.arange(len(rows)), tgt][:, None]
            # rank = items scored higher, plus exact ties with a lower index (as top_k breaks ties)
            rank = np.count_nonzero(s > ts, axis=1)
            tied = np.nonzero(np.count_nonzero(s == ts, axis=1) > 1)[0]
            for j in tied:
                rank[j] += int(np.count_nonzero(s[j, : tgt[j]] == ts[j, 0]))
            hit = rank < 10
            totals += (hit.sum(), np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).sum(), len(rows))
        if info.world_size > 1:
            import torch
            import torch.distributed as dist

            tt = torch.from_numpy(totals).to(device)
            dist.all_reduce(tt)
            totals = tt.cpu().numpy()
        t = totals
        n = max(t[2], 1.0)
        return {"hr@10": float(t[0] / n), "ndcg@10": float(t[1] / n)}

    # ---- scoring ---------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.net.parameters()).device  # type: ignore[union-attr]

    def _item_table(self) -> torch.Tensor:
        import torch

        if self._table is None:
            with torch.no_grad():
                self._table = self.net.items.table()  # type: ignore[union-attr]
        return self._table

    def _inference_tokens(self, history: np.ndarray) -> np.ndarray:
        """Token ids the network reads for one history (SASRec: the last max_len items)."""
        return history[-self.config.max_len :] + 1

    def _score_batches(
        self, histories: Sequence[np.ndarray], device: torch.device | None = None
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(row positions, (rows, n_items) scores) per batch; similar history lengths together."""
        import torch

        net = self.net
        assert net is not None
        dev = device or self._device()
        step = self.config.score_batch_size
        toks = [self._inference_tokens(np.asarray(h, dtype=np.int64)) for h in histories]
        # similar lengths together: little padding (a row's scores do not depend on its padding)
        order = np.argsort(np.array([len(t) for t in toks], dtype=np.int64), kind="stable")
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad(), torch_threads(self.config.num_threads):
                table = self._item_table()
                for start in range(0, len(order), step):
                    rows = order[start : start + step]
                    seq = torch.from_numpy(pad_left([toks[r] for r in rows])).to(dev)
                    yield rows, net.last_hidden(seq) @ table.T
        finally:
            if was_training:
                net.train()

    def _score_tokens(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Scores (len(histories), n_items) float32 of item-index histories (already cleaned)."""
        out = np.empty((len(histories), self.n_items), dtype=np.float32)
        for rows, s in self._score_batches(histories):
            out[rows] = s.float().cpu().numpy()
        return out

    def _clean(self, items: np.ndarray) -> np.ndarray:
        it = np.asarray(items, dtype=np.int64).ravel()
        return it[(it >= 0) & (it < self.n_items)]

    def score_sequences(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Scores of every item for each chronological item-index sequence (float32, a row each)."""
        self._check_fitted()
        return self._score_tokens([self._clean(s) for s in sequences])

    def score(self, history: UserHistory, items: np.ndarray | None = None) -> np.ndarray:
        """Scores from the ordered history (repeats kept)."""
        s = self.score_sequences([history.items])[0]
        return s if items is None else s[np.asarray(items, dtype=np.int64)]

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """Scores of CSR history rows, each row's items ordered by value (see the module doc)."""
        h = self._history_input(histories)
        seqs = []
        for r in range(h.shape[0]):
            lo, hi = h.indptr[r], h.indptr[r + 1]
            cols, vals = h.indices[lo:hi], h.data[lo:hi]
            seqs.append(cols[np.lexsort((cols, vals))].astype(np.int64))
        return self._score_tokens(seqs)

    def input_matrix(self, dataset: InteractionDataset) -> sp.csr_matrix:
        """User x item matrix of 1 + the position of each item's last event (order kept)."""
        return order_matrix(dataset.sequences(), dataset.n_items)

    def history_matrix(self, histories: list[UserHistory]) -> sp.csr_matrix:
        """Histories as rows whose values encode order (1 + position of the last occurrence)."""
        return order_matrix([h.items for h in histories], self.n_items)

    def explain(self, history: UserHistory, item: int) -> Explanation:
        """Occlusion: a history item's share = the score drop when all its occurrences go."""
        self._check_fitted()
        items = self._clean(history.items)[-self.config.max_len :]
        distinct = np.unique(items)
        if distinct.size == 0:
            return Explanation(
                item=int(item), kind="model", text="no history to explain from", contributors=[]
            )
        variants = [items] + [items[items != j] for j in distinct]
        s = self._score_tokens(variants)[:, int(item)].astype(np.float64)
        return history_explanation(history, int(item), distinct, s[0] - s[1:])

    # ---- persistence -----------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        assert self.net is not None
        return {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        import torch

        text_dim = arrays["items.text"].shape[1] if "items.text" in arrays else None
        net = build_sequence_net(self.n_items, self.config, self.causal, None, text_dim)
        net.load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, strict=True
        )
        net.to(resolve_device(self.config.device))
        net.eval()
        self.net, self._table = net, None
        self.train_log = list(meta.get("train_log", []))
        self.best_epoch = int(meta.get("best_epoch", 0))
        self.train_seconds = float(meta.get("train_seconds", 0.0))

    def _meta(self) -> dict[str, Any]:
        return {
            "train_log": self.train_log,
            "best_epoch": self.best_epoch,
            "train_seconds": self.train_seconds,
        }


# ---- helpers used by models, benchmarks and evaluation -------------------------------------------
def order_matrix(sequences: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    """CSR rows with value 1 + the position of each item's last occurrence in its sequence."""
    rows, cols, vals = [], [], []
    for r, s in enumerate(sequences):
        s = np.asarray(s, dtype=np.int64)
        ok = (s >= 0) & (s < n_items)
        pos = np.nonzero(ok)[0]
        s = s[ok]
        if not s.size:
            continue
        # the last occurrence of each item: first occurrence in the reversed sequence
        uniq, first_rev = np.unique(s[::-1], return_index=True)
        rows.append(np.full(uniq.size, r))
        cols.append(uniq)
        vals.append(pos[::-1][first_rev] + 1.0)
    if not rows:
        return sp.csr_matrix((len(sequences), n_items), dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(sequences), n_items),
        dtype=np.float32,
    )


def _validation_pairs(
    train: InteractionDataset, valid: InteractionDataset
) -> tuple[list[np.ndarray], np.ndarray]:
    """(training history, next item) for each user holding a validation event (their first one)."""
    seqs = train.sequences()
    off = valid.user_offsets()
    users = np.nonzero(np.diff(off) > 0)[0]
    targets = valid.item_idx[off[users]].astype(np.int64)
    return [seqs[u] for u in users], targets


def sequence_scorer(
    model: SequentialRecommender, dataset: InteractionDataset
) -> Callable[[np.ndarray], np.ndarray]:
    """A `scorer=` for evaluation protocols: user indices -> scores from their ordered history."""
    seqs = dataset.sequences()

    def scorer(users: np.ndarray) -> np.ndarray:
        return model.score_sequences([seqs[int(u)] for u in users])

    return scorer
