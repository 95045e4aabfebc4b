"""The feedback log: every served list (an impression) and the outcomes that answer it.

Every list the service serves (recommendations, search results, similar items) carries a
random, unguessable list id (``recommendation_id``). The serving path logs the impression
itself when it serves the list, so no client can forget to: list id, item keys in order (the
position is the index), the model and version that served it, the experiment and arm, the kind
of list and the time. Logging is an append to an in-memory buffer; a background thread writes
the buffer in one transaction every `FLUSH_EVERY` lists or `FLUSH_SECONDS` seconds, so serving
never waits on the disk.

Outcomes (click = a view, cart, purchase with an optional value) arrive as ordinary events
through the privacy gate with the list id (`POST /v1/events` with ``recommendation_id``); they
count for a list when the item was on it, the shopper is the one it was shown to, and the event
happened within ``attribution_window_hours`` after the impression. The first outcome of an item
on a search list is the shopper's choice: `on_search_choice` stores it as their `search` event.

Privacy: the shopper is stored as a keyed hash of their pseudonym (HMAC-SHA-256 with the
sidecar key), never the pseudonym or raw id; each row's items and outcome values are sealed
(AES-256-GCM) as in the experiment store. Shoppers at the ``anonymous`` consent level, and lists
without a shopper, leave no per-shopper record: their lists are counted per day, model version
and arm, and their items only add to the per-day set of items shown (coverage). A shopper's
rows are exported and erased with the rest of their data (`records_of`, `erase`), and every row
expires after ``feedback_retention_days``. A key rotation moves the known shoppers' rows to
their new pseudonyms (`stage_rekey`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from privrec.core.files import ensure_private
from privrec.events.schema import coerce_timestamp
from privrec.experiments.online import ListRow, OutcomeRow, daily, totals
from privrec.privacy.sealed import SealedDataError, seal, unseal

logger = logging.getLogger(__name__)

__all__ = ["FEEDBACK_FILE", "OUTCOME_TYPES", "FeedbackLog"]

FEEDBACK_FILE = "feedback.sqlite"
OUTCOME_TYPES = ("click", "cart", "purchase")
FLUSH_EVERY = 1024
FLUSH_SECONDS = 5.0
CLOCK_SKEW_S = 300.0  # an outcome stamped a little before its impression still counts
_DDL = (
    "CREATE TABLE IF NOT EXISTS lists (list TEXT PRIMARY KEY, shopper TEXT, ts REAL NOT NULL, "
    "day TEXT NOT NULL, kind TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL, "
    "experiment TEXT NOT NULL, arm TEXT NOT NULL, doc BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS lists_shopper ON lists (shopper)",
    "CREATE INDEX IF NOT EXISTS lists_day ON lists (day)",
    "CREATE INDEX IF NOT EXISTS lists_experiment ON lists (experiment)",
    "CREATE TABLE IF NOT EXISTS outcomes (k TEXT PRIMARY KEY, list TEXT NOT NULL, shopper TEXT, "
    "type TEXT NOT NULL, ts REAL NOT NULL, doc BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS outcomes_list ON outcomes (list)",
    "CREATE INDEX IF NOT EXISTS outcomes_shopper ON outcomes (shopper)",
    "CREATE TABLE IF NOT EXISTS counts (day TEXT, kind TEXT, model TEXT, version TEXT, "
    "experiment TEXT, arm TEXT, lists INTEGER NOT NULL, anonymous INTEGER NOT NULL, "
    "PRIMARY KEY (day, kind, model, version, experiment, arm))",
    "CREATE TABLE IF NOT EXISTS shown (day TEXT, model TEXT, version TEXT, experiment TEXT, "
    "arm TEXT, item TEXT, PRIMARY KEY (day, model, version, experiment, arm, item))",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
)
# HMAC domains, so equal strings in two columns stay unlinked
_LIST = b"privrec:feedback-list:"
_SHOPPER = SHOPPER_DOMAIN = b"privrec:feedback-shopper:"
_OUTCOME = b"privrec:feedback-outcome:"
_LIST_AAD = b"privrec:feedback-list-row:"
_OUTCOME_AAD = b"privrec:feedback-outcome-row:"

# a buffered impression: list id, shopper pseudonym (None: none known), tracked (False:
# aggregate only), time, kind, model, version, experiment, arm, items
_Pending = tuple[str, str | None, bool, float, str, str, str, str, str, list[str]]


def day_of(ts: float) -> str:
    """The UTC day (YYYY-MM-DD) of Unix seconds."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


class FeedbackLog:
    """Served lists and their outcomes in ``<data_dir>/feedback.sqlite`` (mode 0600).

    Args:
        path: the SQLite file.
        key: the sidecar key that hashes shoppers and list ids and seals rows (None: plain, for
            key-less tests).
        window_hours: the attribution window.
        retention_days: rows older than this are deleted.
        clock: the time source (a simulation can run the loop in fast time).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        key: bytes | None = None,
        window_hours: float = 24.0,
        retention_days: int = 90,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.window_s = float(window_hours) * 3600.0
        self.retention_s = float(retention_days) * 86400.0
        self.clock = clock
        self.catalogue_size: Callable[[], int | None] = lambda: None
        # called with the choices made from search lists (see `record_outcomes`)
        self.on_search_choice: Callable[[list[dict[str, Any]]], Any] | None = None
        self._key = key
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()
        self._flushing = threading.Lock()
        self._lock = threading.RLock()
        self._last_flush = time.monotonic()
        self._last_expire = 0.0
        self._con: sqlite3.Connection | None = None

    # ---- plumbing ----------------------------------------------------------------------------
    @property
    def con(self) -> sqlite3.Connection:
        """The SQLite connection (the file is created on first use)."""
        if self._con is None:
            with self._lock:
                if self._con is None:
                    ensure_private(self.path)
                    con = sqlite3.connect(
                        str(self.path), check_same_thread=False, isolation_level=None
                    )
                    con.execute("PRAGMA journal_mode=WAL")
                    con.execute("PRAGMA synchronous=NORMAL")
                    con.execute("PRAGMA secure_delete=ON")  # erased rows leave the file
                    for ddl in _DDL:
                        con.execute(ddl)
                    self._con = con
        return self._con

    @property
    def exists(self) -> bool:
        """Whether the log holds or buffers anything (nothing is created to find out)."""
        return self._con is not None or bool(self._pending) or self.path.exists()

    def _ready(self) -> bool:
        """Write what is buffered (waiting for a background write in progress); whether the log
        holds anything."""
        self.flush()
        return self.exists

    def _hash(self, domain: bytes, value: str) -> str:
        if self._key is None:
            return value
        return hmac.new(self._key, domain + value.encode(), hashlib.sha256).hexdigest()

    def _pack(self, obj: Any, aad: bytes) -> bytes:
        data = orjson.dumps(obj)  # in the background write, per row: the fast encoder
        return data if self._key is None else seal(data, self._key, aad=aad)

    def _unpack(self, doc: bytes, aad: bytes) -> Any:
        raw = bytes(doc)
        if raw[:1] in (b"{", b"["):
            return json.loads(raw)
        if self._key is None:
            raise SealedDataError(f"{self.path}: rows are sealed; give the sidecar key")
        return json.loads(unseal(raw, self._key, aad=aad, where=f"{self.path} (feedback row)"))

    def close(self) -> None:
        """Write what is buffered and close the file."""
        self.flush()
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # ---- impressions -------------------------------------------------------------------------
    def log(
        self,
        list_id: str,
        *,
        kind: str,
        shopper: str | None,
        model: str,
        version: str,
        items: Sequence[str],
        experiment: str | None = None,
        arm: str | None = None,
        tracked: bool = True,
    ) -> None:
        """Buffer one impression (cheap: no disk, no hashing, no sealing on the serving path).

        Args:
            list_id: the list's id as the response carries it.
            kind: "recommend", "search" or "similar".
            shopper: the shopper's pseudonym (None: no shopper, e.g. similar items on a
                product page: the list is recorded without one).
            model / version: what served the list.
            items: the item keys in the order shown.
            experiment / arm: the experiment and its arm, when the list was served in one.
            tracked: False for a shopper at the anonymous consent level: the list is only
                counted (no per-list record, so no outcome can be attributed to it).
        """
        row = (
            list_id,
            shopper if tracked else None,
            tracked,
            self.clock(),
            kind,
            model,
            version,
            experiment or "",
            arm or "",
            list(items),
        )
        with self._pending_lock:
            self._pending.append(row)
            due = len(self._pending) >= FLUSH_EVERY
        if due or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self._flush_in_background()

    def _flush_in_background(self) -> None:
        if self._flushing.locked():
            return
        threading.Thread(target=self._flush_logged, name="privrec-feedback", daemon=True).start()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # a background write must not pass silently, nor crash
            logger.warning("feedback log write failed error=%s", type(exc).__name__)

    def flush(self) -> int:
        """Write buffered impressions in one transaction; returns how many."""
        with self._flushing:
            self._last_flush = time.monotonic()
            with self._pending_lock:
                pending, self._pending = self._pending, []
            if pending:
                self._write(pending)
            if self.clock() - self._last_expire > 3600.0 and self.exists:
                self.expire()
        return len(pending)

    def _write(self, pending: list[_Pending]) -> None:
        lists: list[tuple[Any, ...]] = []
        counts: dict[tuple[str, ...], tuple[int, int]] = {}
        shown: dict[tuple[str, ...], set[str]] = {}
        days: dict[int, str] = {}  # per-batch caches: most lists share a day and a shopper
        shoppers: dict[str, str] = {}
        for list_id, shopper, tracked, ts, kind, model, version, exp, arm, items in pending:
            day = days.get(int(ts // 86400.0)) or days.setdefault(int(ts // 86400.0), day_of(ts))
            n, anon = counts.get((day, kind, model, version, exp, arm), (0, 0))
            counts[(day, kind, model, version, exp, arm)] = (n + 1, anon + (not tracked))
            shown.setdefault((day, model, version, exp, arm), set()).update(items)
            if not tracked:
                continue  # anonymous: counted, never recorded
            h = self._hash(_LIST, list_id)
            doc = self._pack({"r": list_id, "i": items}, _LIST_AAD + h.encode())
            s = None
            if shopper:
                s = shoppers.get(shopper) or shoppers.setdefault(
                    shopper, self._hash(_SHOPPER, shopper)
                )
            lists.append((h, s, ts, day, kind, model, version, exp, arm, doc))
        con = self.con
        with self._lock:
            con.execute("BEGIN")
            try:
                con.executemany(
                    "INSERT OR IGNORE INTO lists VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", lists
                )
                con.executemany(
                    "INSERT INTO counts VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                    "lists = lists + excluded.lists, anonymous = anonymous + excluded.anonymous",
                    [(*k, n, a) for k, (n, a) in counts.items()],
                )
                con.executemany(
                    "INSERT OR IGNORE INTO shown VALUES (?, ?, ?, ?, ?, ?)",
                    [(*k, i) for k, items in shown.items() for i in items],
                )
                con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
                raise

    # ---- outcomes ----------------------------------------------------------------------------
    def record_outcomes(self, outcomes: Iterable[Mapping[str, Any]]) -> int:
        """Attribute outcomes {rec_id, type, item, value, ts, shopper}; returns how many counted.

        An outcome counts when its list was logged, the item was on it, the shopper (a
        pseudonym; None: not checked) is the one it was shown to, and its time (``ts``: Unix
        seconds or ISO text; default now) falls within the attribution window after the
        impression. Repeats of the same (list, type, item) count once.

        The first outcome of an item on a search list, sent by the shopper it was shown to, is
        passed to `on_search_choice` as {rec_id, item, user, shopper, ts} (`user`: the outcome's
        raw id, in memory only; `ts`: when the search was made).
        """
        rows = [o for o in outcomes if o.get("rec_id") and o.get("type") in OUTCOME_TYPES]
        if not rows:
            return 0
        self.flush()
        con = self.con
        ids = sorted({self._hash(_LIST, str(o["rec_id"])) for o in rows})
        shown: dict[str, tuple[str | None, float, list[str]]] = {}
        searches: set[str] = set()
        with self._lock:
            for s in range(0, len(ids), 500):
                part = ids[s : s + 500]
                marks = ",".join("?" * len(part))
                q = f"SELECT list, shopper, ts, doc, kind FROM lists WHERE list IN ({marks})"
                for h, shopper, ts, doc, kind in con.execute(q, part).fetchall():
                    shown[h] = (
                        shopper,
                        float(ts),
                        list(self._unpack(doc, _LIST_AAD + h.encode())["i"]),
                    )
                    if kind == "search":
                        searches.add(h)
        new, chosen = [], []
        now = self.clock()
        for o in rows:
            rid, item, kind = str(o["rec_id"]), str(o.get("item")), str(o["type"])
            h = self._hash(_LIST, rid)
            hit = shown.get(h)
            if hit is None or item not in hit[2]:
                continue
            shopper = self._hash(_SHOPPER, str(o["shopper"])) if o.get("shopper") else None
            if hit[0] is not None and shopper is not None and shopper != hit[0]:
                continue  # someone else's list id: not their outcome
            ts = _seconds(o.get("ts"), now)
            if not (-CLOCK_SKEW_S <= ts - hit[1] <= self.window_s):
                continue
            k = self._hash(_OUTCOME, json.dumps([rid, kind, item]))
            if h in searches and shopper is not None and shopper == hit[0]:
                c = {"rec_id": rid, "item": item, "user": o.get("user"), "shopper": o["shopper"]}
                chosen.append({**c, "ts": hit[1]})
            value = float(o.get("value") or 0.0)
            doc = self._pack(
                {"i": item, "v": value, "p": hit[2].index(item)}, _OUTCOME_AAD + k.encode()
            )
            new.append((k, h, shopper or hit[0], kind, ts, doc))
        if not new:
            return 0
        with self._lock:
            chosen = self._first_choices(chosen)
            con.execute("BEGIN")
            n = 0
            for r in new:
                n += con.execute(
                    "INSERT OR IGNORE INTO outcomes VALUES (?, ?, ?, ?, ?, ?)", r
                ).rowcount
            con.execute("COMMIT")
        if chosen and self.on_search_choice is not None:
            try:
                self.on_search_choice(chosen)
            except Exception as exc:  # the outcome counts even if its search cannot be stored
                logger.warning("search choice not stored error=%s", type(exc).__name__)
        return n

    def _first_choices(self, chosen: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The choices whose item had no outcome on its list yet (one per list and item)."""
        out, done = [], set()
        for c in chosen:
            rid, item = c["rec_id"], c["item"]
            ks = [self._hash(_OUTCOME, json.dumps([rid, t, item])) for t in OUTCOME_TYPES]
            q = f"SELECT 1 FROM outcomes WHERE k IN ({','.join('?' * len(ks))}) LIMIT 1"
            if (rid, item) not in done and self.con.execute(q, ks).fetchone() is None:
                done.add((rid, item))
                out.append(c)
        return out

    # ---- reading -----------------------------------------------------------------------------
    def _rows(
        self, since_day: str, *, experiment: str | None = None, kind: str | None = None
    ) -> tuple[list[Any], list[ListRow], list[OutcomeRow], list[Any]]:
        self.flush()
        con = self.con
        cond, args = ["day >= ?"], [since_day]
        if experiment is not None:
            cond.append("experiment = ?")
            args.append(experiment)
        if kind is not None:
            cond.append("kind = ?")
            args.append(kind)
        where = " AND ".join(cond)
        with self._lock:
            counts = con.execute(
                "SELECT day, model, version, experiment, arm, SUM(lists), SUM(anonymous) "
                f"FROM counts WHERE {where} GROUP BY day, model, version, experiment, arm",
                args,
            ).fetchall()
            lists = [
                ListRow(*r)
                for r in con.execute(
                    "SELECT list, shopper, ts, day, model, version, experiment, arm FROM lists "
                    f"WHERE {where}",
                    args,
                ).fetchall()
            ]
            raw = con.execute(
                "SELECT o.k, o.list, o.type, o.ts, o.doc FROM outcomes AS o JOIN lists AS l "
                f"ON l.list = o.list WHERE {' AND '.join('l.' + c for c in cond)}",
                args,
            ).fetchall()
            scond = [c for c in cond if not c.startswith("kind")]
            shown = con.execute(
                f"SELECT day, model, version, experiment, arm, item FROM shown "
                f"WHERE {' AND '.join(scond)}",
                args[: len(scond)],
            ).fetchall()
        outcomes = []
        for k, h, t, ts, doc in raw:
            value = self._unpack(doc, _OUTCOME_AAD + k.encode())["v"] if t == "purchase" else 0.0
            outcomes.append(OutcomeRow(h, t, float(ts), float(value)))
        return counts, lists, outcomes, shown

    def _since(self, days: int) -> str:
        if not 1 <= int(days) <= 3660:
            from privrec.core.errors import ValidationError

            raise ValidationError("days", f"is {days}; give 1 to 3660 days")
        return day_of(self.clock() - (int(days) - 1) * 86400.0)

    def metrics(
        self,
        by: str = "version",
        days: int = 7,
        *,
        experiment: str | None = None,
        kind: str | None = None,
    ) -> list[dict[str, Any]]:
        """Online metrics per UTC day and group, oldest day first.

        Args:
            by: "version" (rows name `model`, `version`) or "arm" (rows name `experiment`,
                `arm`; lists served outside experiments are left out).
            days: the window, ending today.
            experiment: only this experiment's lists.
            kind: only lists of this kind ("recommend", "search", "similar").

        Returns:
            Rows {day, model/version or experiment/arm, impressions, anonymous_impressions,
            tracked, shoppers, clicked_lists, ctr, carts, purchases, converters, conversion,
            revenue, revenue_per_shopper, items_shown, coverage}; a rate is None where its
            denominator is 0 (see `privrec.experiments.online`).
        """
        if not self._ready():
            return []
        data = self._rows(self._since(days), experiment=experiment, kind=kind)
        return daily(by, *data, catalogue_size=self.catalogue_size())

    def summary(
        self,
        by: str = "version",
        days: int = 7,
        *,
        experiment: str | None = None,
        kind: str | None = None,
    ) -> list[dict[str, Any]]:
        """The same metrics per group over the whole window (distinct shoppers and items)."""
        if not self._ready():
            return []
        data = self._rows(self._since(days), experiment=experiment, kind=kind)
        return totals(by, *data, catalogue_size=self.catalogue_size())

    def experiment_rows(self, experiment: str) -> tuple[list[ListRow], list[OutcomeRow]]:
        """Every tracked list of one experiment and its outcomes (for sequential tests)."""
        if not self._ready():
            return [], []
        _, lists, outcomes, _ = self._rows("0000-00-00", experiment=experiment)
        return lists, outcomes

    def served_version(self, experiment: str, arm: str) -> tuple[str, str] | None:
        """(model, version) that served the arm's most recent list, or None."""
        if not self._ready():
            return None
        self.flush()
        with self._lock:
            row = (
                self.con.execute(  # the latest list; the day's counts when none was tracked
                    "SELECT model, version FROM lists WHERE experiment = ? AND arm = ? "
                    "ORDER BY ts DESC LIMIT 1",
                    [experiment, arm],
                ).fetchone()
                or self.con.execute(
                    "SELECT model, version FROM counts WHERE experiment = ? AND arm = ? "
                    "ORDER BY day DESC LIMIT 1",
                    [experiment, arm],
                ).fetchone()
            )
        return (str(row[0]), str(row[1])) if row else None

    # ---- data rights and retention -----------------------------------------------------------
    def records_of(self, pseudonym: str) -> list[dict[str, Any]]:
        """Every list shown to one shopper with its outcomes (right of access)."""
        if not self._ready():
            return []
        self.flush()
        s = self._hash(_SHOPPER, pseudonym)
        out = []
        with self._lock:
            q = (
                "SELECT list, ts, kind, model, version, experiment, arm, doc FROM lists "
                "WHERE shopper = ?"
            )
            for h, ts, kind, model, version, exp, arm, doc in self.con.execute(q, [s]).fetchall():
                d = self._unpack(doc, _LIST_AAD + h.encode())
                oc = self.con.execute(
                    "SELECT k, type, ts, doc FROM outcomes WHERE list = ?", [h]
                ).fetchall()
                out.append(
                    {
                        "recommendation_id": d["r"],
                        "ts": ts,
                        "kind": kind,
                        "model": model,
                        "version": version,
                        "experiment": exp or None,
                        "arm": arm or None,
                        "items": d["i"],
                        "outcomes": [
                            {
                                "type": t,
                                "ts": ots,
                                **_outcome(self._unpack(od, _OUTCOME_AAD + k.encode())),
                            }
                            for k, t, ots, od in oc
                        ],
                    }
                )
        return sorted(out, key=lambda r: float(r["ts"]))

    def erase(self, pseudonym: str) -> int:
        """Delete every list shown to one shopper and every outcome they sent; returns rows."""
        if not self._ready():
            return 0
        self.flush()
        s = self._hash(_SHOPPER, pseudonym)
        with self._lock:
            con = self.con
            con.execute("BEGIN")
            n = con.execute(
                "DELETE FROM outcomes WHERE shopper = ? OR list IN "
                "(SELECT list FROM lists WHERE shopper = ?)",
                [s, s],
            ).rowcount
            n += con.execute("DELETE FROM lists WHERE shopper = ?", [s]).rowcount
            con.execute("COMMIT")
        return n

    def expire(self, now: float | None = None) -> int:
        """Delete rows older than the retention; returns the rows deleted."""
        now = self.clock() if now is None else now
        self._last_expire = now
        cut = now - self.retention_s
        day = day_of(cut)
        with self._lock:
            con = self.con
            con.execute("BEGIN")
            n = con.execute(
                "DELETE FROM outcomes WHERE list IN (SELECT list FROM lists WHERE ts < ?) "
                "OR ts < ?",
                [cut, cut],
            ).rowcount
            n += con.execute("DELETE FROM lists WHERE ts < ?", [cut]).rowcount
            n += con.execute("DELETE FROM counts WHERE day < ?", [day]).rowcount
            n += con.execute("DELETE FROM shown WHERE day < ?", [day]).rowcount
            con.execute("COMMIT")
        return n


def _outcome(d: Mapping[str, Any]) -> dict[str, Any]:
    return {"item": d["i"], "value": d["v"], "position": d["p"]}


def _seconds(ts: Any, default: float) -> float:
    """An outcome's time as Unix seconds (its event timestamp; `default` when it has none)."""
    if ts is None:
        return default
    try:
        return float(coerce_timestamp(ts))
    except (TypeError, ValueError):
        return default
