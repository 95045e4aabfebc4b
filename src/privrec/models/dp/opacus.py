"""DP-SGD with Opacus for modules that return one loss per user (DP-BPR, DP-SASRec).

One example is one user, so Opacus' per-example clipping and noise give a user-level guarantee.
`make_private` wraps module, optimizer and loader (Poisson sampling, per-user clipping, the noise
multiplier its accountant sets for the target (epsilon, delta) over the epochs);
`sgd_accounting` reads back what the release records; `quiet_hooks` silences the warning Opacus'
ghost clipping gives at every step.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["PerUserLoss", "make_private", "quiet_hooks", "sgd_accounting", "unwrap"]


class PerUserLoss:
    """The "criterion" Opacus wraps: the module already returns one loss per user."""

    reduction = "mean"

    def __call__(self, losses: Any, target: Any = None) -> Any:
        """The mean of the per-user losses (or the losses themselves with reduction "none")."""
        return losses if self.reduction == "none" else losses.mean()


def make_private(
    module: Any,
    optimizer: Any,
    loader: Any,
    *,
    epsilon: float,
    delta: float,
    epochs: int,
    max_grad_norm: float,
    accountant: str,
    grad_sample_mode: str,
    noise_seed: int,
    device: Any = None,
) -> tuple[Any, Any, Any, Any]:
    """Opacus DP-SGD for a per-user-loss module: (module, optimizer, criterion, loader).

    Poisson sampling, per-user clipping at `max_grad_norm`, and the noise multiplier Opacus'
    accountant sets for (epsilon, delta) over `epochs`. "ghost" clipping also wraps the criterion.
    """
    import torch
    from opacus import PrivacyEngine

    engine = PrivacyEngine(accountant=accountant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        made = engine.make_private_with_epsilon(
            module=module,
            optimizer=optimizer,
            criterion=PerUserLoss(),
            data_loader=loader,
            target_epsilon=epsilon,
            target_delta=delta,
            epochs=epochs,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            noise_generator=torch.Generator(device=device).manual_seed(noise_seed),
            grad_sample_mode=grad_sample_mode,
        )
    if grad_sample_mode == "ghost":
        return made
    module, optimizer, loader = made
    return module, optimizer, PerUserLoss(), loader


def sgd_accounting(optimizer: Any, loader: Any, epochs: int) -> tuple[float, float, int]:
    """(noise multiplier, sample rate, steps) of a run made private by `make_private`."""
    return float(optimizer.noise_multiplier), 1.0 / len(loader), epochs * len(loader)


def unwrap(module: Any) -> Any:
    """The user's module inside Opacus' GradSampleModule (the module itself when not wrapped)."""
    return module._module if hasattr(module, "_module") else module


@contextmanager
def quiet_hooks() -> Iterator[None]:
    """Silence the "Full backward hook" warning Opacus' ghost clipping gives at every step."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)
        yield
