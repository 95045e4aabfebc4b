"""LightGCN-style split datasets: train.txt, valid.txt, test.txt (e.g. ML-1M of LightGCN++).

Each file holds one line per user, ``user_id item_id item_id ...`` with 0-based ids, and the three
files are a fixed split of implicit user-item pairs (no ratings, no timestamps). Every pair goes
through the privacy gate like a live event (users are pseudonymised there). Events get synthetic
timestamps that order the splits per user (train, then valid, then test), so only that order is
meaningful; the split itself is read back from the files, never re-derived.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from privrec.core.errors import ValidationError
from privrec.data.dataset import InteractionDataset
from privrec.data.ingest import SYNTHETIC_BASE_TS, dataset_folder, gate_and_build
from privrec.data.vocab import Vocabulary
from privrec.events.gate import Gate
from privrec.privacy.pseudonym import Pseudonymiser

__all__ = ["SPLITS", "load_lightgcn_split"]

SPLITS = ("train", "valid", "test")
# seconds between the splits' synthetic timestamps (more than any user's number of pairs)
_SPLIT_GAP = 10_000_000


def _read_split(path: Path) -> tuple[list[str], list[str]]:
    """(user ids, item ids) of every pair in one `user item item ...` file."""
    users: list[str] = []
    items: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            toks = line.split()
            if not toks:
                continue
            if not all(t.isdigit() for t in toks):
                raise ValidationError(
                    path.name, f"line {line_no}: expected non-negative integer ids only"
                )
            users += [toks[0]] * (len(toks) - 1)
            items += toks[1:]
    return users, items


def load_lightgcn_split(
    path: str | Path,
    *,
    gate: Gate | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    event_weights: Mapping[str, float] | None = None,
) -> tuple[InteractionDataset, InteractionDataset, InteractionDataset]:
    """The shipped (train, valid, test) split of a LightGCN-style folder, sharing vocabularies.

    Args:
        path: the folder holding train.txt, valid.txt and test.txt (or a file in it).
        gate: the privacy gate (default: a new one with the benchmark key).
        pseudonymiser: the key of a new gate.
        event_weights: per event type weights (every pair is a `view`).

    Returns:
        (train, valid, test); item index i is the files' item i (all items of the three files).

    Raises:
        NotFoundError: a split file is missing.
        ValidationError: a line holds something other than integer ids, or a pair repeats.
    """
    folder = dataset_folder(path, "train.txt")
    parts = []
    for n, split in enumerate(SPLITS):
        f = dataset_folder(folder, f"{split}.txt") / f"{split}.txt"
        users, items = _read_split(f)
        frame = pd.DataFrame({"user": users, "item": items, "split": n})
        # the position inside the user's line keeps the file order; the gap orders the splits
        frame["pos"] = frame.groupby("user").cumcount()
        parts.append(frame)
    raw = pd.concat(parts, ignore_index=True)
    if raw.duplicated(["user", "item"]).any():
        raise ValidationError("path", f"{folder}: a user-item pair appears twice in the splits")
    n_items = int(raw["item"].astype(np.int64).max()) + 1
    frame = pd.DataFrame(
        {
            "user": raw["user"],
            "item": raw["item"],
            "type": "view",
            "timestamp": SYNTHETIC_BASE_TS
            + raw["split"].to_numpy(np.int64) * _SPLIT_GAP
            + raw["pos"].to_numpy(np.int64),
        }
    )
    ds = gate_and_build(
        f"lightgcn-{folder.name}",
        frame,
        np.arange(1, len(frame) + 1, dtype=np.int64),
        [],
        gate=gate,
        pseudonymiser=pseudonymiser,
        event_weights=event_weights,
        item_meta=None,
        items=Vocabulary([str(i) for i in range(n_items)]),
    )
    offset = ds.ts - SYNTHETIC_BASE_TS
    which = np.floor_divide(offset, _SPLIT_GAP).astype(np.int64)
    train, valid, test = (
        ds.subset(which == n, name=f"{ds.name}:{split}") for n, split in enumerate(SPLITS)
    )
    return train, valid, test
