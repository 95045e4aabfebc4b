"""DP-BPR: the FISM-style BPR of `models.bpr` trained with DP-SGD (Opacus), user-level.

One training example is one *user*: their loss is the mean BPR loss over `pairs_per_user`
(positive, negative) pairs drawn from their history at every step, with the user vector the
normalised sum of their other history items (as in `bpr`). Opacus computes per-example (= per
user) gradients, clips each to `max_grad_norm`, adds Gaussian noise and samples users by
Poisson sampling at rate `sample_rate`; its accountant (RDP or PRV) chooses the noise multiplier
for the target (epsilon, delta) over `epochs` passes. Because the example is the user's whole
history, the per-example guarantee is a user-level guarantee (anchors.md).

The network is `nn.fism.FISMUserLoss`; the learned tables are those of `BPR`, so scoring,
explanations and persistence are inherited. Histories longer than `max_history` are cut to their
most recent items while training (scoring uses the whole history).

With epsilon = inf the same per-user loss is trained with plain Adam (no clipping, no noise).

Privacy: unit one user, adjacency add/remove one user. The number of users is never read exactly
into the model: DP-SGD's gradient sum is divided by sample_rate x a noisy user count released
with the popularity prior; the steps (epochs x round(1 / sample_rate)) come from the config. Noise
and Poisson sampling come from `privacy.noise` (OS entropy; see `dp.opacus`); training losses are
neither kept nor saved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrec.data.dataset import InteractionDataset
from privrec.models.base import register
from privrec.models.bpr import BPR, BPRConfig
from privrec.models.dp.opacus import (
    PerUserLoss,
    PoissonBatches,
    make_private,
    noise_only_step,
    quiet_hooks,
    steps_per_epoch,
    unwrap,
)
from privrec.models.dp.release import (
    COUNT_SHARE,
    DEFAULT_EXPECTED_USERS,
    DPArtifact,
    noisy_item_counts,
    noisy_user_count,
    start_private_fit,
    warn_unless_public_order,
)
from privrec.models.nn.runtime import torch_threads
from privrec.privacy.dp import (
    Release,
    calibrate_gaussians,
    composed_spec,
    dpsgd_epsilon,
    dpsgd_noise_multiplier,
    dpsgd_spec,
    gaussian_sigma,
    gaussian_spec,
    split_ratios,
)
from privrec.privacy.guarantee import ADJACENCY
from privrec.privacy.ledger import PrivacyLedger

log = logging.getLogger(__name__)


class DPBPRConfig(BPRConfig):
    """DP-BPR settings (plus those of `BPRConfig`; batch_size is unused: Poisson sampling decides).

    Attributes:
        epsilon: user-level budget of the whole training run (inf: no DP).
        delta: None means 1 / (10 x expected_users).
        expected_users: public, configured number of users delta is set from (never counted).
        max_grad_norm: per-user gradient clipping bound.
        sample_rate: Poisson sampling probability of each user per step (round(1 / q) steps per
            epoch).
        pairs_per_user: (positive, negative) pairs per user per step.
        max_history: most recent history items used while training.
        accountant: Opacus accountant, "rdp" or "prv".
        optimizer: "sgd" (with `momentum`; the default, robust to DP noise) or "adam".
        momentum: SGD momentum.
        grad_sample_mode: Opacus' per-user gradient clipping: "ghost" (norms only, memory-light)
            or "hooks" (materialised per-user gradients).
        popularity_prior: the item biases are fixed to prior_scale * log(1 + popularity), the
            popularity released first with a share `prior_share` of (epsilon, delta) (Gaussian
            noise on the column sums of unit-norm user rows); DP-SGD gets the rest, and the two
            compose by basic composition. Without it the biases are trained by DP-SGD. Either way
            a noisy user count (for DP-SGD's expected batch size) is part of that release.
    """

    epsilon: float = Field(default=8.0, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    expected_users: int = Field(default=DEFAULT_EXPECTED_USERS, ge=1)
    max_grad_norm: float = Field(default=0.1, gt=0.0)
    sample_rate: float = Field(default=0.5, gt=0.0, le=1.0)
    pairs_per_user: int = Field(default=16, ge=1)
    max_history: int = Field(default=200, ge=1)
    accountant: str = Field(default="rdp", pattern="^(rdp|prv)$")
    optimizer: str = Field(default="sgd", pattern="^(sgd|adam)$")
    grad_sample_mode: str = Field(default="ghost", pattern="^(ghost|hooks)$")
    popularity_prior: bool = True
    prior_share: float = Field(default=0.5, gt=0.0, lt=1.0)
    prior_scale: float = Field(default=1.0, ge=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    epochs: int = Field(default=20, ge=1)
    learning_rate: float = Field(default=0.5, gt=0.0)
    embedding_size: int = Field(default=8, ge=1)
    reg: float = Field(default=0.0, ge=0.0)


def _padded_histories(
    x: sp.csr_matrix, max_history: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items, weights, lengths): each user's last `max_history` items, padded with n_items / 0."""
    n_users, n_items = x.shape
    lengths = np.minimum(np.diff(x.indptr), max_history)
    width = max(int(lengths.max()) if n_users else 1, 1)
    items = np.full((n_users, width), n_items, dtype=np.int64)
    weights = np.zeros((n_users, width), dtype=np.float32)
    for u in range(n_users):  # once per fit; histories are short
        a, b = x.indptr[u], x.indptr[u + 1]
        idx, w = x.indices[a:b], x.data[a:b]
        if b - a > max_history:  # keep the strongest (then highest index) items: CSR has no order
            keep = np.lexsort((idx, w))[-max_history:]
            idx, w = idx[keep], w[keep]
        items[u, : idx.size] = idx
        weights[u, : idx.size] = w
    return items, weights, lengths.astype(np.int64)


@dataclass(frozen=True)
class _Plan:
    """A private fit's noise multipliers and release, fixed before any data is read."""

    z_count: float
    z_pop: float | None
    z_sgd: float
    steps_per_epoch: int
    release: Release


@register
class DPBPR(DPArtifact, BPR):
    """BPR trained with user-level DP-SGD (see the module docstring)."""

    name = "dp_bpr"
    Config = DPBPRConfig
    config: DPBPRConfig

    def __init__(self, config: DPBPRConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.noise_multiplier = 0.0
        self.steps = 0
        self.release: Release | None = None  # what the ledger recorded (in memory only)

    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        noise_seed: int | None = None,
    ) -> DPBPR:
        """Train with DP-SGD on `input_matrix(dataset)` (the ledger is charged before training).

        Args:
            dataset: the training interactions.
            rng: seeds initialisation and negative sampling (never the noise or the sampling).
            ledger: charged before any noise is drawn.
            noise_seed: tests and benchmarks only: reproducible noise and Poisson sampling, and
                then the model is no DP release (`privacy` None, `"reproducible_noise": true`).
        """
        warn_unless_public_order(dataset, self.name)
        return self.fit_matrix(
            self.input_matrix(dataset), rng=rng, ledger=ledger, noise_seed=noise_seed
        )

    def fit_matrix(
        self,
        x: sp.csr_matrix,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        noise_seed: int | None = None,
    ) -> DPBPR:
        """Train on a ready user x item matrix (see `fit`)."""
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from privrec.models.nn.fism import FISMUserLoss

        c = self.config
        x = self._clean_matrix(x)
        n_users, n_items = x.shape
        run = start_private_fit(
            epsilon=c.epsilon,
            delta=c.delta,
            expected_users=c.expected_users,
            rng=rng,
            seed=c.seed,
            noise_seed=noise_seed,
        )
        seed, delta = run.seed, run.delta
        gen = np.random.default_rng(seed)  # negatives only: not noise
        users = np.nonzero(np.diff(x.indptr))[0]
        items, weights, lengths = _padded_histories(x, c.max_history)
        # sorted (user, item) keys of the training matrix: negatives are sampled outside them
        keys = (
            np.repeat(np.arange(n_users, dtype=np.int64), np.diff(x.indptr)) * n_items + x.indices
        )
        plan = self._plan(run.epsilon, delta) if run.private else None
        with torch_threads(c.num_threads):
            torch.manual_seed(seed)
            module: Any = FISMUserLoss(
                n_items, c.embedding_size, c.init_std, c.history_norm, c.reg, seed
            )
            if c.popularity_prior:
                module.bias.weight.requires_grad_(False)  # set from the (DP) popularity below
            trainable = [p for p in module.parameters() if p.requires_grad]
            optimizer: torch.optim.Optimizer
            if c.optimizer == "adam":
                optimizer = torch.optim.Adam(trainable, lr=c.learning_rate)
            else:
                # SGD: Adam's per-coordinate scaling blows the DP noise of untouched rows up to
                # full steps
                optimizer = torch.optim.SGD(trainable, lr=c.learning_rate, momentum=c.momentum)
            user_t = torch.from_numpy(users.astype(np.int64))
            criterion: Any = PerUserLoss()
            loader: Any
            if plan is not None:
                run.charge(ledger, plan.release, self.name)  # before any noise is drawn
                n_hat = noisy_user_count(x, plan.z_count, run.noise)
                module, optimizer, criterion = make_private(
                    module,
                    optimizer,
                    noise_multiplier=plan.z_sgd,
                    max_grad_norm=c.max_grad_norm,
                    expected_batch_size=c.sample_rate * n_hat,
                    grad_sample_mode=c.grad_sample_mode,
                    noise=run.noise,
                )
                self.noise_multiplier = plan.z_sgd
                loader = PoissonBatches(
                    (user_t,),
                    sample_rate=c.sample_rate,
                    steps=plan.steps_per_epoch,
                    noise=run.noise,
                )
            else:
                loader = DataLoader(
                    TensorDataset(user_t),
                    batch_size=max(1, round(c.sample_rate * users.size)),
                    shuffle=True,
                    generator=torch.Generator().manual_seed(seed),
                )
            if c.popularity_prior:
                z_pop = plan.z_pop if plan is not None else None
                counts = noisy_item_counts(x, z_pop, run.noise)
                with torch.no_grad():
                    unwrap(module).bias.weight[:n_items, 0] = torch.from_numpy(
                        c.prior_scale * np.log1p(np.maximum(counts, 0.0))
                    ).float()
            # no losses are kept from a private fit: they are exact statistics of the data
            self.train_losses = []
            self.steps = 0
            with quiet_hooks():
                for _epoch in range(c.epochs):
                    total, count = 0.0, 0
                    for (batch_users,) in loader:
                        self.steps += 1
                        if batch_users.numel() == 0:
                            if plan is not None:
                                noise_only_step(optimizer, run.noise)
                            continue
                        b = batch_users.numpy()
                        inputs = self._step_inputs(b, items, weights, lengths, keys, n_items, gen)
                        losses = module(*inputs)
                        loss = criterion(losses, None)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        if plan is None:
                            total += float(loss.detach()) * b.size
                            count += b.size
                    if plan is None:
                        self.train_losses.append(total / max(count, 1))
            base = unwrap(module)
            self.target = (
                base.target.weight.detach()[:n_items].numpy().astype(np.float32, copy=True)
            )
            self.context = (
                base.context.weight.detach()[:n_items].numpy().astype(np.float32, copy=True)
            )
            self.bias = base.bias.weight.detach()[:n_items, 0].numpy().astype(np.float32, copy=True)
        run.record(self, plan.release if plan is not None else None)
        self._mark_fitted(n_items)
        return self

    def _plan(self, epsilon: float, delta: float) -> _Plan:
        """Noise multipliers and the release, fixed from the config alone (before any data).

        The Gaussian part (the noisy user count for the expected batch size, and the popularity
        prior if any) gets `prior_share` (or COUNT_SHARE without a prior) of (epsilon, delta),
        calibrated together by the PLD accountant; DP-SGD gets the rest (basic composition).
        """
        c = self.config
        share = c.prior_share if c.popularity_prior else COUNT_SHARE
        eps_g, delta_g = share * epsilon, share * delta
        if c.popularity_prior:
            z_count, z_pop = calibrate_gaussians(
                split_ratios([COUNT_SHARE, 1 - COUNT_SHARE]), eps_g, delta_g
            )
        else:
            z_count, z_pop = gaussian_sigma(eps_g, delta_g), None
        eps_sgd, delta_sgd = (1 - share) * epsilon, (1 - share) * delta
        per_epoch = steps_per_epoch(c.sample_rate)
        steps = c.epochs * per_epoch
        z_sgd = dpsgd_noise_multiplier(
            eps_sgd, delta_sgd, sample_rate=c.sample_rate, steps=steps, accountant=c.accountant
        )
        gauss = [gaussian_spec(z_count)] + ([gaussian_spec(z_pop)] if z_pop is not None else [])
        release = Release(
            name=f"{self.name}:count+{'popularity+' if z_pop is not None else ''}dp-sgd",
            epsilon=epsilon,
            delta=delta,
            mechanism="gaussian counts + dp-sgd (gaussian, poisson sampling, per-user clipping)",
            accountant=f"pld (dp-accounting) + {c.accountant} (opacus), basic composition",
            details={
                "noise_multiplier": z_sgd,
                "max_grad_norm": c.max_grad_norm,
                "sample_rate": c.sample_rate,
                "steps": steps,
                "dpsgd_epsilon": eps_sgd,
                "dpsgd_delta": delta_sgd,
                "epsilon_accounted": dpsgd_epsilon(
                    z_sgd,
                    delta_sgd,
                    sample_rate=c.sample_rate,
                    steps=steps,
                    accountant=c.accountant,
                ),
                "count_noise_multiplier": z_count,
                "popularity_noise_multiplier": z_pop,
                "gaussian_epsilon": eps_g,
                "gaussian_delta": delta_g,
                "expected_batch": "sample_rate x noisy user count",
                "example": "one user (all their events)",
                "unit": "user",
                "adjacency": ADJACENCY,
                "expected_users": c.expected_users,
            },
            event=composed_spec([*gauss, dpsgd_spec(z_sgd, c.sample_rate, steps)]),
        )
        return _Plan(z_count, z_pop, z_sgd, per_epoch, release)

    def _step_inputs(
        self,
        b: np.ndarray,
        items: np.ndarray,
        weights: np.ndarray,
        lengths: np.ndarray,
        keys: np.ndarray,
        n_items: int,
        gen: np.random.Generator,
    ) -> tuple[Any, ...]:
        """Histories of the batch users, `pairs_per_user` positive slots and sampled negatives."""
        import torch

        s = self.config.pairs_per_user
        ln = lengths[b]
        hist = items[b][:, : max(int(ln.max()), 1)]
        hw = weights[b][:, : hist.shape[1]]
        pos_slot = (gen.random((b.size, s)) * np.maximum(ln, 1)[:, None]).astype(np.int64)
        mask = np.ones((b.size, s), dtype=np.float32)
        mask[ln == 0] = 0.0
        neg = gen.integers(0, n_items, size=(b.size, s))
        for _ in range(20):  # rejection: negatives outside the user's (whole) history
            want = b[:, None].astype(np.int64) * n_items + neg
            pos = np.searchsorted(keys, want)
            bad = (pos < keys.size) & (keys[np.minimum(pos, keys.size - 1)] == want)
            if not bad.any():
                break
            neg[bad] = gen.integers(0, n_items, size=int(bad.sum()))
        # contiguous: Opacus' ghost-clipping norm sampler views the index tensors flat
        return tuple(
            torch.from_numpy(np.ascontiguousarray(a))
            for a in (hist, hw, pos_slot, neg.astype(np.int64), mask)
        )

    def _meta(self) -> dict[str, Any]:
        # no training losses: exact statistics of the data (BPR saves them)
        return {
            "noise_multiplier": self.noise_multiplier,
            "steps": self.steps,
            **self._marker_meta(),
        }

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        self.train_losses = []
        self.noise_multiplier = float(meta.get("noise_multiplier", 0.0))
        self.steps = int(meta.get("steps", 0))
        self._read_marker(meta)
