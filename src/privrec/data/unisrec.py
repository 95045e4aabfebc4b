"""UniSRec / RecBole processed datasets (atomic `.inter` files; e.g. Amazon Scientific).

The files hold leave-one-out rows, not events: each user's full sequence is rebuilt from the
`.train/.valid/.test.inter` files and checked against all three. There are no timestamps: events
get `SYNTHETIC_BASE_TS + position` seconds, so only the order inside a user is meaningful.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from privrec.core.errors import NotFoundError, ValidationError
from privrec.data.dataset import InteractionDataset
from privrec.data.ingest import SYNTHETIC_BASE_TS, gate_and_build
from privrec.data.splitters import leave_one_out
from privrec.data.vocab import Vocabulary
from privrec.events.gate import Gate
from privrec.privacy.pseudonym import Pseudonymiser

__all__ = ["load_unisrec", "load_unisrec_split"]


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
    ds = gate_and_build(
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
