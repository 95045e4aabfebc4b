"""DP mechanisms and accounting: calibration comes from dp-accounting / Opacus and is consistent."""

from __future__ import annotations

import json
import math

import dp_accounting
import numpy as np
import pytest

from privrec.core.errors import ConfigError
from privrec.privacy.dp import (
    GaussianMechanism,
    LaplaceMechanism,
    Release,
    calibrate_gaussians,
    composed_spec,
    dpsgd_epsilon,
    dpsgd_noise_multiplier,
    dpsgd_spec,
    epsilon_delta_spec,
    epsilon_of,
    gaussian_event,
    gaussian_sigma,
    gaussian_spec,
    laplace_scale,
    laplace_spec,
    poisson_sampled_spec,
    self_composed_spec,
    split_ratios,
)
from privrec.privacy.guarantee import PrivacyGuarantee
from privrec.privacy.noise import NoiseSource


@pytest.mark.parametrize("eps", [0.5, 1.0, 8.0])
def test_gaussian_sigma_is_dp_accountings_analytic_gaussian(eps: float) -> None:
    delta = 1e-5
    assert gaussian_sigma(eps, delta) == pytest.approx(
        dp_accounting.get_sigma_gaussian(eps, delta), rel=1e-12
    )
    assert gaussian_sigma(eps, delta, sensitivity=3.0) == pytest.approx(
        3 * dp_accounting.get_sigma_gaussian(eps, delta)
    )
    # and the PLD accountant agrees that this sigma gives epsilon
    assert epsilon_of(gaussian_event([gaussian_sigma(eps, delta)]), delta) == pytest.approx(
        eps, rel=2e-3
    )


def test_infinite_epsilon_means_no_noise() -> None:
    assert gaussian_sigma(math.inf, 1e-5) == 0.0
    assert calibrate_gaussians([1.0, 2.0], math.inf, 1e-5) == [0.0, 0.0]
    x = np.arange(5.0)
    np.testing.assert_array_equal(GaussianMechanism(0.0).add_noise(x), x)


def test_bad_parameters_are_refused() -> None:
    for eps, delta in [(0.0, 1e-5), (-1.0, 1e-5), (1.0, 1.0), (1.0, -0.1)]:
        with pytest.raises(ConfigError):
            gaussian_sigma(eps, delta)
    with pytest.raises(ConfigError):
        gaussian_sigma(1.0, 0.0)  # Gaussian needs delta > 0
    with pytest.raises(ConfigError):
        split_ratios([0.0, 1.0])


def test_composed_calibration_meets_the_target_and_is_not_wasteful() -> None:
    eps, delta = 2.0, 1e-5
    z = calibrate_gaussians(split_ratios([0.1, 0.9]), eps, delta)
    assert z[0] / z[1] == pytest.approx(3.0, rel=1e-6)
    spent = epsilon_of(gaussian_event(z), delta)
    assert spent <= eps + 1e-6 and spent > 0.99 * eps
    # two Gaussians compose like one with 1/z^2 = sum 1/z_i^2: close to the analytic Gaussian
    z_eff = 1.0 / math.sqrt(sum(1 / v**2 for v in z))
    assert z_eff == pytest.approx(gaussian_sigma(eps, delta), rel=0.02)


def test_mechanisms_draw_fresh_noise_and_are_scaled() -> None:
    mech = GaussianMechanism(2.0, sensitivity=1.5)
    a = mech.add_noise(np.zeros(20000))
    b = mech.add_noise(np.zeros(20000))
    assert not np.array_equal(a, b)  # fresh OS entropy at every release
    assert a.std() == pytest.approx(3.0, rel=0.03)
    r1 = mech.add_noise(np.zeros(50), NoiseSource.reproducible(3))
    r2 = mech.add_noise(np.zeros(50), NoiseSource.reproducible(3))
    np.testing.assert_array_equal(r1, r2)  # only on explicit request (tests, benchmarks)
    lap = LaplaceMechanism.calibrated(0.5, sensitivity=2.0)
    assert lap.scale == laplace_scale(0.5, 2.0) == 4.0
    d = lap.add_noise(np.zeros(20000))
    assert np.abs(d).mean() == pytest.approx(4.0, rel=0.05)  # E|Laplace(b)| = b
    assert lap.event(2.0) == {"kind": "laplace", "parameter": 2.0}
    assert mech.event() == {"kind": "gaussian", "noise_multiplier": 2.0}


def test_a_seeded_numpy_generator_is_refused_as_a_noise_source() -> None:
    for call in (
        lambda g: GaussianMechanism(1.0).add_noise(np.zeros(3), g),
        lambda g: GaussianMechanism(1.0).add_symmetric_noise(np.zeros((3, 3)), g),
        lambda g: LaplaceMechanism(1.0).add_noise(np.zeros(3), g),
    ):
        with pytest.raises(TypeError, match="NoiseSource"):
            call(np.random.default_rng(0))


def test_laplace_scale_matches_the_pld_accountant() -> None:
    b = laplace_scale(1.3, sensitivity=1.0)
    eps = epsilon_of(
        dp_accounting.LaplaceDpEvent(b), 1e-9
    )  # (PLD truncation makes delta=0 infinite)
    assert eps == pytest.approx(1.3, rel=1e-2)


def test_symmetric_noise_has_goe_structure() -> None:
    mech = GaussianMechanism(1.0, sensitivity=1 / math.sqrt(2))
    n = 300
    m = mech.add_symmetric_noise(np.zeros((n, n)), NoiseSource.reproducible(0))
    np.testing.assert_array_equal(m, m.T)
    off = m[np.triu_indices(n, 1)]
    assert off.std() == pytest.approx(1 / math.sqrt(2), rel=0.02)
    assert np.diag(m).std() == pytest.approx(1.0, rel=0.15)
    again = mech.add_symmetric_noise(np.zeros((n, n)), NoiseSource.reproducible(0))
    np.testing.assert_array_equal(m, again)
    fresh = mech.add_symmetric_noise(np.zeros((n, n)))
    assert not np.array_equal(m, fresh)


def test_dpsgd_accounting_round_trips_through_opacus() -> None:
    z = dpsgd_noise_multiplier(4.0, 1e-5, sample_rate=0.1, steps=100, accountant="rdp")
    assert z > 0
    assert dpsgd_epsilon(z, 1e-5, sample_rate=0.1, steps=100, accountant="rdp") == pytest.approx(
        4.0, rel=0.02
    )


def test_release_carries_its_guarantee() -> None:
    r = Release("x:counts", 1.0, 1e-6, "gaussian", "analytic gaussian (dp-accounting)")
    g = r.guarantee()
    assert (g.epsilon, g.delta, g.unit, g.mechanism) == (1.0, 1e-6, "user", "gaussian")
    assert g.adjacency == r.adjacency == "add/remove one user" and r.event is None


def test_epsilon_infinity_is_never_a_guarantee() -> None:
    with pytest.raises(ConfigError, match="epsilon"):
        PrivacyGuarantee(math.inf, 1e-6)
    with pytest.raises(ConfigError, match="epsilon"):
        Release("x", math.inf, 1e-6, "none", "none").guarantee()
    assert GaussianMechanism(0.0).guarantee(1e-6) is None
    g = GaussianMechanism(2.0).guarantee(1e-6)
    assert g is not None and 0 < g.epsilon < math.inf


def test_event_specs_have_the_agreed_shape_and_account_like_dp_accounting() -> None:
    z, q, steps = 1.1, 0.01, 100
    spec = composed_spec([gaussian_spec(2.0), dpsgd_spec(z, q, steps)])
    assert spec == {
        "kind": "composed",
        "events": [
            {"kind": "gaussian", "noise_multiplier": 2.0},
            {
                "kind": "self_composed",
                "count": steps,
                "event": {
                    "kind": "poisson_sampled",
                    "sampling_probability": q,
                    "event": {"kind": "gaussian", "noise_multiplier": z},
                },
            },
        ],
    }
    assert composed_spec([laplace_spec(0.5)]) == {"kind": "laplace", "parameter": 0.5}
    assert epsilon_delta_spec(1.0, 1e-6) == {"kind": "epsilon_delta", "epsilon": 1.0, "delta": 1e-6}
    assert poisson_sampled_spec(0.1, gaussian_spec(1.0))["sampling_probability"] == 0.1
    assert self_composed_spec(3, gaussian_spec(1.0))["count"] == 3
    assert json.loads(json.dumps(spec)) == spec  # JSON-ready
