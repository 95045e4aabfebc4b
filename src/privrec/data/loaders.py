"""Public dataset loaders: format detection, `load_dataset`, and the entry to every format.

Every row of every format goes through the same privacy gate as live events (`ingest`); each
format has its own module and this one dispatches between them and re-exports their loaders, so
`from privrec.data.loaders import ...` is the one import callers need:

- `movielens`: GroupLens MovieLens-100K (`load_movielens_100k`).
- `s3rec`: Amazon datasets in S3-Rec format (`load_amazon_s3rec`).
- `unisrec`: UniSRec / RecBole processed datasets (`load_unisrec`, `load_unisrec_split`).
- `taobao`: Taobao UserBehavior CSV (`load_taobao_userbehavior`).
- `lightgcn`: LightGCN-style train/valid/test folders, e.g. MovieLens-1M of LightGCN++
  (`load_lightgcn_split`).
- `ingest`: the shared gate path (`dataset_from_raw_events`), the in-memory benchmark key
  (`benchmark_pseudonymiser`) and `SYNTHETIC_BASE_TS`, the start of the synthetic timestamps of
  the formats that have none (S3-Rec, UniSRec).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from privrec.core.errors import NotFoundError, ValidationError
from privrec.data.dataset import InteractionDataset
from privrec.data.ingest import (
    BENCHMARK_KEY_SEED,
    SYNTHETIC_BASE_TS,
    benchmark_pseudonymiser,
    dataset_from_raw_events,
)
from privrec.data.lightgcn import load_lightgcn_split
from privrec.data.movielens import ML100K_GENRES, load_movielens_100k
from privrec.data.s3rec import load_amazon_s3rec
from privrec.data.taobao import TAOBAO_TYPES, load_taobao_userbehavior
from privrec.data.unisrec import load_unisrec, load_unisrec_split
from privrec.events.gate import Gate
from privrec.privacy.pseudonym import Pseudonymiser

__all__ = [
    "BENCHMARK_KEY_SEED",
    "LOADERS",
    "ML100K_GENRES",
    "SYNTHETIC_BASE_TS",
    "TAOBAO_TYPES",
    "benchmark_pseudonymiser",
    "dataset_from_raw_events",
    "detect_format",
    "load_amazon_s3rec",
    "load_dataset",
    "load_lightgcn_split",
    "load_movielens_100k",
    "load_taobao_userbehavior",
    "load_unisrec",
    "load_unisrec_split",
]


def detect_format(path: str | Path) -> str:
    """The format of a dataset folder (or file): movielens-100k, unisrec, amazon-s3rec or taobao."""
    p = Path(path)
    if p.is_file():
        if p.name == "u.data":
            return "movielens-100k"
        if p.name.endswith(".inter"):
            return "unisrec"
        if p.suffix == ".csv":
            return "taobao"
        if p.suffix == ".txt":
            return "amazon-s3rec"
        p = p.parent
    if not p.is_dir():
        raise NotFoundError(f"{p}: no such dataset folder")
    if (p / "u.data").exists():
        return "movielens-100k"
    if any(p.glob("*.train.inter")):
        return "unisrec"
    if any(p.glob("*_items.jsonl")) or any(p.glob("*_item2attributes.json")):
        return "amazon-s3rec"
    if any(p.glob("UserBehavior*.csv")):
        return "taobao"
    txt = [x for x in p.glob("*.txt") if x.name.lower() not in ("readme.txt", "license.txt")]
    if len(txt) == 1:
        with open(txt[0], encoding="utf-8", errors="replace") as fh:
            first = fh.readline().split()
        if len(first) >= 2 and all(t.isdigit() for t in first):
            return "amazon-s3rec"  # "user item item ..." lines without the companion files
    raise ValidationError(
        "path",
        f"{p}: unknown dataset layout; expected u.data (MovieLens), <Name>.train.inter (UniSRec), "
        "<Name>.txt + <name>_items.jsonl (S3-Rec) or UserBehavior*.csv (Taobao)",
    )


# Format name (as `detect_format` returns it) -> its loader.
LOADERS: dict[str, Callable[..., InteractionDataset]] = {
    "movielens-100k": load_movielens_100k,
    "unisrec": load_unisrec,
    "amazon-s3rec": load_amazon_s3rec,
    "taobao": load_taobao_userbehavior,
}


def load_dataset(
    path: str | Path,
    *,
    gate: Gate | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    event_weights: Mapping[str, float] | None = None,
) -> InteractionDataset:
    """Load any supported dataset, its format detected from the folder's contents."""
    return LOADERS[detect_format(path)](
        path, gate=gate, pseudonymiser=pseudonymiser, event_weights=event_weights
    )
