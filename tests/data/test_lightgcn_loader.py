"""The LightGCN-style split loader (train/valid/test `user item item ...` files), e.g. ML-1M."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrec.core.errors import NotFoundError, ValidationError
from privrec.data.loaders import load_lightgcn_split
from tests.conftest import need


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _pairs(ds) -> set[tuple[int, int]]:
    return set(zip(ds.user_idx.tolist(), ds.item_idx.tolist(), strict=True))


def test_split_is_read_back_from_the_files(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "tiny",
        {
            "train.txt": "0 0 1 2\n1 1 3\n2 4\n",
            "valid.txt": "0 3\n1 0\n",
            "test.txt": "0 4\n1 2 4\n2 0\n",
        },
    )
    train, valid, test = load_lightgcn_split(folder)
    assert train.items is valid.items is test.items  # shared vocabularies
    assert train.items.keys == ["0", "1", "2", "3", "4"]  # item i is the files' item i
    assert (train.n_events, valid.n_events, test.n_events) == (6, 2, 4)
    # users are pseudonymised at the gate: map them back through the events' item sets
    by_user = {}
    for part, name in ((train, "train"), (valid, "valid"), (test, "test")):
        for u, i in _pairs(part):
            by_user.setdefault(u, {}).setdefault(name, set()).add(i)
    got = sorted(
        (sorted(v.get("train", ())), sorted(v.get("valid", ())), sorted(v.get("test", ())))
        for v in by_user.values()
    )
    assert got == sorted([([0, 1, 2], [3], [4]), ([1, 3], [0], [2, 4]), ([4], [], [0])])
    assert not (_pairs(train) & _pairs(test)) and not (_pairs(valid) & _pairs(test))
    # per user, every train event comes before every valid event, which comes before test
    for u in np.unique(test.user_idx):
        t_tr = train.ts[train.user_idx == u]
        t_te = test.ts[test.user_idx == u]
        assert t_tr.max() < t_te.min()
    for u in train.users.keys:
        assert not u.isdigit()  # never the raw id


def test_bad_files_are_refused_with_the_file_named(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "bad", {"train.txt": "0 1 x\n", "valid.txt": "0 2\n", "test.txt": "0 3\n"}
    )
    with pytest.raises(ValidationError, match=r"train\.txt"):
        load_lightgcn_split(folder)
    dup = _write(
        tmp_path / "dup", {"train.txt": "0 1\n", "valid.txt": "0 1\n", "test.txt": "0 3\n"}
    )
    with pytest.raises(ValidationError, match="twice"):
        load_lightgcn_split(dup)
    missing = _write(tmp_path / "missing", {"train.txt": "0 1\n", "valid.txt": "0 2\n"})
    with pytest.raises(NotFoundError, match=r"test\.txt"):
        load_lightgcn_split(missing)


def test_real_movielens_1m_lightgcnpp(shared_data: Path) -> None:
    folder = need(shared_data / "movielens-1m-lightgcnpp")
    train, valid, test = load_lightgcn_split(folder)
    # the counts of PROVENANCE.md
    assert (train.n_events, valid.n_events, test.n_events) == (590_733, 80_897, 164_848)
    assert [len(np.unique(d.user_idx)) for d in (train, valid, test)] == [6039, 6033, 6038]
    assert train.n_items == 3628 and train.n_rejects == 0
