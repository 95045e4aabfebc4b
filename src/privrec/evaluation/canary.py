"""Canary audit: an empirical lower bound on a model's user-level epsilon.

After Jagielski, Ullman & Oprea (NeurIPS 2020) and Nasr et al. (2021, 2023).

Set-up (`canary_audit`): m synthetic canary shoppers are made, each a distinctive set of
`canary_size` items (by default disjoint sets of the least popular items, where one shopper moves
a model the most). R models are trained; each canary is put into a random half of the R runs,
independently of the other canaries, so that for every canary the runs with and without it differ
in that one shopper (the others are a shared random background). Every run is a fresh fit (a DP
model draws fresh noise; `fit_kwargs` can pass e.g. a fixed `noise_seed` to simulate noise that
replays). Each canary's membership signal (`lira.membership_signal`) is read from every run and
turned into a score: the signal itself (`calibrate="global"`) or a LiRA likelihood ratio calibrated
on that canary's signals in the other runs (`calibrate="per_canary"`, the default: it also
catches noise that is the same in every run, where the signal differs between IN and OUT by a
fixed shift).

The bound (`epsilon_lower_bound`): the attack guesses "IN" when the score is >= a threshold. Over
the n_in IN trials and n_out OUT trials it has TP true and FP false positives. If the model is
(epsilon, delta)-DP at user level, every test satisfies

    TPR <= e^epsilon FPR + delta   and   1 - FPR <= e^epsilon (1 - TPR) + delta,

so, with TPR_low the lower end of TP / n_in's Clopper-Pearson interval and FPR_high the upper end
of FP / n_out's (each the end of a two-sided interval at `confidence`, so both hold together with
probability >= `confidence`):

    eps_lb = max over thresholds of max( log((TPR_low - delta) / FPR_high),
                                         log((1 - FPR_high - delta) / (1 - TPR_low)) ),

and 0 where no term is positive. Caveats, so the figure is read as evidence, not proof: the
maximum over thresholds is taken on the same trials (a mild optimism that grows with the number of
thresholds; `select="holdout"` removes it at the cost of half the trials), and the trials of
one run share a model, so Clopper-Pearson's independence holds across runs but only
approximately within one. An `eps_lb` above the claimed epsilon means the
guarantee is broken (or the claim is wrong); below it says nothing about the guarantee holding.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from privrec.core.types import EVENT_CODE
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.evaluation.lira import (
    Signal,
    balanced_membership,
    clopper_pearson,
    clopper_pearson_bounds,
    lira_scores,
    membership_signal,
)
from privrec.evaluation.membership import roc_auc
from privrec.models.base import Recommender

log = logging.getLogger(__name__)

CANARY_PREFIX = "canary-"
ItemPool = Literal["rare", "popular", "uniform"]
FitKwargs = Mapping[str, Any] | Callable[[int], Mapping[str, Any]] | None


# ---- the bound -----------------------------------------------------------------------------------
@dataclass
class EpsilonBound:
    """The best threshold's empirical lower bound on epsilon (see the module docstring).

    Attributes:
        epsilon_lb: the bound (0 when no threshold gives a positive one).
        direction: "tpr/fpr", "(1-fpr)/(1-tpr)" or "none".
        threshold: the score at and above which the attack says "IN".
        tpr, fpr: the rates at that threshold.
        tpr_low, fpr_high: their Clopper-Pearson ends used in the bound.
        n_positives, n_negatives: IN and OUT trials.
        delta: the delta subtracted.
        confidence: of each two-sided Clopper-Pearson interval.
    """

    epsilon_lb: float
    direction: str
    threshold: float
    tpr: float
    fpr: float
    tpr_low: float
    fpr_high: float
    n_positives: int
    n_negatives: int
    delta: float
    confidence: float


def epsilon_lower_bound(
    labels: np.ndarray, scores: np.ndarray, *, delta: float = 0.0, confidence: float = 0.95
) -> EpsilonBound:
    """Empirical lower bound on epsilon from a membership test's trials (module docstring formula).

    Args:
        labels: 1 / True for the IN trials.
        scores: the attack's score per trial (higher: "IN").
        delta: the model's delta.
        confidence: of each two-sided Clopper-Pearson interval.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("labels: need both IN and OUT trials")
    thr = np.unique(s)[::-1]
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tp = n_pos - np.searchsorted(pos, thr, side="left")  # scores >= threshold
    fp = n_neg - np.searchsorted(neg, thr, side="left")
    tpr_low, _ = clopper_pearson_bounds(tp, n_pos, confidence)
    _, fpr_high = clopper_pearson_bounds(fp, n_neg, confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        num1 = tpr_low - delta
        e1 = np.where(num1 > 0, np.log(np.maximum(num1, 1e-300) / fpr_high), -np.inf)
        num2 = 1.0 - fpr_high - delta
        e2 = np.where(num2 > 0, np.log(np.maximum(num2, 1e-300) / (1.0 - tpr_low)), -np.inf)
    best = np.maximum(e1, e2)
    i = int(np.argmax(best))
    if not best[i] > 0:
        direction, eps = "none", 0.0
    else:
        direction = "tpr/fpr" if e1[i] >= e2[i] else "(1-fpr)/(1-tpr)"
        eps = float(best[i])
    return EpsilonBound(
        epsilon_lb=eps,
        direction=direction,
        threshold=float(thr[i]),
        tpr=float(tp[i] / n_pos),
        fpr=float(fp[i] / n_neg),
        tpr_low=float(tpr_low[i]),
        fpr_high=float(fpr_high[i]),
        n_positives=n_pos,
        n_negatives=n_neg,
        delta=float(delta),
        confidence=float(confidence),
    )


def epsilon_at_threshold(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    *,
    delta: float = 0.0,
    confidence: float = 0.95,
) -> EpsilonBound:
    """The bound of one threshold fixed in advance (both directions of the formula)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("labels: need both IN and OUT trials")
    tp, fp = int((s[y] >= threshold).sum()), int((s[~y] >= threshold).sum())
    tpr_low = clopper_pearson(tp, n_pos, confidence)[0]
    fpr_high = clopper_pearson(fp, n_neg, confidence)[1]
    e1 = math.log((tpr_low - delta) / fpr_high) if tpr_low > delta else -math.inf
    e2 = math.log((1 - fpr_high - delta) / (1 - tpr_low)) if 1 - fpr_high > delta else -math.inf
    best = max(e1, e2)
    return EpsilonBound(
        epsilon_lb=best if best > 0 else 0.0,
        direction="none" if not best > 0 else ("tpr/fpr" if e1 >= e2 else "(1-fpr)/(1-tpr)"),
        threshold=float(threshold),
        tpr=tp / n_pos,
        fpr=fp / n_neg,
        tpr_low=tpr_low,
        fpr_high=fpr_high,
        n_positives=n_pos,
        n_negatives=n_neg,
        delta=float(delta),
        confidence=float(confidence),
    )


# ---- canaries ------------------------------------------------------------------------------------
def make_canaries(
    dataset: InteractionDataset,
    canaries: int,
    size: int,
    *,
    item_pool: ItemPool = "rare",
    seed: int = 0,
) -> list[np.ndarray]:
    """Item sets of `canaries` synthetic shoppers, `size` distinct items each.

    "rare" draws from the least popular items (ties broken at random), "popular" from the most
    popular (for models that keep only popular items, such as DP item selection), "uniform" from
    all; the sets are disjoint while canaries x size fits in half the catalogue, else they may
    overlap.
    """
    n = dataset.n_items
    if not 1 <= size <= n // 2:
        raise ValueError(f"canary_size: {size} is not within 1..{n // 2} (half the catalogue)")
    rng = np.random.default_rng(seed)
    if item_pool in ("rare", "popular"):
        counts = np.bincount(dataset.item_idx, minlength=n)
        order = np.lexsort((rng.random(n), counts if item_pool == "rare" else -counts))
    elif item_pool == "uniform":
        order = rng.permutation(n)
    else:
        raise ValueError(f"item_pool: {item_pool!r} is not 'rare', 'popular' or 'uniform'")
    if canaries * size <= n // 2:
        pool = rng.permutation(order[: canaries * size])
        return [np.sort(pool[i * size : (i + 1) * size]) for i in range(canaries)]
    pool = order[: n // 2]
    return [np.sort(rng.choice(pool, size=size, replace=False)) for _ in range(canaries)]


def add_canaries(
    dataset: InteractionDataset, items: list[np.ndarray]
) -> tuple[InteractionDataset, np.ndarray]:
    """`dataset` plus one new shopper per item set (purchase events after all others).

    Returns:
        The extended dataset (same item vocabulary) and the canaries' user indices.
    """
    keys = dataset.users.keys
    taken = set(keys)
    names = [f"{CANARY_PREFIX}{i:04d}" for i in range(len(items))]
    if taken.intersection(names):
        raise ValueError("dataset: already holds shoppers named like canaries")
    users = np.arange(dataset.n_users, dataset.n_users + len(items))
    u = np.repeat(users, [len(x) for x in items]).astype(np.int32)
    it = np.concatenate(items).astype(np.int32)
    t0 = float(dataset.ts.max()) + 1.0 if dataset.n_events else 0.0
    ts = t0 + np.arange(it.size, dtype=np.float64)
    arrival = None
    if dataset.arrival is not None:
        start = int(dataset.arrival.max()) + 1 if dataset.arrival.size else 0
        arrival = np.r_[dataset.arrival, start + np.arange(it.size, dtype=np.int64)]
    out = InteractionDataset(
        users=Vocabulary(keys + names),
        items=dataset.items,
        user_idx=np.r_[dataset.user_idx, u].astype(np.int32),
        item_idx=np.r_[dataset.item_idx, it].astype(np.int32),
        event_type=np.r_[dataset.event_type, np.full(it.size, EVENT_CODE["purchase"])].astype(
            np.int8
        ),
        ts=np.r_[dataset.ts, ts],
        rating=np.r_[dataset.rating, np.full(it.size, np.nan)].astype(np.float32),
        item_meta=dataset.item_meta,
        event_weights=dict(dataset.event_weights),
        name=f"{dataset.name}+canaries",
        arrival=arrival,
        n_rejects=dataset.n_rejects,
    )
    return out, users


# ---- the audit -----------------------------------------------------------------------------------
@dataclass
class CanaryResult:
    """What a canary audit measured.

    Attributes:
        model: the model's name.
        params: its settings.
        epsilon_lb: the empirical lower bound on epsilon.
        claimed_epsilon: the epsilon the model claims (inf: no claim).
        delta: the delta used in the bound.
        exceeds_claim: epsilon_lb > claimed_epsilon: the guarantee does not hold as stated.
        bound: the best threshold's details.
        auc: ROC AUC of the IN vs OUT trials.
        canaries, canary_size, runs: the audit's size (canaries x runs trials, half IN).
        calibrate, select, signal, item_pool: how canaries were made, scored and thresholded.
        seed: the audit's seed.
        seconds: wall time.
    """

    model: str
    params: dict[str, Any]
    epsilon_lb: float
    claimed_epsilon: float
    delta: float
    exceeds_claim: bool
    bound: EpsilonBound
    auc: float
    canaries: int
    canary_size: int
    runs: int
    calibrate: str
    select: str
    signal: str
    item_pool: str
    seed: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (inf as the string "inf")."""
        d = asdict(self)
        for k in ("claimed_epsilon",):
            if math.isinf(d[k]):
                d[k] = "inf"
        d["params"] = {
            k: ("inf" if isinstance(v, float) and math.isinf(v) else v)
            for k, v in d["params"].items()
        }
        return d


def _claim(model: Recommender) -> tuple[float, float]:
    """(epsilon, delta) the fitted model claims: its guarantee, else its config, else (inf, 0)."""
    if model.privacy is not None:
        return float(model.privacy.epsilon), float(model.privacy.delta)
    c = model.config
    eps = float(getattr(c, "epsilon", math.inf))
    delta = getattr(c, "delta", None)
    if delta is None and not math.isinf(eps) and hasattr(c, "expected_users"):
        delta = 1.0 / (10.0 * float(c.expected_users))  # the DP models' documented default
    return eps, float(delta or 0.0)


def canary_audit(
    model_factory: Callable[[], Recommender],
    dataset: InteractionDataset,
    *,
    canaries: int = 32,
    canary_size: int = 8,
    runs: int = 8,
    item_pool: ItemPool = "rare",
    signal: Signal = "halves",
    calibrate: Literal["per_canary", "global"] = "per_canary",
    select: Literal["max", "holdout"] = "max",
    claimed_epsilon: float | None = None,
    delta: float | None = None,
    fit_kwargs: FitKwargs = None,
    confidence: float = 0.95,
    seed: int = 0,
    model_name: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> CanaryResult:
    """Insert canaries into half of `runs` fits each and bound epsilon (see the module doc).

    Args:
        model_factory: returns a new, unfitted model (the same kind and settings each time).
        dataset: the real shoppers, present in every run.
        canaries: m, the synthetic shoppers.
        canary_size: items per canary.
        runs: R, fits (even; >= 4 for `calibrate="per_canary"`).
        item_pool: "rare", "popular" or "uniform" (see `make_canaries`).
        signal: the membership signal (see `lira.membership_signal`).
        calibrate: "per_canary" (likelihood ratio on the other runs) or "global" (raw signal).
        select: "max" (the best threshold on all trials, the module docstring's formula) or
            "holdout" (the threshold chosen on the even runs, the bound read on the odd runs
            alone: half the trials, no optimism from the choice).
        claimed_epsilon, delta: the guarantee to test (None: what the fitted model claims).
        fit_kwargs: extra keyword arguments of `fit`, or a function of the run index giving them.
        confidence: of each Clopper-Pearson interval.
        seed: seeds the canaries, their inclusion, the halves and the fits.
        model_name, params: recorded in the result.

    Returns:
        CanaryResult with the bound and the claim it is compared with.
    """
    t0 = time.perf_counter()
    r_n = int(runs)
    if r_n < 2 or r_n % 2:
        raise ValueError(f"runs: {runs} is not an even number >= 2")
    if calibrate == "per_canary" and r_n < 4:
        raise ValueError("runs: per-canary calibration needs at least 4 runs")
    if calibrate not in ("per_canary", "global"):
        raise ValueError(f"calibrate: {calibrate!r} is not 'per_canary' or 'global'")
    if select not in ("max", "holdout") or (select == "holdout" and r_n < 4):
        raise ValueError(f"select: {select!r} is not 'max' or 'holdout' (with >= 4 runs)")
    rng = np.random.default_rng(seed)
    items = make_canaries(dataset, canaries, canary_size, item_pool=item_pool, seed=seed)
    full, canary_users = add_canaries(dataset, items)
    inside = balanced_membership(r_n, len(items), rng)
    pos_of = np.full(full.n_users, -1, dtype=np.int64)
    pos_of[canary_users] = np.arange(len(items))
    ev_pos = pos_of[full.user_idx]
    is_canary = ev_pos >= 0

    signals = np.zeros((r_n, len(items)), dtype=np.float64)
    histories: sp.csr_matrix | None = None
    claim: tuple[float, float] | None = None
    for r in range(r_n):
        keep = ~is_canary
        keep[is_canary] = inside[r, ev_pos[is_canary]]
        kw = fit_kwargs(r) if callable(fit_kwargs) else (fit_kwargs or {})
        model = model_factory()
        model.fit(full.subset(keep, name=f"{dataset.name}:canary{r}"), rng=seed + r, **kw)
        if histories is None:
            histories = sp.csr_matrix(model.input_matrix(full)[canary_users])
            claim = _claim(model)
        signals[r] = membership_signal(model, histories, signal=signal, seed=seed + 1)
    assert claim is not None

    if calibrate == "per_canary":
        scores = np.vstack([lira_scores(signals, inside, r, seed=seed) for r in range(r_n)])
    else:
        scores = signals
    ok = np.isfinite(scores)
    y, sc = inside[ok], scores[ok]
    eps_claim = claim[0] if claimed_epsilon is None else float(claimed_epsilon)
    d = claim[1] if delta is None else float(delta)
    if select == "max":
        bound = epsilon_lower_bound(y, sc, delta=d, confidence=confidence)
    else:  # choose the threshold on the even runs, read the bound on the odd ones only
        even = np.zeros_like(inside)
        even[0::2] = True
        chosen = epsilon_lower_bound(inside[ok & even], scores[ok & even], delta=d)
        odd = ok & ~even
        bound = epsilon_at_threshold(
            inside[odd], scores[odd], chosen.threshold, delta=d, confidence=confidence
        )
    notes = []
    # the best any attack could show: every trial right
    tpr_best = clopper_pearson(bound.n_positives, bound.n_positives, confidence)[0]
    fpr_best = clopper_pearson(0, bound.n_negatives, confidence)[1]
    ceiling = max(math.log(tpr_best / fpr_best), math.log((1 - fpr_best) / (1 - tpr_best)))
    if not math.isinf(eps_claim) and ceiling < eps_claim:
        notes.append(
            f"with {bound.n_negatives} OUT trials no bound above about {ceiling:.2f} is possible "
            f"(claimed {eps_claim:g}): the audit cannot refute the claim"
        )
    res = CanaryResult(
        model=model_name or type(model).name,
        params=dict(params or {}),
        epsilon_lb=bound.epsilon_lb,
        claimed_epsilon=eps_claim,
        delta=d,
        exceeds_claim=bool(bound.epsilon_lb > eps_claim),
        bound=bound,
        auc=roc_auc(y, sc),
        canaries=len(items),
        canary_size=int(canary_size),
        runs=r_n,
        calibrate=calibrate,
        select=select,
        signal=signal,
        item_pool=item_pool,
        seed=int(seed),
        seconds=time.perf_counter() - t0,
        notes=notes,
    )
    log.info(
        "canary audit %s eps_lb=%.3f claimed=%s auc=%.3f",
        res.model,
        res.epsilon_lb,
        eps_claim,
        res.auc,
    )
    return res


def empirical_epsilon(
    model_name: str,
    params: Mapping[str, Any],
    dataset: InteractionDataset,
    *,
    canaries: int = 32,
    runs: int = 8,
    seed: int = 0,
    **options: Any,
) -> CanaryResult:
    """The canary audit of zoo model `model_name` with `params` (options: see `canary_audit`)."""
    from privrec.models.zoo import create_model

    p = dict(params)
    return canary_audit(
        lambda: create_model(model_name, **p),
        dataset,
        canaries=canaries,
        runs=runs,
        seed=seed,
        model_name=model_name,
        params=p,
        **options,
    )
