"""Where experiments, exposures and outcomes live: one SQLite file in the data directory (0600).

Exposures (one row per recommendation list shown in an experiment: recommendation id, variant,
the shopper's unit id inside the experiment, the recommended item keys) are buffered in memory
and written in batches by `flush`, so serving never waits on the disk. Outcomes (click, cart,
purchase carrying a recommendation id) are attributed to the exposure with that id. No raw user
id and no pseudonym is stored: the unit id is a salted hash that only the experiment uses; on
erasure the service recomputes it and deletes the shopper's rows.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from privrec.core.errors import NotFoundError, ValidationError
from privrec.core.files import ensure_private
from privrec.experiments.assignment import Experiment, assign, unit_id

__all__ = ["OUTCOME_TYPES", "ExperimentStore", "StagedExperimentRekey"]

OUTCOME_TYPES = ("click", "cart", "purchase")
_DDL = (
    "CREATE TABLE IF NOT EXISTS experiments (name TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS exposures (rec_id TEXT PRIMARY KEY, experiment TEXT NOT NULL, "
    "variant TEXT NOT NULL, "
    "unit TEXT NOT NULL, ts REAL NOT NULL, items TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS exposures_exp ON exposures (experiment)",
    "CREATE INDEX IF NOT EXISTS exposures_unit ON exposures (unit)",
    "CREATE TABLE IF NOT EXISTS outcomes (rec_id TEXT NOT NULL, type TEXT NOT NULL, "
    "item TEXT NOT NULL, value REAL, ts REAL NOT NULL, "
    "PRIMARY KEY (rec_id, type, item))",
)


class ExperimentStore:
    """Experiments and their exposures and outcomes in `<data_dir>/experiments.sqlite`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # created 0600 before SQLite opens it (its WAL and shared-memory files copy that mode)
        ensure_private(self.path)
        self._con = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._pending: list[tuple[Any, ...]] = []
        self._pending_lock = threading.Lock()
        with self._lock:
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")
            for ddl in _DDL:
                self._con.execute(ddl)
        self._cache: dict[str, Experiment] = {e.name: e for e in self._load_all()}

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        with self._lock:
            self._con.close()

    # ---- experiments -------------------------------------------------------------------------
    def _load_all(self) -> list[Experiment]:
        with self._lock:
            rows = self._con.execute("SELECT doc FROM experiments ORDER BY name").fetchall()
        return [Experiment.from_dict(json.loads(r[0])) for r in rows]

    def create(self, experiment: Experiment) -> Experiment:
        """Save a new experiment (ValidationError if the name is taken)."""
        if experiment.name in self._cache:
            raise ValidationError(
                "name",
                f"an experiment named {experiment.name!r} exists; choose another name or stop "
                "it first",
            )
        if not experiment.created_at:
            experiment = Experiment.from_dict({**experiment.to_dict(), "created_at": time.time()})
        with self._lock:
            self._con.execute(
                "INSERT INTO experiments VALUES (?, ?)",
                [experiment.name, json.dumps(experiment.to_dict())],
            )
        self._cache[experiment.name] = experiment
        return experiment

    def get(self, name: str) -> Experiment:
        """One experiment (NotFoundError if unknown)."""
        try:
            return self._cache[name]
        except KeyError:
            raise NotFoundError(
                f"experiment: no experiment named {name!r}; list them with GET /v1/experiments"
            ) from None

    def all(self) -> list[Experiment]:
        """All experiments, by name."""
        return [self._cache[k] for k in sorted(self._cache)]

    def set_status(self, name: str, status: str) -> Experiment:
        """Stop or restart an experiment."""
        exp = Experiment.from_dict({**self.get(name).to_dict(), "status": status})
        with self._lock:
            self._con.execute(
                "UPDATE experiments SET doc = ? WHERE name = ?", [json.dumps(exp.to_dict()), name]
            )
        self._cache[name] = exp
        return exp

    # ---- exposures and outcomes --------------------------------------------------------------
    def record_exposure(
        self, rec_id: str, experiment: str, variant: str, unit: str, items: Sequence[str]
    ) -> None:
        """Buffer one exposure (written by the next `flush`)."""
        row = (rec_id, experiment, variant, unit, time.time(), json.dumps(list(items)))
        with self._pending_lock:
            self._pending.append(row)

    def flush(self) -> int:
        """Write buffered exposures; returns how many."""
        with self._pending_lock:
            rows, self._pending = self._pending, []
        if rows:
            with self._lock:
                self._con.execute("BEGIN")
                self._con.executemany(
                    "INSERT OR IGNORE INTO exposures VALUES (?, ?, ?, ?, ?, ?)", rows
                )
                self._con.execute("COMMIT")
        return len(rows)

    def record_outcomes(self, outcomes: Iterable[Mapping[str, Any]]) -> int:
        """Attribute outcomes {rec_id, type, item, value}; returns how many were attributed.

        An outcome counts when its recommendation id was shown in an experiment and its item was
        on that list; repeats of the same (id, type, item) count once.
        """
        rows = [o for o in outcomes if o.get("rec_id") and o.get("type") in OUTCOME_TYPES]
        if not rows:
            return 0
        self.flush()
        n = 0
        with self._lock:
            ids = sorted({str(o["rec_id"]) for o in rows})
            shown: dict[str, set[str]] = {}
            for chunk in range(0, len(ids), 500):
                part = ids[chunk : chunk + 500]
                marks = ",".join("?" * len(part))
                q = f"SELECT rec_id, items FROM exposures WHERE rec_id IN ({marks})"
                for rid, items in self._con.execute(q, part).fetchall():
                    shown[rid] = set(json.loads(items))
            self._con.execute("BEGIN")
            for o in rows:
                items = shown.get(str(o["rec_id"]))
                if items is None or str(o["item"]) not in items:
                    continue
                cur = self._con.execute(
                    "INSERT OR IGNORE INTO outcomes VALUES (?, ?, ?, ?, ?)",
                    [
                        str(o["rec_id"]),
                        str(o["type"]),
                        str(o["item"]),
                        float(o.get("value") or 0.0),
                        time.time(),
                    ],
                )
                n += cur.rowcount
            self._con.execute("COMMIT")
        return n

    def records(self, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(exposures, outcomes) of one experiment."""
        self.get(name)
        self.flush()
        with self._lock:
            ex = self._con.execute(
                "SELECT rec_id, variant, unit FROM exposures WHERE experiment = ?", [name]
            ).fetchall()
            oc = self._con.execute(
                "SELECT o.rec_id, o.type, o.item, o.value FROM outcomes AS o "
                "JOIN exposures AS e ON e.rec_id = o.rec_id WHERE e.experiment = ?",
                [name],
            ).fetchall()
        return (
            [{"rec_id": r, "variant": v, "unit": u} for r, v, u in ex],
            [{"rec_id": r, "type": t, "item": i, "value": val} for r, t, i, val in oc],
        )

    def unit_records(self, units: Mapping[str, str]) -> list[dict[str, Any]]:
        """Exposures (with outcomes) of one shopper ({experiment: unit id}), for access requests."""
        self.flush()
        out: list[dict[str, Any]] = []
        with self._lock:
            for exp, unit in units.items():
                rows = self._con.execute(
                    "SELECT rec_id, variant, ts, items FROM exposures "
                    "WHERE experiment = ? AND unit = ? ORDER BY ts",
                    [exp, unit],
                ).fetchall()
                for rec_id, variant, ts, items in rows:
                    oc = self._con.execute(
                        "SELECT type, item, value, ts FROM outcomes WHERE rec_id = ?", [rec_id]
                    ).fetchall()
                    out.append(
                        {
                            "experiment": exp,
                            "variant": variant,
                            "recommendation_id": rec_id,
                            "ts": ts,
                            "items": items,
                            "outcomes": [
                                {"type": t, "item": i, "value": v, "ts": ots} for t, i, v, ots in oc
                            ],
                        }
                    )
        return out

    def erase_units(self, units: Mapping[str, str]) -> int:
        """Delete one shopper's exposures and outcomes ({experiment: unit id}); returns the rows."""
        self.flush()
        n = 0
        with self._lock:
            self._con.execute("BEGIN")
            for exp, unit in units.items():
                ids = [
                    r[0]
                    for r in self._con.execute(
                        "SELECT rec_id FROM exposures WHERE experiment = ? AND unit = ?",
                        [exp, unit],
                    )
                ]
                for chunk in range(0, len(ids), 500):
                    part = ids[chunk : chunk + 500]
                    marks = ",".join("?" * len(part))
                    n += self._con.execute(
                        f"DELETE FROM outcomes WHERE rec_id IN ({marks})", part
                    ).rowcount
                n += self._con.execute(
                    "DELETE FROM exposures WHERE experiment = ? AND unit = ?", [exp, unit]
                ).rowcount
            self._con.execute("COMMIT")
        return n

    def stage_rekey(self, pseudonyms: Mapping[str, str], generation: int) -> StagedExperimentRekey:
        """Move the known shoppers' rows and variants to their new pseudonyms (a key rotation).

        For each experiment and each known shopper (old pseudonym -> new), exposures under the
        old unit id move to the new one, and where the new pseudonym's hash would give another
        variant the shopper is pinned to the variant they had (`Experiment.pins`). Exposures of
        shoppers the caller does not know cannot be moved (a unit id cannot be reversed); they
        are counted in `unmatched`. The work stays in an open transaction, and the store locked
        to other threads, until `commit` or `rollback` on this thread. The ``meta`` table's
        ``pseudonym_generation`` is set in the same transaction; a store already at
        `generation` gives an empty staging.

        Args:
            pseudonyms: old pseudonym -> new pseudonym of every shopper known to the caller.
            generation: the key generation after the rotation.
        """
        self.flush()
        self._lock.acquire()
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        staged = StagedExperimentRekey(self, {}, 0, 0)
        try:
            con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = con.execute(
                "SELECT value FROM meta WHERE key = 'pseudonym_generation'"
            ).fetchone()
            if row is not None and int(row[0]) == generation:
                staged.rollback()
                return StagedExperimentRekey(None, {}, 0, 0)
            con.execute(
                "CREATE TEMP TABLE IF NOT EXISTS rekey_units (old TEXT PRIMARY KEY, new TEXT)"
            )
            for exp in self._cache.values():
                staged.experiments[exp.name] = self._rekey_experiment(exp, pseudonyms, staged)
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('pseudonym_generation', ?)",
                [str(int(generation))],
            )
        except BaseException:
            staged.rollback()
            raise
        return staged

    def _rekey_experiment(
        self, exp: Experiment, pseudonyms: Mapping[str, str], staged: StagedExperimentRekey
    ) -> Experiment:
        """`stage_rekey` for one experiment inside the open transaction; returns its new form."""
        con = self._con
        exposed = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT unit FROM exposures WHERE experiment = ?", [exp.name]
            )
        }
        unpinned = replace(exp, pins={})
        moved: dict[str, str] = {}
        pins: dict[str, str] = {}
        for old, new in pseudonyms.items():
            before = assign(exp, old).name  # honours the pins of earlier rotations
            old_unit, new_unit = unit_id(exp.salt, old), unit_id(exp.salt, new)
            if old_unit in exposed:
                moved[old_unit] = new_unit
            if assign(unpinned, new).name != before:
                pins[new_unit] = before
        con.execute("DELETE FROM rekey_units")
        con.executemany("INSERT INTO rekey_units VALUES (?, ?)", moved.items())
        staged.count += con.execute(
            "UPDATE exposures SET unit = (SELECT new FROM rekey_units WHERE old = exposures.unit) "
            "WHERE experiment = ? AND unit IN (SELECT old FROM rekey_units)",
            [exp.name],
        ).rowcount
        staged.unmatched += len(exposed - moved.keys())
        new_exp = Experiment.from_dict({**exp.to_dict(), "pins": pins})
        con.execute(
            "UPDATE experiments SET doc = ? WHERE name = ?",
            [json.dumps(new_exp.to_dict()), exp.name],
        )
        return new_exp


class StagedExperimentRekey:
    """A re-keying of the experiment store held in an open SQLite transaction.

    Attributes:
        experiments: each experiment's new form (its pins), applied to the cache on commit.
        count: exposure rows moved to new unit ids.
        unmatched: exposed units of shoppers the rotation did not know (left as they were).
    """

    def __init__(
        self,
        store: ExperimentStore | None,
        experiments: dict[str, Experiment],
        count: int,
        unmatched: int,
    ) -> None:
        self._store = store
        self.experiments = experiments
        self.count = count
        self.unmatched = unmatched

    def commit(self) -> None:
        """Make the re-keying durable and use the new pins (a no-op when nothing was staged)."""
        store, self._store = self._store, None
        if store is None:
            return
        try:
            store._con.execute("COMMIT")
            store._cache.update(self.experiments)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                store._con.execute("ROLLBACK")
            raise
        finally:
            store._lock.release()

    def rollback(self) -> None:
        """Drop the re-keying: rows, pins and cache stay as they were."""
        store, self._store = self._store, None
        if store is None:
            return
        try:
            with contextlib.suppress(sqlite3.Error):
                store._con.execute("ROLLBACK")
        finally:
            store._lock.release()
