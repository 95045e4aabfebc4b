"""The BLAS thread pool of a serving process: one thread while it answers requests.

Why: a request's arithmetic (a few rows of EASE's matrix, a 384 x 384 product, z-scores over
12,101 items) is too small to share out, and OpenBLAS's idle threads spin on the cores after
each call. On the served hybrid (Beauty, list cache off, in process on 2 cores) the
library's default of 2 threads cost 6.1 ms of CPU a request for 3.1 ms of wall time; one thread
cost 3.3 ms of CPU for the same wall time (`benchmarks/serve_hybrid.py --part inproc`).

The limit is process-wide (threadpoolctl sets the library's count), so a job that trains
inside the server (the job thread, the retrain scheduler) also gets one BLAS thread: the EASE
inverse then takes up to twice as long on 2 cores. It cannot be lifted per job: OpenBLAS
(0.3.31) ignores a raise of the count from another thread once the main thread has lowered it
(tested in tests/core/test_native_threads.py). Where a server retrains large models, set
`PRIVREC_BLAS_THREADS=0` (the library's default) or train with `privrec train` (PostgreSQL).
"""

from __future__ import annotations

__all__ = ["serving_blas_threads"]


def serving_blas_threads(n: int) -> None:
    """Set the BLAS libraries to `n` threads for the rest of this process (0: leave them).

    Call it from the main thread of a serving process before it serves (`privrec serve`, each
    worker of `--workers N`): OpenBLAS (0.3.31) ignores a count set from another thread once the
    main thread has set one, so only the main thread's setting is sure to hold.
    """
    if n <= 0:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")
