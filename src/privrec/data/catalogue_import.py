"""Catalogue import: validate product rows from JSONL, CSV or Parquet (layer 3).

A shop's catalogue arrives as a file or as JSON records. Each row is checked field by field;
a bad row is rejected with its line (or record) number, the field and the problem, never the
value itself (a malformed field may hold anything, including personal data pasted by mistake).
Good rows become the frame `EventStore.upsert_items` takes: columns item, title, category,
brand, price, in_stock and text.

Fields accepted: item (required), title, description, category ("A > B > C"), brand, price,
currency, in_stock / stock, image_url and attributes. The store holds no currency or attributes
columns, so those are validated and then dropped (`CatalogueImport.dropped` names them);
description becomes `text`, a stock count becomes in_stock (count > 0), and image_url (https
only: the shop's pages load it in shoppers' browsers) is kept.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from privrec.core.errors import ValidationError

__all__ = [
    "CATALOGUE_FIELDS",
    "DROPPED_FIELDS",
    "CatalogueImport",
    "CatalogueReject",
    "read_catalogue",
    "validate_records",
]

CATALOGUE_FIELDS: tuple[str, ...] = (
    "item",
    "title",
    "description",
    "category",
    "brand",
    "price",
    "currency",
    "in_stock",
    "stock",
    "image_url",
    "attributes",
)
# validated, but the store has no column for them
DROPPED_FIELDS: tuple[str, ...] = ("currency", "attributes")
STORE_COLUMNS: tuple[str, ...] = (
    "item",
    "title",
    "category",
    "brand",
    "price",
    "in_stock",
    "text",
    "image_url",
)
MAX_ID_LEN = 256
MAX_TEXT_LEN = {"title": 500, "brand": 200, "category": 500, "description": 20_000}
MAX_URL_LEN = 2048
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})


@dataclass(frozen=True)
class CatalogueReject:
    """A refused catalogue row: where, which field, and why (never the value)."""

    line: int
    field: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"line": self.line, "field": self.field, "reason": self.reason}


@dataclass
class CatalogueImport:
    """The outcome of validating catalogue rows.

    Attributes:
        frame: the accepted rows in the store's item columns (last row wins per item).
        rows: rows read.
        rejects: the refused rows.
        dropped: the accepted fields the store cannot hold (validated, then not kept).
    """

    frame: pd.DataFrame
    rows: int
    rejects: list[CatalogueReject] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Rows accepted."""
        return self.rows - len(self.rejects)

    def report(self, written: int | None = None) -> dict[str, Any]:
        """JSON-ready summary (the items written when known)."""
        out: dict[str, Any] = {
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": len(self.rejects),
            "rejects": [r.to_dict() for r in self.rejects],
            "dropped_fields": list(self.dropped),
        }
        if written is not None:
            out["items_written"] = written
        return out


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v)


def _text(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ValidationError(name, "must be a string")
    s = v.strip()
    if len(s) > MAX_TEXT_LEN.get(name, MAX_ID_LEN):
        raise ValidationError(name, f"is longer than {MAX_TEXT_LEN.get(name, MAX_ID_LEN)} chars")
    return s


def _item(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise ValidationError("item", "must be a string id")
    s = str(v).strip()
    if not s:
        raise ValidationError("item", "is empty")
    if len(s) > MAX_ID_LEN or any(ord(c) < 32 for c in s):
        raise ValidationError("item", f"must be 1 to {MAX_ID_LEN} printable characters")
    return s


def _category(v: Any) -> str:
    s = _text("category", v)
    parts = [p.strip() for p in s.split(">")]
    if any(not p for p in parts):
        raise ValidationError("category", "has an empty level; write a path like 'A > B > C'")
    return " > ".join(parts)


def _price(v: Any) -> float:
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise ValidationError("price", "must be a number") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValidationError("price", "must be a number")
    p = float(v)
    if not math.isfinite(p) or p < 0:
        raise ValidationError("price", "must be a finite number >= 0")
    return p


def _currency(v: Any) -> str:
    if not isinstance(v, str) or len(v) != 3 or not v.isascii() or not v.isalpha():
        raise ValidationError("currency", "must be an ISO 4217 code of 3 letters")
    return v.upper()


def _in_stock(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        if not math.isfinite(v) or v < 0 or v != int(v):
            raise ValidationError(name, "must be true/false or a whole count >= 0")
        return v > 0
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        if s.isdigit():
            return int(s) > 0
    raise ValidationError(name, "must be true/false or a whole count >= 0")


def _url(v: Any) -> str:
    if not isinstance(v, str) or len(v) > MAX_URL_LEN:
        raise ValidationError("image_url", f"must be an https URL of at most {MAX_URL_LEN} chars")
    parts = urlsplit(v.strip())
    # https only: a plain-http picture would be mixed content on the shop's https pages
    if parts.scheme.lower() != "https" or not parts.netloc:
        raise ValidationError("image_url", "must be an absolute https URL")
    return v.strip()


def _attributes(v: Any) -> Any:
    if isinstance(v, str):  # CSV cells hold the object as JSON text
        try:
            v = json.loads(v)
        except ValueError:
            raise ValidationError("attributes", "must be a JSON object") from None
    if not isinstance(v, dict):
        raise ValidationError("attributes", "must be an object")
    return v


def validate_row(rec: Any) -> dict[str, Any]:
    """One catalogue record as a store row.

    Raises:
        ValidationError: naming the first bad field (never its value).
    """
    if not isinstance(rec, Mapping):
        raise ValidationError("", "row must be an object")
    unknown = [k for k in rec if k not in CATALOGUE_FIELDS]
    if unknown:
        # an unknown key may itself be pasted data: say how many, not which
        raise ValidationError("", f"{len(unknown)} unknown field(s); known: {CATALOGUE_FIELDS}")
    if _blank(rec.get("item")):
        raise ValidationError("item", "is required")
    row: dict[str, Any] = {c: None for c in STORE_COLUMNS}
    row["item"] = _item(rec["item"])
    for name in ("title", "brand"):
        if not _blank(rec.get(name)):
            row[name] = _text(name, rec[name]) or None
    if not _blank(rec.get("description")):
        row["text"] = _text("description", rec["description"]) or None
    if not _blank(rec.get("category")):
        row["category"] = _category(rec["category"])
    if not _blank(rec.get("price")):
        row["price"] = _price(rec["price"])
    if not _blank(rec.get("currency")):
        _currency(rec["currency"])
    for name in ("in_stock", "stock"):
        if not _blank(rec.get(name)):
            row["in_stock"] = _in_stock(name, rec[name])
    if not _blank(rec.get("image_url")):
        row["image_url"] = _url(rec["image_url"])
    if not _blank(rec.get("attributes")):
        _attributes(rec["attributes"])
    return row


def validate_records(records: Iterable[tuple[int, Any]]) -> CatalogueImport:
    """Validate (line, record) pairs into the store's item frame and the rejects."""
    rows: list[dict[str, Any]] = []
    rejects: list[CatalogueReject] = []
    dropped: set[str] = set()
    n = 0
    for line, rec in records:
        n += 1
        if isinstance(rec, CatalogueReject):
            rejects.append(rec)
            continue
        try:
            rows.append(validate_row(rec))
        except ValidationError as e:
            rejects.append(CatalogueReject(line, e.field or "row", e.problem))
            continue
        dropped.update(k for k in DROPPED_FIELDS if not _blank(rec.get(k)))
    frame = pd.DataFrame(rows, columns=list(STORE_COLUMNS))
    if len(frame):
        frame = frame.drop_duplicates("item", keep="last").reset_index(drop=True)
    frame["price"] = frame["price"].astype("float64")
    frame["in_stock"] = frame["in_stock"].astype("boolean")
    return CatalogueImport(frame=frame, rows=n, rejects=rejects, dropped=sorted(dropped))


def _jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8", errors="strict") as fh:
        line = 0
        while True:
            line += 1
            try:
                text = fh.readline()
            except UnicodeDecodeError:
                yield line, CatalogueReject(line, "row", "not valid UTF-8")
                return
            if not text:
                return
            if not text.strip():
                continue
            try:
                yield line, json.loads(text)
            except (ValueError, RecursionError):
                yield line, CatalogueReject(line, "row", "not valid JSON")


def _csv(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return
        for rec in reader:
            line = reader.line_num
            if None in rec:  # more cells than header columns
                yield line, CatalogueReject(line, "row", "has more cells than the header")
                continue
            yield line, {k: (v if v != "" else None) for k, v in rec.items()}


def _parquet(path: Path) -> Iterator[tuple[int, Any]]:
    pf = pq.ParquetFile(path)
    n = 0
    for batch in pf.iter_batches(batch_size=10_000):
        for rec in batch.to_pylist():
            n += 1
            yield n, rec


def read_catalogue(path: str | Path) -> CatalogueImport:
    """Read and validate a catalogue file (.jsonl/.ndjson, .csv with a header row, .parquet).

    Line numbers are the file's lines (JSONL, CSV) or 1-based row numbers (Parquet).

    Raises:
        ValidationError: the path has an unknown extension or cannot be read.
    """
    p = Path(path)
    fmt = _FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ValidationError(
            "path", "unknown file type; use .jsonl/.ndjson, .csv (with a header) or .parquet"
        )
    if not p.is_file():
        raise ValidationError("path", "no such file")
    reader = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}[fmt]
    try:
        return validate_records(reader(p))
    except UnicodeDecodeError:
        raise ValidationError("path", "the file is not valid UTF-8") from None
    except (OSError, csv.Error, pa.ArrowException) as e:
        raise ValidationError("path", f"cannot be read ({type(e).__name__})") from None
