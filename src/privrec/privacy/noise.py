"""Where every differential-privacy noise draw comes from (layer 1: numpy and the standard library).

A DP guarantee holds only if the adversary cannot know the noise. The DP adversary is strong: it
may know every user but one, so it can subtract the others' exact contribution from a release and
read the noise on every entry the target did not touch. A seeded generator then fails twice: the
seed replays the whole noise draw (the exact statistics come back), and even with a secret seed a
non-cryptographic generator (numpy's PCG64, torch's Mersenne Twister) can have its state recovered
from enough observed outputs (published attacks exist for both), after which the target's noise is
predictable too. So the noise comes from a cryptographically secure source:

- `NoiseSource.secure()` (the default everywhere): every draw reads fresh bytes from the operating
  system's CSPRNG (`os.urandom`, i.e. getrandom(2)); nothing is seeded, kept between draws, stored
  or logged, so every release gets fresh noise and no two fits share a draw. Keying a numpy
  Generator from `secrets.token_bytes` would make the seed secret but not the generator secure
  (see above), hence raw OS bytes.
- `NoiseSource.reproducible(seed)` (tests and benchmarks only, never a default): the same
  transforms fed by a SHAKE-256 keystream keyed by the seed. Anyone with the seed recomputes the
  noise, so a model fitted this way is NOT a DP release (models record it; the service refuses to
  serve such a version).

Uniforms carry 53 random bits; normals come from the Box-Muller transform, Laplace noise from an
exponential with a random sign. Known limitation: like every floating-point implementation of a
continuous mechanism, the low-order bits of `value + noise` can leak a little about `value`
(Mironov, CCS 2012); the guarantee is the mathematical one of the continuous mechanism.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import numpy as np

__all__ = ["NoiseSource", "noise_source"]

_BLOCK = 1 << 22  # uniforms per keystream/urandom read: bounded memory for large draws
_DOMAIN = b"privrec reproducible noise v1"


class NoiseSource:
    """A source of DP noise: OS entropy (`secure`) or a seeded keystream (`reproducible`).

    Build one with `NoiseSource.secure()` or `NoiseSource.reproducible(seed)`. One source serves
    one release; a secure source is fresh at every draw anyway.
    """

    def __init__(self, *, _key: bytes | None = None) -> None:
        self._key = _key  # None: OS entropy (nothing kept); bytes: the reproducible keystream key
        self._counter = 0

    @classmethod
    def secure(cls) -> NoiseSource:
        """The DP source: every draw reads fresh bytes from the OS CSPRNG."""
        return cls()

    @classmethod
    def reproducible(cls, seed: int) -> NoiseSource:
        """A seeded keystream for tests and benchmarks: its draws are NOT differentially private.

        Args:
            seed: any integer; the same seed gives the same noise.
        """
        key = hashlib.sha256(_DOMAIN + str(int(seed)).encode()).digest()
        return cls(_key=key)

    @property
    def is_reproducible(self) -> bool:
        """True when the noise can be recomputed from a seed (then it is not a DP release)."""
        return self._key is not None

    def __repr__(self) -> str:  # never shows key material
        return f"NoiseSource({'reproducible' if self.is_reproducible else 'secure'})"

    # ---- raw bits -------------------------------------------------------------------------------
    def random_bytes(self, n: int) -> bytes:
        """`n` random bytes (OS entropy, or the next `n` bytes of the seeded keystream)."""
        if self._key is None:
            return os.urandom(int(n))
        # one XOF call per read, keyed by (key, counter): reads never overlap
        block = hashlib.shake_256(self._key + self._counter.to_bytes(8, "little")).digest(int(n))
        self._counter += 1
        return block

    def _words(self, n: int) -> np.ndarray:
        return np.frombuffer(self.random_bytes(8 * int(n)), dtype=np.uint64)

    # ---- distributions --------------------------------------------------------------------------
    def uniform(self, size: int | tuple[int, ...]) -> np.ndarray:
        """Uniforms in (0, 1] with 53 random bits each (float64)."""
        shape = (size,) if isinstance(size, int) else tuple(size)
        n = math.prod(shape)
        out = np.empty(n, dtype=np.float64)
        for a in range(0, n, _BLOCK):
            b = min(n, a + _BLOCK)
            w = self._words(b - a)
            out[a:b] = ((w >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53
        return out.reshape(shape)

    def normal(self, scale: float, size: int | tuple[int, ...]) -> np.ndarray:
        """N(0, scale^2) draws (float64), by the Box-Muller transform of secure uniforms."""
        shape = (size,) if isinstance(size, int) else tuple(size)
        n = math.prod(shape)
        half = (n + 1) // 2
        u = self.uniform(2 * half)
        r = np.sqrt(-2.0 * np.log(u[:half]))
        t = 2.0 * math.pi * u[half:]
        z = np.concatenate([r * np.cos(t), r * np.sin(t)])[:n]
        return (float(scale) * z).reshape(shape)

    def laplace(self, scale: float, size: int | tuple[int, ...]) -> np.ndarray:
        """Laplace(0, scale) draws (float64): an exponential of mean `scale` with a random sign."""
        shape = (size,) if isinstance(size, int) else tuple(size)
        n = math.prod(shape)
        e = -np.log(self.uniform(n))
        sign = np.where(self.uniform(n) <= 0.5, -1.0, 1.0)
        return (float(scale) * sign * e).reshape(shape)

    def bernoulli(self, p: float, size: int) -> np.ndarray:
        """Independent coin flips with probability `p` (bool), e.g. Poisson sampling of users."""
        return self.uniform(int(size)) <= float(p)

    def torch_normal(self, std: float, reference: Any) -> Any:
        """N(0, std^2) noise shaped, typed and placed like the torch tensor `reference`."""
        import torch

        z = self.normal(std, tuple(reference.shape))
        return torch.from_numpy(z).to(device=reference.device, dtype=reference.dtype)


def noise_source(noise_seed: int | None) -> NoiseSource:
    """`NoiseSource.reproducible(noise_seed)` when a seed is given (not DP), else `secure()`."""
    return NoiseSource.secure() if noise_seed is None else NoiseSource.reproducible(noise_seed)
