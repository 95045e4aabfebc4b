"""LiRA: per-shopper likelihood-ratio membership inference with many shadow models.

After Carlini et al., "Membership Inference Attacks From First Principles" (S&P 2022), adapted to
user-level membership in a recommender.

Set-up (`lira_audit`): the candidate shoppers (at least `min_history` events) are each put into a
random half of K models (every candidate is IN exactly K/2 models, so every shopper has IN and OUT
examples); shoppers that are not candidates train every model. Each model is fitted once.

Membership signal of a shopper with history h against a model M (`membership_signal`): h is split
in two fixed random halves A and B (the same split for every model, so the signals of one shopper
are comparable); M is queried with A, and the signal is the mean z-score of B's items among all
items not in A (and the other way round). A model that memorised the shopper scores their own
items high. `signal="reconstruction"` queries with the whole of h and reads h's own items.

The test, per shopper u and target model t (every model takes its turn as the target, the other
K - 1 are its shadows):

    Lambda(u) = log N(s_t(u); mu_in(u), sigma_in^2) - log N(s_t(u); mu_out(u), sigma_out^2)

with mu_in(u), mu_out(u) the mean signal of u in the shadows that did / did not train on u (as
many of each: one random shadow of the larger group is left out, else members would be fitted
from one signal fewer and score lower even without any signal), and
sigma^2 either per shopper or (`fixed_variance`, the default; Carlini et al. recommend it for few
shadows) pooled over all shoppers. The scores of all (target, shopper) pairs are pooled: AUC and
the TPR at each requested FPR, with a Clopper-Pearson interval on the TPR. The pooled pairs share
shoppers and models, so the interval treats them as independent trials: an approximation.

An operating point at FPR alpha rests on alpha x (negatives) false positives: with fewer than
`min_false_positives` (default 100, i.e. 100 / alpha negatives) it is flagged unreliable and a
`LowPowerWarning` is raised.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from privrec.data.dataset import InteractionDataset
from privrec.evaluation.membership import roc_auc
from privrec.models.base import Recommender

log = logging.getLogger(__name__)

Signal = Literal["halves", "reconstruction"]


class LowPowerWarning(UserWarning):
    """An audit figure rests on too few trials to be read at the stated false-positive rate."""


# ---- statistics ----------------------------------------------------------------------------------
def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The two-sided Clopper-Pearson interval of a binomial proportion k / n.

    lower = Beta quantile (1 - confidence) / 2 of Beta(k, n - k + 1) (0 when k = 0), upper =
    quantile (1 + confidence) / 2 of Beta(k + 1, n - k) (1 when k = n). Each end alone holds
    with probability at least (1 + confidence) / 2.
    """
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k: {k} is not within 0..{n}")
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def clopper_pearson_bounds(
    k: np.ndarray, n: int, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """`clopper_pearson` for an array of counts k out of the same n (vectorised)."""
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    a = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, beta.ppf(a / 2, np.maximum(k, 1), n - k + 1), 0.0)
        hi = np.where(k < n, beta.ppf(1 - a / 2, k + 1, np.maximum(n - k, 1)), 1.0)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


@dataclass
class OperatingPoint:
    """The attack's true-positive rate at a false-positive rate of at most `target_fpr`.

    Attributes:
        target_fpr: the false-positive rate asked for.
        tpr, tpr_low, tpr_high: the true-positive rate and its Clopper-Pearson interval.
        fpr: the false-positive rate reached (<= target_fpr).
        true_positives, false_positives: counts above the threshold.
        n_positives, n_negatives: trials.
        reliable: at least `min_false_positives` negatives are allowed above the threshold.
    """

    target_fpr: float
    tpr: float
    tpr_low: float
    tpr_high: float
    fpr: float
    true_positives: int
    false_positives: int
    n_positives: int
    n_negatives: int
    reliable: bool


def operating_point(
    labels: np.ndarray,
    scores: np.ndarray,
    fpr: float,
    *,
    confidence: float = 0.95,
    min_false_positives: int = 100,
    warn: bool = True,
) -> OperatingPoint:
    """TPR at FPR <= `fpr` (guess "member" when the score is strictly above a threshold).

    Warns (`LowPowerWarning`) when fewer than `min_false_positives` / `fpr` negatives back it.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    pos, neg = s[y], np.sort(s[~y])[::-1]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("labels: need both members and non-members")
    allowed = int(np.floor(fpr * neg.size))  # negatives allowed above the threshold
    thr = neg[allowed] if allowed < neg.size else -np.inf
    tp, fp = int((pos > thr).sum()), int((neg > thr).sum())
    lo, hi = clopper_pearson(tp, pos.size, confidence)
    reliable = fpr * neg.size >= min_false_positives
    if not reliable and warn:
        warnings.warn(
            f"TPR at {fpr:g} FPR rests on {neg.size} negatives ({fpr * neg.size:.1f} allowed "
            f"false positives); {int(np.ceil(min_false_positives / fpr))} are needed to read it",
            LowPowerWarning,
            stacklevel=2,
        )
    return OperatingPoint(
        target_fpr=float(fpr),
        tpr=tp / pos.size,
        tpr_low=lo,
        tpr_high=hi,
        fpr=fp / neg.size,
        true_positives=tp,
        false_positives=fp,
        n_positives=int(pos.size),
        n_negatives=int(neg.size),
        reliable=bool(reliable),
    )


# ---- the membership signal -----------------------------------------------------------------------
def split_halves(x: sp.csr_matrix, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split every row's items into two random halves (seeded; the first gets n // 2)."""
    rng = np.random.default_rng(seed)
    x = sp.csr_matrix(x, copy=True)
    x.sort_indices()
    coin = np.zeros(x.nnz, dtype=bool)
    for u in range(x.shape[0]):
        a, b = x.indptr[u], x.indptr[u + 1]
        if b > a:
            coin[a + rng.permutation(b - a)[: (b - a) // 2]] = True
    parts = []
    for keep in (coin, ~coin):
        p = x.copy()
        p.data = np.where(keep, x.data, 0)
        p.eliminate_zeros()
        parts.append(p)
    return parts[0], parts[1]


def _held_zscore(model: Recommender, query: sp.csr_matrix, held: sp.csr_matrix, mask: bool) -> Any:
    """Per row: the mean z-score of the held items among the candidate items (NaN: none held)."""
    s = np.array(model.score_matrix(query), dtype=np.float64)
    s[~np.isfinite(s)] = np.nan
    if mask:  # the queried items are no candidates (a model may score them anything)
        rows_q = np.repeat(np.arange(query.shape[0]), np.diff(query.indptr))
        s[rows_q, query.indices] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows with no finite score
        mean = np.nanmean(s, axis=1, keepdims=True)
        std = np.nanstd(s, axis=1, keepdims=True)
        lowest = np.nanmin(s, axis=1, keepdims=True)
    ok = np.isfinite(std) & (std > 1e-12 * np.maximum(np.abs(mean), 1.0))
    z = np.where(ok, (s - mean) / np.where(ok, std, 1.0), 0.0)
    # a held item the model refused to score ranks as low as the lowest candidate
    floor = np.where(ok, (lowest - mean) / np.where(ok, std, 1.0), 0.0)
    z = np.where(np.isnan(z), floor, z)
    rows_h = np.repeat(np.arange(held.shape[0]), np.diff(held.indptr))
    total = np.bincount(rows_h, weights=z[rows_h, held.indices], minlength=held.shape[0])
    cnt = np.bincount(rows_h, minlength=held.shape[0]).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / cnt


def membership_signal(
    model: Recommender,
    histories: sp.csr_matrix,
    *,
    signal: Signal = "halves",
    seed: int = 0,
    batch_size: int = 1024,
) -> np.ndarray:
    """One membership signal per history row (higher: more likely a member; see the module doc).

    Args:
        model: a fitted model, queried only through `score_matrix`.
        histories: one row per shopper, weighted as the model's `input_matrix`.
        signal: "halves" (query with one half, read the other) or "reconstruction" (query with
            the whole history, read its own items).
        seed: seeds the split into halves (keep it fixed across the models compared).
        batch_size: rows scored at once.
    """
    h = sp.csr_matrix(histories)
    out = np.zeros(h.shape[0], dtype=np.float64)
    if signal == "halves":
        a_all, b_all = split_halves(h, seed)
    elif signal != "reconstruction":
        raise ValueError(f"signal: {signal!r} is not 'halves' or 'reconstruction'")
    for r0 in range(0, h.shape[0], batch_size):
        sl = slice(r0, r0 + batch_size)
        if signal == "halves":
            a, b = a_all[sl], b_all[sl]
            both = np.vstack([_held_zscore(model, a, b, True), _held_zscore(model, b, a, True)])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a row too short to split
                v = np.nanmean(both, axis=0)
        else:
            v = _held_zscore(model, h[sl], h[sl], False)
        out[sl] = np.nan_to_num(v, nan=0.0)
    return out


# ---- the likelihood-ratio test -------------------------------------------------------------------
def _keep_first(sel: np.ndarray, n_keep: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """`sel` with only its first n_keep[j] True entries per column, in the order of `keys`."""
    rank = np.argsort(np.argsort(np.where(sel, keys, np.inf), axis=0), axis=0)
    return np.asarray(sel & (rank < n_keep[None, :]), dtype=bool)


def lira_scores(
    signals: np.ndarray,
    membership: np.ndarray,
    target: int,
    *,
    fixed_variance: bool = True,
    balance: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Per-column log likelihood ratio of `signals[target]`, calibrated on the other rows.

    Args:
        signals: (models, examples) membership signals.
        membership: (models, examples) bool, True where the model trained on the example.
        target: the row attacked; the others are its shadows.
        fixed_variance: one IN and one OUT variance pooled over all examples (else per example).
        balance: per example, use as many IN as OUT shadows (random ones of the larger group
            are left out). Without it, a member of the target has one IN shadow fewer than a
            non-member (each example is IN half the models), and the mean estimated from fewer
            signals fits worse: members would score lower even when there is no signal.
        seed: seeds which shadows `balance` leaves out.

    Returns:
        Lambda per example; NaN where the shadows hold no IN or no OUT signal of it.
    """
    s = np.asarray(signals, dtype=np.float64)
    m = np.asarray(membership, dtype=bool)
    shadow = np.ones(s.shape[0], dtype=bool)
    shadow[target] = False
    ss, mm = s[shadow], m[shadow]
    sel_in, sel_out = mm, ~mm
    if balance:
        keys = np.random.default_rng([seed, target]).random(mm.shape)
        n_min = np.minimum(sel_in.sum(axis=0), sel_out.sum(axis=0))
        sel_in, sel_out = _keep_first(sel_in, n_min, keys), _keep_first(sel_out, n_min, keys)

    def fit(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = sel.sum(axis=0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = np.where(sel, ss, 0.0).sum(axis=0) / n
            resid2 = np.where(sel, (ss - mu) ** 2, 0.0)
            if fixed_variance:
                var = np.full(ss.shape[1], resid2.sum() / max(float((n - 1).clip(0).sum()), 1.0))
            else:
                var = resid2.sum(axis=0) / np.maximum(n - 1, 1)
        return mu, var

    mu_in, var_in = fit(sel_in)
    mu_out, var_out = fit(sel_out)
    # a floor keeps a noiseless (deterministic) model's ratio finite but still decisive
    scale = max(float(np.nanvar(ss)), 1e-300)
    var_in = np.maximum(var_in, 1e-9 * scale)
    var_out = np.maximum(var_out, 1e-9 * scale)
    x = s[target]
    ll_in = -0.5 * ((x - mu_in) ** 2 / var_in + np.log(var_in))
    ll_out = -0.5 * ((x - mu_out) ** 2 / var_out + np.log(var_out))
    return np.asarray(ll_in - ll_out, dtype=np.float64)


@dataclass
class LiraResult:
    """What a LiRA audit measured.

    Attributes:
        auc: ROC AUC of the pooled (target model, shopper) scores (0.5 = chance).
        auc_per_target: the AUC with each model as the target.
        points: the TPR at each requested FPR, with Clopper-Pearson intervals.
        n_members, n_nonmembers: pooled trials (members / non-members over all targets).
        n_users: candidate shoppers.
        shadows: models trained (each is a target once; K - 1 shadows per target).
        signal: the membership signal used.
        fixed_variance: whether the Gaussian variances were pooled over shoppers.
        seconds: wall time.
    """

    auc: float
    auc_per_target: list[float]
    points: list[OperatingPoint]
    n_members: int
    n_nonmembers: int
    n_users: int
    shadows: int
    signal: str
    fixed_variance: bool
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def point(self, fpr: float) -> OperatingPoint:
        """The operating point at target FPR `fpr` (KeyError if it was not requested)."""
        for p in self.points:
            if abs(p.target_fpr - fpr) < 1e-12:
                return p
        raise KeyError(f"fpr {fpr} was not requested")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def balanced_membership(n_models: int, n_users: int, rng: np.random.Generator) -> np.ndarray:
    """(models, users) bool: every user IN exactly half of the models, chosen at random."""
    half = np.zeros((n_models, n_users), dtype=bool)
    half[: n_models // 2] = True
    return np.asarray(rng.permuted(half, axis=0), dtype=bool)


def lira_audit(
    model_factory: Callable[[], Recommender],
    dataset: InteractionDataset,
    *,
    shadows: int = 16,
    min_history: int = 4,
    max_users: int | None = None,
    signal: Signal = "halves",
    fixed_variance: bool = True,
    fprs: Sequence[float] = (0.001, 0.01),
    confidence: float = 0.95,
    min_false_positives: int = 100,
    seed: int = 0,
) -> LiraResult:
    """Train `shadows` models on random halves of the candidates and run LiRA (see the module doc).

    Args:
        model_factory: returns a new, unfitted model (the same kind and settings each time).
        dataset: the interactions; shoppers with fewer than `min_history` events train every
            model and are not attacked.
        shadows: K, the number of models (even, >= 4); each is the target once.
        min_history: candidates need this many events (their history is split in halves).
        max_users: attack at most this many candidates (a seeded sample; the rest train always).
        signal: "halves" or "reconstruction" (see `membership_signal`).
        fixed_variance: pool the IN / OUT variances over shoppers.
        fprs: false-positive rates to report the TPR at.
        confidence: of the Clopper-Pearson intervals.
        min_false_positives: an operating point with fewer allowed false positives is flagged
            and warned about.
        seed: seeds the candidate sample, the membership draw, the halves and the fits.

    Returns:
        LiraResult with the pooled AUC and the TPR at each FPR with its interval.
    """
    t0 = time.perf_counter()
    k = int(shadows)
    if k < 4 or k % 2:
        raise ValueError(f"shadows: {shadows} is not an even number >= 4")
    rng = np.random.default_rng(seed)
    counts = np.bincount(dataset.user_idx, minlength=dataset.n_users)
    users = rng.permutation(np.nonzero(counts >= min_history)[0])
    if max_users is not None:
        users = users[: int(max_users)]
    if users.size < 10:
        raise ValueError(f"dataset: only {users.size} shoppers with >= {min_history} events")
    users = np.sort(users)
    member = balanced_membership(k, users.size, rng)
    is_candidate = np.zeros(dataset.n_users, dtype=bool)
    is_candidate[users] = True
    always = ~is_candidate[dataset.user_idx]
    pos_of = np.full(dataset.n_users, -1, dtype=np.int64)
    pos_of[users] = np.arange(users.size)
    ev_pos = pos_of[dataset.user_idx]

    signals = np.zeros((k, users.size), dtype=np.float64)
    histories: sp.csr_matrix | None = None
    for j in range(k):
        trains = always.copy()
        cand = ev_pos >= 0
        trains[cand] = member[j, ev_pos[cand]]
        model = model_factory()
        model.fit(dataset.subset(trains, name=f"{dataset.name}:lira{j}"), rng=seed + j)
        if histories is None:  # every model has the same config, so the same weighting
            histories = sp.csr_matrix(model.input_matrix(dataset)[users])
        signals[j] = membership_signal(model, histories, signal=signal, seed=seed + 1)
        log.debug("lira model %d/%d fitted and scored", j + 1, k)

    scores, labels, per_target = [], [], []
    for t in range(k):
        lam = lira_scores(signals, member, t, fixed_variance=fixed_variance, seed=seed)
        ok = np.isfinite(lam)
        scores.append(lam[ok])
        labels.append(member[t, ok])
        per_target.append(roc_auc(member[t, ok], lam[ok]))
    y, sc = np.concatenate(labels), np.concatenate(scores)
    caught: list[str] = []
    points = []
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always", LowPowerWarning)
        for f in fprs:
            points.append(
                operating_point(
                    y, sc, f, confidence=confidence, min_false_positives=min_false_positives
                )
            )
    for w in rec:
        caught.append(str(w.message))
        warnings.warn(str(w.message), LowPowerWarning, stacklevel=2)
    res = LiraResult(
        auc=roc_auc(y, sc),
        auc_per_target=[float(a) for a in per_target],
        points=points,
        n_members=int(y.sum()),
        n_nonmembers=int((~y).sum()),
        n_users=int(users.size),
        shadows=k,
        signal=signal,
        fixed_variance=bool(fixed_variance),
        seconds=time.perf_counter() - t0,
        warnings=caught,
    )
    log.info("lira audit auc=%.4f users=%d models=%d", res.auc, users.size, k)
    return res
