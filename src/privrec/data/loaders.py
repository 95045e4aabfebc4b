"""Loaders for public dataset formats. Every row goes through the same privacy gate as live events.

Each loader reads the raw files (read-only; nothing is ever written next to them), builds a raw
event frame (`user,item,type,timestamp` plus `rating`/`query`/`session` where the format has
them), passes it to `Gate.process_frame`, and builds an `InteractionDataset` from the accepted,
pseudonymised events. Malformed lines (a wrong number of fields) never reach the gate; they are
counted as rejects next to the gate's own, so a truncated last line is a counted reject, not a
crash. The count is logged and kept in `InteractionDataset.n_rejects`.

Pseudonym keys: pass a `gate` or a `pseudonymiser` to use your own key (for example
`Pseudonymiser.from_data_dir`). Without either, a loader uses `benchmark_pseudonymiser()`: a
key derived in memory from a fixed seed, so benchmarks get random-looking but reproducible
pseudonyms and the same user order on every run. That key is not secret (anyone who knows the seed
can derive it): it is for public benchmark data only, and it is never written anywhere.

Formats with no timestamps (the Amazon S3-Rec and UniSRec files) get synthetic ones:
`SYNTHETIC_BASE_TS + position` seconds, strictly increasing along each user's sequence. Only the
order inside a user is meaningful; global temporal splits are meaningless on those datasets.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import NotFoundError, ValidationError
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.events.gate import Gate
from privrec.privacy.pseudonym import Pseudonymiser

logger = logging.getLogger(__name__)

__all__ = [
    "BENCHMARK_KEY_SEED",
    "SYNTHETIC_BASE_TS",
    "benchmark_pseudonymiser",
    "dataset_from_raw_events",
    "detect_format",
    "load_amazon_s3rec",
    "load_dataset",
    "load_movielens_100k",
    "load_taobao_userbehavior",
    "load_unisrec",
    "load_unisrec_split",
]

# The seed of the in-memory benchmark pseudonym key.
BENCHMARK_KEY_SEED = 0
# 2014-05-13T16:53:20Z: synthetic timestamps start here (inside the gate's accepted range).
SYNTHETIC_BASE_TS = 1_400_000_000

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
TAOBAO_TYPES = {"pv": "view", "cart": "cart", "fav": "favorite", "buy": "purchase"}


# ---- keys and the gate ---------------------------------------------------------------------
def benchmark_pseudonymiser(seed: int = BENCHMARK_KEY_SEED) -> Pseudonymiser:
    """A pseudonymiser keyed in memory from `seed` (benchmarks only; the key is never stored)."""
    key = hashlib.sha256(f"privrec/benchmark-pseudonym-key/{int(seed)}".encode()).digest()
    return Pseudonymiser([key])


def _make_gate(gate: Gate | None, pseudonymiser: Pseudonymiser | None, **gate_args: Any) -> Gate:
    if gate is not None:
        return gate
    return Gate(pseudonymiser or benchmark_pseudonymiser(), **gate_args)


@dataclass
class _Raw:
    """Raw rows of a source file, before the gate."""

    frame: pd.DataFrame
    lines: np.ndarray  # 1-based source line number of each row
    bad: list[tuple[int, str]]  # (line, reason) of lines that could not be split into fields


def _read_delimited(
    path: Path,
    sep: str | None,
    n_fields: int,
    columns: list[str],
    encoding: str = "utf-8",
    skip: int = 0,
) -> _Raw:
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
    return _Raw(frame, np.asarray(lines, dtype=np.int64), bad)


def _gate_and_build(
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
    g = _make_gate(gate, pseudonymiser)
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
    return _gate_and_build(
        name,
        events,
        lines,
        [],
        gate=gate,
        pseudonymiser=pseudonymiser,
        event_weights=event_weights,
        item_meta=item_meta,
    )


def _sorted_keys(keys: Any) -> list[str]:
    """Unique item keys, numeric ones in numeric order (so index i is the i-th id of the source)."""
    uniq = list(dict.fromkeys(str(k) for k in keys))
    if all(k.isdigit() for k in uniq):
        return sorted(uniq, key=int)
    return sorted(uniq)


def _folder(path: str | Path, marker: str) -> Path:
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not (p / marker).exists():
        raise NotFoundError(f"{marker}: not found in {p}; point the loader at the dataset folder")
    return p


# ---- MovieLens-100K ------------------------------------------------------------------------
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
    folder = _folder(path, "u.data")
    raw = _read_delimited(folder / "u.data", "\t", 4, ["user", "item", "rating", "timestamp"])
    frame = raw.frame.assign(type="rating")
    frame["rating"] = pd.to_numeric(frame["rating"], errors="coerce")
    frame["timestamp"] = pd.to_numeric(frame["timestamp"], errors="coerce")
    meta = _ml100k_items(folder)
    keys = list(frame["item"]) + ([] if meta is None else list(meta["item"]))
    return _gate_and_build(
        "ml-100k",
        frame,
        raw.lines,
        raw.bad,
        gate=gate,
        pseudonymiser=pseudonymiser,
        event_weights=event_weights,
        item_meta=meta,
        items=Vocabulary(_sorted_keys(keys)),
    )


# ---- Amazon, S3-Rec format -----------------------------------------------------------------
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
    return _gate_and_build(
        f"amazon-{seq.stem.lower()}",
        frame,
        np.asarray(lines, dtype=np.int64),
        bad,
        gate=gate,
        pseudonymiser=pseudonymiser,
        event_weights=event_weights,
        item_meta=meta,
        items=Vocabulary(_sorted_keys(keys)),
    )


# ---- UniSRec / RecBole atomic files --------------------------------------------------------
def _unisrec_stem(folder: Path) -> str:
    cands = sorted(folder.glob("*.train.inter"))
    if not cands:
        raise NotFoundError(
            f"no <Name>.train.inter in {folder}; expected the UniSRec layout (e.g. "
            "Scientific.train.inter)"
        )
    if len(cands) > 1:
        raise ValidationError(
            "path", f"{len(cands)} *.train.inter files in {folder}; keep one dataset per folder"
        )
    return cands[0].name[: -len(".train.inter")]


def _read_index(path: Path) -> list[str]:
    """`key<TAB>index` lines -> keys in index order."""
    with open(path, encoding="utf-8") as fh:
        pairs = [ln.rstrip("\n").split("\t") for ln in fh if ln.strip()]
    out = [""] * len(pairs)
    for key, idx in pairs:
        out[int(idx)] = key
    return out


def _read_inter(path: Path) -> list[tuple[int, list[int], int]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        next(fh)  # header: user_id:token item_id_list:token_seq item_id:token
        for ln in fh:
            if not ln.strip():
                continue
            u, hist, tgt = ln.rstrip("\n").split("\t")
            rows.append((int(u), [int(x) for x in hist.split()], int(tgt)))
    return rows


def _unisrec_sequences(folder: Path, stem: str) -> dict[int, list[int]]:
    """Each user's full chronological sequence (UniSRec indices), checked against every file.

    Train rows are one per training target: history items[:p] (last 50 kept) -> items[p], for
    p = 1 .. n-3; valid is items[:n-2] -> items[n-2]; test is items[:n-1] -> items[n-1].
    """
    train = _read_inter(folder / f"{stem}.train.inter")
    valid = {u: (h, t) for u, h, t in _read_inter(folder / f"{stem}.valid.inter")}
    test = {u: (h, t) for u, h, t in _read_inter(folder / f"{stem}.test.inter")}
    per_user: dict[int, list[tuple[int, int, list[int], int]]] = {}
    for n, (u, h, t) in enumerate(train):
        per_user.setdefault(u, []).append((len(h), -n, h, t))
    seqs: dict[int, list[int]] = {}
    for u, (th, tt) in test.items():
        rows = sorted(
            per_user.get(u, [])
        )  # by history length, then file order reversed (it is descending)
        if rows:
            seq = [rows[0][2][0], *(r[3] for r in rows)]
        else:
            seq = list(th)
        if u not in valid:
            raise ValidationError(
                f"{stem}.valid.inter", f"user index {u} has a test row but no validation row"
            )
        vh, vt = valid[u]
        seq += [vt, tt]
        consistent = seq[:-1][-len(th) :] == th and seq[:-2][-len(vh) :] == vh
        # Every training row p must read seq[:p] (its last len(history) items) -> seq[p].
        consistent = consistent and all(
            h == seq[:p][-len(h) :] and t == seq[p] for p, (_, _, h, t) in enumerate(rows, start=1)
        )
        if not consistent:
            raise ValidationError(
                f"{stem}.train.inter",
                f"user index {u}: the rows do not form one leave-one-out sequence",
            )
        seqs[u] = seq
    return seqs


def _unisrec_meta(text_path: Path) -> pd.DataFrame | None:
    """Item text "title. categories. brand. " split into title, category and brand if possible."""
    if not text_path.exists():
        return None
    rows = []
    with open(text_path, encoding="utf-8") as fh:
        next(fh)
        for ln in fh:
            if not ln.strip():
                continue
            asin, text = ln.rstrip("\n").split("\t", 1)
            text = text.strip()
            title, category, brand = text, None, None
            for sep in (". Industrial & Scientific", ". . "):
                cut = text.find(sep)
                if cut > 0:
                    title, rest = text[:cut], text[cut + 2 :]
                    if sep == ". . ":
                        rest = rest[2:]
                        category = None
                        brand = rest
                    else:
                        category, _, brand = rest.partition(". ")
                    brand = brand.strip().removesuffix(".").strip() or None
                    break
            rows.append(
                {
                    "item": asin,
                    "title": title.strip() or None,
                    "category": category,
                    "brand": brand,
                    "text": text,
                }
            )
    return pd.DataFrame(rows)


def _load_unisrec(
    path: str | Path,
    gate: Gate | None,
    pseudonymiser: Pseudonymiser | None,
    event_weights: Mapping[str, float] | None,
) -> tuple[InteractionDataset, dict[int, list[int]], list[str]]:
    folder = Path(path).parent if Path(path).is_file() else Path(path)
    stem = _unisrec_stem(folder)
    item_keys = _read_index(folder / f"{stem}.item2index")
    user_keys = _read_index(folder / f"{stem}.user2index")
    seqs = _unisrec_sequences(folder, stem)
    users: list[str] = []
    its: list[str] = []
    pos: list[int] = []
    for u in sorted(seqs):
        seq = seqs[u]
        users += [user_keys[u]] * len(seq)
        its += [item_keys[i] for i in seq]
        pos += list(range(len(seq)))
    frame = pd.DataFrame(
        {
            "user": users,
            "item": its,
            "type": "purchase",
            "timestamp": SYNTHETIC_BASE_TS + np.asarray(pos, dtype=np.int64),
        }
    )
    meta = _unisrec_meta(folder / f"{stem}.text")
    ds = _gate_and_build(
        f"amazon-{stem.lower()}",
        frame,
        np.arange(1, len(frame) + 1, dtype=np.int64),
        [],
        gate=gate,
        pseudonymiser=pseudonymiser,
        event_weights=event_weights,
        item_meta=meta,
        items=Vocabulary(item_keys),
    )
    return ds, seqs, item_keys


def load_unisrec(
    path: str | Path,
    *,
    gate: Gate | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    event_weights: Mapping[str, float] | None = None,
) -> InteractionDataset:
    """Load a UniSRec/RecBole processed dataset (e.g. Amazon Scientific) as full user sequences.

    Each user's chronological sequence is rebuilt from the `.train/.valid/.test.inter` files
    (first history item + every training target + the validation and test targets) and checked
    against all three. Items are keyed by ASIN and indexed exactly as `.item2index` (so index i is
    UniSRec's item i); users' raw ids are the reviewer ids of `.user2index` (pseudonymised at the
    gate). Events are `purchase` with synthetic timestamps `SYNTHETIC_BASE_TS + position`. Item
    text comes from `.text` ("title. categories. brand."), also split into title/category/brand.
    """
    return _load_unisrec(path, gate, pseudonymiser, event_weights)[0]


def load_unisrec_split(
    path: str | Path,
    *,
    gate: Gate | None = None,
    pseudonymiser: Pseudonymiser | None = None,
    event_weights: Mapping[str, float] | None = None,
) -> tuple[InteractionDataset, InteractionDataset, InteractionDataset]:
    """The split shipped with a UniSRec dataset, as (train, valid, test) sharing vocabularies.

    Verified against the files: per user, test = the last item (`.test.inter` target), valid = the
    second to last (`.valid.inter` target), train = every earlier item (the first history item and
    the `.train.inter` targets).
    """
    from privrec.data.splitters import leave_one_out

    ds, seqs, _ = _load_unisrec(path, gate, pseudonymiser, event_weights)
    train, valid, test = leave_one_out(ds)
    # The file's own split, checked: user j (pseudonyms in file user order) gets the file's
    # targets; item index i is UniSRec's item i.
    order = sorted(seqs)
    if ds.n_rejects == 0 and ds.n_users == len(order):
        ok = (
            test.user_idx.tolist() == list(range(len(order)))
            and valid.user_idx.tolist() == list(range(len(order)))
            and test.item_idx.tolist() == [seqs[u][-1] for u in order]
            and valid.item_idx.tolist() == [seqs[u][-2] for u in order]
        )
        if not ok:
            raise ValidationError(
                "path", "the rebuilt sequences do not reproduce the files' valid/test targets"
            )
    return train, valid, test


# ---- Taobao UserBehavior -------------------------------------------------------------------
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
    raw = _read_delimited(
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
    return _gate_and_build(
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


# ---- detection -----------------------------------------------------------------------------
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


LOADERS = {
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
