"""ALS training time: privrec's ALS against calling `implicit` directly on the same matrix.

Acceptance: privrec's ALS trains within 1.5x of `implicit.cpu.als.AlternatingLeastSquares.fit`
on the same data and configuration. Median of 5 runs after a warm-up, BLAS held to one thread
in both (implicit's own advice), 2 implicit threads in both.

Run: .venv/bin/python benchmarks/als_speed.py   (JSON on the last line)
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from _common import emit, machine, shared_data
from privrec.data.loaders import load_amazon_s3rec, load_movielens_100k
from privrec.models.als import ALS

REPEATS = 5


def _direct(x, cfg):  # type: ignore[no-untyped-def]
    m = AlternatingLeastSquares(
        factors=cfg.embedding_size,
        regularization=cfg.reg,
        alpha=cfg.alpha,
        iterations=cfg.epochs,
        random_state=cfg.seed,
        num_threads=2,
        use_cg=cfg.use_cg,
    )
    m.fit(x, show_progress=False)
    return m


def main() -> None:
    root = shared_data()
    rows = []
    for name, ds in (
        ("movielens-100k", load_movielens_100k(root / "movielens-100k")),
        ("amazon-beauty", load_amazon_s3rec(root / "amazon-beauty")),
    ):
        with threadpool_limits(1, "blas"):
            model = ALS(num_threads=2)
            x = model.input_matrix(ds)
            _direct(x, model.config)
            ALS(num_threads=2).fit(ds)  # warm-up of both paths
            t_imp, t_ours = [], []
            for _ in range(REPEATS):
                t = time.perf_counter()
                ref = _direct(x, model.config)
                t_imp.append(time.perf_counter() - t)
                t = time.perf_counter()
                ours = ALS(num_threads=2).fit(ds)
                t_ours.append(time.perf_counter() - t)
        mi, mo = statistics.median(t_imp), statistics.median(t_ours)
        same = bool(np.allclose(ref.item_factors, ours.item_factors, atol=1e-5))
        rows.append(
            {
                "dataset": name,
                "implicit_s": round(mi, 3),
                "privrec_s": round(mo, 3),
                "ratio": round(mo / mi, 3),
                "same_item_factors": same,
            }
        )
        print(
            f"{name}: implicit {mi:.3f}s  privrec ALS.fit(dataset) {mo:.3f}s  ratio "
            f"{mo / mi:.2f}  same factors {same}",
            flush=True,
        )
    emit({"benchmark": "als_speed", "target_ratio": 1.5, "rows": rows, "machine": machine()})


if __name__ == "__main__":
    main()
