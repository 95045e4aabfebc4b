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
network, so scoring, explanations and persistence are SASRec's. Only ID item representations
and the "bce" loss are supported; there is no early stopping on validation data (it would be a
further use of private data).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, model_validator

from privrec.data.dataset import InteractionDataset
from privrec.models.base import register
from privrec.models.dp.opacus import PerUserLoss, make_private, quiet_hooks, sgd_accounting
from privrec.models.dp.release import start_private_fit
from privrec.models.nn.runtime import DistInfo
from privrec.models.nn.tokens import PAD
from privrec.models.sasrec import SASRec, SASRecConfig
from privrec.models.sequential import pad_left
from privrec.privacy.dp import Release, dpsgd_epsilon
from privrec.privacy.ledger import PrivacyLedger

if TYPE_CHECKING:
    import torch

    from privrec.models.nn.sequence import SequenceNet


class DPSASRecConfig(SASRecConfig):
    """DP-SASRec settings (plus SASRec's; loss must be "bce", item_repr "id").

    Attributes:
        epsilon: user-level budget of the whole training run (inf: no DP, same per-user loss).
        delta: None means 1 / (10 x number of users).
        max_grad_norm: per-user gradient clipping bound.
        sample_rate: Poisson sampling probability of each user per step.
        accountant: Opacus accountant, "rdp" or "prv".
        grad_sample_mode: "hooks" (per-user gradients materialised) or "ghost" (norms only).
    """

    epsilon: float = Field(default=8.0, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
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

    @model_validator(mode="after")
    def _supported(self) -> DPSASRecConfig:
        if self.loss != "bce":
            raise ValueError(
                "loss: dp_sasrec supports 'bce' only (per-user losses with per-row negatives)"
            )
        if self.item_repr != "id":
            raise ValueError("item_repr: dp_sasrec supports 'id' only")
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
class DPSASRec(SASRec):
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
    ) -> DPSASRec:
        """Train with DP-SGD on the users' latest windows (the ledger is charged before any noise).

        No validation data: early stopping on it would be a further use of private data.
        """
        super().fit(dataset, rng=rng, ledger=ledger)
        return self

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

        from privrec.models.nn.sequence import PerUserNextItemLoss

        c = self.config
        wins = [s[-(c.max_len + 1) :] for s in seqs if len(s) >= 2]
        n_users = len(wins)
        if n_users == 0:
            return
        seq = pad_left([w[:-1] + 1 for w in wins], c.max_len)
        tgt = pad_left([w[1:] + 1 for w in wins], c.max_len)
        run = start_private_fit(
            epsilon=c.epsilon, delta=c.delta, n_users=n_users, rng=seed, seed=seed
        )
        gen = run.gen
        module: Any = PerUserNextItemLoss(net).to(device)
        optimizer = torch.optim.Adam(
            [p for p in module.parameters() if p.requires_grad], lr=c.learning_rate
        )
        loader = DataLoader(
            TensorDataset(torch.from_numpy(seq), torch.from_numpy(tgt)),
            batch_size=max(1, round(c.sample_rate * n_users)),
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        criterion: Any = PerUserLoss()
        if run.private:
            module, optimizer, criterion, loader = make_private(
                module,
                optimizer,
                loader,
                epsilon=c.epsilon,
                delta=run.delta,
                epochs=c.epochs,
                max_grad_norm=c.max_grad_norm,
                accountant=c.accountant,
                grad_sample_mode=c.grad_sample_mode,
                noise_seed=seed + 1,
                device=device,
            )
            self.noise_multiplier, sample_rate, steps = sgd_accounting(optimizer, loader, c.epochs)
            release = Release(
                name=f"{self.name}:dp-sgd",
                epsilon=c.epsilon,
                delta=run.delta,
                mechanism="dp-sgd (gaussian, poisson sampling, per-user clipping)",
                accountant=f"{c.accountant} (opacus)",
                details={
                    "noise_multiplier": self.noise_multiplier,
                    "max_grad_norm": c.max_grad_norm,
                    "sample_rate": sample_rate,
                    "steps": steps,
                    "epsilon_accounted": dpsgd_epsilon(
                        self.noise_multiplier,
                        run.delta,
                        sample_rate=sample_rate,
                        steps=steps,
                        accountant=c.accountant,
                    ),
                    "example": "one user (their latest window of max_len + 1 items)",
                },
            )
            run.charge(ledger, release, self.name)  # before the first noisy step
            run.record(self, release)
        self.train_log = []
        with quiet_hooks():
            module.train()
            for epoch in range(1, c.epochs + 1):
                total, count = 0.0, 0
                for s_b, t_b in loader:
                    if s_b.shape[0] == 0:
                        optimizer.zero_grad(set_to_none=True)
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
                    total += float(loss.detach()) * s_b.shape[0]
                    count += s_b.shape[0]
                self.train_log.append(
                    {
                        "epoch": epoch,
                        "loss": total / max(count, 1),
                        "seconds": time.perf_counter() - t0,
                    }
                )
        self.best_epoch = c.epochs

    def _meta(self) -> dict[str, Any]:
        return {**super()._meta(), "noise_multiplier": self.noise_multiplier}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        self.noise_multiplier = float(meta.get("noise_multiplier", 0.0))
