"""Runtime helpers: thread count restored, device resolution, the single-process default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privrec.core.errors import ConfigError
from privrec.models.nn.runtime import DistInfo, free_port, resolve_device, torch_threads


def test_torch_threads_sets_then_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_torch_threads_restores_after_an_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_resolve_device() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device"):
            resolve_device("cuda")


def test_dist_info_without_a_process_group_is_one_process() -> None:
    info = DistInfo.current()
    assert (info.rank, info.world_size) == (0, 1)
    np.testing.assert_array_equal(info.share(5), np.arange(5))


def test_dist_info_shares_rows_strided() -> None:
    parts = [DistInfo(rank=r, world_size=3).share(8) for r in range(3)]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(8))
    assert max(p.size for p in parts) - min(p.size for p in parts) <= 1


def test_free_port_is_a_port() -> None:
    assert 0 < free_port() < 65536
