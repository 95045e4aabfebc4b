"""DP-SGD with Opacus for modules that return one loss per user (DP-BPR, DP-SASRec).

One example is one user, so Opacus' per-example clipping and noise give a user-level guarantee
(adjacency: add/remove one user). What privrec takes from Opacus is the per-user gradient machinery
(`GradSampleModule`, the clipping optimizer, ghost clipping); the randomness that the privacy
analysis relies on is privrec's own:

- Noise: Opacus draws it from a torch generator, either seeded (`noise_generator`: replayable,
  and torch's Mersenne Twister is no CSPRNG) or, with `secure_mode=True`, from `torchcsprng`,
  which is unmaintained and has no build for the torch used here (`pip index versions
  torchcsprng` finds none). So `make_private` replaces the optimizer's `add_noise` with one that
  draws from a `privacy.noise.NoiseSource`: OS entropy at every step (a CSPRNG), Box-Muller in
  float64, cast to the parameter dtype. Its cost is a CPU draw and a host-to-device copy of one
  normal per parameter per step (measured in the tests' timing note of the DP-SGD models).
- Poisson sampling: `PoissonBatches` flips each user's coin from the same source, so which users
  a step used is secret too (the amplification by sampling the accountant assumes); the sampling
  rate is the configured one and the number of steps per epoch round(1 / q), both public.
- Normalisation: the summed noisy gradient is divided by a public-or-noisy expected batch size
  q * n (n: a noisy user count the caller releases), never by the exact number of users.
- An empty Poisson sample still makes a noise-only step (`noise_only_step`), as the accountant
  assumes a noisy update at every step.

Limitation: like Opacus' non-secure mode, the noise is a floating-point Gaussian (see
`privacy.noise` on floating-point attacks).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from privrec.privacy.noise import NoiseSource

__all__ = [
    "PerUserLoss",
    "PoissonBatches",
    "make_private",
    "noise_only_step",
    "quiet_hooks",
    "steps_per_epoch",
    "unwrap",
]


class PerUserLoss:
    """The "criterion" Opacus wraps: the module already returns one loss per user."""

    reduction = "mean"

    def __call__(self, losses: Any, target: Any = None) -> Any:
        """The mean of the per-user losses (or the losses themselves with reduction "none")."""
        return losses if self.reduction == "none" else losses.mean()


def steps_per_epoch(sample_rate: float) -> int:
    """Poisson-sampled steps per epoch: round(1 / q), at least 1 (public: from the config)."""
    return max(1, round(1.0 / float(sample_rate)))


class PoissonBatches:
    """Poisson sampling of examples: each step, every example joins with probability q.

    The coins come from `noise` (secret, like the noise); a step may be empty (tensors with 0
    rows). Iterating gives `steps` batches, each a tuple of the tensors' selected rows.
    """

    def __init__(
        self, tensors: tuple[Any, ...], *, sample_rate: float, steps: int, noise: NoiseSource
    ) -> None:
        self.tensors = tensors
        self.sample_rate = float(sample_rate)
        self.steps = int(steps)
        self.noise = noise
        self.n = int(tensors[0].shape[0])

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        import torch

        for _ in range(self.steps):
            idx = np.flatnonzero(self.noise.bernoulli(self.sample_rate, self.n))
            t = torch.from_numpy(idx.astype(np.int64))
            yield tuple(x[t] for x in self.tensors)


def _secure_add_noise(optimizer: Any, noise: NoiseSource) -> None:
    """Make `optimizer.add_noise` draw its Gaussian noise from `noise` (same semantics)."""
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    def add_noise() -> None:
        z = getattr(optimizer, "_adjusted_noise_multiplier", optimizer.noise_multiplier)
        std = float(z) * float(optimizer.max_grad_norm)
        for p in optimizer.params:
            _check_processed_flag(p.summed_grad)
            p.grad = (p.summed_grad + noise.torch_normal(std, p.summed_grad)).view_as(p)
            _mark_as_processed(p.summed_grad)

    optimizer.add_noise = add_noise


def make_private(
    module: Any,
    optimizer: Any,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: float,
    grad_sample_mode: str,
    noise: NoiseSource,
) -> tuple[Any, Any, Any]:
    """Opacus DP-SGD for a per-user-loss module: (module, optimizer, criterion).

    Per-user clipping at `max_grad_norm`, Gaussian noise of std noise_multiplier * max_grad_norm
    drawn from `noise` at every step, the sum divided by `expected_batch_size`. Batches come from
    `PoissonBatches` (the caller's). "ghost" clipping also wraps the criterion.
    """
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    # a placeholder loader: Opacus reads a sample rate from it, which is replaced just below
    placeholder = DataLoader(TensorDataset(torch.zeros(1)), batch_size=1)
    with warnings.catch_warnings():
        # "secure RNG turned off": the noise is replaced by the secure source below
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")  # its accountant is unused: the caller accounts
        made = engine.make_private(
            module=module,
            optimizer=optimizer,
            criterion=PerUserLoss(),
            data_loader=placeholder,
            noise_multiplier=float(noise_multiplier),
            max_grad_norm=max_grad_norm,
            poisson_sampling=False,
            grad_sample_mode=grad_sample_mode,
        )
    if grad_sample_mode == "ghost":
        module, optimizer, criterion, _ = made
    else:
        module, optimizer, _ = made
        criterion = PerUserLoss()
    module.forbid_grad_accumulation()
    optimizer.expected_batch_size = max(float(expected_batch_size), 1.0)
    _secure_add_noise(optimizer, noise)
    return module, optimizer, criterion


def noise_only_step(optimizer: Any, noise: NoiseSource) -> None:
    """The step of an empty Poisson sample: noise only, normalised like any other step."""
    std = float(optimizer.noise_multiplier) * float(optimizer.max_grad_norm)
    for p in optimizer.params:
        p.grad = noise.torch_normal(std, p) / float(optimizer.expected_batch_size)
    optimizer.original_optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def unwrap(module: Any) -> Any:
    """The user's module inside Opacus' GradSampleModule (the module itself when not wrapped)."""
    return module._module if hasattr(module, "_module") else module


@contextmanager
def quiet_hooks() -> Iterator[None]:
    """Silence the "Full backward hook" warning Opacus' ghost clipping gives at every step."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)
        yield
