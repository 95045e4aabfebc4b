"""Detecting fake shopper profiles before training.

Two stages, both unsupervised (the defender does not know which attack, how many fakes or which
targets):

1. Profile statistics per user, each turned into a robust z-score (median / MAD over all users):
   - degsim: mean cosine similarity to the user's k nearest neighbours (injected profiles are
     made from one template, so they sit unusually close to each other; Chirita et al. 2005);
   - filler popularity: mean log-popularity of the profile's items, and the share of the 1% most
     popular items in it (random fillers are too obscure, bandwagon profiles too mainstream);
   - length: profile size;
   - rdma: rating deviation from mean agreement (explicit data only; Chirita et al. 2005);
   - rate / volume: the most events in any 60-second window and events per active day (bots
     that write many events quickly).
   The suspicion score is the sum of the absolute z-scores (clipped at 10 so one feature cannot
   dominate).
2. Target-item analysis (cf. Zhang et al. 2015): among the most suspicious `candidate_share` of
   users, an item is a *suspected target* when most of its shoppers (>= `target_purity`) are
   candidates and at least `min_support` candidates hold it; a real niche item is rarely held
   mostly by odd profiles, and among such items a pushed one is held by far more candidates
   (an outlier, `outlier_z`) or by the same candidates as another such item (`cohesion`).
   Users are flagged when they are candidates holding at least half of the suspected targets.
   Pushing an item needs many fakes on it, so this stage is what separates fakes from merely
   unusual real shoppers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from privrec.data.dataset import InteractionDataset

__all__ = ["DetectionResult", "detect_fake_profiles", "precision_recall", "profile_features"]


@dataclass
class DetectionResult:
    """What the detector decided.

    Attributes:
        flagged: user indices judged fake.
        scores: per-user suspicion score (stage 1).
        suspected_targets: item indices judged to be pushed.
        features: the per-user feature table (raw values).
    """

    flagged: np.ndarray
    scores: np.ndarray
    suspected_targets: np.ndarray
    features: pd.DataFrame


def _degsim(x: sp.csr_matrix, k: int, batch: int = 1024) -> np.ndarray:
    """Mean cosine similarity of each row to its k most similar other rows."""
    n = x.shape[0]
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    xn = sp.csr_matrix(
        sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x, dtype=np.float32
    )  # float32: a batch is batch x n_users dense
    xt = xn.T.tocsr()
    out = np.zeros(n)
    kk = min(k, n - 1)
    if kk <= 0:
        return out
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        s = (xn[start:stop] @ xt).toarray()
        s[np.arange(stop - start), np.arange(start, stop)] = -1.0  # not one's own neighbour
        top = -np.partition(-s, kk - 1, axis=1)[:, :kk]
        out[start:stop] = top.mean(axis=1)
    return out


def profile_features(ds: InteractionDataset, *, k: int = 10) -> pd.DataFrame:
    """Per-user profile statistics (one row per user index)."""
    x = ds.matrix(binary=True).astype(np.float64)
    n_users = ds.n_users
    deg = np.asarray(x.sum(axis=0)).ravel()
    length = np.diff(x.indptr).astype(np.float64)
    logpop = np.log1p(deg)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pop = np.where(length > 0, (x @ logpop) / np.maximum(length, 1), 0.0)
        n_top = max(1, round(0.01 * ds.n_items))
        top = np.zeros(ds.n_items)
        top[np.argsort(-deg, kind="stable")[:n_top]] = 1.0
        top_share = np.where(length > 0, (x @ top) / np.maximum(length, 1), 0.0)
    feats: dict[str, np.ndarray] = {
        "length": length,
        "mean_pop": mean_pop,
        "top_share": top_share,
        "degsim": _degsim(x, k),
    }
    finite = np.isfinite(ds.rating)
    if ds.n_events and finite.mean() > 0.5:
        r = np.where(finite, ds.rating, 0.0).astype(np.float64)
        n_r = np.bincount(ds.item_idx[finite], minlength=ds.n_items)
        mean_r = np.bincount(ds.item_idx, weights=r, minlength=ds.n_items) / np.maximum(n_r, 1)
        dev = np.where(
            finite, np.abs(r - mean_r[ds.item_idx]) / np.maximum(n_r[ds.item_idx], 1), 0.0
        )
        cnt = np.bincount(ds.user_idx[finite], minlength=n_users)
        feats["rdma"] = np.bincount(ds.user_idx, weights=dev, minlength=n_users) / np.maximum(
            cnt, 1
        )
    # rate / volume: events sorted by (user, ts), so a per-user 60 s window is one searchsorted
    off = ds.user_offsets()
    per_min = np.zeros(n_users)
    per_day = np.zeros(n_users)
    if ds.n_events:
        key = ds.user_idx.astype(np.float64) * 1e12 + (ds.ts - ds.ts.min())
        first = np.searchsorted(key, key - 60.0, side="left")
        in_window = np.arange(ds.n_events) - first + 1
        per_min = np.maximum.reduceat(np.r_[in_window, 0], np.minimum(off[:-1], ds.n_events))[
            :n_users
        ].astype(np.float64)
        per_min[np.diff(off) == 0] = 0.0
        span_days = np.zeros(n_users)
        has = np.diff(off) > 0
        span_days[has] = (ds.ts[off[1:][has] - 1] - ds.ts[off[:-1][has]]) / 86400.0
        per_day = np.diff(off) / (span_days + 1.0)
    feats["events_per_minute"] = per_min
    feats["events_per_day"] = per_day
    return pd.DataFrame(feats)


def _robust_z(v: np.ndarray) -> np.ndarray:
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med))
    if mad <= 1e-12:
        sd = v.std()
        mad = sd if sd > 1e-12 else 1.0
    return (v - med) / mad


def detect_fake_profiles(
    ds: InteractionDataset,
    *,
    k: int = 10,
    candidate_share: float = 0.1,
    target_purity: float = 0.5,
    min_support: int = 3,
    outlier_z: float = 3.0,
    cohesion: float = 0.8,
) -> DetectionResult:
    """Flag likely fake profiles in `ds` (see the module docstring for the two stages).

    Args:
        ds: the training data to screen.
        k: neighbours in degsim.
        candidate_share: the most suspicious share of users examined in stage 2.
        target_purity: least share of an item's shoppers that must be candidates for it to be a
            suspected target.
        min_support: least number of candidates holding a suspected target (at least 10% of
            the candidates are required too).
        outlier_z: a suspected target's candidate count exceeds the median over the
            candidate-heavy items by this many robust standard deviations.
        cohesion: ... or it shares at least this share of its candidate holders with another
            candidate-heavy item (fakes hold all targets together).
    """
    if not 0.0 < candidate_share <= 1.0:
        raise ValueError(f"candidate_share: {candidate_share} is not in (0, 1]")
    feats = profile_features(ds, k=k)
    z = np.column_stack(
        [
            np.clip(np.abs(_robust_z(feats[c].to_numpy(np.float64))), 0.0, 10.0)
            for c in feats.columns
        ]
    )
    scores = z.sum(axis=1)
    x = ds.matrix(binary=True)
    active = np.diff(x.indptr) > 0
    scores[~active] = 0.0
    n_cand = max(1, round(candidate_share * int(active.sum())))
    cand = np.zeros(ds.n_users, bool)
    cand[np.argsort(-scores, kind="stable")[:n_cand]] = True
    deg = np.bincount(x.indices, minlength=ds.n_items)
    cand_deg = (
        np.bincount(x[cand].indices, minlength=ds.n_items)
        if cand.any()
        else np.zeros(ds.n_items, np.int64)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        purity = np.where(deg > 0, cand_deg / np.maximum(deg, 1), 0.0)
    # a pushed item needs many fakes, so among the items mostly held by candidates, its candidate
    # count stands out (heavy real shoppers also make niche items look candidate-heavy, but each
    # such item has only a few of them)
    eligible = (purity >= target_purity) & (cand_deg >= max(float(min_support), 0.1 * n_cand))
    suspects = np.zeros(ds.n_items, bool)
    el = np.flatnonzero(eligible)
    if el.size >= 5:
        counts = cand_deg[el].astype(np.float64)
        med = float(np.median(counts))
        mad = 1.4826 * float(np.median(np.abs(counts - med)))
        suspects[el[counts >= med + outlier_z * max(mad, 1.0)]] = True
    if el.size >= 2:
        # items pushed together are held by the same candidates: a pair of candidate-heavy items
        # whose candidate holders (nearly) coincide is the fakes' template
        xc = sp.csr_matrix(x[cand][:, el], dtype=np.float64)
        co = (xc.T @ xc).toarray()
        np.fill_diagonal(co, 0.0)
        size = cand_deg[el].astype(np.float64)
        overlap = co / np.minimum(size[:, None], size[None, :])
        suspects[el[(overlap >= cohesion).any(axis=1)]] = True
    suspects = np.flatnonzero(suspects)
    # fakes push the targets together, so they hold most of them; a real shopper rarely does
    need = max(1, int(np.ceil(0.5 * suspects.size)))
    holds = (
        np.asarray(x[:, suspects].sum(axis=1)).ravel() >= need
        if suspects.size
        else np.zeros(ds.n_users, bool)
    )
    flagged = np.flatnonzero(cand & holds).astype(np.int64)
    return DetectionResult(flagged, scores, suspects.astype(np.int64), feats)


def precision_recall(flagged: np.ndarray, fakes: np.ndarray) -> dict[str, float]:
    """Precision and recall of `flagged` against the true fakes (precision 1 if none flagged)."""
    f, t = set(np.asarray(flagged).tolist()), set(np.asarray(fakes).tolist())
    tp = len(f & t)
    return {
        "precision": tp / len(f) if f else 1.0,
        "recall": tp / len(t) if t else 1.0,
        "flagged": float(len(f)),
        "fakes": float(len(t)),
    }
