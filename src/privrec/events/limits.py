"""Per-user rate limits of the gate: within one batch by event time, and across batches by arrival.

Both count pseudonyms only (they run after pseudonymisation), and a rejected row names the
setting, never a value of the row.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from privrec.core.errors import ConfigError

__all__ = ["ArrivalRateLimiter", "flood_excess"]


class ArrivalRateLimiter:
    """At most `limit` accepted rows per pseudonym in any `window` seconds of arrival time.

    The gate's own flood limit looks at one batch and at the events' timestamps (a file may
    rightly hold a year of one shopper's history in one batch). A live service also needs the
    rate at which rows arrive, whatever timestamps they claim, across requests: a bot sending one
    event per request gets cut off too. Memory holds only pseudonyms seen within the window.
    Thread-safe.
    """

    def __init__(
        self, limit: int, *, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ConfigError(
                "max_events_per_user_per_minute: must be at least 1 (or None for no limit)"
            )
        self.limit = int(limit)
        self.window = float(window)
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def admit(self, users: Sequence[str] | np.ndarray) -> np.ndarray:
        """Which of these rows (in order, all arriving now) stay within their user's limit."""
        codes, uniq = pd.factorize(np.asarray(users, dtype=object))
        rank = (
            pd.Series(codes).groupby(codes).cumcount().to_numpy()
        )  # i-th row of its user in this batch
        counts = np.bincount(codes, minlength=len(uniq))
        room = np.empty(len(uniq), dtype=np.int64)
        with self._lock:
            now = self._clock()
            horizon = now - self.window
            if now >= self._next_sweep:  # forget users idle for a whole window
                self._seen = {u: q for u, q in self._seen.items() if q and q[-1] > horizon}
                self._next_sweep = now + self.window
            for c, u in enumerate(uniq):  # per user, not per row: a batch holds few users' floods
                q = self._seen.setdefault(str(u), deque())
                while q and q[0] <= horizon:
                    q.popleft()
                room[c] = max(self.limit - len(q), 0)
                q.extend([now] * int(min(room[c], counts[c])))
        return rank < room[codes]


def flood_excess(users: np.ndarray, ts: np.ndarray, limit: int) -> tuple[np.ndarray, int]:
    """The rows beyond `limit` rows of their user in any 60 s window of event time.

    Args:
        users: the pseudonym of each row.
        ts: each row's timestamp (seconds).
        limit: rows a user may have in (t - 60, t].

    Returns:
        (excess, heavy): a boolean mask of the rows to refuse (earlier rows first, ties in input
        order; refused rows still count, so a sustained flood stays cut off) and the number of
        users with more than `limit` rows at all.
    """
    codes, uniq = pd.factorize(users)
    counts = np.bincount(codes, minlength=len(uniq))
    heavy = np.flatnonzero(counts > limit)
    excess = np.zeros(len(users), dtype=bool)
    for c in heavy:  # the usual case has none: nobody has enough rows to flood
        rows = np.flatnonzero(codes == c)
        rows = rows[np.argsort(ts[rows], kind="stable")]  # by time, ties in input order
        t = ts[rows]
        # rows of this user in (t - 60, t] that come before this one
        before = np.arange(len(rows)) - np.searchsorted(t, t - 60.0, side="right")
        excess[rows[before >= limit]] = True
    return excess, int(heavy.size)
