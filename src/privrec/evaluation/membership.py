"""User-level membership inference against any Recommender (after Zhang et al., CCS 2021).

The question: given a shopper's history, was this shopper in the model's training data?

Set-up (`membership_audit`): the users with at least `min_history` events are shuffled and split
into four disjoint groups of equal size: target members, target non-members, shadow members and
shadow non-members. The target model is trained on the target members only; each shadow model is a
model of the same kind and settings trained on shadow members only (the attacker knows the
algorithm, not the data). The attacker also has public knowledge from their own (shadow) users:
item popularity and item embeddings (truncated SVD of the shadow users' 0/1 matrix).

Features of a user with history h, against a model M (queried only through `score_matrix`):

- Zhang et al.'s feature: the difference between the centroid of the history's item embeddings
  and the centroid of the top-k recommendations' embeddings (plus their cosine).
- Self-prediction: h is split in two random halves A and B; M is queried with A and the full-
  ranking ranks of B's items are read (and the other way round). A model that memorised its
  members ranks their own items high. The same ranks under the public popularity give the
  baseline "what popularity predicts", and the difference is a feature.
- How popular the recommendations are (public popularity percentile) and log |h|.

An attack classifier (logistic regression on standardised features, or gradient boosting) is
trained on the shadow models' members vs non-members, then scores the target's members and
non-members: the report gives the ROC AUC (0.5 = chance) and the true-positive rate at 1%
false-positive rate. `repeats` > 1 repeats everything with other random splits and averages
(the AUC of a few hundred users has a standard error of about 0.03).

This audit has little power at low false-positive rates: one shadow model, one global threshold,
and a TPR at 1% FPR that rests on a handful of negatives. `evaluation.lira` calibrates per shopper
on many shadow models and gives the TPR at 0.1% / 1% FPR with confidence intervals;
`evaluation.canary` turns a canary attack into an empirical lower bound on a DP model's epsilon
(and catches noise that replays).

With `keep_trials=True` the result also carries every attacked shopper's IN/OUT label and attack
score (`AttackTrials`, target and shadow), and `evaluation.attack_bound` turns them into the same
Clopper-Pearson lower bound on epsilon as the canary audit, with the threshold chosen on trials
other than the ones it is evaluated on (the shadow model's, or one half of the target's), so the
bound is not the optimistic best of many thresholds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender

log = logging.getLogger(__name__)

FEATURES_FIXED = (
    "centroid_cosine",
    "centroid_distance",
    "self_logrank_model",
    "self_logrank_popularity",
    "self_logrank_gain",
    "self_hits_at_k",
    "recs_popularity",
    "log_history",
)


@dataclass
class AttackTrials:
    """Every attacked shopper's label and attack score (all repeats, in order).

    Attributes:
        labels: 1 for a target member (IN), 0 for a target non-member (OUT).
        scores: the attack's probability of IN for each target shopper (higher: "IN").
        shadow_labels, shadow_scores: the same for the shadow shoppers the attack was trained on
            (scored in-sample); they never depend on the target's membership, so a threshold
            chosen on them can be evaluated on the target trials without optimism.
        repeat: the repeat each target trial belongs to.
    """

    labels: list[int]
    scores: list[float]
    shadow_labels: list[int]
    shadow_scores: list[float]
    repeat: list[int] = field(default_factory=list)


@dataclass
class AttackResult:
    """What a membership-inference audit measured (averaged over repeats).

    Attributes:
        auc: ROC AUC of the attack on the target model (0.5 = chance).
        tpr_at_1pct_fpr: true-positive rate at 1% false-positive rate.
        auc_std: standard deviation of the AUC over repeats (0 for one repeat).
        shadow_auc: the attack's AUC on its own (shadow) training data: how separable members
            were there.
        n_members, n_nonmembers: target users per repeat.
        repeats: independent splits averaged.
        classifier: "logistic" or "gbm".
        seconds: wall time.
        per_repeat: AUC of each repeat.
        trials: per attacked shopper, label and score (only with `keep_trials=True`).
    """

    auc: float
    tpr_at_1pct_fpr: float
    auc_std: float
    shadow_auc: float
    n_members: int
    n_nonmembers: int
    repeats: int
    classifier: str
    seconds: float
    per_repeat: list[float] = field(default_factory=list)
    trials: AttackTrials | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without `trials` when they were not kept, as before they existed)."""
        out = asdict(self)
        if self.trials is None:
            del out["trials"]
        return out


# ---- metrics -------------------------------------------------------------------------------------
def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) statistic, ties counted half."""
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float = 0.01) -> float:
    """The largest true-positive rate at a false-positive rate of at most `fpr` (any threshold)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    neg = np.sort(s[~y])[::-1]
    if neg.size == 0 or y.sum() == 0:
        return float("nan")
    allowed = int(np.floor(fpr * neg.size))  # negatives allowed above the threshold
    thr = neg[allowed] if allowed < neg.size else -np.inf  # strictly above this score
    return float((s[y] > thr).mean())


# ---- the attacker's public knowledge -------------------------------------------------------------
@dataclass
class _Public:
    popularity: np.ndarray  # per item, from the attacker's own users
    pop_rank: np.ndarray  # 0 = most popular
    embeddings: np.ndarray  # (n_items, d), rows L2-normalised


def _public_knowledge(x: sp.csr_matrix, dim: int, seed: int) -> _Public:
    from scipy.sparse.linalg import svds

    n_items = x.shape[1]
    pop = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
    order = np.lexsort((np.arange(n_items), -pop))
    rank = np.empty(n_items, dtype=np.float64)
    rank[order] = np.arange(n_items)
    d = int(min(dim, min(x.shape) - 1))
    if d >= 1 and x.nnz:
        v0 = np.random.default_rng(seed).standard_normal(min(x.shape))
        _, s, vt = svds(x.astype(np.float64), k=d, v0=v0)
        emb = (vt.T * np.sqrt(s)[None, :]).astype(np.float64)
    else:
        emb = np.zeros((n_items, 1))
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
    return _Public(pop, rank, emb)


# ---- features ------------------------------------------------------------------------------------
def _halves(x: sp.csr_matrix, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split every row's items into two random halves (seeded)."""
    rng = np.random.default_rng(seed)
    x = sp.csr_matrix(x, copy=True)
    coin = np.zeros(x.nnz, dtype=bool)
    for u in range(x.shape[0]):
        a, b = x.indptr[u], x.indptr[u + 1]
        n = b - a
        if n:
            pick = rng.permutation(n)[: n // 2]
            coin[a + pick] = True
    a_part = x.copy()
    a_part.data = np.where(coin, x.data, 0)
    a_part.eliminate_zeros()
    b_part = x.copy()
    b_part.data = np.where(coin, 0, x.data)
    b_part.eliminate_zeros()
    return a_part, b_part


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Rank of every item per row (0 = best), ties by lower index."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    ranks[rows, order] = np.arange(scores.shape[1])[None, :]
    return ranks


def _self_rank_features(
    model: Recommender, query: sp.csr_matrix, held: sp.csr_matrix, pub: _Public, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: mean log(1 + rank) of the held items under the model and popularity; hits@k."""
    s = np.asarray(model.score_matrix(query), dtype=np.float64)
    s = np.nan_to_num(s, nan=-np.inf)
    rows_q = np.repeat(np.arange(query.shape[0]), np.diff(query.indptr))
    s[rows_q, query.indices] = -np.inf  # queried items are not candidates
    r = _ranks(s)
    rows_h = np.repeat(np.arange(held.shape[0]), np.diff(held.indptr))
    lr_model = np.log1p(r[rows_h, held.indices].astype(np.float64))
    hits = (r[rows_h, held.indices] < k).astype(np.float64)
    lr_pop = np.log1p(pub.pop_rank[held.indices])
    cnt = np.maximum(np.bincount(rows_h, minlength=held.shape[0]), 1)
    mean = lambda v: np.bincount(rows_h, weights=v, minlength=held.shape[0]) / cnt  # noqa: E731
    return mean(lr_model), mean(lr_pop), mean(hits)


def user_features(
    model: Recommender,
    histories: sp.csr_matrix,
    pub: _Public,
    *,
    k: int = 20,
    seed: int = 0,
    batch_size: int = 512,
) -> np.ndarray:
    """The attack features (one row per history row) against `model` (see the module docstring)."""
    out = []
    a_all, b_all = _halves(histories, seed)
    for r0 in range(0, histories.shape[0], batch_size):
        h = histories[r0 : r0 + batch_size]
        a, b = a_all[r0 : r0 + batch_size], b_all[r0 : r0 + batch_size]
        s = np.asarray(model.score_matrix(h), dtype=np.float64)
        s = np.nan_to_num(s, nan=-np.inf)
        rows = np.repeat(np.arange(h.shape[0]), np.diff(h.indptr))
        s[rows, h.indices] = -np.inf
        kk = min(k, s.shape[1])
        recs = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cnt = np.maximum(np.diff(h.indptr), 1)[:, None]
        hist_centroid = (
            np.asarray(
                sp.csr_matrix((np.ones(h.nnz), h.indices, h.indptr), shape=h.shape) @ pub.embeddings
            )
            / cnt
        )
        rec_centroid = pub.embeddings[recs].mean(axis=1)
        diff = hist_centroid - rec_centroid
        nh = np.linalg.norm(hist_centroid, axis=1)
        nr = np.linalg.norm(rec_centroid, axis=1)
        cos = np.sum(hist_centroid * rec_centroid, axis=1) / np.maximum(nh * nr, 1e-12)
        m_ab, p_ab, hit_ab = _self_rank_features(model, a, b, pub, kk)
        m_ba, p_ba, hit_ba = _self_rank_features(model, b, a, pub, kk)
        lm, lp = (m_ab + m_ba) / 2, (p_ab + p_ba) / 2
        recs_pop = np.log1p(pub.pop_rank[recs]).mean(axis=1)
        fixed = np.column_stack(
            [
                cos,
                np.linalg.norm(diff, axis=1),
                lm,
                lp,
                lp - lm,
                (hit_ab + hit_ba) / 2,
                recs_pop,
                np.log(cnt[:, 0]),
            ]
        )
        out.append(np.hstack([fixed, diff]))
    return np.vstack(out) if out else np.zeros((0, len(FEATURES_FIXED)))


# ---- the attack ----------------------------------------------------------------------------------
def _classifier(kind: str, seed: int) -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    if kind == "gbm":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_depth=3, learning_rate=0.05, max_iter=200, random_state=seed
        )
    raise ValueError(f"classifier: {kind!r} is not 'logistic' or 'gbm'")


def _train_on(
    factory: Callable[[], Recommender], dataset: InteractionDataset, users: np.ndarray, seed: int
) -> Recommender:
    mask = np.isin(dataset.user_idx, users)
    model = factory()
    model.fit(dataset.subset(mask, name=f"{dataset.name}:audit"), rng=seed)
    return model


def membership_audit(
    model_factory: Callable[[], Recommender],
    dataset: InteractionDataset,
    *,
    k: int = 20,
    min_history: int = 4,
    max_users: int | None = None,
    max_eval_users: int | None = None,
    embedding_dim: int = 32,
    classifier: str = "logistic",
    repeats: int = 1,
    seed: int = 0,
    keep_trials: bool = False,
) -> AttackResult:
    """Train target and shadow models on disjoint users and attack the target (see the module doc).

    Args:
        model_factory: returns a new, unfitted model (the same kind and settings each time).
        dataset: the interactions the audit draws its users from.
        k: length of the recommendation list the attacker observes.
        min_history: users with fewer events are left out (their history cannot be split).
        max_users: use at most this many users in all (a seeded sample), to bound the cost.
        max_eval_users: attack at most this many users of each group (the models still train on
            whole groups), to bound the cost of the features on large data.
        embedding_dim: dimension of the attacker's item embeddings.
        classifier: "logistic" or "gbm".
        repeats: independent splits to average.
        seed: seeds the splits, the models' training and the attack.
        keep_trials: also return every attacked shopper's label and score (`AttackTrials`),
            what `attack_bound.attack_epsilon_bound` needs.

    Returns:
        AttackResult with AUC, TPR at 1% FPR and the shadow AUC (and the trials if asked).
    """
    t0 = time.perf_counter()
    counts = np.bincount(dataset.user_idx, minlength=dataset.n_users)
    eligible = np.nonzero(counts >= min_history)[0]
    aucs, tprs, shadow_aucs = [], [], []
    n_in = n_out = 0
    kept: dict[str, list[Any]] = {k: [] for k in ("y", "s", "sy", "ss", "rep")}
    for rep in range(int(repeats)):
        rng = np.random.default_rng(seed + 1000 * rep)
        users = rng.permutation(eligible)
        if max_users is not None:
            users = users[: int(max_users)]
        q = users.size // 4
        if q < 5:
            raise ValueError(
                f"dataset: only {users.size} users with >= {min_history} events; the "
                "audit needs at least 20"
            )
        t_in, t_out, s_in, s_out = (
            users[:q],
            users[q : 2 * q],
            users[2 * q : 3 * q],
            users[3 * q : 4 * q],
        )
        target = _train_on(model_factory, dataset, t_in, seed + rep)
        shadow = _train_on(model_factory, dataset, s_in, seed + rep + 7)
        x = target.input_matrix(dataset)
        binary = dataset.matrix(binary=True)
        pub = _public_knowledge(binary[np.concatenate([s_in, s_out])], embedding_dim, seed + rep)

        e = q if max_eval_users is None else min(q, int(max_eval_users))

        # Features of each group's first e users, each with its own seed (salt 1 to 4).
        groups = ((shadow, s_in), (shadow, s_out), (target, t_in), (target, t_out))
        feats = [
            user_features(model, sp.csr_matrix(x[group[:e]]), pub, k=k, seed=seed + rep + salt)
            for salt, (model, group) in enumerate(groups, start=1)
        ]
        f_train = np.vstack(feats[:2])
        y_train = np.r_[np.ones(e), np.zeros(e)]
        f_test = np.vstack(feats[2:])
        y_test = np.r_[np.ones(e), np.zeros(e)]
        clf = _classifier(classifier, seed + rep)
        clf.fit(f_train, y_train)
        p_train = clf.predict_proba(f_train)[:, 1]
        p_test = clf.predict_proba(f_test)[:, 1]
        aucs.append(roc_auc(y_test, p_test))
        tprs.append(tpr_at_fpr(y_test, p_test, 0.01))
        shadow_aucs.append(roc_auc(y_train, p_train))
        n_in, n_out = e, e
        if keep_trials:
            kept["y"] += [int(v) for v in y_test]
            kept["s"] += [float(v) for v in p_test]
            kept["sy"] += [int(v) for v in y_train]
            kept["ss"] += [float(v) for v in p_train]
            kept["rep"] += [rep] * len(y_test)
        log.info(
            "membership audit repeat=%d auc=%.4f shadow_auc=%.4f users=%d",
            rep,
            aucs[-1],
            shadow_aucs[-1],
            4 * q,
        )
    return AttackResult(
        auc=float(np.mean(aucs)),
        tpr_at_1pct_fpr=float(np.mean(tprs)),
        auc_std=float(np.std(aucs)),
        shadow_auc=float(np.mean(shadow_aucs)),
        n_members=n_in,
        n_nonmembers=n_out,
        repeats=int(repeats),
        classifier=classifier,
        seconds=time.perf_counter() - t0,
        per_repeat=[float(a) for a in aucs],
        trials=AttackTrials(kept["y"], kept["s"], kept["sy"], kept["ss"], kept["rep"])
        if keep_trials
        else None,
    )
