"""File and record ingestion: stream events through the privacy gate into the event store.

Files are read in batches (never all at once) by `privrec.events.readers`: JSON Lines (`.jsonl`,
`.ndjson`), CSV with a header row of field names (`.csv`) and Parquet (`.parquet`, `.pq`). Bad
rows never enter the store and never vanish: each is counted and written to a rejects file (JSON
Lines of line number, reason and the user's pseudonym or null; see `privrec.events.rejects`).
Lines longer than the gate's `max_line_bytes` are rejected without being parsed; a line that is
not valid UTF-8 is rejected and the others kept. Blank lines are skipped and not counted. Every
batch is appended in its own transaction and event ids are idempotency keys, so ingesting a file
again (or after a crash) adds nothing twice.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import NotFoundError, ValidationError
from privrec.events.gate import Gate, GateResult
from privrec.events.readers import FORMATS, READERS, RawBatch, detect_format
from privrec.events.rejects import REJECTS_DIR, RejectWriter
from privrec.events.store_api import EventStoreAPI

__all__ = [
    "FORMATS",
    "BatchReport",
    "ConsentFilter",
    "detect_format",
    "ingest_file",
    "ingest_frame",
    "ingest_records",
]

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 200_000
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
def ingest_file(
    path: str | Path,
    gate: Gate,
    store: EventStoreAPI,
    *,
    rejects_path: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    consent: ConsentFilter | None = None,
    rejects_key: bytes | None = None,
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
        rejects_key: the sidecar key that seals the rejects lines (None: plaintext lines).

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
        rejects_path = store.data_dir / REJECTS_DIR / f"{path.name}.rejects.jsonl"
    report = _run(
        READERS[fmt](path, gate, _check_batch_size(batch_size)),
        gate,
        store,
        Path(rejects_path),
        progress,
        consent,
        rejects_key,
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
    store: EventStoreAPI,
    *,
    rejects_path: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    consent: ConsentFilter | None = None,
    rejects_key: bytes | None = None,
) -> BatchReport:
    """Ingest Python event records (mappings with Event's fields), batch by batch.

    Rejects are numbered by record (1-based), counted in the report (the first few in
    `sample_rejects`) and written to `rejects_path` if given (sealed with `rejects_key`).
    """
    size = _check_batch_size(batch_size)

    def batches() -> Iterator[RawBatch]:
        it = iter(records)
        first = 1
        while chunk := list(itertools.islice(it, size)):
            yield RawBatch(records=chunk, record_lines=list(range(first, first + len(chunk))))
            first += len(chunk)

    return _run(
        batches(),
        gate,
        store,
        None if rejects_path is None else Path(rejects_path),
        progress,
        consent,
        rejects_key,
    )


def ingest_frame(
    frame: pd.DataFrame,
    gate: Gate,
    store: EventStoreAPI,
    *,
    line_numbers: np.ndarray | list[int] | None = None,
    rejects_path: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    consent: ConsentFilter | None = None,
    rejects_key: bytes | None = None,
) -> BatchReport:
    """Ingest a raw event frame (columns like Event's fields) through the gate's bulk path.

    Rejects are numbered by `line_numbers` (default: row position, 1-based), counted in the
    report and written to `rejects_path` if given (sealed with `rejects_key`).
    """
    size = _check_batch_size(batch_size)
    lines = (
        np.arange(1, len(frame) + 1, dtype=np.int64)
        if line_numbers is None
        else np.asarray(line_numbers, dtype=np.int64)
    )

    def batches() -> Iterator[RawBatch]:
        for start in range(0, len(frame), size):
            yield RawBatch(
                frame=frame.iloc[start : start + size], lines=lines[start : start + size]
            )

    return _run(
        batches(),
        gate,
        store,
        None if rejects_path is None else Path(rejects_path),
        progress,
        consent,
        rejects_key,
    )


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError("batch_size", "must be a positive integer")
    return batch_size


def _run(
    batches: Iterable[RawBatch],
    gate: Gate,
    store: EventStoreAPI,
    rejects_path: Path | None,
    progress: Progress | None,
    consent: ConsentFilter | None = None,
    rejects_key: bytes | None = None,
) -> BatchReport:
    t0 = time.perf_counter()
    report = BatchReport(rejects_path=None if rejects_path is None else str(rejects_path))
    store.bind_generation(gate.pseudonymiser.generation)
    # The store appends batch k on a writer thread (DuckDB releases the GIL) while this thread
    # reads and gates batch k+1: on two cores that hides most of the store's time. A store that
    # takes concurrent appends (PostgreSQL: `extra_writers`, one more connection) gets a second
    # writer once a second batch comes, so one batch's COPY runs on the server while the next
    # is encoded and sent.
    writer = _Writer(store, getattr(store, "extra_writers", None))
    writer.start()
    try:
        with (
            RejectWriter(rejects_path, key=rejects_key) as out,
            contextlib.closing(_prefetch(batches)) as feed,
        ):
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


def _prefetch(batches: Iterable[RawBatch]) -> Generator[RawBatch, None, None]:
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


class _Writer:
    """Appends gated batches to the store off the gating thread, in order, one at a time; with
    `extra` (a store's `extra_writers`), a second handle on its own thread joins once a second
    batch comes. Each batch is whole, in its own transaction; with two writers batches may
    commit out of order (event ids keep every event stored once)."""

    def __init__(
        self, store: EventStoreAPI, extra: Callable[[int], list[Any]] | None = None
    ) -> None:
        self._queue: queue.Queue[pd.DataFrame | None] = queue.Queue(maxsize=1)  # bounds memory
        self._extra_factory = extra
        self._extra: list[Any] = []  # handles opened here, closed by finish()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._puts = 0
        self._done = False
        self.inserted = 0
        self.duplicates = 0
        self._add(store)

    def _add(self, store: EventStoreAPI) -> None:
        t = threading.Thread(
            target=self._run,
            args=(store,),
            name=f"privrec-ingest-writer-{len(self._threads)}",
            daemon=True,
        )
        self._threads.append(t)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _run(self, store: EventStoreAPI) -> None:
        while (frame := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain after a failure; the error is raised by finish()
            try:
                ins, dup = store.append(frame)
            except BaseException as err:  # re-raised in the calling thread
                with self._lock:
                    self._error = self._error or err
                continue
            with self._lock:
                self.inserted += ins
                self.duplicates += dup

    def put(self, frame: pd.DataFrame) -> None:
        if self._error is not None:
            self.finish()
        if not len(frame):
            return
        self._puts += 1
        if self._puts == 2 and self._extra_factory is not None:
            self._extra = list(self._extra_factory(1))
            for other in self._extra:
                self._add(other)
                self._threads[-1].start()
        self._queue.put(frame)

    def finish(self) -> tuple[int, int]:
        """Wait for every queued batch; re-raise a store error here."""
        if not self._done:
            self._done = True
            for _ in self._threads:
                self._queue.put(None)
            for t in self._threads:
                t.join()
            for other in self._extra:
                other.close()
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
