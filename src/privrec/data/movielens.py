"""GroupLens MovieLens-100K (`u.data`, with `u.item`/`u.genre` for titles and genres)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from privrec.data.dataset import InteractionDataset
from privrec.data.ingest import dataset_folder, gate_and_build, read_delimited, sorted_item_keys
from privrec.data.vocab import Vocabulary
from privrec.events.gate import Gate
from privrec.privacy.pseudonym import Pseudonymiser

__all__ = ["ML100K_GENRES", "load_movielens_100k"]

# The genre flag columns of `u.item`, in order; used when `u.genre` is missing.
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


def _ml100k_items(folder: Path) -> pd.DataFrame | None:
    path = folder / "u.item"
    if not path.exists():
        return None
    genres = list(ML100K_GENRES)
    gpath = folder / "u.genre"
    if gpath.exists():
        pairs = [
            ln.split("|") for ln in gpath.read_text(encoding="latin-1").splitlines() if ln.strip()
        ]
        genres = [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]
    rows = []
    # Latin-1: some titles hold bytes >= 0x80 ("Misérables"); see PROVENANCE.md.
    for ln in path.read_text(encoding="latin-1").splitlines():
        f = ln.split("|")
        if len(f) < 5 + len(genres):
            continue
        flags = f[5 : 5 + len(genres)]
        gs = [g for g, flag in zip(genres, flags, strict=True) if flag.strip() == "1"]
        title = f[1].strip()
        rows.append(
            {
                "item": f[0].strip(),
                "title": title,
                "category": "|".join(gs) or None,
                "text": f"{title}. {', '.join(gs)}" if gs else title,
            }
        )
    return pd.DataFrame(rows)


def load_movielens_100k(
    path: str | Path,
    *,
    gate: Gate | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    event_weights: Mapping[str, float] | None = None,
) -> InteractionDataset:
    """Load GroupLens MovieLens-100K (`u.data`, and `u.item` for titles and genres).

    Every rating becomes a `rating` event with its value; `u.data` keeps its row order in
    `arrival` (stratified splits depend on it). Items are indexed in id order (index = id - 1)
    and carry title, genres as category ("Action|Comedy") and text (title + genres).
    """
    folder = dataset_folder(path, "u.data")
    raw = read_delimited(folder / "u.data", "\t", 4, ["user", "item", "rating", "timestamp"])
    frame = raw.frame.assign(type="rating")
    frame["rating"] = pd.to_numeric(frame["rating"], errors="coerce")
    frame["timestamp"] = pd.to_numeric(frame["timestamp"], errors="coerce")
    meta = _ml100k_items(folder)
    keys = list(frame["item"]) + ([] if meta is None else list(meta["item"]))
    return gate_and_build(
        "ml-100k",
        frame,
        raw.lines,
        raw.bad,
        gate=gate,
        pseudonymiser=pseudonymiser,
        event_weights=event_weights,
        item_meta=meta,
        items=Vocabulary(sorted_item_keys(keys)),
    )
