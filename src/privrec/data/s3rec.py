"""Amazon review datasets in S3-Rec format (e.g. `Beauty.txt` + `beauty_items.jsonl`).

The format has no timestamps: events get `SYNTHETIC_BASE_TS + position` seconds, strictly
increasing along each user's sequence. Only the order inside a user is meaningful; global
temporal splits are meaningless on these datasets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import NotFoundError, ValidationError
from privrec.data.dataset import InteractionDataset
from privrec.data.ingest import SYNTHETIC_BASE_TS, gate_and_build, sorted_item_keys
from privrec.data.vocab import Vocabulary
from privrec.events.gate import Gate
from privrec.privacy.pseudonym import Pseudonymiser

__all__ = ["load_amazon_s3rec"]


def _s3rec_files(path: str | Path) -> tuple[Path, Path | None, Path | None]:
    """An S3-Rec folder's sequence file and its companions (items jsonl, item2attributes json)."""
    p = Path(path)
    if p.is_file():
        seq, folder = p, p.parent
    else:
        folder = p
        cands = sorted(
            x for x in folder.glob("*.txt") if x.name.lower() not in ("readme.txt", "license.txt")
        )
        if not cands:
            raise NotFoundError(
                f"no <Name>.txt sequence file in {folder}; expected e.g. Beauty.txt (S3-Rec format)"
            )
        if len(cands) > 1:
            raise ValidationError(
                "path", f"{len(cands)} .txt files in {folder}; pass the sequence file itself"
            )
        seq = cands[0]
    stem = seq.stem
    items = next(
        (
            x
            for x in (folder / f"{stem.lower()}_items.jsonl", folder / f"{stem}_items.jsonl")
            if x.exists()
        ),
        None,
    )
    attrs = folder / f"{stem}_item2attributes.json"
    return seq, items, attrs if attrs.exists() else None


def _s3rec_meta(items_path: Path | None, attrs_path: Path | None) -> pd.DataFrame | None:
    rows: dict[str, dict[str, Any]] = {}
    if items_path is not None:
        with open(items_path, encoding="utf-8") as fh:
            for ln in fh:
                if not ln.strip():
                    continue
                r = json.loads(ln)
                paths = [
                    " > ".join(c for c in cat if c) for cat in (r.get("categories") or []) if cat
                ]
                title = (r.get("title") or "").strip() or None
                text = ". ".join([x for x in [title, *paths] if x])
                rows[str(r["s3rec_item_id"])] = {
                    "item": str(r["s3rec_item_id"]),
                    "title": title,
                    "category": paths[0] if paths else None,
                    "text": text or None,
                    "asin": r.get("asin"),
                }
    if attrs_path is not None:
        with open(attrs_path, encoding="utf-8") as fh:
            attrs = json.load(fh)
        for k, v in attrs.items():
            rows.setdefault(str(k), {"item": str(k)})["attributes"] = tuple(int(a) for a in v)
    return pd.DataFrame(list(rows.values())) if rows else None


def load_amazon_s3rec(
    path: str | Path,
    *,
    gate: Gate | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    event_weights: Mapping[str, float] | None = None,
) -> InteractionDataset:
    """Load an Amazon dataset in S3-Rec format (e.g. `Beauty.txt` + `beauty_items.jsonl`).

    `<Name>.txt` holds one user a line, `user item item ...` in review-time order. Every item is a
    `purchase` event (a review of a bought item). There are no timestamps: the k-th item of a
    line gets `SYNTHETIC_BASE_TS + k` seconds, which keeps each user's order and nothing more.
    Item keys are the S3-Rec ids as strings, indexed in id order (index = id - 1). With
    `<name>_items.jsonl`, items get title, category (the first path, "Beauty > Makeup > Nails"),
    text (title + all category paths) and `asin`; with `<Name>_item2attributes.json`, an
    `attributes` column of S3-Rec attribute ids.
    """
    seq, items_path, attrs_path = _s3rec_files(path)
    users: list[str] = []
    its: list[str] = []
    pos: list[int] = []
    lines: list[int] = []
    bad: list[tuple[int, str]] = []
    with open(seq, encoding="utf-8") as fh:
        for no, ln in enumerate(fh, start=1):
            parts = ln.split()
            if not parts:
                continue
            if len(parts) < 2:
                bad.append((no, f"{seq.name}: a user line holds no items"))
                continue
            for k, it in enumerate(parts[1:]):
                users.append(parts[0])
                its.append(it)
                pos.append(k)
                lines.append(no)
    frame = pd.DataFrame(
        {
            "user": users,
            "item": its,
            "type": "purchase",
            "timestamp": SYNTHETIC_BASE_TS + np.asarray(pos, dtype=np.int64),
        }
    )
    meta = _s3rec_meta(items_path, attrs_path)
    keys = its + ([] if meta is None else list(meta["item"]))
    return gate_and_build(
        f"amazon-{seq.stem.lower()}",
        frame,
        np.asarray(lines, dtype=np.int64),
        bad,
        gate=gate,
        pseudonymiser=pseudonymiser,
        event_weights=event_weights,
        item_meta=meta,
        items=Vocabulary(sorted_item_keys(keys)),
    )
