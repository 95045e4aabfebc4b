"""Line framing of text event files (JSON Lines and CSV): bounded batches of readable lines.

Files are read in blocks, never all at once. Lines longer than the gate's `max_line_bytes` are
rejected without being parsed (and skipped as they stream past, so memory stays bounded); a line
that is not valid UTF-8 is rejected and the others kept; blank lines are skipped and not counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

from privrec.events.rejects import Reject

__all__ = ["Lines", "line_batches"]

_READ_BLOCK = 8 << 20  # bytes read from a file at a time
_MAX_BATCH_BYTES = 64 << 20  # a batch also ends here, so long lines cannot make it huge


@dataclass
class Lines:
    """Readable lines of a file: `data` holds them, each ending in b"\\n"."""

    data: bytes
    ends: np.ndarray  # end offset (after the newline) of each line in `data`
    numbers: np.ndarray  # the 1-based line number of each line in the file

    def __len__(self) -> int:
        return int(self.numbers.size)

    def split(self, k: int) -> tuple[Lines, Lines]:
        cut = int(self.ends[k - 1]) if k else 0
        return (
            Lines(self.data[:cut], self.ends[:k], self.numbers[:k]),
            Lines(self.data[cut:], self.ends[k:] - cut, self.numbers[k:]),
        )

    @staticmethod
    def join(parts: list[Lines]) -> Lines:
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(p.data) for p in parts[:-1]])
        return Lines(
            b"".join(p.data for p in parts),
            np.concatenate([p.ends + o for p, o in zip(parts, offsets, strict=True)]),
            np.concatenate([p.numbers for p in parts]),
        )


def _too_long(line: int, limit: int) -> Reject:
    return Reject(
        line,
        f"line: longer than {limit} bytes (max_line_bytes); it was not parsed. Split the record "
        "or raise the limit",
    )


def _frame_lines(
    block: bytes, first_number: int, max_line_bytes: int
) -> tuple[Lines, list[Reject]]:
    """Split complete lines (`block` ends in a newline); drop blank, long and non-UTF-8 lines."""
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
        return Lines(block, nl + 1, numbers), rejects
    data = b"".join(block[s : e + 1] for s, e in zip(starts[keep], nl[keep], strict=True))
    return Lines(data, np.cumsum(lengths[keep] + 1), numbers[keep]), rejects


def line_batches(
    fh: IO[bytes], batch_size: int, max_line_bytes: int, lines_before: int = 0
) -> Iterator[tuple[Lines, list[Reject]]]:
    """Read a binary file in blocks and yield batches of at most `batch_size` readable lines.

    A line longer than `max_line_bytes` is skipped as it streams past: memory stays bounded by
    the block size plus the limit, whatever the line's length.
    """
    number = lines_before  # lines fully consumed so far
    pending = b""
    skipping = False  # inside an over-long line
    parts: list[Lines] = []
    count = 0
    size = 0
    rejects: list[Reject] = []

    def take(done: bool) -> Iterator[tuple[Lines, list[Reject]]]:
        nonlocal parts, count, size, rejects
        while parts and (done or count >= batch_size or size >= _MAX_BATCH_BYTES):
            lines = Lines.join(parts)
            head, rest = lines.split(min(batch_size, len(lines)))
            yield head, rejects
            rejects = []
            parts = [rest] if len(rest) else []
            count, size = len(rest), len(rest.data)
        if done and rejects:
            yield Lines(b"", np.zeros(0, np.int64), np.zeros(0, np.int64)), rejects
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
