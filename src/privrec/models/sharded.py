"""User-sharded statistics jobs and batch scoring, as Ray tasks or in this process.

Every statistic the CF and DP item-item models learn from is a sum over users: item counts,
the item-item co-occurrence C = B^T B of the 0/1 matrix B, EASE's Gram matrix G = X^T X, and the
unit-row sums the DP Gram release noises. So the user x item matrix is cut into contiguous user
ranges (each user in exactly one shard: a user's whole row stays together, and one user still
moves a reduced sum by what they moved it before, so user-level DP sensitivity is unchanged),
each shard's sums are computed by the same functions the single-process fits use
(`ease.gram64_of`; `dp.release.unit_column_sums`, `unit_gram` and `window_pairs`), and the parts
are added once, in shard order.

Exactness: integer sums (counts, co-occurrence) are exact in any order; float64 sums of
integer-valued entries (0/1, integer event weights and ratings) are exact below 2^53, so the
reduced G is bit-identical to the single-process one. The DP unit-row sums (entries like
1/sqrt(n)) are float64 sums in a different order: equal up to rounding (~1e-15 relative), and the
release adds its Gaussian noise once, after the reduction, through `release_gram`: the same
mechanism, calibration and ledger charge as the single-process fit.

`ShardRunner` runs one module-level function over the shards: as Ray tasks (a local cluster
started on demand, or `address` of a running one; results gathered in shard order whatever
order they finish) or in this process when Ray is not asked for (or not installed). Ray moves
arrays between processes with its own serialisation; nothing is written to disk.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import scipy.sparse as sp

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender, top_k_rows
from privrec.models.dp.gram import PrivateGramRecommender
from privrec.models.dp.release import active_users, unit_column_sums, unit_gram, window_pairs
from privrec.models.ease import EASE, gram64_of
from privrec.privacy.ledger import PrivacyLedger

_SCORE_BLOCK = 2048  # users scored at once inside a shard (bounds the dense score block)


# ---- shards ------------------------------------------------------------------------------------
def user_ranges(n_users: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal user index ranges [start, stop) covering every user once."""
    if n_shards < 1:
        raise ConfigError(f"shards: {n_shards} is not a positive number of shards")
    n = max(1, min(int(n_shards), max(int(n_users), 1)))
    bounds = np.linspace(0, n_users, n + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in pairwise(bounds)]


def row_shards(x: sp.csr_matrix, n_shards: int) -> list[sp.csr_matrix]:
    """The rows (users) of `x` cut into `user_ranges`."""
    x = sp.csr_matrix(x)
    return [x[a:b] for a, b in user_ranges(x.shape[0], n_shards)]


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # an optional extra: say how to get it
        raise ConfigError(
            "ray: not installed; install the scale extra (`pip install -e '.[scale]'`) "
            "or run without --ray"
        ) from exc
    return ray


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class ShardRunner:
    """Runs a function over shards as Ray tasks (`use_ray`) or in this process, in shard order.

    Attributes:
        use_ray: run each shard as a Ray task.
        address: a running Ray cluster (`ray start --head` prints it); None starts a local one.
        num_cpus: CPUs of a local cluster (None: Ray's default, every core).
    """

    use_ray: bool = False
    address: str | None = None
    num_cpus: int | None = None
    _started: bool = field(default=False, repr=False)

    def map(self, fn: Callable[..., Any], shards: Sequence[Any], *shared: Any) -> list[Any]:
        """`[fn(shard, *shared) for shard in shards]`; `fn` must be a module-level function."""
        if not self.use_ray:
            return [fn(s, *shared) for s in shards]
        ray = self._connect()
        task = ray.remote(fn)
        refs = [ray.put(v) for v in shared]  # shared once, not once per shard
        return list(ray.get([task.remote(s, *refs) for s in shards]))

    def _connect(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None and self.num_cpus is not None:
                kw["num_cpus"] = int(self.num_cpus)
            ray.init(address=self.address, **kw)
            self._started = True
        return ray

    def close(self) -> None:
        """Shut down the Ray connection this runner started (one started elsewhere stays)."""
        if self._started:
            _ray().shutdown()
            self._started = False

    def __enter__(self) -> ShardRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- exact statistics: per shard, reduced once ------------------------------------------------
@dataclass
class Statistics:
    """Sums over users of one user x item matrix X (or of one shard of it).

    Attributes:
        n_users: users with at least one interaction.
        item_counts: users per item (int64).
        cooccurrence: users per item pair, C = B^T B of the 0/1 pattern B of X (int64 CSR).
        gram: EASE's G = X^T X in float64 (CSR; `EASE.fit_from_statistics` casts it).
    """

    n_users: int
    item_counts: np.ndarray
    cooccurrence: sp.csr_matrix
    gram: sp.csr_matrix

    def __add__(self, other: Statistics) -> Statistics:
        return Statistics(
            self.n_users + other.n_users,
            self.item_counts + other.item_counts,
            sp.csr_matrix(self.cooccurrence + other.cooccurrence),
            sp.csr_matrix(self.gram + other.gram),
        )

    def canonical(self) -> Statistics:
        """Sorted indices, duplicates summed, explicit zeros dropped (for exact comparison)."""
        for m in (self.cooccurrence, self.gram):
            m.sum_duplicates()
            m.eliminate_zeros()
            m.sort_indices()
        return self


def shard_statistics(x: sp.csr_matrix) -> Statistics:
    """The `Statistics` of one block of user rows (the whole matrix: the single-process job)."""
    x = sp.csr_matrix(x)
    b = sp.csr_matrix((np.ones(x.nnz, np.int64), x.indices, x.indptr), shape=x.shape)
    b.sum_duplicates()
    b.data[:] = 1
    counts = np.asarray(b.sum(axis=0), dtype=np.int64).ravel()
    return Statistics(active_users(x), counts, sp.csr_matrix(b.T @ b), gram64_of(x)).canonical()


def reduce_statistics(parts: Sequence[Statistics]) -> Statistics:
    """The parts added once, in the order given (the shard order)."""
    if not parts:
        raise ConfigError("shards: no shard statistics to reduce")
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total.canonical()


def sharded_statistics(x: sp.csr_matrix, n_shards: int, runner: ShardRunner) -> Statistics:
    """`Statistics` of `x` computed per user shard (Ray tasks with a Ray runner), reduced once."""
    return reduce_statistics(runner.map(shard_statistics, row_shards(x, n_shards)))


# ---- DP: the exact sums of the Gram release, per shard ----------------------------------------
def _shard_window_pairs(ds: InteractionDataset, selected: np.ndarray, window: int) -> np.ndarray:
    return np.asarray(window_pairs(ds, selected, window).toarray())


@dataclass
class ShardedGramStatistics:
    """`dp.release.GramStatistics` summed over user shards (the release noises the sums once)."""

    dataset: InteractionDataset
    x: sp.csr_matrix
    n_shards: int
    runner: ShardRunner

    def _rows(self) -> list[sp.csr_matrix]:
        return row_shards(self.x, self.n_shards)

    @staticmethod
    def _sum(parts: Sequence[Any]) -> Any:
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total

    def active_users(self) -> int:
        """Users with an interaction, summed over shards."""
        return int(self._sum(self.runner.map(active_users, self._rows())))

    def unit_column_sums(self) -> np.ndarray:
        """Unit-row column sums, summed over shards."""
        return np.asarray(self._sum(self.runner.map(unit_column_sums, self._rows())))

    def unit_gram(self, selected: np.ndarray) -> np.ndarray:
        """The unit-row Gram matrix over `selected`, summed over shards."""
        return np.asarray(self._sum(self.runner.map(unit_gram, self._rows(), selected)))

    def window_pairs(self, selected: np.ndarray, window: int) -> np.ndarray:
        """The window co-occurrence, summed over user shards of the events."""
        u = self.dataset.user_idx
        parts = [
            self.dataset.subset((u >= a) & (u < b))
            for a, b in user_ranges(self.dataset.n_users, self.n_shards)
        ]
        return np.asarray(self._sum(self.runner.map(_shard_window_pairs, parts, selected, window)))


# ---- sharded fits ------------------------------------------------------------------------------
SHARDED_MODELS = ("ease", "dp_ease", "dp_itemknn")


@dataclass
class ShardedFit:
    """How to fit a model from user-sharded statistics.

    Attributes:
        n_shards: user shards (each one Ray task).
        runner: where the shards run.
    """

    n_shards: int = 2
    runner: ShardRunner = field(default_factory=ShardRunner)

    def fit(
        self,
        model: Recommender,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        noise_seed: int | None = None,
    ) -> Recommender:
        """Fit `model` (EASE, or a DP item-item model) from statistics reduced over the shards.

        Raises:
            ConfigError: the model has no sharded fit (its statistics are not sums over users).
        """
        if isinstance(model, PrivateGramRecommender):
            stats = ShardedGramStatistics(
                dataset, model.input_matrix(dataset).astype(np.float64), self.n_shards, self.runner
            )
            return model.fit_from_statistics(
                dataset, stats, rng=rng, ledger=ledger, noise_seed=noise_seed
            )
        if isinstance(model, EASE) and type(model).fit is EASE.fit:
            total = sharded_statistics(model.input_matrix(dataset), self.n_shards, self.runner)
            return model.fit_from_statistics(total.gram, dataset.n_items)
        raise ConfigError(
            f"model: {model.name} has no sharded fit; sharded fits: {', '.join(SHARDED_MODELS)}"
        )


# ---- batch top-k lists -------------------------------------------------------------------------
@dataclass
class TopK:
    """Each user's top-k items (seen items excluded), best first.

    Attributes:
        items: (users, k) item indices, -1 where fewer than k unseen items have a score.
        scores: (users, k) float32 scores (-inf where `items` is -1).
    """

    items: np.ndarray
    scores: np.ndarray


def shard_topk(shard: tuple[sp.csr_matrix, sp.csr_matrix], model: Recommender, k: int) -> TopK:
    """Top-k of one block of users: `model.score_matrix` of their history rows, seen items out."""
    hist, seen = shard
    n = hist.shape[0]
    kk = int(min(k, model.n_items))
    items = np.full((n, kk), -1, np.int32)
    scores = np.full((n, kk), -np.inf, np.float32)
    for r0 in range(0, n, _SCORE_BLOCK):
        r1 = min(n, r0 + _SCORE_BLOCK)
        s = np.asarray(model.score_matrix(hist[r0:r1]), dtype=np.float32).copy()
        blk = sp.csr_matrix(seen[r0:r1])
        rows = np.repeat(np.arange(r1 - r0), np.diff(blk.indptr))
        s[rows, blk.indices] = -np.inf
        idx = top_k_rows(s, kk)
        val = np.take_along_axis(s, idx, axis=1)
        ok = np.isfinite(val)
        items[r0:r1] = np.where(ok, idx, -1)
        scores[r0:r1] = np.where(ok, val, -np.inf)
    return TopK(items, scores)


def sharded_topk(
    model: Recommender,
    dataset: InteractionDataset,
    k: int,
    *,
    n_shards: int = 1,
    runner: ShardRunner | None = None,
) -> TopK:
    """Every user's top-k list, users scored in shards (as Ray tasks with a Ray runner).

    History rows are the model's `input_matrix` (as it trained); every item the user touched is
    excluded. The model is shipped to the workers once.
    """
    if k < 1:
        raise ConfigError(f"k: {k} is not a positive list length")
    if dataset.n_items != model.n_items:
        raise ConfigError(
            f"dataset: has {dataset.n_items} items but the model knows {model.n_items}; "
            "build it over the model's item vocabulary"
        )
    hist = model.input_matrix(dataset)
    seen = dataset.matrix(binary=True)
    shards = [(hist[a:b], seen[a:b]) for a, b in user_ranges(dataset.n_users, n_shards)]
    parts = (runner or ShardRunner()).map(shard_topk, shards, model, int(k))
    return TopK(np.concatenate([p.items for p in parts]), np.concatenate([p.scores for p in parts]))
