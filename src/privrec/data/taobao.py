"""Taobao UserBehavior (headerless CSV: user, item, category, behavior, timestamp)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from privrec.core.errors import NotFoundError, ValidationError
from privrec.data.dataset import InteractionDataset
from privrec.data.ingest import gate_and_build, read_delimited
from privrec.events.gate import Gate
from privrec.privacy.pseudonym import Pseudonymiser

__all__ = ["TAOBAO_TYPES", "load_taobao_userbehavior"]

# Taobao behaviour codes -> privrec event types.
TAOBAO_TYPES = {"pv": "view", "cart": "cart", "fav": "favorite", "buy": "purchase"}


def _taobao_file(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    cands = sorted(p.glob("UserBehavior*.csv")) or sorted(p.glob("*.csv"))
    if not cands:
        raise NotFoundError(
            f"no UserBehavior*.csv in {p}; expected Taobao UserBehavior rows "
            "user,item,category,behavior,timestamp"
        )
    if len(cands) > 1:
        raise ValidationError("path", f"{len(cands)} csv files in {p}; pass the one to load")
    return cands[0]


def load_taobao_userbehavior(
    path: str | Path,
    *,
    gate: Gate | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    event_weights: Mapping[str, float] | None = None,
) -> InteractionDataset:
    """Load Taobao UserBehavior CSV (headerless: user, item, category, behavior, timestamp).

    pv -> view, cart -> cart, fav -> favorite, buy -> purchase; any other behaviour is passed on
    unchanged and rejected by the gate. `category_id` becomes the item's category. A truncated
    line (the shared sample's last line) is a counted reject. `path` is the CSV or a folder with
    one `UserBehavior*.csv`.
    """
    file = _taobao_file(path)
    raw = read_delimited(
        file, ",", 5, ["user", "item", "category", "behavior", "timestamp"], encoding="utf-8"
    )
    f = raw.frame
    frame = pd.DataFrame(
        {
            "user": f["user"],
            "item": f["item"],
            "type": f["behavior"].map(lambda b: TAOBAO_TYPES.get(b.strip(), b)),
            "timestamp": pd.to_numeric(f["timestamp"], errors="coerce"),
        }
    )
    meta = pd.DataFrame(
        {"item": f["item"].astype(str), "category": f["category"].astype(str)}
    ).drop_duplicates("item")
    return gate_and_build(
        "taobao-userbehavior",
        frame,
        raw.lines,
        raw.bad,
        gate=gate,
        pseudonymiser=pseudonymiser,
        event_weights=event_weights,
        item_meta=meta,
        restrict_meta_to_events=True,
    )
