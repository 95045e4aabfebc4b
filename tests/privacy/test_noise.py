"""The DP noise source: OS entropy by default, reproducible only on request, right distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privrec.privacy.noise import NoiseSource, noise_source


def test_secure_draws_never_repeat_and_are_not_reproducible() -> None:
    a, b = NoiseSource.secure(), NoiseSource.secure()
    assert not a.is_reproducible and not noise_source(None).is_reproducible
    assert not np.array_equal(a.normal(1.0, 64), b.normal(1.0, 64))
    assert not np.array_equal(a.normal(1.0, 64), a.normal(1.0, 64))


def test_reproducible_source_repeats_per_seed_and_says_so() -> None:
    a, b = NoiseSource.reproducible(5), noise_source(5)
    assert a.is_reproducible and b.is_reproducible
    np.testing.assert_array_equal(a.normal(2.0, (3, 4)), b.normal(2.0, (3, 4)))
    np.testing.assert_array_equal(a.laplace(1.0, 10), b.laplace(1.0, 10))
    # consecutive draws of one source do not overlap; another seed gives other noise
    assert not np.array_equal(a.normal(1.0, 8), a.normal(1.0, 8))
    assert not np.array_equal(
        NoiseSource.reproducible(5).normal(1.0, 8), NoiseSource.reproducible(6).normal(1.0, 8)
    )
    assert "reproducible" in repr(a) and "secure" in repr(NoiseSource.secure())


@pytest.mark.parametrize("make", [NoiseSource.secure, lambda: NoiseSource.reproducible(1)])
def test_distributions(make: object) -> None:
    src = make()  # type: ignore[operator]
    n = 200_000
    u = src.uniform(n)
    assert u.min() > 0 and u.max() <= 1 and abs(u.mean() - 0.5) < 0.005
    z = src.normal(3.0, n)
    assert z.shape == (n,) and abs(z.mean()) < 0.05 and z.std() == pytest.approx(3.0, rel=0.01)
    # tails of a Gaussian: P(|Z| > 2 sigma) = 0.0455
    assert np.mean(np.abs(z) > 6.0) == pytest.approx(0.0455, abs=0.003)
    lap = src.laplace(2.0, n)
    assert abs(lap.mean()) < 0.05 and np.abs(lap).mean() == pytest.approx(2.0, rel=0.02)
    assert lap.std() == pytest.approx(2.0 * math.sqrt(2), rel=0.02)
    coins = src.bernoulli(0.2, n)
    assert coins.dtype == bool and coins.mean() == pytest.approx(0.2, abs=0.005)
    assert src.normal(1.0, 7).shape == (7,) and src.normal(1.0, (2, 0)).shape == (2, 0)


def test_torch_normal_matches_the_reference_tensor() -> None:
    torch = pytest.importorskip("torch")
    ref = torch.zeros((5, 3), dtype=torch.float32)
    z = NoiseSource.reproducible(2).torch_normal(1.5, ref)
    assert z.shape == ref.shape and z.dtype == torch.float32 and z.device == ref.device
    again = NoiseSource.reproducible(2).torch_normal(1.5, ref)
    assert torch.equal(z, again)
