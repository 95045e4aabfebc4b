"""DP-SASRec: SASRec trained with user-level DP-SGD (Opacus).

One training example is one user: their latest window of `max_len + 1` items (the published
SASRec's training data, `long_sequences="last"`), with the next-item binary cross-entropy loss
(one sampled negative per position) averaged over the window. Opacus samples users by Poisson
sampling at `sample_rate`, clips each user's gradient to `max_grad_norm` and adds Gaussian noise
whose multiplier its accountant (RDP or PRV) sets for the target (epsilon, delta) over `epochs`.
Per-example DP is user-level DP here because the example is the user's whole (trained) history.

To let Opacus compute per-user gradients, the network's modules are called batch-first and each
once per step (`nn.sequence.PerUserNextItemLoss`): the input, target and negative tokens go
through the item embedding in one call, and the position embedding gets a (batch, length) index.
The trained network is the SASRec
network, so scoring, explanations and persistence are SASRec's. Only the "bce" loss is
supported; there is no early stopping on validation data (it would be a further use of private
data).

Item vectors (`item_repr`): "id" learns an embedding per item (most of the parameters that take
the noise); "text" replaces that table by FROZEN public item text vectors (MiniLM of the
catalogue text, a buffer: never a parameter, so it gets neither gradient nor noise) through a
small trainable linear adaptor (t -> embedding_size), tied for input and output (scores =
sequence state . adapted item vectors). Only the adaptor, the position table and the
transformer are trained, so with 1 block and 1 head far fewer parameters share the noise. The
text vectors are given to `fit`, read from `item_text_embeddings`, or else encoded from the
dataset's item text with the content model's encoder (`text_cache_dir`: its cache). "id+text"
is refused: it zeroes the ID rows of items absent from training, a data-dependent step.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, model_validator

from privrec.data.dataset import InteractionDataset
from privrec.models.base import register
from privrec.models.dp.opacus import (
    PerUserLoss,
    PoissonBatches,
    make_private,
    noise_only_step,
    quiet_hooks,
    steps_per_epoch,
)
from privrec.models.dp.release import (
    COUNT_SHARE,
    DEFAULT_EXPECTED_USERS,
    DPArtifact,
    PrivateFit,
    start_private_fit,
    warn_unless_public_order,
)
from privrec.models.nn.runtime import DistInfo
from privrec.models.nn.tokens import PAD
from privrec.models.sasrec import SASRec, SASRecConfig
from privrec.models.sequential import pad_left
from privrec.privacy.dp import (
    GaussianMechanism,
    Release,
    composed_spec,
    dpsgd_epsilon,
    dpsgd_noise_multiplier,
    dpsgd_spec,
    gaussian_sigma,
    gaussian_spec,
)
from privrec.privacy.guarantee import ADJACENCY
from privrec.privacy.ledger import PrivacyLedger

if TYPE_CHECKING:
    import torch

    from privrec.models.nn.sequence import SequenceNet


class DPSASRecConfig(SASRecConfig):
    """DP-SASRec settings (plus SASRec's; loss must be "bce", item_repr "id").

    Attributes:
        epsilon: user-level budget of the whole training run (inf: no DP, same per-user loss).
        delta: None means 1 / (10 x expected_users).
        expected_users: public, configured number of users delta is set from (never counted).
        max_grad_norm: per-user gradient clipping bound.
        sample_rate: Poisson sampling probability of each user per step (round(1 / q) steps per
            epoch).
        accountant: Opacus accountant, "rdp" or "prv".
        grad_sample_mode: "hooks" (per-user gradients materialised) or "ghost" (norms only).
        item_repr: "id" (learned table) or "text" (frozen public text vectors + adaptor).
        text_cache_dir: embedding cache of the text encoder when "text" vectors are encoded
            from the dataset (None: the content model's default cache).
    """

    epsilon: float = Field(default=8.0, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    expected_users: int = Field(default=DEFAULT_EXPECTED_USERS, ge=1)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    sample_rate: float = Field(default=0.05, gt=0.0, le=1.0)
    accountant: str = Field(default="rdp", pattern="^(rdp|prv)$")
    grad_sample_mode: str = Field(default="hooks", pattern="^(ghost|hooks)$")
    loss: str = "bce"  # type: ignore[assignment]
    epochs: int = Field(default=10, ge=1)
    embedding_size: int = Field(default=32, ge=1)
    num_blocks: int = Field(default=1, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    learning_rate: float = Field(default=1e-3, gt=0.0)
    text_cache_dir: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> DPSASRecConfig:
        if self.loss != "bce":
            raise ValueError(
                "loss: dp_sasrec supports 'bce' only (per-user losses with per-row negatives)"
            )
        if self.item_repr not in ("id", "text"):
            raise ValueError(
                "item_repr: dp_sasrec supports 'id' or 'text' ('id+text' zeroes the ID rows of "
                "items absent from the private training data, a data-dependent step)"
            )
        if self.item_repr == "text" and self.text_adaptor != "linear":
            raise ValueError("text_adaptor: dp_sasrec supports 'linear' only")
        if self.long_sequences != "last":
            raise ValueError(
                "long_sequences: dp_sasrec trains on each user's last window only "
                "(one example per user)"
            )
        if self.adv_eps != 0.0:
            raise ValueError(
                "adv_eps: adversarial training is not available with DP-SGD "
                "(per-user gradients); set 0"
            )
        if self.by_event_type:
            raise ValueError(
                "target_weights / resample_ratio: not available with DP-SGD (one example per "
                "user, its own loss); leave them unset"
            )
        return self


def _negatives_outside(
    seq: np.ndarray, target: np.ndarray, n_items: int, gen: np.random.Generator, tries: int = 8
) -> np.ndarray:
    """One uniform negative per target, redrawn while it is one of the row's own items.

    As in the published SASRec (`random_neq`): a negative from the user's own window would teach the
    model to push down the very items that define the user. Only the row's own data is read, so the
    per-user example stays the unit of privacy.
    """
    neg = gen.integers(1, n_items + 1, size=target.shape)
    own = np.concatenate([seq, target], axis=1)
    for _ in range(tries):
        clash = (neg[:, :, None] == own[:, None, :]).any(-1)
        if not clash.any():
            break
        neg[clash] = gen.integers(1, n_items + 1, size=int(clash.sum()))
    return np.where(target != PAD, neg, PAD)


@register
class DPSASRec(DPArtifact, SASRec):
    """SASRec trained with user-level DP-SGD (see the module docstring)."""

    name = "dp_sasrec"
    Config = DPSASRecConfig
    config: DPSASRecConfig

    def __init__(self, config: DPSASRecConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.noise_multiplier = 0.0
        self.release: Release | None = None

    def fit(  # type: ignore[override]
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        noise_seed: int | None = None,
        item_text_embeddings: np.ndarray | None = None,
    ) -> DPSASRec:
        """Train with DP-SGD on the users' latest windows (the ledger is charged before any noise).

        No validation data: early stopping on it would be a further use of private data.

        Args:
            dataset: the training interactions.
            rng: seeds initialisation and negative sampling (never the noise or the sampling).
            ledger: charged before any noise is drawn.
            noise_seed: tests and benchmarks only: reproducible noise and Poisson sampling, and
                then the model is no DP release (`privacy` None, `"reproducible_noise": true`).
            item_text_embeddings: (n_items, t) public item text vectors for item_repr "text"
                (None: the configured file, else the dataset's item text encoded).
        """
        warn_unless_public_order(dataset, self.name)
        c = self.config
        if c.item_repr == "text" and item_text_embeddings is None and not c.item_text_embeddings:
            item_text_embeddings = public_text_vectors(dataset, c.text_cache_dir)
        self._noise_seed = noise_seed
        try:
            super().fit(dataset, rng=rng, ledger=ledger, item_text_embeddings=item_text_embeddings)
        finally:
            self._noise_seed = None
        if not math.isinf(self.config.epsilon):
            self.train_seconds = 0.0  # training time grows with the private number of users
        return self

    def _plan(self, epsilon: float, delta: float) -> tuple[float, float, int, int, Release]:
        """(z_count, z_sgd, steps per epoch, steps, release), from the config alone.

        The noisy user count (for the expected batch size) gets COUNT_SHARE of (epsilon, delta),
        DP-SGD the rest (basic composition).
        """
        c = self.config
        eps_c, delta_c = COUNT_SHARE * epsilon, COUNT_SHARE * delta
        eps_sgd, delta_sgd = epsilon - eps_c, delta - delta_c
        z_count = gaussian_sigma(eps_c, delta_c)
        per_epoch = steps_per_epoch(c.sample_rate)
        steps = c.epochs * per_epoch
        z = dpsgd_noise_multiplier(
            eps_sgd, delta_sgd, sample_rate=c.sample_rate, steps=steps, accountant=c.accountant
        )
        release = Release(
            name=f"{self.name}:count+dp-sgd",
            epsilon=epsilon,
            delta=delta,
            mechanism="gaussian count + dp-sgd (gaussian, poisson sampling, per-user clipping)",
            accountant=f"analytic gaussian (dp-accounting) + {c.accountant} (opacus), "
            "basic composition",
            details={
                "noise_multiplier": z,
                "max_grad_norm": c.max_grad_norm,
                "sample_rate": c.sample_rate,
                "steps": steps,
                "dpsgd_epsilon": eps_sgd,
                "dpsgd_delta": delta_sgd,
                "epsilon_accounted": dpsgd_epsilon(
                    z, delta_sgd, sample_rate=c.sample_rate, steps=steps, accountant=c.accountant
                ),
                "count_noise_multiplier": z_count,
                "expected_batch": "sample_rate x noisy user count",
                "example": "one user (their latest window of max_len + 1 items)",
                "unit": "user",
                "adjacency": ADJACENCY,
                "expected_users": c.expected_users,
            },
            event=composed_spec([gaussian_spec(z_count), dpsgd_spec(z, c.sample_rate, steps)]),
        )
        return z_count, z, per_epoch, steps, release

    def _train(
        self,
        net: SequenceNet,
        seqs: list[np.ndarray],
        n_items: int,
        seed: int,
        device: torch.device,
        info: DistInfo,
        validation: Any,
        t0: float,
        *,
        ledger: PrivacyLedger | None = None,
    ) -> None:
        """DP-SGD over one window per user (`ledger` is charged before the first noisy step)."""
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from privrec.models.dp.sasrec_text import PerUserTextLoss
        from privrec.models.nn.sequence import PerUserNextItemLoss

        c = self.config
        run = start_private_fit(
            epsilon=c.epsilon,
            delta=c.delta,
            expected_users=c.expected_users,
            rng=seed,
            seed=seed,
            noise_seed=getattr(self, "_noise_seed", None),
        )
        gen = np.random.default_rng(seed)  # negatives only: not noise
        wins = [s[-(c.max_len + 1) :] for s in seqs if len(s) >= 2]
        self.train_log = []  # never a loss or a time: both are exact statistics of the data
        self.best_epoch = c.epochs
        release: Release | None = None
        # the plan (and the charge) come before the data decides anything, even an empty fit
        plan = self._plan(run.epsilon, run.delta) if run.private else None
        if plan is not None:
            release = plan[4]
            run.charge(ledger, release, self.name)  # before the first noisy step
        run.record(self, release)
        if not wins:
            return
        seq = torch.from_numpy(pad_left([w[:-1] + 1 for w in wins], c.max_len))
        tgt = torch.from_numpy(pad_left([w[1:] + 1 for w in wins], c.max_len))
        module: Any = (
            PerUserNextItemLoss(net) if c.item_repr == "id" else PerUserTextLoss(net)
        ).to(device)
        optimizer = torch.optim.Adam(
            [p for p in module.parameters() if p.requires_grad], lr=c.learning_rate
        )
        criterion: Any = PerUserLoss()
        loader: Any
        if plan is not None:
            z_count, z, per_epoch, _steps, _ = plan
            n_hat = noisy_user_count_of(len(wins), z_count, run)
            module, optimizer, criterion = make_private(
                module,
                optimizer,
                noise_multiplier=z,
                max_grad_norm=c.max_grad_norm,
                expected_batch_size=c.sample_rate * n_hat,
                grad_sample_mode=c.grad_sample_mode,
                noise=run.noise,
            )
            self.noise_multiplier = z
            loader = PoissonBatches(
                (seq, tgt), sample_rate=c.sample_rate, steps=per_epoch, noise=run.noise
            )
        else:
            loader = DataLoader(
                TensorDataset(seq, tgt),
                batch_size=max(1, round(c.sample_rate * len(wins))),
                shuffle=True,
                generator=torch.Generator().manual_seed(seed),
            )
        with quiet_hooks():
            module.train()
            for _epoch in range(1, c.epochs + 1):
                for s_b, t_b in loader:
                    if s_b.shape[0] == 0:
                        if plan is not None:
                            noise_only_step(optimizer, run.noise)
                        continue
                    t_np = t_b.numpy()
                    neg = _negatives_outside(s_b.numpy(), t_np, n_items, gen)
                    losses = module(
                        s_b.to(device),
                        t_b.to(device),
                        torch.from_numpy(np.ascontiguousarray(neg)).to(device),
                    )
                    loss = criterion(losses, None)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()

    def _meta(self) -> dict[str, Any]:
        meta = {**super()._meta(), "noise_multiplier": self.noise_multiplier}
        if not math.isinf(self.config.epsilon):
            # neither losses nor times: exact statistics of the data
            meta.update(train_log=[], train_seconds=0.0)
        return {**meta, **self._marker_meta()}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        self.noise_multiplier = float(meta.get("noise_multiplier", 0.0))
        self._read_marker(meta)


def public_text_vectors(dataset: InteractionDataset, cache_dir: str | None) -> np.ndarray:
    """(n_items, 384) MiniLM vectors of the items' catalogue text (public data: no budget)."""
    from privrec.models.content import ContentRecommender

    return ContentRecommender(cache_dir=cache_dir).fit(dataset).item_embeddings


def trainable_parameters(net: torch.nn.Module) -> int:
    """Number of parameters that DP-SGD trains (and so that share its noise)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def noisy_user_count_of(n: int, noise_multiplier: float, run: PrivateFit) -> float:
    """`n` (users with a training window) plus N(0, z^2) (L2 sensitivity 1), at least 1."""
    noisy = GaussianMechanism(noise_multiplier, 1.0).add_noise(np.array([float(n)]), run.noise)
    return max(float(noisy[0]), 1.0)
