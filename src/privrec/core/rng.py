"""Seeded randomness: every random step takes a seed or a Generator.

These seeds make sampling order, initialisation and data splits repeatable. They are never a
source of differential-privacy noise: a seed (DEFAULT_SEED above all) is public, and noise drawn
from it can be replayed and subtracted. DP noise comes from `privrec.privacy.noise.NoiseSource`.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SEED = 42


def make_rng(rng: int | np.random.Generator | None = None) -> np.random.Generator:
    """Return a numpy Generator; an int seeds it, None uses DEFAULT_SEED so runs repeat."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(DEFAULT_SEED if rng is None else rng)


def seed_everything(seed: int) -> None:
    """Seed numpy's legacy global state and torch (if installed) for libraries that use them."""
    np.random.seed(seed)
    try:
        import torch
    except ImportError:  # torch is optional for the classic models
        return
    torch.manual_seed(seed)
