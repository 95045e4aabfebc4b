"""Statistics of an A/B test: per-variant rates with confidence intervals, significance tests
against the control, and the sample-ratio-mismatch (SRM) check.

Per variant (the unit is the shopper, identified inside the experiment by its unit id):
- CTR = recommendation lists with at least one attributed click / lists shown (Wilson interval);
  lists of one shopper are not independent, so the CTR test is indicative only.
- conversion = shoppers with at least one attributed purchase / shoppers exposed (Wilson interval).
- revenue per shopper: mean attributed revenue over exposed shoppers (t interval).
Tests against the first variant (control): two-proportion z-tests for CTR and conversion
(statsmodels `proportions_ztest`), Welch's t-test for revenue (statsmodels `ttest_ind`). SRM:
a chi-square goodness-of-fit test of the shoppers per variant against the configured shares;
p < 0.001 flags a broken assignment or logging, and then no result should be trusted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = ["VariantData", "analyse", "srm_check"]

SRM_ALPHA = 0.001


@dataclass
class VariantData:
    """The raw counts of one variant.

    Attributes:
        name: the variant.
        impressions: recommendation lists shown.
        clicked_impressions: lists with at least one attributed click.
        revenue_per_unit: attributed revenue of each exposed shopper (0 for none), one entry per
            shopper.
        converted_units: shoppers with at least one attributed purchase.
        carts: attributed add-to-cart events.
    """

    name: str
    impressions: int
    clicked_impressions: int
    revenue_per_unit: np.ndarray
    converted_units: int
    carts: int = 0

    @property
    def units(self) -> int:
        """Shoppers exposed."""
        return len(self.revenue_per_unit)


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _proportion(successes: int, n: int, alpha: float) -> dict[str, Any]:
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return {"value": None, "ci": [None, None], "successes": int(successes), "n": int(n)}
    lo, hi = proportion_confint(successes, n, alpha=alpha, method="wilson")
    return {
        "value": successes / n,
        "ci": [_finite(lo), _finite(hi)],
        "successes": int(successes),
        "n": int(n),
    }


def _mean(values: np.ndarray, alpha: float) -> dict[str, Any]:
    from statsmodels.stats.weightstats import DescrStatsW

    n = len(values)
    if n == 0:
        return {"value": None, "ci": [None, None], "n": 0}
    if n == 1 or float(np.std(values)) == 0.0:
        m = float(np.mean(values))
        return {"value": m, "ci": [m, m], "n": n}
    lo, hi = DescrStatsW(values).tconfint_mean(alpha=alpha)
    return {"value": float(np.mean(values)), "ci": [_finite(lo), _finite(hi)], "n": n}


def _ztest(s1: int, n1: int, s0: int, n0: int) -> dict[str, Any]:
    from statsmodels.stats.proportion import proportions_ztest

    if min(n0, n1) == 0 or (s0 + s1 == 0) or (s0 + s1 == n0 + n1):
        return {
            "test": "two-proportion z-test",
            "statistic": None,
            "p_value": None,
            "note": "no variation yet",
        }
    z, p = proportions_ztest([s1, s0], [n1, n0])
    return {"test": "two-proportion z-test", "statistic": _finite(z), "p_value": _finite(p)}


def _welch(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    from statsmodels.stats.weightstats import ttest_ind

    if len(a) < 2 or len(b) < 2 or (np.std(a) == 0 and np.std(b) == 0):
        return {
            "test": "Welch t-test",
            "statistic": None,
            "p_value": None,
            "note": "no variation yet",
        }
    t, p, _ = ttest_ind(a, b, usevar="unequal")
    return {"test": "Welch t-test", "statistic": _finite(t), "p_value": _finite(p)}


def srm_check(
    units: Sequence[int], shares: Sequence[float], alpha: float = SRM_ALPHA
) -> dict[str, Any]:
    """Chi-square test of the observed shoppers per variant against the expected shares."""
    obs = np.asarray(units, dtype=np.float64)
    total = float(obs.sum())
    sh = np.asarray(shares, dtype=np.float64)
    sh = sh / sh.sum()
    if total <= 0 or len(obs) < 2:
        return {
            "test": "chi-square goodness of fit",
            "statistic": None,
            "p_value": None,
            "mismatch": False,
            "alpha": alpha,
            "observed": [int(x) for x in obs],
            "expected": [0.0] * len(obs),
        }
    exp = total * sh
    stat, p = sps.chisquare(obs, exp)
    return {
        "test": "chi-square goodness of fit",
        "statistic": _finite(stat),
        "p_value": _finite(p),
        "mismatch": bool(p < alpha),
        "alpha": alpha,
        "observed": [int(x) for x in obs],
        "expected": [round(float(x), 2) for x in exp],
    }


def analyse(
    variants: Sequence[VariantData], shares: Sequence[float], *, alpha: float = 0.05
) -> dict[str, Any]:
    """The report of an experiment: per-variant metrics with (1 - alpha) intervals, tests against
    the first variant, and the SRM check."""
    if not variants:
        return {"variants": [], "srm": srm_check([], []), "alpha": alpha}
    control = variants[0]
    rows = []
    for v in variants:
        row: dict[str, Any] = {
            "variant": v.name,
            "units": v.units,
            "impressions": int(v.impressions),
            "carts": int(v.carts),
            "ctr": _proportion(v.clicked_impressions, v.impressions, alpha),
            "conversion": _proportion(v.converted_units, v.units, alpha),
            "revenue_per_unit": _mean(np.asarray(v.revenue_per_unit, dtype=np.float64), alpha),
            "revenue": float(np.sum(v.revenue_per_unit)),
        }
        if v is not control:
            row["vs_control"] = {
                "ctr": _ztest(
                    v.clicked_impressions,
                    v.impressions,
                    control.clicked_impressions,
                    control.impressions,
                ),
                "conversion": _ztest(
                    v.converted_units, v.units, control.converted_units, control.units
                ),
                "revenue_per_unit": _welch(
                    np.asarray(v.revenue_per_unit, np.float64),
                    np.asarray(control.revenue_per_unit, np.float64),
                ),
            }
            for key in ("ctr", "conversion", "revenue_per_unit"):
                p = row["vs_control"][key].get("p_value")
                row["vs_control"][key]["significant"] = bool(p is not None and p < alpha)
        rows.append(row)
    return {
        "control": control.name,
        "alpha": alpha,
        "variants": rows,
        "srm": srm_check([v.units for v in variants], shares),
    }


def counts_from_records(
    names: Sequence[str],
    exposures: Sequence[Mapping[str, Any]],
    outcomes: Sequence[Mapping[str, Any]],
) -> list[VariantData]:
    """Aggregate exposure rows {rec_id, variant, unit} and outcome rows {rec_id, type, value}."""
    rec_variant: dict[str, tuple[str, str]] = {}
    units: dict[str, dict[str, float]] = {n: {} for n in names}
    impressions = dict.fromkeys(names, 0)
    for e in exposures:
        v = str(e["variant"])
        if v not in units:
            continue
        rec_variant[str(e["rec_id"])] = (v, str(e["unit"]))
        units[v].setdefault(str(e["unit"]), 0.0)
        impressions[v] += 1
    clicked: dict[str, set[str]] = {n: set() for n in names}
    converted: dict[str, set[str]] = {n: set() for n in names}
    carts = dict.fromkeys(names, 0)
    for o in outcomes:
        hit = rec_variant.get(str(o["rec_id"]))
        if hit is None:
            continue
        v, u = hit
        t = str(o["type"])
        if t == "click":
            clicked[v].add(str(o["rec_id"]))
        elif t == "cart":
            carts[v] += 1
        elif t == "purchase":
            converted[v].add(u)
            units[v][u] = units[v].get(u, 0.0) + float(o.get("value") or 0.0)
    return [
        VariantData(
            name=n,
            impressions=impressions[n],
            clicked_impressions=len(clicked[n]),
            revenue_per_unit=np.fromiter(units[n].values(), dtype=np.float64, count=len(units[n])),
            converted_units=len(converted[n]),
            carts=carts[n],
        )
        for n in names
    ]


# ---- always-valid sequential statistics (mSPRT) -------------------------------------------------
# Johari, Pekelis, Walsh (2017), "Peeking at A/B Tests: Why it matters, and what to do about it",
# KDD '17 (and Johari, Koomen, Pekelis, Walsh, "Always Valid Inference: Continuous Monitoring of
# A/B Tests", Operations Research 70(3), 2022). The mixture sequential probability ratio test
# (mSPRT) mixes the likelihood ratio of H1: theta != 0 over a normal prior N(0, tau^2) on the
# effect theta. With the normal approximation of the difference of two means, whose estimate is
# theta_hat with variance V at a look, the mixture likelihood ratio is
#     Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 * theta_hat^2 / (2 V (V + tau^2))),
# a nonnegative martingale under H0, so by Ville's inequality P(sup_n Lambda_n >= 1/alpha) <= alpha:
# the p-value min(1, 1 / max Lambda) is valid however often it is looked at and whenever the
# test is stopped. Inverting the test gives the always-valid confidence sequence
#     theta_hat +- sqrt(V (V + tau^2) / tau^2 * (log((V + tau^2) / V) - 2 log alpha)),
# intersected over the looks.

DEFAULT_TAU2 = 1e-4  # effects of about one percentage point on a conversion rate
MIN_LOOK_UNITS = 100  # the normal approximation needs this many units per arm at a look


def msprt_lambda(theta: np.ndarray, var: np.ndarray, tau2: float) -> np.ndarray:
    """The mSPRT mixture likelihood ratio at each look (1 where the variance is 0).

    Args:
        theta: the estimated effect (treatment minus control) at each look.
        var: the variance of that estimate at each look.
        tau2: the mixing variance of the normal prior on the effect.
    """
    theta = np.asarray(theta, np.float64)
    var = np.asarray(var, np.float64)
    out = np.ones_like(theta)
    ok = var > 0
    v = var[ok]
    log_l = 0.5 * np.log(v / (v + tau2)) + tau2 * theta[ok] ** 2 / (2.0 * v * (v + tau2))
    out[ok] = np.exp(np.minimum(log_l, 700.0))
    return out


def _proportion_looks(
    n_a: np.ndarray, x_a: np.ndarray, n_b: np.ndarray, x_b: np.ndarray, min_units: int
) -> tuple[np.ndarray, np.ndarray]:
    """(theta, variance) of the difference p_b - p_a at each look (variance 0: not a look)."""
    n_a = np.asarray(n_a, np.float64)
    n_b = np.asarray(n_b, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pa = np.where(n_a > 0, np.asarray(x_a, np.float64) / n_a, 0.0)
        pb = np.where(n_b > 0, np.asarray(x_b, np.float64) / n_b, 0.0)
        var = pa * (1 - pa) / n_a + pb * (1 - pb) / n_b
    var = np.where((n_a >= min_units) & (n_b >= min_units) & np.isfinite(var), var, 0.0)
    return pb - pa, var


def sequential_test(
    theta: np.ndarray, var: np.ndarray, *, alpha: float = 0.05, tau2: float = DEFAULT_TAU2
) -> dict[str, Any]:
    """The always-valid test of theta = 0 over a sequence of looks (oldest first).

    Returns:
        `p_value` (always valid: min over the looks of 1 / Lambda), `concluded` (p <= alpha),
        `effect` (the last estimate), `ci` (the always-valid confidence sequence at the last
        look: the running intersection), `lambda` (the last mixture ratio), `looks` and the
        settings (`alpha`, `tau2`, the method and its reference).
    """
    theta = np.asarray(theta, np.float64)
    var = np.asarray(var, np.float64)
    lam = msprt_lambda(theta, var, tau2)
    looks = int(np.count_nonzero(var > 0))
    p = float(min(1.0, 1.0 / float(lam.max()))) if len(lam) else 1.0
    lo, hi = -math.inf, math.inf
    ok = var > 0
    if ok.any():
        v = var[ok]
        half = np.sqrt(v * (v + tau2) / tau2 * (np.log((v + tau2) / v) - 2.0 * math.log(alpha)))
        lo = float(np.max(theta[ok] - half))
        hi = float(np.min(theta[ok] + half))
    effect = float(theta[-1]) if len(theta) else None
    return {
        "method": "mSPRT (normal mixture, tau^2 prior), always-valid p-value",
        "reference": "Johari, Pekelis, Walsh (2017), Peeking at A/B tests, KDD",
        "alpha": alpha,
        "tau2": tau2,
        "looks": looks,
        "effect": effect if looks else None,
        "ci": [_finite(lo), _finite(hi)] if looks else [None, None],
        "lambda": float(lam[-1]) if len(lam) else 1.0,
        "p_value": p,
        "concluded": bool(p <= alpha),
    }


def sequential_proportions(
    n_a: np.ndarray,
    x_a: np.ndarray,
    n_b: np.ndarray,
    x_b: np.ndarray,
    *,
    alpha: float = 0.05,
    tau2: float = DEFAULT_TAU2,
    min_units: int = MIN_LOOK_UNITS,
) -> dict[str, Any]:
    """Always-valid test of p_b - p_a = 0 from cumulative counts at each look.

    Args:
        n_a / x_a: units and successes of the control (A) at each look, cumulative.
        n_b / x_b: the same for the treatment (B).
        alpha: the level.
        tau2: the mixing variance on the difference of the rates.
        min_units: looks where an arm has fewer units are skipped (normal approximation).
    """
    theta, var = _proportion_looks(n_a, x_a, n_b, x_b, min_units)
    out = sequential_test(theta, var, alpha=alpha, tau2=tau2)
    out["units"] = [int(np.asarray(n_a)[-1]), int(np.asarray(n_b)[-1])] if len(theta) else [0, 0]
    return out


def looks_from_times(
    exposed: np.ndarray, converted: np.ndarray, arm_is_b: np.ndarray, looks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (n_a, x_a, n_b, x_b) at each look time from per-unit times.

    Args:
        exposed: when each unit was first exposed.
        converted: when it first succeeded (inf: not yet); what happened after a look is not
            counted at that look, so each look sees only the data it could have seen.
        arm_is_b: whether each unit is in the treatment.
        looks: the look times, ascending.
    """
    out = []
    for mask in (~arm_is_b, arm_is_b):
        e = np.sort(np.asarray(exposed, np.float64)[mask])
        c = np.sort(np.asarray(converted, np.float64)[mask])
        out.append(np.searchsorted(e, looks, side="right"))
        out.append(np.searchsorted(c, looks, side="right"))
    return out[0], out[1], out[2], out[3]
