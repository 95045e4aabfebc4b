"""The serving process's BLAS limit (`privrec.core.native_threads`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from privrec.core.native_threads import serving_blas_threads


def _blas() -> set[int]:
    np.ones((2, 2)) @ np.ones((2, 2))  # numpy's BLAS is loaded
    got = {int(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"}
    if not got:
        pytest.skip("no BLAS library with a thread pool is loaded")
    return got


def test_set_in_the_main_thread_it_holds_in_every_thread() -> None:
    with threadpool_limits(limits=2, user_api="blas"):  # a known "library default"
        serving_blas_threads(1)
        assert _blas() == {1}
        seen: list[set[int]] = []
        t = threading.Thread(target=lambda: seen.append(_blas()))  # e.g. a request thread
        t.start()
        t.join()
        assert seen == [{1}]
    with threadpool_limits(limits=2, user_api="blas"):
        serving_blas_threads(0)  # 0: the library's own count
        assert _blas() == {2}


def test_a_thread_cannot_change_the_count_the_main_thread_set() -> None:
    """Why the limit is set by the processes' entry points in their main thread (and is not
    lifted per job): if OpenBLAS ever honours this, the module's design should change."""
    lib = [i for i in threadpool_info() if i["user_api"] == "blas"]
    if not lib or lib[0]["internal_api"] != "openblas":
        pytest.skip("the claim is about OpenBLAS")
    with threadpool_limits(limits=1, user_api="blas"):
        seen: list[set[int]] = []

        def job() -> None:
            with threadpool_limits(limits=2, user_api="blas"):
                seen.append(_blas())

        t = threading.Thread(target=job)
        t.start()
        t.join()
        assert seen == [{1}]


@pytest.mark.parametrize(("env", "want"), [("1", 1), ("0", None)])
def test_a_worker_process_serves_with_the_configured_count(
    tmp_path: Path, env: str, want: int | None
) -> None:
    """`privrec serve --workers N` builds each worker's app with `app_factory`."""
    code = (
        "import json; from threadpoolctl import threadpool_info;"
        "import numpy;"
        "before = [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'];"
        "from privrec.server.worker_app import app_factory; app_factory();"
        "after = [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'];"
        "print(json.dumps([before, after]))"
    )
    keys = "client:" + "c" * 32 + ",admin:" + "a" * 32
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("PRIVREC_")}
    run_env.update(
        PRIVREC_DATA_DIR=str(tmp_path / "d"),
        PRIVREC_API_KEYS=keys,
        PRIVREC_BLAS_THREADS=env,
        OPENBLAS_NUM_THREADS="2",
        HF_HUB_OFFLINE="1",
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=run_env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    if not before:
        pytest.skip("no BLAS library with a thread pool is loaded")
    assert set(before) == {2}  # numpy's OpenBLAS and, once the app is imported, scipy's
    assert set(after) == ({want} if want is not None else {2})
