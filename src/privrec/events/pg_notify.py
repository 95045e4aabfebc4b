"""PostgreSQL primitives that let several API workers act as one: LISTEN/NOTIFY and shared counters.

- `PgNotifier.send` publishes a short text message on the `privrec` channel (`pg_notify`); every
  worker's `PgListener` receives it once the sending transaction commits. PostgreSQL caps a
  payload at 8,000 bytes; callers split longer messages.
- `PgListener` holds one connection in LISTEN on a thread and hands each payload to a callback.
  After a lost connection it reconnects and calls `on_resync`, since messages sent while it was
  away are gone. It can also hold a session-level advisory lock (`lead_key`): PostgreSQL releases
  it when the holder's connection ends, so when a leader dies another worker takes over.
- `PgWindowCounter.claim` grants requests of a fixed time window against a limit shared by every
  worker, with one UPSERT per claim; the rows live in an UNLOGGED table (counters of the current
  second or minute need no crash safety, and skip the WAL).

Connections never put the URL into an error: it may hold a password.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from privrec.core.errors import StoreError
from privrec.events.pg_io import need_psycopg, problem

__all__ = [
    "CHANNEL",
    "MAX_PAYLOAD",
    "PgListener",
    "PgNotifier",
    "PgWindowCounter",
    "wall_window",
]

logger = logging.getLogger(__name__)

CHANNEL = "privrec"
MAX_PAYLOAD = 7_900  # PostgreSQL refuses payloads of 8,000 bytes or more
_LOCK_SETUP = 0x70726976_0010  # advisory lock key ("priv" + n): creating the counter table
_COUNTER_TABLE = "privrec_rate_windows"


def _connect(url: str) -> Any:
    pg = need_psycopg()
    try:
        return pg.connect(url, autocommit=True)
    except pg.Error as err:
        raise StoreError(f"coordination: cannot connect to PostgreSQL ({problem(err)})") from None


class _Session:
    """One autocommit connection, reopened after the server dropped it, used under a lock."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._con: Any = None
        self._lock = threading.Lock()

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Execute one statement; its rows (empty when it returns none)."""
        pg = need_psycopg()
        with self._lock:
            for attempt in (0, 1):
                if self._con is None or self._con.broken or self._con.closed:
                    self._con = _connect(self._url)
                try:
                    cur = self._con.execute(sql, params)
                    return list(cur.fetchall()) if cur.description else []
                except pg.OperationalError as err:
                    # a dropped connection: one fresh try, then the error
                    with contextlib.suppress(Exception):
                        self._con.close()
                    self._con = None
                    if attempt:
                        raise StoreError(f"coordination: query failed ({problem(err)})") from None
                except pg.Error as err:
                    raise StoreError(f"coordination: query failed ({problem(err)})") from None
        return []  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                with contextlib.suppress(Exception):
                    self._con.close()
                self._con = None


class PgNotifier:
    """Publishes messages on the coordination channel.

    Args:
        url: the libpq URL of the shop's database (the event store's).
        channel: the channel name (one per shop database).
    """

    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        self._session = _Session(url)
        self.channel = channel

    def send(self, payload: str) -> None:
        """Publish one message (at most `MAX_PAYLOAD` bytes of UTF-8).

        Raises:
            ValueError: the payload is too long for PostgreSQL.
            StoreError: the database cannot be reached.
        """
        if len(payload.encode()) > MAX_PAYLOAD:
            raise ValueError(f"payload: {len(payload.encode())} bytes, at most {MAX_PAYLOAD}")
        self._session.run("SELECT pg_notify(%s, %s)", (self.channel, payload))

    def close(self) -> None:
        """Close the connection."""
        self._session.close()


class PgListener:
    """Receives the channel's messages on a background thread.

    Args:
        url: the libpq URL of the shop's database.
        on_message: called with each payload, on the listener's thread, in the order sent.
        on_resync: called after a reconnect (messages sent meanwhile were lost).
        channel: the channel name.
        lead_key: an advisory lock key to try for on every poll; `on_lead` is called once, on
            the listener's thread, when this listener holds it.
        on_lead: what a leader starts.
        poll_seconds: longest wait for a message before checking for a stop (and the lock).
    """

    def __init__(
        self,
        url: str,
        on_message: Callable[[str], None],
        *,
        on_resync: Callable[[], None] | None = None,
        channel: str = CHANNEL,
        lead_key: int | None = None,
        on_lead: Callable[[], None] | None = None,
        poll_seconds: float = 0.5,
    ) -> None:
        self._url = url
        self._on_message = on_message
        self._on_resync = on_resync
        self.channel = channel
        self._lead_key = lead_key
        self._on_lead = on_lead
        self._poll = poll_seconds
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.leader = False
        self.received = 0
        self.reconnects = 0

    def start(self, timeout: float = 10.0) -> None:
        """LISTEN, then return (messages committed from now on are received).

        Raises:
            StoreError: the first connection failed or LISTEN did not start within `timeout`.
        """
        con = self._listen()  # the first connection's error reaches the caller
        self._thread = threading.Thread(
            target=self._loop, args=(con,), name="privrec-listen", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise StoreError("coordination: the listener did not start")

    def _listen(self) -> Any:
        pg = need_psycopg()
        con = _connect(self._url)
        try:
            # the channel is a constant identifier of ours, never user input
            con.execute(f"LISTEN {self.channel}")
        except pg.Error as err:
            con.close()
            raise StoreError(f"coordination: LISTEN failed ({problem(err)})") from None
        return con

    def _loop(self, con: Any) -> None:
        pg = need_psycopg()
        self._ready.set()
        backoff = 0.2
        while not self._stop.is_set():
            try:
                if con is None:
                    con = self._listen()
                    self.leader = False  # the lock went with the old session
                    self.reconnects += 1
                    backoff = 0.2
                    if self._on_resync is not None:
                        self._on_resync()
                self._try_lead(con)
                for note in con.notifies(timeout=self._poll):
                    self.received += 1
                    try:
                        self._on_message(note.payload)
                    except Exception as exc:  # one bad message must not stop the listener
                        logger.warning("coordination message failed error=%s", type(exc).__name__)
                    if self._stop.is_set():
                        break
            except (pg.Error, StoreError) as exc:
                logger.warning("coordination listener lost its connection error=%s", exc)
                with contextlib.suppress(Exception):
                    con.close()
                con = None
                self._stop.wait(backoff)
                backoff = min(5.0, backoff * 2)
        if con is not None:
            with contextlib.suppress(Exception):
                con.close()

    def _try_lead(self, con: Any) -> None:
        if self._lead_key is None or self.leader:
            return
        got = con.execute("SELECT pg_try_advisory_lock(%s)", (self._lead_key,)).fetchone()
        if got and got[0]:
            self.leader = True
            if self._on_lead is not None:
                self._on_lead()

    def stop(self) -> None:
        """Stop listening (the connection closes; a held lead lock is released with it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._poll + 5.0)
            self._thread = None


class PgWindowCounter:
    """Requests per fixed time window per key, shared by every worker of one database.

    Args:
        url: the libpq URL of the shop's database.
    """

    def __init__(self, url: str) -> None:
        self._session = _Session(url)
        self._ready = False
        self._claims = 0

    def _setup(self) -> None:
        # under an advisory lock: concurrent CREATE ... IF NOT EXISTS can still collide
        self._session.run(
            f"DO $$ BEGIN PERFORM pg_advisory_xact_lock({_LOCK_SETUP}); "
            f"CREATE UNLOGGED TABLE IF NOT EXISTS {_COUNTER_TABLE} (key text NOT NULL, "
            "win bigint NOT NULL, n bigint NOT NULL, PRIMARY KEY (key, win)); END $$"
        )
        self._ready = True

    def claim(self, key: str, window: int, want: int, limit: int) -> int:
        """Take up to `want` of the `limit` requests window `window` allows `key`.

        Each claim adds `want` to the window's counter in one UPSERT and is granted the part of
        its range below `limit`; the ranges of concurrent claims are disjoint, so the grants of
        all workers together never exceed `limit`. Returns the number granted (0: exhausted).

        Raises:
            StoreError: the database cannot be reached.
        """
        if not self._ready:
            self._setup()
        rows = self._session.run(
            f"INSERT INTO {_COUNTER_TABLE} AS c (key, win, n) VALUES (%s, %s, %s) "
            "ON CONFLICT (key, win) DO UPDATE SET n = c.n + EXCLUDED.n RETURNING n",
            (key, window, want),
        )
        after = int(rows[0][0])
        self._claims += 1
        if self._claims % 1000 == 0:  # old windows: a few rows per key, dropped now and then
            self._session.run(f"DELETE FROM {_COUNTER_TABLE} WHERE win < %s", (window - 2,))
        return max(0, min(want, limit - (after - want)))

    def used(self, key: str, window: int) -> int:
        """How many requests of window `window` have been claimed for `key` (granted or not)."""
        if not self._ready:
            self._setup()
        rows = self._session.run(
            f"SELECT n FROM {_COUNTER_TABLE} WHERE key = %s AND win = %s", (key, window)
        )
        return int(rows[0][0]) if rows else 0

    def close(self) -> None:
        """Close the connection."""
        self._session.close()


def wall_window(seconds: float, now: float | None = None) -> tuple[int, float]:
    """(index of the aligned window of `seconds` holding `now`, seconds until it ends)."""
    t = time.time() if now is None else now
    idx = int(t // seconds)
    return idx, (idx + 1) * seconds - t
