"""File and record ingestion: stream events through the privacy gate into the event store.

Files are read in batches (never all at once): JSON Lines (`.jsonl`, `.ndjson`), CSV with a
header row of field names (`.csv`) and Parquet (`.parquet`, `.pq`). Bad rows never enter the
store and never vanish: each is counted and written to a rejects file (JSON Lines of line number,
reason and the user's pseudonym or null). Lines longer than the gate's `max_line_bytes` are
rejected without being parsed; a line that is not valid UTF-8 is rejected and the others kept.
Blank lines are skipped and not counted. Every batch is appended in its own transaction and
event ids are idempotency keys, so ingesting a file again (or after a crash) adds nothing twice.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import json.scanner
import logging
import operator
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from privrec.core.errors import NotFoundError, ValidationError
from privrec.core.files import open_private_write, private_dir
from privrec.events.gate import INPUT_FIELDS, Gate, GateResult, Reject
from privrec.events.store import EventStore

__all__ = [
    "BatchReport",
    "ConsentFilter",
    "detect_format",
    "ingest_file",
    "ingest_frame",
    "ingest_records",
]

logger = logging.getLogger(__name__)

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
DEFAULT_BATCH_SIZE = 200_000
_READ_BLOCK = 8 << 20  # bytes read from a file at a time
_MAX_BATCH_BYTES = 64 << 20  # a batch also ends here, so long lines cannot make it huge
_KNOWN = frozenset(INPUT_FIELDS)
MAX_SAMPLE_REJECTS = 10

Progress = Callable[[int], None]
# Given a gated frame (pseudonymous users), which rows the users' consent lets the store keep.
ConsentFilter = Callable[[pd.DataFrame], np.ndarray]


@dataclass
class BatchReport:
    """What one ingestion did. Always read == accepted + rejected + duplicates + consent_dropped.

    Attributes:
        read: rows (non-blank lines, records) looked at.
        accepted: events newly stored.
        rejected: rows refused by the gate or unreadable (see the rejects file).
        duplicates: rows whose event is already stored or repeated earlier in the input.
        consent_dropped: valid rows not stored because the user's consent level excludes them
            (anonymous: every row; purchases_only: every type but purchase).
        seconds: wall-clock time.
        rejects_path: where the rejects were written (None when no file was asked for).
        sample_rejects: the first few rejects (line, reason, pseudonym or None), for display.
    """

    read: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    consent_dropped: int = 0
    seconds: float = 0.0
    rejects_path: str | None = None
    sample_rejects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        """Rows read per second."""
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["seconds"] = round(self.seconds, 4)
        return d


# ---- public entry points ---------------------------------------------------------------------
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
            f"unknown file type {suffix or '(no extension)'!r}; use .jsonl/.ndjson (JSON Lines), .csv (with a header row) or .parquet",
        )
    return fmt


def ingest_file(
    path: str | Path,
    gate: Gate,
    store: EventStore,
    *,
    rejects_path: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    consent: ConsentFilter | None = None,
) -> BatchReport:
    """Stream a JSONL, CSV or Parquet file through the gate into the store, batch by batch.

    Args:
        path: the events file; its extension selects the format.
        gate: the privacy gate.
        store: the event store.
        rejects_path: where refused rows go (JSON Lines); default
            `<data_dir>/rejects/<file name>.rejects.jsonl`.
        batch_size: rows validated and appended per transaction.
        progress: called with the number of rows read so far after each batch.
        consent: keeps the rows the users' consent allows (see `ConsentFilter`); None keeps all.

    Raises:
        ValidationError: unknown extension, an unreadable CSV header or Parquet file.
        NotFoundError: the file does not exist.
        StoreError: the store refused a batch (earlier batches stay stored; re-run to resume).
    """
    path = Path(path)
    fmt = detect_format(path)
    if not path.is_file():
        raise NotFoundError(f"path: {path.name} does not exist or is not a file")
    if rejects_path is None:
        rejects_path = store.data_dir / "rejects" / f"{path.name}.rejects.jsonl"
    readers = {"jsonl": _jsonl_batches, "csv": _csv_batches, "parquet": _parquet_batches}
    report = _run(
        readers[fmt](path, gate, _check_batch_size(batch_size)),
        gate,
        store,
        Path(rejects_path),
        progress,
        consent,
    )
    logger.info(
        "ingest format=%s read=%d accepted=%d rejected=%d duplicates=%d seconds=%.3f",
        fmt,
        report.read,
        report.accepted,
        report.rejected,
        report.duplicates,
        report.seconds,
    )
    return report


def ingest_records(
    records: Iterable[Mapping[str, Any]],
    gate: Gate,
    store: EventStore,
    *,
    rejects_path: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    consent: ConsentFilter | None = None,
) -> BatchReport:
    """Ingest Python event records (mappings with Event's fields), batch by batch.

    Rejects are numbered by record (1-based), counted in the report (the first few in
    `sample_rejects`) and written to `rejects_path` if given.
    """
    size = _check_batch_size(batch_size)

    def batches() -> Iterator[_RawBatch]:
        it = iter(records)
        first = 1
        while chunk := list(itertools.islice(it, size)):
            yield _RawBatch(records=chunk, record_lines=list(range(first, first + len(chunk))))
            first += len(chunk)

    return _run(
        batches(),
        gate,
        store,
        None if rejects_path is None else Path(rejects_path),
        progress,
        consent,
    )


def ingest_frame(
    frame: pd.DataFrame,
    gate: Gate,
    store: EventStore,
    *,
    line_numbers: np.ndarray | list[int] | None = None,
    rejects_path: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    consent: ConsentFilter | None = None,
) -> BatchReport:
    """Ingest a raw event frame (columns like Event's fields) through the gate's bulk path.

    Rejects are numbered by `line_numbers` (default: row position, 1-based), counted in the
    report and written to `rejects_path` if given.
    """
    size = _check_batch_size(batch_size)
    lines = (
        np.arange(1, len(frame) + 1, dtype=np.int64)
        if line_numbers is None
        else np.asarray(line_numbers, dtype=np.int64)
    )

    def batches() -> Iterator[_RawBatch]:
        for start in range(0, len(frame), size):
            yield _RawBatch(
                frame=frame.iloc[start : start + size], lines=lines[start : start + size]
            )

    return _run(
        batches(),
        gate,
        store,
        None if rejects_path is None else Path(rejects_path),
        progress,
        consent,
    )


# ---- the common loop ---------------------------------------------------------------------------
@dataclass
class _RawBatch:
    """Rows read from a source, before the gate."""

    frame: pd.DataFrame | None = None
    lines: np.ndarray | None = None
    rejects: list[Reject] = field(
        default_factory=list
    )  # refused before the gate (unreadable lines)
    records: list[Any] | None = None  # rows for the per-record path
    record_lines: list[int] | None = None


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError("batch_size", "must be a positive integer")
    return batch_size


def _run(
    batches: Iterable[_RawBatch],
    gate: Gate,
    store: EventStore,
    rejects_path: Path | None,
    progress: Progress | None,
    consent: ConsentFilter | None = None,
) -> BatchReport:
    t0 = time.perf_counter()
    report = BatchReport(rejects_path=None if rejects_path is None else str(rejects_path))
    store.bind_generation(gate.pseudonymiser.generation)
    # The store appends batch k on a writer thread (DuckDB releases the GIL) while this thread
    # reads and gates batch k+1: on two cores that hides most of the store's time.
    writer = _Writer(store)
    writer.start()
    try:
        with _RejectWriter(rejects_path) as out, contextlib.closing(_prefetch(batches)) as feed:
            for raw in feed:
                results: list[GateResult] = []
                if raw.frame is not None and len(raw.frame):
                    results.append(gate.process_frame(raw.frame, line_numbers=raw.lines))
                if raw.records:
                    results.append(gate.process_records(raw.records, lines=raw.record_lines))
                result = _merge(results)
                accepted = result.accepted
                if consent is not None and len(accepted):
                    # after the gate (pseudonyms only), before the store: refused rows never land
                    keep = np.asarray(consent(accepted), dtype=bool)
                    if not keep.all():
                        report.consent_dropped += int((~keep).sum())
                        accepted = accepted[keep].reset_index(drop=True)
                writer.put(accepted)
                rejects = sorted(raw.rejects + result.rejects, key=lambda r: r.line)
                out.write(rejects)
                if len(report.sample_rejects) < MAX_SAMPLE_REJECTS:
                    report.sample_rejects += [
                        r.to_dict()
                        for r in rejects[: MAX_SAMPLE_REJECTS - len(report.sample_rejects)]
                    ]
                report.read += result.read + len(raw.rejects)
                report.rejected += len(rejects)
                report.duplicates += result.duplicates
                if progress is not None:
                    progress(report.read)
    finally:
        inserted, stored_dups = writer.finish()
    report.accepted += inserted
    report.duplicates += stored_dups
    report.seconds = time.perf_counter() - t0
    return report


_DONE = object()


def _prefetch(batches: Iterable[_RawBatch]) -> Iterator[_RawBatch]:
    """Read the next batch on a helper thread while this one is gated.

    File parsing is mostly Arrow and numpy work that releases the GIL, so it overlaps with
    the gate's Python work. At most one batch waits, which bounds memory.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        it = iter(batches)
        try:
            for b in it:
                while not stop.is_set():
                    try:
                        q.put(b, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as err:  # handed to the consumer, raised there
            q.put(err)
            return
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # the reader's file is closed on this thread, where the generator ran
        q.put(_DONE)

    t = threading.Thread(target=produce, name="privrec-ingest-reader", daemon=True)
    t.start()
    try:
        while (item := q.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():  # stopped early: unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)
        t.join()


class _Writer(threading.Thread):
    """Appends gated batches to the store in order, one at a time, off the gating thread."""

    def __init__(self, store: EventStore) -> None:
        super().__init__(name="privrec-ingest-writer", daemon=True)
        self._store = store
        self._queue: queue.Queue[pd.DataFrame | None] = queue.Queue(maxsize=1)  # bounds memory
        self._error: BaseException | None = None
        self.inserted = 0
        self.duplicates = 0

    def run(self) -> None:
        while (frame := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain after a failure; the error is raised by finish()
            try:
                ins, dup = self._store.append(frame)
                self.inserted += ins
                self.duplicates += dup
            except BaseException as err:  # re-raised in the calling thread
                self._error = err

    def put(self, frame: pd.DataFrame) -> None:
        if self._error is not None:
            self.finish()
        if len(frame):
            self._queue.put(frame)

    def finish(self) -> tuple[int, int]:
        """Wait for every queued batch; re-raise a store error here."""
        if self.is_alive():
            self._queue.put(None)
            self.join()
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        return self.inserted, self.duplicates


def _merge(results: list[GateResult]) -> GateResult:
    if len(results) == 1:
        return results[0]
    if not results:
        return GateResult(pd.DataFrame(), [], 0, 0)
    frames = [r.accepted for r in results if len(r.accepted)]
    accepted = pd.concat(frames, ignore_index=True) if frames else results[0].accepted
    dup = (
        accepted["event_id"].duplicated().to_numpy(dtype=bool)
        if len(accepted)
        else np.zeros(0, bool)
    )
    return GateResult(
        accepted[~dup].reset_index(drop=True) if dup.any() else accepted,
        [r for res in results for r in res.rejects],
        sum(r.read for r in results),
        sum(r.duplicates for r in results) + int(dup.sum()),
    )


class _RejectWriter:
    """Appends rejects as JSON Lines to a file created with mode 0600 (it holds pseudonyms)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def __enter__(self) -> _RejectWriter:
        if self.path is not None:
            if not self.path.parent.exists():
                # only a directory made here is narrowed: the caller's own directory is left alone
                private_dir(self.path.parent)
            self._fh = open_private_write(self.path)
        return self

    def write(self, rejects: list[Reject]) -> None:
        if self._fh is not None and rejects:
            self._fh.write(
                "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rejects)
            )

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()


# ---- line framing (JSONL and CSV) ------------------------------------------------------------
@dataclass
class _Lines:
    """Readable lines of a file: `data` holds them, each ending in b"\\n"."""

    data: bytes
    ends: np.ndarray  # end offset (after the newline) of each line in `data`
    numbers: np.ndarray  # the 1-based line number of each line in the file

    def __len__(self) -> int:
        return int(self.numbers.size)

    def split(self, k: int) -> tuple[_Lines, _Lines]:
        cut = int(self.ends[k - 1]) if k else 0
        return (
            _Lines(self.data[:cut], self.ends[:k], self.numbers[:k]),
            _Lines(self.data[cut:], self.ends[k:] - cut, self.numbers[k:]),
        )

    @staticmethod
    def join(parts: list[_Lines]) -> _Lines:
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p.data) for p in parts[:-1]])
        return _Lines(
            b"".join(p.data for p in parts),
            np.concatenate([p.ends + o for p, o in zip(parts, offsets, strict=True)]),
            np.concatenate([p.numbers for p in parts]),
        )


def _too_long(line: int, limit: int) -> Reject:
    return Reject(
        line,
        f"line: longer than {limit} bytes (max_line_bytes); it was not parsed. Split the record or raise the limit",
    )


def _frame_lines(
    block: bytes, first_number: int, max_line_bytes: int
) -> tuple[_Lines, list[Reject]]:
    """Split complete lines (`block` ends in a newline); drop blank, over-long and non-UTF-8 lines."""
    arr = np.frombuffer(block, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    starts = np.empty_like(nl)
    starts[0] = 0
    starts[1:] = nl[:-1] + 1
    lengths = nl - starts
    numbers = first_number + np.arange(nl.size, dtype=np.int64)
    rejects: list[Reject] = []
    keep = np.ones(nl.size, dtype=bool)
    for i in np.flatnonzero(lengths > max_line_bytes):
        keep[i] = False
        rejects.append(_too_long(int(numbers[i]), max_line_bytes))
    # Blank (or whitespace-only) lines are not rows.
    for i in np.flatnonzero(lengths <= 16):
        if not block[starts[i] : nl[i]].strip():
            keep[i] = False
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            for i in np.flatnonzero(keep):
                try:
                    block[starts[i] : nl[i]].decode("utf-8")
                except UnicodeDecodeError:
                    keep[i] = False
                    rejects.append(
                        Reject(
                            int(numbers[i]),
                            "line: is not valid UTF-8 text; re-export the file as UTF-8",
                        )
                    )
    if keep.all():
        return _Lines(block, nl + 1, numbers), rejects
    data = b"".join(block[s : e + 1] for s, e in zip(starts[keep], nl[keep], strict=True))
    return _Lines(data, np.cumsum(lengths[keep] + 1), numbers[keep]), rejects


def _line_batches(
    fh: IO[bytes], batch_size: int, max_line_bytes: int, lines_before: int = 0
) -> Iterator[tuple[_Lines, list[Reject]]]:
    """Read a binary file in blocks and yield batches of at most `batch_size` readable lines.

    A line longer than `max_line_bytes` is skipped as it streams past: memory stays bounded by
    the block size plus the limit, whatever the line's length.
    """
    number = lines_before  # lines fully consumed so far
    pending = b""
    skipping = False  # inside an over-long line
    parts: list[_Lines] = []
    count = 0
    size = 0
    rejects: list[Reject] = []

    def take(done: bool) -> Iterator[tuple[_Lines, list[Reject]]]:
        nonlocal parts, count, size, rejects
        while parts and (done or count >= batch_size or size >= _MAX_BATCH_BYTES):
            lines = _Lines.join(parts)
            head, rest = lines.split(min(batch_size, len(lines)))
            yield head, rejects
            rejects = []
            parts = [rest] if len(rest) else []
            count, size = len(rest), len(rest.data)
        if done and rejects:
            yield _Lines(b"", np.zeros(0, np.int64), np.zeros(0, np.int64)), rejects
            rejects = []

    while True:
        block = fh.read(_READ_BLOCK)
        if not block:
            break
        if skipping:
            cut = block.find(b"\n")
            if cut < 0:
                continue
            block = block[cut + 1 :]
            skipping = False
        data = pending + block if pending else block
        last = data.rfind(b"\n")
        if last < 0:
            pending = data
        else:
            complete, pending = data[: last + 1], data[last + 1 :]
            lines, bad = _frame_lines(complete, number + 1, max_line_bytes)
            number += complete.count(b"\n")
            rejects += bad
            if len(lines):
                parts.append(lines)
                count += len(lines)
                size += len(lines.data)
        if len(pending) > max_line_bytes:
            number += 1
            rejects.append(_too_long(number, max_line_bytes))
            pending = b""
            skipping = True
        yield from take(False)
    if pending and not skipping:  # a last line without a newline
        lines, bad = _frame_lines(pending + b"\n", number + 1, max_line_bytes)
        rejects += bad
        if len(lines):
            parts.append(lines)
            count += len(lines)
    yield from take(True)


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


_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # the C scanner: one call per line


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


def _jsonl_batches(path: Path, gate: Gate, batch_size: int) -> Iterator[_RawBatch]:
    with open(path, "rb") as fh:
        for lines, pre in _line_batches(fh, batch_size, gate.max_line_bytes):
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
                                f"line: is a JSON {_json_kind(obj)}, not an object of field names and values",
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
            yield _RawBatch(
                frame=frame,
                lines=np.asarray(plain_lines, dtype=np.int64),
                rejects=rejects,
                records=odd or None,
                record_lines=odd_lines or None,
            )


# ---- CSV ------------------------------------------------------------------------------------------
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
            "a column has no name; the first row must name every column (user,item,type,timestamp,...)",
        )
    if len(set(names)) != len(names):
        raise ValidationError("header", "a column name appears twice; rename or drop the duplicate")
    return names, number


def _csv_batches(path: Path, gate: Gate, batch_size: int) -> Iterator[_RawBatch]:
    with open(path, "rb") as fh:
        names, header_line = _read_header(fh, gate.max_line_bytes)
        if names is None:
            return
        for lines, pre in _line_batches(
            fh, batch_size, gate.max_line_bytes, lines_before=header_line
        ):
            if not len(lines):
                yield _RawBatch(rejects=list(pre))
                continue
            data = lines.data
            if b'"' not in data and data.count(b"\r") == data.count(b"\r\n"):
                frame, keep, bad = _csv_fast(data, names, lines.numbers)
            else:
                frame, keep, bad = _csv_python(data, names, lines.numbers)
            yield _RawBatch(frame=frame, lines=lines.numbers[keep], rejects=list(pre) + bad)


def _ragged(line: int, found: int, expected: int) -> Reject:
    return Reject(
        line,
        f"line: has {found} fields but the header has {expected}; check the separators and quoting of this row",
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
    """Python's csv module for quoted data, strictly one line per row (a bad line cannot swallow others)."""
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
def _parquet_batches(path: Path, gate: Gate, batch_size: int) -> Iterator[_RawBatch]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError):
        raise ValidationError("path", f"{path.name} is not a readable Parquet file") from None
    first = 1
    for batch in pf.iter_batches(batch_size=batch_size):
        frame = batch.to_pandas()
        yield _RawBatch(frame=frame, lines=np.arange(first, first + len(frame), dtype=np.int64))
        first += len(frame)
