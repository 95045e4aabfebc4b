"""The training loop of the sequential transformers (SASRec, BERT4Rec), in one process or under DDP.

Training: Adam, an epoch visits each user's training window(s) once, in a seeded random order; with
`validation` (each user's next item) the model is checked every `eval_every` epochs by full-ranking
NDCG@10 and the best epoch's weights are kept; training stops after `patience` checks without
improvement. Runs under torch.distributed when a process group is initialised (see
`privrec.models.distributed` and `models.nn.runtime`): every rank builds the same global batch from
the same seed and trains on its share; gradients are averaged by DDP and the loss is scaled so that
the result equals single-process training on the global batch.

Reproducible on CPU for a seed: initialisation, dropout, batch order, masks and negatives all come
from the seed (torch's global RNG is forked by the caller, so its state is untouched). Runs with
`num_threads=1` are bit-identical (tested); 2 threads were bit-identical too in our checks, but
threaded reductions are not guaranteed to be. Adam uses torch's fused kernel (about 10% faster
here). Attention has no key bias: it shifts every key's logit equally, so its true gradient is 0
and Adam would turn rounding noise into full-size steps (it also broke the DDP equality test).

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from privrec.models.nn.runtime import DistInfo
from privrec.models.nn.tokens import PAD
from privrec.models.sequential_config import SequentialConfig
from privrec.models.sequential_data import TrainBatch

if TYPE_CHECKING:
    import torch
    from torch import nn

    from privrec.models.nn.sequence import SequenceNet

    # (histories, device) -> (row positions, (rows, n_items) scores) per batch
    ScoreBatches = Callable[
        [Sequence[np.ndarray], torch.device], Iterator[tuple[np.ndarray, torch.Tensor]]
    ]

log = logging.getLogger(__name__)

__all__ = [
    "TrainOutcome",
    "make_optimizer",
    "next_item_metrics",
    "train_epochs",
    "wrap_for_ranks",
    "zero_unseen_ids",
]


@dataclass
class TrainOutcome:
    """A training run's report: one log entry per epoch, and the epoch whose weights were kept."""

    train_log: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def wrap_for_ranks(net: SequenceNet, device: torch.device, info: DistInfo) -> nn.Module:
    """`net` itself in one process; under several ranks, `net` in DistributedDataParallel."""
    if info.world_size <= 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    # buffers (the frozen text matrix) are the same on every rank: no need to sync them
    sync = (
        "forward_sync_buffers"
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else "broadcast_buffers"
    )
    no_sync: dict[str, Any] = {sync: False}
    return DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None, **no_sync
    )


def make_optimizer(
    params: list[torch.nn.Parameter], c: SequentialConfig, device: torch.device
) -> torch.optim.Optimizer:
    """Adam (AdamW with `weight_decay`), fused where the device has the kernel."""
    import torch

    # the fused kernel is ~10% faster on CPU for these small models (the usual choice on CUDA)
    fused: dict[str, Any] = {"fused": True} if device.type in ("cpu", "cuda") else {}
    if c.weight_decay > 0:
        return torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=c.weight_decay, **fused)
    return torch.optim.Adam(params, lr=c.learning_rate, **fused)


def train_epochs(
    net: SequenceNet,
    epoch_batches: Callable[[], Iterable[TrainBatch]],
    c: SequentialConfig,
    device: torch.device,
    info: DistInfo,
    t0: float,
    *,
    validate: Callable[[], dict[str, float]] | None = None,
    name: str = "sequential",
) -> TrainOutcome:
    """Train `net` in place for up to `c.epochs` epochs of `epoch_batches()` (global batches).

    Args:
        net: the network (wrapped in DDP here when several ranks train).
        epoch_batches: one epoch's global batches, drawn from the caller's seeded generator.
        c: the settings (optimiser, loss, epochs, validation cadence, time budget).
        device: where this rank trains.
        info: this rank's place among the ranks.
        t0: when the fit started (`time.perf_counter()`), for the time budget and the log.
        validate: full-ranking metrics of the current weights ("ndcg@10" selects the epoch), the
            same on every rank; None: no validation, the last epoch's weights are kept.
        name: the model name in log lines.
    """
    import torch

    model = wrap_for_ranks(net, device, info)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = make_optimizer(params, c, device)
    out = TrainOutcome(best_epoch=c.epochs)
    best, best_state, bad = -1.0, None, 0
    for epoch in range(1, c.epochs + 1):
        net.train()
        total, count = 0.0, 0.0
        for batch in epoch_batches():
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
                owner = np.repeat(np.arange(batch.seq.shape[0]), (batch.target != PAD).sum(axis=1))
                neg = neg[np.isin(owner, rows)]
            negt = torch.from_numpy(neg).to(device)
            if batch.weights is None:
                norm = torch.tensor(n_targets / info.world_size, dtype=torch.float32, device=device)
                loss = model(seq, tgt, negt, norm)
            else:
                # weighted targets: the loss is the weighted mean over the global batch, so the
                # weights move emphasis between targets, not the step size
                wsum = float(batch.weights[batch.target != PAD].sum())
                if wsum <= 0:
                    continue
                norm = torch.tensor(wsum / info.world_size, dtype=torch.float32, device=device)
                w = torch.from_numpy(batch.weights[rows]).to(device)
                loss = model(seq, tgt, negt, norm, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if c.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
            opt.step()
            total += float(loss.detach()) * float(norm)
            # the log's mean loss: per target, or per unit of weight when targets are weighted
            count += n_targets if batch.weights is None else wsum
        if info.world_size > 1:
            # each rank summed its own rows' losses: the log shows the global batches' mean
            import torch.distributed as dist

            summed = torch.tensor([total], dtype=torch.float64, device=device)
            dist.all_reduce(summed)
            total = float(summed.item())
        entry: dict[str, float] = {
            "epoch": epoch,
            "loss": total / max(count, 1),
            "seconds": time.perf_counter() - t0,
        }
        out_of_time = c.time_budget_s is not None and time.perf_counter() - t0 > c.time_budget_s
        if info.world_size > 1:  # clocks differ per rank: all stop (and validate) together
            import torch.distributed as dist

            flag = torch.tensor([1.0 if out_of_time else 0.0], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item() > 0)
        stop = out_of_time
        if validate is not None and (epoch % c.eval_every == 0 or epoch == c.epochs or out_of_time):
            net.eval()
            tv = time.perf_counter()
            metrics = validate()
            entry.update(metrics)
            entry["val_seconds"] = time.perf_counter() - tv
            if metrics["ndcg@10"] > best:
                best, bad, out.best_epoch = metrics["ndcg@10"], 0, epoch
                best_state = copy.deepcopy(net.state_dict())
            else:
                bad += 1
                stop = stop or bad >= c.patience
        out.train_log.append(entry)
        log.info(
            "%s epoch=%d %s",
            name,
            epoch,
            " ".join(f"{k}={v:.5g}" for k, v in entry.items() if k != "epoch"),
        )
        if stop:
            break
    if best_state is None:
        out.best_epoch = len(out.train_log)
    else:
        net.load_state_dict(best_state)
    return out


def next_item_metrics(
    validation: tuple[list[np.ndarray], np.ndarray],
    score_batches: ScoreBatches,
    n_items: int,
    info: DistInfo,
    device: torch.device,
    *,
    mask_history: bool = True,
) -> dict[str, float]:
    """Full-ranking HR@10 / NDCG@10 of the next item (this rank's share, summed over ranks).

    Args:
        validation: (item-index histories, next item of each).
        score_batches: scores of histories in batches (the model's scoring path).
        n_items: items in the catalogue.
        info: this rank's place among the ranks.
        device: where this rank scores.
        mask_history: rank the next item among the items outside the history (the next item
            itself stays rankable).
    """
    histories, targets = validation
    mine = info.share(len(histories))
    totals = np.zeros(3, dtype=np.float64)
    for rows, st in score_batches([histories[r] for r in mine], device):
        s = st.float().cpu().numpy()
        tgt = targets[mine[rows]]
        if mask_history:
            hs = [histories[r] for r in mine[rows]]
            lens = np.array([len(h) for h in hs], dtype=np.int64)
            flat = np.concatenate(hs) if hs else np.zeros(0, np.int64)
            owner = np.repeat(np.arange(len(hs)), lens)
            keep = (flat >= 0) & (flat < n_items) & (flat != np.repeat(tgt, lens))
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


def zero_unseen_ids(
    net: SequenceNet, seqs: Sequence[np.ndarray], n_items: int, device: torch.device
) -> None:
    """Zero the ID embedding of every item absent from `seqs` ("id+text": text alone speaks)."""
    import torch

    seen = np.zeros(n_items + 2, dtype=bool)
    for s in seqs:
        seen[s[(s >= 0) & (s < n_items)] + 1] = True
    with torch.no_grad():
        net.items.id_emb.weight[torch.from_numpy(~seen).to(device)] = 0.0
