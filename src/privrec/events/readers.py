"""Event file readers: JSON Lines, CSV (with a header row) and Parquet, in bounded batches.

Each reader yields `RawBatch`es: the rows it could read (a frame for the gate's bulk path and,
for JSON objects with unknown fields, records for the per-record path) and the lines it refused
before the gate. A reject names the line and the problem, never a value of the line.
"""

from __future__ import annotations

import csv
import io
import json
import json.scanner
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from privrec.core.errors import ValidationError
from privrec.events.framing import line_batches
from privrec.events.gate import INPUT_FIELDS, Gate
from privrec.events.rejects import Reject
from privrec.events.schema import FIELD_ALIASES

__all__ = ["FORMATS", "READERS", "RawBatch", "detect_format"]

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_KNOWN = frozenset(INPUT_FIELDS)


@dataclass
class RawBatch:
    """Rows read from a source, before the gate."""

    frame: pd.DataFrame | None = None
    lines: np.ndarray | None = None
    # refused before the gate (unreadable lines)
    rejects: list[Reject] = field(default_factory=list)
    records: list[Any] | None = None  # rows for the per-record path
    record_lines: list[int] | None = None


def detect_format(path: str | Path) -> str:
    """'jsonl', 'csv' or 'parquet' from the file extension.

    Raises:
        ValidationError: an unknown extension.
    """
    suffix = Path(path).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise ValidationError(
            "path",
            f"unknown file type {suffix or '(no extension)'!r}; use .jsonl/.ndjson (JSON Lines), "
            ".csv (with a header row) or .parquet",
        )
    return fmt


# ---- JSON Lines ---------------------------------------------------------------------------------
def _json_reason(err: Exception) -> str:
    if isinstance(err, RecursionError):
        return "line: JSON nested too deeply"
    if isinstance(err, json.JSONDecodeError):
        return f"line: not valid JSON ({err.msg} at column {err.colno})"
    return "line: not valid JSON"


def _json_kind(obj: Any) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "boolean"
    return {list: "array", str: "string", int: "number", float: "number"}.get(type(obj), "value")


# The C scanner: one call per line. typeshed types make_scanner as the class of the scanner,
# whose constructor takes the decoder as this call does.
_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _parse_json_line(text: str) -> Any:
    """One JSON value filling the whole line (json.loads without its Python-level overhead)."""
    text = text.strip()
    try:
        obj, end = _scan_json(text, 0)
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return obj


def _jsonl_batches(path: Path, gate: Gate, batch_size: int) -> Iterator[RawBatch]:
    with open(path, "rb") as fh:
        for lines, pre in line_batches(fh, batch_size, gate.max_line_bytes):
            rejects = list(pre)
            texts = lines.data.decode("utf-8").split("\n")[:-1]
            numbers = lines.numbers.tolist()
            objs: list[Any] = []
            failed: set[int] = set()
            try:
                objs = list(map(_parse_json_line, texts))
            except (ValueError, RecursionError):
                objs = []
                for t, no in zip(texts, numbers, strict=True):
                    try:
                        objs.append(_parse_json_line(t))
                    except (ValueError, RecursionError) as err:
                        objs.append(None)
                        failed.add(no)
                        rejects.append(Reject(no, _json_reason(err)))
            plain: list[dict[str, Any]] = []
            plain_lines: list[int] = []
            odd: list[dict[str, Any]] = []
            odd_lines: list[int] = []
            for obj, no in zip(objs, numbers, strict=True):
                if type(obj) is not dict:
                    if no not in failed:
                        rejects.append(
                            Reject(
                                no,
                                f"line: is a JSON {_json_kind(obj)}, not an object of field "
                                "names and values",
                            )
                        )
                    continue
                if not obj.keys() <= _KNOWN:
                    obj = {k: v for k, v in obj.items() if v is not None}  # null means absent
                    if not obj.keys() <= _KNOWN:
                        odd.append(obj)  # unknown fields: pydantic words the reject
                        odd_lines.append(no)
                        continue
                plain.append(obj)
                plain_lines.append(no)
            frame = None
            if plain:
                present = set().union(*plain)
                # dtype=object keeps each value's JSON type, exactly what pydantic would see.
                frame = pd.DataFrame(
                    {
                        k: pd.Series(
                            list(map(operator.methodcaller("get", k), plain)), dtype=object
                        )
                        for k in INPUT_FIELDS
                        if k in present
                    }
                )
            yield RawBatch(
                frame=frame,
                lines=np.asarray(plain_lines, dtype=np.int64),
                rejects=rejects,
                records=odd or None,
                record_lines=odd_lines or None,
            )


# ---- CSV ---------------------------------------------------------------------------------------
def _read_header(fh: IO[bytes], max_line_bytes: int) -> tuple[list[str] | None, int]:
    """The header row's field names and its line number; (None, n) for an empty file."""
    number = 0
    while True:
        raw = fh.readline(max_line_bytes + 2)
        if not raw:
            return None, number
        number += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            raise ValidationError(
                "header",
                f"line {number} is longer than {max_line_bytes} bytes; is this a CSV file?",
            )
        if raw.strip():
            break
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(
            "header", f"line {number} is not valid UTF-8; re-export the file as UTF-8"
        ) from None
    try:
        names = [n.strip() for n in next(csv.reader([text.rstrip("\r\n")], strict=True))]
    except (csv.Error, StopIteration):
        raise ValidationError("header", f"line {number} is not a valid CSV header row") from None
    if any(not n for n in names):
        raise ValidationError(
            "header",
            "a column has no name; the first row must name every column "
            "(user,item,type,timestamp,...)",
        )
    if len(set(names)) != len(names):
        raise ValidationError("header", "a column name appears twice; rename or drop the duplicate")
    if not any(n in _KNOWN or n.lower() in FIELD_ALIASES for n in names):
        # Most likely a file without a header: its first row is data, so nothing of it is echoed.
        raise ValidationError(
            "header",
            f"line {number} names none of the fields ({', '.join(INPUT_FIELDS)}); the first "
            "row must be a header row naming the columns",
        )
    return names, number


def _csv_batches(path: Path, gate: Gate, batch_size: int) -> Iterator[RawBatch]:
    with open(path, "rb") as fh:
        names, header_line = _read_header(fh, gate.max_line_bytes)
        if names is None:
            return
        for lines, pre in line_batches(
            fh, batch_size, gate.max_line_bytes, lines_before=header_line
        ):
            if not len(lines):
                yield RawBatch(rejects=list(pre))
                continue
            data = lines.data
            if b'"' not in data and data.count(b"\r") == data.count(b"\r\n"):
                frame, keep, bad = _csv_fast(data, names, lines.numbers)
            else:
                frame, keep, bad = _csv_python(data, names, lines.numbers)
            yield RawBatch(frame=frame, lines=lines.numbers[keep], rejects=list(pre) + bad)


def _ragged(line: int, found: int, expected: int) -> Reject:
    return Reject(
        line,
        f"line: has {found} fields but the header has {expected}; check the separators and "
        "quoting of this row",
    )


def _csv_fast(
    data: bytes, names: list[str], numbers: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray, list[Reject]]:
    """pyarrow's CSV parser for unquoted data: one line is exactly one row."""
    ragged: list[tuple[int, int]] = []

    def on_invalid(row: Any) -> str:
        ragged.append((row.number, row.actual_columns))
        return "skip"

    table = pcsv.read_csv(
        io.BytesIO(data),
        # Single-threaded so the parser reports row numbers (and we run beside the store's threads).
        read_options=pcsv.ReadOptions(
            column_names=names, use_threads=False, block_size=min(len(data) + 1, 2**31 - 1)
        ),
        parse_options=pcsv.ParseOptions(quote_char=False, invalid_row_handler=on_invalid),
        convert_options=pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=True, null_values=[""]
        ),
    )
    keep = np.ones(numbers.size, dtype=bool)
    bad = []
    for number, found in ragged:
        if number is None:  # cannot happen single-threaded; refuse to guess line numbers
            raise ValidationError("csv", "the CSV parser lost track of line numbers")
        keep[number - 1] = False
        bad.append(_ragged(int(numbers[number - 1]), found, len(names)))
    if table.num_rows != int(keep.sum()):
        raise ValidationError(
            "csv", "the CSV parser and the line framing disagree on the number of rows"
        )
    return table.to_pandas(), keep, bad


def _csv_python(
    data: bytes, names: list[str], numbers: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray, list[Reject]]:
    """Python's csv module for quoted data, one line per row (a bad line cannot swallow others)."""
    n_cols = len(names)
    lines = data.decode("utf-8").replace("\r\n", "\n").split("\n")[:-1]
    rows: list[list[str]] = []
    try:
        rows = list(csv.reader(lines, strict=True))
    except csv.Error:
        rows = []
    if len(rows) != len(lines):  # a record spanned lines (an open quote) or a line was malformed
        rows = []
        for line in lines:
            try:
                parsed = list(csv.reader([line], strict=True))
                rows.append(parsed[0] if len(parsed) == 1 else [])
            except csv.Error:
                rows.append(None)  # type: ignore[arg-type]
    keep = np.zeros(len(lines), dtype=bool)
    good: list[list[str]] = []
    bad: list[Reject] = []
    for k, row in enumerate(rows):
        if row is None:
            bad.append(
                Reject(int(numbers[k]), "line: malformed CSV quoting (an unclosed or stray quote)")
            )
        elif len(row) != n_cols:
            bad.append(_ragged(int(numbers[k]), len(row), n_cols))
        else:
            good.append(row)
            keep[k] = True
    cols = list(zip(*good, strict=True)) if good else [()] * n_cols
    frame = pd.DataFrame(
        {
            name: pd.array(_empty_is_null(col), dtype="str")
            for name, col in zip(names, cols, strict=True)
        }
    )
    return frame, keep, bad


def _empty_is_null(values: tuple[str, ...]) -> pa.Array:
    arr = pa.array(values, type=pa.string())
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


# ---- Parquet -------------------------------------------------------------------------------------
def _parquet_batches(path: Path, gate: Gate, batch_size: int) -> Iterator[RawBatch]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError):
        raise ValidationError("path", f"{path.name} is not a readable Parquet file") from None
    first = 1
    for batch in pf.iter_batches(batch_size=batch_size):
        frame = batch.to_pandas()
        yield RawBatch(frame=frame, lines=np.arange(first, first + len(frame), dtype=np.int64))
        first += len(frame)


# format name -> reader(path, gate, batch_size)
READERS: dict[str, Callable[[Path, Gate, int], Iterator[RawBatch]]] = {
    "jsonl": _jsonl_batches,
    "csv": _csv_batches,
    "parquet": _parquet_batches,
}
