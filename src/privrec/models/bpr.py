"""BPR-MF in its asymmetric form: the user vector is a normalised sum over the history.

Choice (b) of the model contract: instead of a free embedding per user, a user with history
weights h_j is

    u = (sum_j h_j)^-history_norm * sum_j h_j q_j

(FISM, Kabbur et al. 2013; NAIS), and item i scores u . p_i + b_i. The tables P (target items),
Q (history items) and b are trained with Bayesian Personalised Ranking (Rendle et al. 2009):
triples of a positive event (u, i) and a uniformly sampled item j the user never touched, with
loss -log sigmoid(x_ui - x_uj) + reg (|p_i|^2 + |p_j|^2 + |u|^2 + b_i^2 + b_j^2), Adam. While
training, the positive item i is left out of its own user's sum (as in FISM), so the model learns
to predict an item from the *other* items. An epoch visits every positive event once; a batch
holds all events of a random group of users (about `batch_size` events), so each history sum is
computed once per batch rather than once per triple (the cost is linear in the events).

Because the user vector is a function of the history only, a new user is scored exactly, and an
erased user's events stop influencing their own scores at once (their influence on P, Q and b goes
with the next retrain). Scoring needs numpy only; torch is imported by `fit` (the torch pieces:
`models.nn.fism`).

Attribution: u . p_i is linear in the history weights, so `contributions` gives each history
entry its exact share of a score (an empty history scores b_i), and the contract's `explain`
names the strongest of them.

Reproducible: one seed drives initialisation (torch.Generator) and sampling (numpy Generator).
Training runs on one torch thread by default: bit-identical for a seed, and on 2 shared cores
also the fastest for these small ops (with more threads the gradient sums are order-dependent).

Extension point (APR): `_extra_loss(params, batch, loss)` may return an extra term. The
tables reach the loss only through `pair_scores(params, batch)`, so an adversarial subclass can
compute d loss / d params, perturb the tables and score the same batch again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrec.core.rng import DEFAULT_SEED
from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import InputConfig, Recommender, register, seed_from
from privrec.models.nn.runtime import torch_threads
from privrec.privacy.ledger import PrivacyLedger

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch

    from privrec.models.nn.fism import Batch

log = logging.getLogger(__name__)


class BPRConfig(InputConfig):
    """BPR settings.

    Attributes:
        embedding_size: dimension of the item tables P and Q.
        epochs: passes over the positive events.
        learning_rate: Adam step size.
        reg: L2 weight on the embeddings and biases used in each batch.
        batch_size: (user, positive, negative) triples per step.
        history_norm: exponent of the history-size normalisation (0: plain sum, 1: mean).
        init_std: standard deviation of the initial embeddings.
        num_threads: torch CPU threads while training (1 is bit-reproducible and, for these small
            ops, usually fastest; more threads make the gradient sums order-dependent).
        seed: seeds initialisation and sampling; `fit(rng=...)` overrides it.
        binary: histories as 0/1 (True) or event weights / ratings (False).
    """

    embedding_size: int = Field(default=64, ge=1)
    epochs: int = Field(default=20, ge=1)
    learning_rate: float = Field(default=0.01, gt=0.0)
    reg: float = Field(default=1e-3, ge=0.0)
    batch_size: int = Field(default=4096, ge=1)
    history_norm: float = Field(default=0.5, ge=0.0, le=1.0)
    init_std: float = Field(default=0.01, gt=0.0)
    num_threads: int = Field(default=1, ge=1)
    seed: int = DEFAULT_SEED
    binary: bool = True


@register
class BPR(Recommender):
    """Asymmetric BPR-MF (FISM-style user = normalised sum of history embeddings)."""

    name = "bpr"
    Config = BPRConfig
    config: BPRConfig

    def __init__(self, config: BPRConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        d = self.config.embedding_size
        self.target = np.zeros((0, d), np.float32)  # P
        self.context = np.zeros((0, d), np.float32)  # Q
        self.bias = np.zeros(0, np.float32)  # b
        self.train_losses: list[float] = []
        self._epoch = 0

    # ---- training --------------------------------------------------------------------------
    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> BPR:
        """Train P, Q, b by BPR on `input_matrix(dataset)` (no DP release: `ledger` is unused)."""
        return self.fit_matrix(self.input_matrix(dataset), rng=rng)

    def fit_matrix(self, x: sp.csr_matrix, *, rng: int | np.random.Generator | None = None) -> BPR:
        """Train on a ready user x item matrix (float32 CSR)."""
        import torch

        from privrec.models.nn.fism import init_tables

        c = self.config
        x = self._clean_matrix(x)
        n_items = x.shape[1]
        seed = seed_from(rng, c.seed)
        gen = np.random.default_rng(seed)
        with torch_threads(c.num_threads):
            params = init_tables(n_items, c.embedding_size, c.init_std, seed)
            opt = torch.optim.Adam(list(params.values()), lr=c.learning_rate)
            data = _TrainData(x)
            self.train_losses = []
            for epoch in range(c.epochs):
                self._epoch = epoch  # read by subclasses' _extra_loss (APR's adv_start_epoch)
                total = 0.0
                for batch_users in data.user_batches(c.batch_size, gen):
                    batch = self._make_batch(data, batch_users, gen)
                    loss = self.loss(params, batch)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(batch.pos)
                self.train_losses.append(total / max(x.nnz, 1))
                log.debug("bpr epoch=%d loss=%.5f", epoch, self.train_losses[-1])
            self.target = params["target"].detach().numpy().astype(np.float32, copy=True)
            self.context = params["context"].detach().numpy().astype(np.float32, copy=True)
            self.bias = params["bias"].detach().numpy().astype(np.float32, copy=True)
        self._mark_fitted(n_items)
        return self

    def _clean_matrix(self, x: sp.csr_matrix) -> sp.csr_matrix:
        h = sp.csr_matrix(x, dtype=np.float32, copy=True)
        h.sum_duplicates()
        h.eliminate_zeros()
        if self.config.binary:
            h.data[:] = 1.0
        h.sort_indices()
        return h

    @staticmethod
    def _make_batch(data: _TrainData, users: np.ndarray, gen: np.random.Generator) -> Batch:
        """All positive events of `users` as triples, with negatives drawn now."""
        import torch

        from privrec.models.nn.fism import Batch

        x = data.x
        starts = x.indptr[users]
        lengths = x.indptr[users + 1] - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        events = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(
            offsets - starts, lengths
        )
        triple_user = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
        pos = x.indices[events].astype(np.int64)
        neg = data.sample_negatives(users[triple_user], gen)
        weights = torch.from_numpy(x.data[events].astype(np.float32))
        pos_t = torch.from_numpy(pos)
        # the batch holds every event of its users, so the histories are the positives themselves
        return Batch(
            pos=pos_t,
            neg=torch.from_numpy(neg),
            pos_weight=weights,
            triple_user=torch.from_numpy(triple_user),
            hist_items=pos_t,
            hist_weights=weights,
            hist_offsets=torch.from_numpy(offsets),
            hist_total=torch.from_numpy(data.row_total[users]),
        )

    # ---- the loss (the tables reach it only through pair_scores) -------------------------------
    def user_vectors_torch(self, params: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """Each triple's user vector from their history minus the positive item."""
        from privrec.models.nn.fism import history_user_vectors

        return history_user_vectors(params, batch, self.config.history_norm)

    def pair_scores(
        self, params: dict[str, torch.Tensor], batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_ui, x_uj, user vectors) for a batch, from the given (possibly perturbed) tables."""
        x_pos, x_neg, u, _ = self._forward(params, batch)
        return x_pos, x_neg, u

    def _forward(
        self, params: dict[str, torch.Tensor], batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores, user vectors and the batch's L2 term."""
        u = self.user_vectors_torch(params, batch)
        x_pos, x_neg, l2 = self.scores_for(u, params, batch)
        return x_pos, x_neg, u, l2

    @staticmethod
    def scores_for(
        u: torch.Tensor, params: dict[str, torch.Tensor], batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_ui, x_uj, the batch's L2 term) for given user vectors (one per triple)."""
        from privrec.models.nn.fism import pair_scores

        return pair_scores(u, params, batch)

    def loss(self, params: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """BPR loss plus L2 on the batch's embeddings, plus `_extra_loss` when it gives one."""
        import torch.nn.functional as F

        x_pos, x_neg, _, l2 = self._forward(params, batch)
        base = -F.logsigmoid(x_pos - x_neg).mean()
        loss = base + self.config.reg * l2
        extra = self._extra_loss(params, batch, base)
        return loss if extra is None else loss + extra

    def _extra_loss(
        self, params: dict[str, torch.Tensor], batch: Batch, bpr_loss: torch.Tensor
    ) -> torch.Tensor | None:
        """Hook for subclasses (APR's adversarial term); plain BPR adds nothing."""
        return None

    # ---- scoring ---------------------------------------------------------------------------------
    def _normalised(self, h: sp.csr_matrix) -> sp.csr_matrix:
        total = np.asarray(h.sum(axis=1), dtype=np.float64).ravel()
        scale = np.zeros_like(total)
        pos = total > 0
        scale[pos] = total[pos] ** -self.config.history_norm
        return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ h)

    def user_vectors(self, histories: sp.csr_matrix) -> np.ndarray:
        """u for each history row (float32)."""
        h = self._history_input(histories)
        return np.asarray(self._normalised(h) @ self.context, dtype=np.float32)

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """u . p_i + b_i for each history row."""
        return self.user_vectors(histories) @ self.target.T + self.bias[None, :]

    def contributions(self, history: UserHistory, items: np.ndarray) -> np.ndarray:
        """|h|^-a h_j q_j . p_i per history entry j: each row sums to item i's score minus b_i
        (what an empty history scores), since u . p_i is linear in the history."""
        self._check_fitted()
        targets = np.asarray(items, dtype=np.int64)
        it, w, pos = self.history_entries(history)
        out = np.zeros((len(targets), len(history)), np.float64)
        if not len(it) or not len(targets):
            return out
        # the scaled weights as the scoring path has them (float32), so the shares add up to it
        scale = np.float32(float(w.sum()) ** -self.config.history_norm)
        hw = (scale * w.astype(np.float32)).astype(np.float64)
        dots = self.context[it].astype(np.float64) @ self.target[targets].astype(np.float64).T
        out[:, pos] = (dots * hw[:, None]).T
        return out

    # ---- persistence -----------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {"target": self.target, "context": self.context, "bias": self.bias}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.target = arrays["target"].astype(np.float32)
        self.context = arrays["context"].astype(np.float32)
        self.bias = arrays["bias"].astype(np.float32)
        self.train_losses = [float(v) for v in meta.get("train_losses", [])]

    def _meta(self) -> dict[str, Any]:
        return {"train_losses": self.train_losses}


class _TrainData:
    """The training matrix with what sampling needs: event users and sorted (user, item) keys."""

    def __init__(self, x: sp.csr_matrix) -> None:
        self.x = x
        self.users = np.repeat(np.arange(x.shape[0], dtype=np.int64), np.diff(x.indptr))
        # x has sorted indices, so these keys are sorted: membership is one searchsorted
        self.keys = self.users * x.shape[1] + x.indices.astype(np.int64)
        self.row_total = np.asarray(x.sum(axis=1), dtype=np.float32).ravel()
        self.active = np.nonzero(np.diff(x.indptr))[0]

    def user_batches(self, batch_size: int, gen: np.random.Generator) -> Iterator[np.ndarray]:
        """Users in a random order, grouped so each group holds about `batch_size` events.

        A group starts where the running event count passes a multiple of batch_size, so a user
        with more events than batch_size is a group of their own.
        """
        users = gen.permutation(self.active)
        lengths = np.diff(self.x.indptr)[users]
        group = (np.cumsum(lengths) - lengths) // batch_size
        cuts = np.nonzero(np.diff(group))[0] + 1
        yield from np.split(users, cuts)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each (user, item) pair is in the training matrix."""
        key = users.astype(np.int64) * self.x.shape[1] + items
        pos = np.searchsorted(self.keys, key)
        ok = pos < len(self.keys)
        out = np.zeros(len(key), dtype=bool)
        out[ok] = self.keys[pos[ok]] == key[ok]
        return out

    def sample_negatives(
        self, users: np.ndarray, gen: np.random.Generator, tries: int = 20
    ) -> np.ndarray:
        """One item per user outside their history, uniformly, by rejection.

        After `tries` rounds a remaining collision is kept; that only happens for a user who
        touched nearly every item.
        """
        n = self.x.shape[1]
        neg = gen.integers(0, n, size=len(users))
        for _ in range(tries):
            bad = self.contains(users, neg)
            if not bad.any():
                break
            neg[bad] = gen.integers(0, n, size=int(bad.sum()))
        return neg.astype(np.int64)
