"""The sequential transformers' Recommender (SASRec, BERT4Rec): fitting, scoring, persistence.

A user is their *ordered* history (oldest first), so these models read `dataset.sequences()` to
train and a UserHistory's `items` (chronological) to score. The pieces live beside this module:
`sequential_config` (settings, item text, the network), `sequential_data` (windows, padding,
batches, negatives) and `sequential_train` (the training loop, also under DDP); the torch network
itself is `models.nn.sequence`.

Order through the CSR contract: `score_matrix` receives CSR rows, which have no order. These
models therefore write order into the values: `input_matrix` and `history_matrix` put 1 + the
position of an item's LAST occurrence in the history, and `score_matrix` orders each row's
items by value (ties: by item index; a plain 0/1 matrix is read in item-index order). Repeats
collapse to their last occurrence there; `score(history)` and `score_sequences` keep them. For
evaluation with exact sequences use `sequence_scorer(model, dataset)` as the `scorer=` hook.

Explanations are by occlusion (a history item's share = the score drop when all its occurrences
go): the network is no sum over history entries, so `contributions` stays None.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

from privrec.core.errors import ConfigError
from privrec.core.types import EVENT_CODE, Explanation, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import ModelConfig, Recommender, history_explanation, seed_from
from privrec.models.imbalance import anchors_of, resampled_batches, type_weight_table
from privrec.models.nn.runtime import DistInfo, resolve_device, torch_threads
from privrec.models.nn.tokens import PAD
from privrec.models.sequential_config import (
    SequentialConfig,
    build_sequence_net,
    item_text_matrix,
)
from privrec.models.sequential_data import (
    TrainBatch,
    order_matrix,
    pad_left,
    sample_negatives,
    type_sequences,
    validation_pairs,
)
from privrec.models.sequential_train import next_item_metrics, train_epochs, zero_unseen_ids
from privrec.privacy.ledger import PrivacyLedger

if TYPE_CHECKING:
    import torch

    from privrec.models.nn.sequence import SequenceNet

# SequentialConfig, build_sequence_net and pad_left are used here and stay importable from here:
# DP-SASRec and its tests import them from this module.
__all__ = [
    "SequentialConfig",
    "SequentialRecommender",
    "build_sequence_net",
    "pad_left",
    "sequence_scorer",
]


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
        # purchase-oriented training only: event types and anchored examples of the running fit
        self._fit_types: list[np.ndarray] | None = None
        self._anchors: list[tuple[np.ndarray, np.ndarray]] | None = None

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
            validation=validation_pairs(dataset, validation) if validation is not None else None,
            item_text_embeddings=item_text_embeddings,
            event_types=type_sequences(dataset) if self.config.by_event_type else None,
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
        event_types: Sequence[np.ndarray] | None = None,
    ) -> SequentialRecommender:
        """Train on item-index sequences (oldest first); `validation` = (histories, next items).

        `event_types` (type codes aligned with `sequences`) is needed, and only read, when
        `target_weights` or `resample_ratio` is set (purchase-oriented training).
        """
        import torch

        c = self.config
        seed = seed_from(rng, c.seed)
        self._fit_types = self._checked_types(sequences, event_types)
        text = item_text_matrix(c, item_text_embeddings, n_items)
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
                zero_unseen_ids(net, seqs, n_items, device)
        net.eval()
        self.net = net
        self._table = None
        self._fit_types = None
        self.train_seconds = time.perf_counter() - t0
        self._mark_fitted(n_items)
        return self

    def _checked_types(
        self, sequences: Sequence[np.ndarray], event_types: Sequence[np.ndarray] | None
    ) -> list[np.ndarray] | None:
        """The event types training reads (None unless purchase-oriented training is on)."""
        c = self.config
        if not c.by_event_type:
            return None
        field = "target_weights" if c.target_weights is not None else "resample_ratio"
        if event_types is None:
            raise ConfigError(
                f"{field}: needs each training event's type; fit on an InteractionDataset "
                "or pass fit_sequences(event_types=...)"
            )
        types = [np.asarray(t, dtype=np.int64) for t in event_types]
        if len(types) != len(sequences) or any(
            len(t) != len(s) for t, s in zip(types, sequences, strict=False)
        ):
            raise ConfigError(f"{field}: event_types must align with the sequences, one per item")
        return types

    def _make_batches(
        self,
        seqs: list[np.ndarray],
        n_items: int,
        gen: np.random.Generator,
        types: list[np.ndarray] | None = None,
    ) -> Iterator[TrainBatch]:
        """One epoch of global batches (subclasses define the task); with `types`, each batch
        also carries its targets' event types (`TrainBatch.target_types`)."""
        raise NotImplementedError

    def _anchored(self, prefix: np.ndarray, item: int) -> tuple[np.ndarray, np.ndarray]:
        """(input tokens, target tokens) of one example predicting `item` after `prefix` only."""
        raise NotImplementedError

    def _epoch_batches(
        self, seqs: list[np.ndarray], n_items: int, gen: np.random.Generator
    ) -> Iterable[TrainBatch]:
        """One epoch: `_make_batches`, with target weights and resampling when configured."""
        types = self._fit_types
        if types is None:  # the default path: exactly the batches (and random draws) as before
            return self._make_batches(seqs, n_items, gen)
        return self._imbalance_batches(seqs, types, n_items, gen)

    def _imbalance_batches(
        self,
        seqs: list[np.ndarray],
        types: list[np.ndarray],
        n_items: int,
        gen: np.random.Generator,
    ) -> Iterator[TrainBatch]:
        c = self.config
        batches: Iterable[TrainBatch] = self._make_batches(seqs, n_items, gen, types)
        if c.resample_ratio is not None:
            code = EVENT_CODE[c.resample_type]
            if self._anchors is None:
                self._anchors = anchors_of(seqs, types, code, self._anchored)

            def make(examples: list[tuple[np.ndarray, np.ndarray]]) -> TrainBatch:
                seq = pad_left([e[0] for e in examples])
                target = pad_left([e[1] for e in examples], seq.shape[1])
                neg = sample_negatives(target, n_items, c.loss, c.n_negatives, gen)
                return TrainBatch(seq, target, neg, np.where(target != PAD, code + 1, PAD))

            batches = resampled_batches(  # type: ignore[assignment]
                list(batches),
                lambda b: b.target_types,  # type: ignore[attr-defined]
                self._anchors,
                code=code,
                ratio=c.resample_ratio,
                batch_size=c.batch_size,
                gen=gen,
                make=make,
            )
        table = type_weight_table(c.target_weights) if c.target_weights is not None else None
        for b in batches:
            if table is not None and b.target_types is not None:
                tt = b.target_types
                b.weights = np.where(tt != PAD, table[np.maximum(tt - 1, 0)], 0.0).astype(
                    np.float32
                )
            yield b

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
        gen = np.random.default_rng(seed)

        def validate() -> dict[str, float]:
            assert validation is not None
            # score with the weights being trained (the model's own scoring path)
            self.net, self.n_items, self._table = net, n_items, None
            return next_item_metrics(
                validation,
                self._score_batches,
                n_items,
                info,
                device,
                mask_history=self.config.eval_mask_history,
            )

        self._anchors = None
        outcome = train_epochs(
            net,
            lambda: self._epoch_batches(seqs, n_items, gen),
            self.config,
            device,
            info,
            t0,
            validate=validate if validation is not None else None,
            name=self.name,
        )
        self.train_log, self.best_epoch = outcome.train_log, outcome.best_epoch

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


def sequence_scorer(
    model: SequentialRecommender, dataset: InteractionDataset
) -> Callable[[np.ndarray], np.ndarray]:
    """A `scorer=` for evaluation protocols: user indices -> scores from their ordered history."""
    seqs = dataset.sequences()

    def scorer(users: np.ndarray) -> np.ndarray:
        return model.score_sequences([seqs[int(u)] for u in users])

    return scorer
