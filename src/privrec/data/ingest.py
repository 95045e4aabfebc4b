"""The path every dataset loader shares: raw rows -> privacy gate -> `InteractionDataset`.

A loader reads its raw files (read-only; nothing is ever written next to them), builds a raw
event frame (`user,item,type,timestamp` plus `rating`/`query`/`session` where the format has
them) and hands it to `gate_and_build`, which passes it to `Gate.process_frame` and builds an
`InteractionDataset` from the accepted, pseudonymised events. Malformed lines (a wrong number of
fields) never reach the gate; they are counted as rejects next to the gate's own, so a truncated
last line is a counted reject, not a crash. The count is logged and kept in
`InteractionDataset.n_rejects`.

Pseudonym keys: pass a `gate` or a `pseudonymiser` to use your own key (for example
`Pseudonymiser.from_data_dir`). Without either, a loader uses `benchmark_pseudonymiser()`: a
key derived in memory from a fixed seed, so benchmarks get random-looking but reproducible
pseudonyms and the same user order on every run. That key is not secret (anyone who knows the seed
can derive it): it is for public benchmark data only, and it is never written anywhere.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import NotFoundError
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.events.gate import Gate
from privrec.privacy.pseudonym import Pseudonymiser

logger = logging.getLogger(__name__)

__all__ = [
    "BENCHMARK_KEY_SEED",
    "SYNTHETIC_BASE_TS",
    "RawRows",
    "benchmark_pseudonymiser",
    "dataset_folder",
    "dataset_from_raw_events",
    "gate_and_build",
    "make_gate",
    "read_delimited",
    "sorted_item_keys",
]

# The seed of the in-memory benchmark pseudonym key.
BENCHMARK_KEY_SEED = 0
# 2014-05-13T16:53:20Z: synthetic timestamps start here (inside the gate's accepted range).
# Formats without timestamps (S3-Rec, UniSRec) use `SYNTHETIC_BASE_TS + position` seconds.
SYNTHETIC_BASE_TS = 1_400_000_000


# ---- keys and the gate ---------------------------------------------------------------------
def benchmark_pseudonymiser(seed: int = BENCHMARK_KEY_SEED) -> Pseudonymiser:
    """A pseudonymiser keyed in memory from `seed` (benchmarks only; the key is never stored)."""
    key = hashlib.sha256(f"privrec/benchmark-pseudonym-key/{int(seed)}".encode()).digest()
    return Pseudonymiser([key])


def make_gate(gate: Gate | None, pseudonymiser: Pseudonymiser | None, **gate_args: Any) -> Gate:
    """`gate` if given, else a new gate keyed by `pseudonymiser` or the benchmark key."""
    if gate is not None:
        return gate
    return Gate(pseudonymiser or benchmark_pseudonymiser(), **gate_args)


# ---- reading raw rows ----------------------------------------------------------------------
@dataclass
class RawRows:
    """Raw rows of a source file, before the gate."""

    frame: pd.DataFrame
    lines: np.ndarray  # 1-based source line number of each row
    bad: list[tuple[int, str]]  # (line, reason) of lines that could not be split into fields


def read_delimited(
    path: Path,
    sep: str | None,
    n_fields: int,
    columns: list[str],
    encoding: str = "utf-8",
    skip: int = 0,
) -> RawRows:
    """Split a text file into string columns; lines with another field count become rejects."""
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[tuple[int, str]] = []
    with open(path, encoding=encoding, newline="") as fh:
        for no, line in enumerate(fh, start=1):
            if no <= skip:
                continue
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(sep)
            if len(parts) != n_fields:
                bad.append(
                    (
                        no,
                        f"{path.name}: expected {n_fields} fields, found {len(parts)} "
                        "(truncated or malformed line)",
                    )
                )
                continue
            rows.append(parts)
            lines.append(no)
    frame = (
        pd.DataFrame(rows, columns=columns, dtype=object)
        if rows
        else pd.DataFrame({c: [] for c in columns}, dtype=object)
    )
    return RawRows(frame, np.asarray(lines, dtype=np.int64), bad)


def sorted_item_keys(keys: Any) -> list[str]:
    """Unique item keys, numeric ones in numeric order (so index i is the i-th id of the source)."""
    uniq = list(dict.fromkeys(str(k) for k in keys))
    if all(k.isdigit() for k in uniq):
        return sorted(uniq, key=int)
    return sorted(uniq)


def dataset_folder(path: str | Path, marker: str) -> Path:
    """The dataset folder of `path` (a folder or a file in it); it must hold `marker`."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not (p / marker).exists():
        raise NotFoundError(f"{marker}: not found in {p}; point the loader at the dataset folder")
    return p


# ---- through the gate ----------------------------------------------------------------------
def gate_and_build(
    name: str,
    raw: pd.DataFrame,
    lines: np.ndarray,
    bad: list[tuple[int, str]],
    *,
    gate: Gate | None,
    pseudonymiser: Pseudonymiser | None,
    event_weights: Mapping[str, float] | None,
    item_meta: pd.DataFrame | None,
    items: Vocabulary | None = None,
    restrict_meta_to_events: bool = False,
) -> InteractionDataset:
    """Gate the raw events, log and count rejects (`bad` lines included), build the dataset.

    Args:
        name: the dataset's name (logged and kept on the dataset).
        raw: the raw event frame.
        lines: the 1-based source line of each row of `raw`, for reject reasons.
        bad: (line, reason) of source lines that never became rows; counted as rejects.
        gate: the gate to use; default a new one (see `make_gate`).
        pseudonymiser: the key of a new gate; default the benchmark key.
        event_weights: per event type weights for the dataset.
        item_meta: per item metadata (an `item` column of raw item keys).
        items: a fixed item vocabulary (index order); default from the accepted events.
        restrict_meta_to_events: keep only metadata rows of items with accepted events.

    Returns:
        The dataset of accepted events, `n_rejects` set.
    """
    g = make_gate(gate, pseudonymiser)
    result = g.process_frame(raw, line_numbers=lines.tolist())
    accepted = result.accepted
    n_rejects = len(result.rejects) + len(bad)
    if n_rejects:
        # Reasons name the field and the problem, never a raw id (the gate's contract).
        reasons = [f"line {line}: {why}" for line, why in bad[:3]]
        reasons += [
            f"line {r.line}: {r.reason}" for r in result.rejects[: max(0, 3 - len(reasons))]
        ]
        logger.warning("dataset=%s rejected=%d first=%s", name, n_rejects, " | ".join(reasons))
    # Duplicates (same event_id, e.g. a row repeated in the file) are idempotent drops, not rejects.
    logger.info(
        "dataset=%s accepted=%d rejected=%d duplicates=%d",
        name,
        len(accepted),
        n_rejects,
        result.duplicates,
    )
    if item_meta is not None and restrict_meta_to_events:
        seen = set(accepted["item"].astype(str).tolist())
        item_meta = item_meta[
            np.fromiter(
                (k in seen for k in item_meta["item"].tolist()), dtype=bool, count=len(item_meta)
            )
        ]
    ds = InteractionDataset.from_events(
        accepted, item_meta=item_meta, event_weights=event_weights, name=name, items=items
    )
    ds.n_rejects = n_rejects
    return ds


def dataset_from_raw_events(
    events: pd.DataFrame,
    *,
    name: str = "dataset",
    gate: Gate | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    event_weights: Mapping[str, float] | None = None,
    item_meta: pd.DataFrame | None = None,
    line_numbers: np.ndarray | None = None,
) -> InteractionDataset:
    """Gate a raw event frame (user,item,type,timestamp[,rating,query,session,event_id]) to data.

    The same path the loaders take: rejects are logged and counted in `n_rejects`; without a
    gate or pseudonymiser the in-memory benchmark key is used.
    """
    lines = (
        np.arange(1, len(events) + 1, dtype=np.int64)
        if line_numbers is None
        else np.asarray(line_numbers, dtype=np.int64)
    )
    return gate_and_build(
        name,
        events,
        lines,
        [],
        gate=gate,
        pseudonymiser=pseudonymiser,
        event_weights=event_weights,
        item_meta=item_meta,
    )
