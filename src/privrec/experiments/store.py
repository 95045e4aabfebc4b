"""Where experiments, exposures and outcomes live: one SQLite file in the data directory (0600).

Exposures (one row per recommendation list shown in an experiment: recommendation id, variant,
the shopper's unit id inside the experiment, the recommended item keys) are buffered in memory
and written in batches by `flush`, so serving never waits on the disk. Outcomes (click, cart,
purchase carrying a recommendation id) are attributed to the exposure with that id. No raw user
id and no pseudonym is stored: the unit id is a salted hash that only the experiment uses; on
erasure the service recomputes it and deletes the shopper's rows.

With a key (the sidecar key) what the file holds about shoppers is sealed, as in the consent
table: the recommendation id and unit id columns hold keyed hashes (HMAC-SHA-256), which is all
that lookups, erasure and rotation need, and each row's recommendation id, time, item keys and
outcome values are sealed (AES-256-GCM) in its ``doc``; a rotation's pins (unit id -> variant)
are sealed inside the experiment's definition. The definitions themselves (names, variants,
salts, status) stay plaintext: they are the shop's configuration, not data about a shopper, and
a salt finds no row without the key. Each row's variant stays plaintext too: anyone holding the
salt can compute it from a pseudonym, and the report counts by it. Without a key (pure tests)
the same columns hold the plain values. Rows of older versions (the ``exposures`` and
``outcomes`` tables, and plain rows a key-less store wrote) are moved in, sealed, when the store
is opened with a key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
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
from privrec.privacy.sealed import SealedDataError, seal, unseal

__all__ = ["OUTCOME_TYPES", "ExperimentStore", "StagedExperimentRekey"]

OUTCOME_TYPES = ("click", "cart", "purchase")
_DDL = (
    "CREATE TABLE IF NOT EXISTS experiments (name TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS exposure_log (rec TEXT PRIMARY KEY, experiment TEXT NOT NULL, "
    "variant TEXT NOT NULL, unit TEXT NOT NULL, doc BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS exposure_log_unit ON exposure_log (experiment, unit)",
    "CREATE TABLE IF NOT EXISTS outcome_log (k TEXT PRIMARY KEY, rec TEXT NOT NULL, "
    "doc BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS outcome_log_rec ON outcome_log (rec)",
)
# HMAC domains: one key hashes several columns, so equal strings in two of them stay unlinked
_REC = b"privrec:experiment-rec:"
_UNIT = b"privrec:experiment-unit:"
_OUTCOME = b"privrec:experiment-outcome:"
EXPOSURE_AAD = b"privrec:experiment-exposure:"
OUTCOME_AAD = b"privrec:experiment-outcome-row:"
PINS_AAD = b"privrec:experiment-pins:"
_PLAIN = "substr(doc, 1, 1) = X'7B'"  # a plaintext doc is a JSON object; a sealed one is not


class ExperimentStore:
    """Experiments and their exposures and outcomes in `<data_dir>/experiments.sqlite`.

    Args:
        path: the SQLite file.
        key: the sidecar key that hashes the lookup columns and seals the rows (None: plain
            values, as versions before sealing stored them).

    Raises:
        SealedDataError: the rows are sealed and `key` is None or another key.
    """

    def __init__(self, path: str | Path, key: bytes | None = None) -> None:
        self.path = Path(path)
        self._key = key
        # created 0600 before SQLite opens it (its WAL and shared-memory files copy that mode)
        ensure_private(self.path)
        self._con = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._pending: list[tuple[str, str, str, str, float, list[str]]] = []
        self._pending_lock = threading.Lock()
        try:
            with self._lock:
                self._con.execute("PRAGMA journal_mode=WAL")
                self._con.execute("PRAGMA synchronous=NORMAL")
                # erased and migrated rows are overwritten in the file, not only unlinked
                self._con.execute("PRAGMA secure_delete=ON")
                for ddl in _DDL:
                    self._con.execute(ddl)
                self._migrate()
                self._check_key()
            self._cache: dict[str, Experiment] = {e.name: e for e in self._load_all()}
        except BaseException:
            self._con.close()
            raise

    def close(self) -> None:
        """Flush and close."""
        self.flush()
        with self._lock:
            self._con.close()

    # ---- sealing -----------------------------------------------------------------------------
    def _hash(self, domain: bytes, value: str) -> str:
        """A lookup column's value: a keyed hash with the key, else `value` itself."""
        if self._key is None:
            return value
        return hmac.new(self._key, domain + value.encode(), hashlib.sha256).hexdigest()

    def _pack(self, obj: Mapping[str, Any], aad: bytes) -> bytes:
        data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
        return data if self._key is None else seal(data, self._key, aad=aad)

    def _unpack(self, doc: bytes | str, aad: bytes) -> dict[str, Any]:
        """A row's ``doc``: plain JSON, or sealed (SealedDataError without the right key)."""
        raw = doc.encode() if isinstance(doc, str) else bytes(doc)
        if raw[:1] == b"{":
            return dict(json.loads(raw))
        where = f"{self.path} (experiment row)"
        if self._key is None:
            raise SealedDataError(f"{where}: rows are sealed; give the sidecar key")
        return dict(json.loads(unseal(raw, self._key, aad=aad, where=where)))

    def _exposure_row(
        self, rec_id: str, experiment: str, variant: str, unit: str, ts: float, items: list[str]
    ) -> tuple[str, str, str, str, bytes]:
        rec = self._hash(_REC, rec_id)
        doc = self._pack({"r": rec_id, "t": ts, "i": items}, EXPOSURE_AAD + rec.encode())
        return rec, experiment, variant, self._hash(_UNIT, unit), doc

    def _outcome_row(
        self, rec_id: str, kind: str, item: str, value: float, ts: float
    ) -> tuple[str, str, bytes]:
        # the dedup key: one row per (list, type, item), whatever its value and time
        k = self._hash(_OUTCOME, json.dumps([rec_id, kind, item]))
        doc = {"r": rec_id, "y": kind, "i": item, "v": value, "t": ts}
        return k, self._hash(_REC, rec_id), self._pack(doc, OUTCOME_AAD + k.encode())

    def _exposure_doc(self, rec: str, doc: bytes | str) -> dict[str, Any]:
        return self._unpack(doc, EXPOSURE_AAD + rec.encode())

    def _outcome_doc(self, k: str, doc: bytes | str) -> dict[str, Any]:
        return self._unpack(doc, OUTCOME_AAD + k.encode())

    def _definition(self, exp: Experiment) -> str:
        """The ``experiments.doc`` value: plaintext, with the pins sealed when there is a key."""
        d = exp.to_dict()
        pins = d.pop("pins", None)
        if pins and self._key is not None:
            aad = PINS_AAD + exp.name.encode()
            sealed = seal(json.dumps(pins, sort_keys=True).encode(), self._key, aad=aad)
            d["sealed_pins"] = base64.b64encode(sealed).decode("ascii")
        elif pins:
            d["pins"] = pins
        return json.dumps(d)

    def _parse_definition(self, text: str) -> Experiment:
        d = json.loads(text)
        sealed = d.pop("sealed_pins", None)
        if sealed is not None:
            where = f"{self.path} (pins of experiment {d.get('name')!r})"
            if self._key is None:
                raise SealedDataError(f"{where}: sealed; give the sidecar key")
            aad = PINS_AAD + str(d["name"]).encode()
            d["pins"] = json.loads(
                unseal(base64.b64decode(sealed), self._key, aad=aad, where=where)
            )
        return Experiment.from_dict(d)

    def _migrate(self) -> None:
        """Move older versions' rows in (and seal plain ones when there is a key)."""
        con = self._con
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        legacy = tables & {"exposures", "outcomes"}
        ex: list[tuple[str, str, str, str, bytes]] = []
        oc: list[tuple[str, str, bytes]] = []
        if "exposures" in legacy:
            q = "SELECT rec_id, experiment, variant, unit, ts, items FROM exposures"
            for r, e, v, u, ts, items in con.execute(q).fetchall():
                ex.append(self._exposure_row(r, e, v, u, ts, list(json.loads(items))))
        if "outcomes" in legacy:
            q = "SELECT rec_id, type, item, value, ts FROM outcomes"
            for r, t, i, val, ts in con.execute(q).fetchall():
                oc.append(self._outcome_row(r, t, i, float(val or 0.0), ts))
        plain_ex: list[list[str]] = []
        plain_oc: list[list[str]] = []
        defs: list[tuple[str, str]] = []
        if self._key is not None:  # rows and pins a key-less store wrote in place
            q = f"SELECT rec, experiment, variant, unit, doc FROM exposure_log WHERE {_PLAIN}"
            for r, e, v, u, doc in con.execute(q).fetchall():
                d = json.loads(doc)
                ex.append(self._exposure_row(d["r"], e, v, u, d["t"], d["i"]))
                plain_ex.append([r])
            for k, doc in con.execute(f"SELECT k, doc FROM outcome_log WHERE {_PLAIN}").fetchall():
                d = json.loads(doc)
                oc.append(self._outcome_row(d["r"], d["y"], d["i"], d["v"], d["t"]))
                plain_oc.append([k])
            for name, text in con.execute("SELECT name, doc FROM experiments").fetchall():
                if "pins" in json.loads(text):
                    defs.append((self._definition(self._parse_definition(text)), name))
        if not (legacy or plain_ex or plain_oc or defs):
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany("DELETE FROM exposure_log WHERE rec = ?", plain_ex)
            con.executemany("DELETE FROM outcome_log WHERE k = ?", plain_oc)
            con.executemany("INSERT OR IGNORE INTO exposure_log VALUES (?, ?, ?, ?, ?)", ex)
            con.executemany("INSERT OR IGNORE INTO outcome_log VALUES (?, ?, ?)", oc)
            con.executemany("UPDATE experiments SET doc = ? WHERE name = ?", defs)
            for table in sorted(legacy):
                con.execute(f"DROP TABLE {table}")
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
        # the plaintext pages may still sit in the WAL: fold it into the file and empty it
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _check_key(self) -> None:
        """Refuse sealed rows without the key or with another one.

        Rows are found by keyed hashes: with a wrong key every lookup would silently find
        nothing, and an erasure would report that there was nothing to erase.
        """
        row = self._con.execute("SELECT rec, doc FROM exposure_log LIMIT 1").fetchone()
        if row is not None:
            self._exposure_doc(row[0], row[1])

    # ---- experiments -------------------------------------------------------------------------
    def _load_all(self) -> list[Experiment]:
        with self._lock:
            rows = self._con.execute("SELECT doc FROM experiments ORDER BY name").fetchall()
        return [self._parse_definition(r[0]) for r in rows]

    def create(self, experiment: Experiment) -> Experiment:
        """Save a new experiment (ValidationError if the name is taken)."""
        if experiment.name in self._cache:
            raise ValidationError(
                "name",
                f"an experiment named {experiment.name!r} exists; choose another name or stop "
                "it first",
            )
        if not experiment.created_at:
            experiment = replace(experiment, created_at=time.time())
        with self._lock:
            self._con.execute(
                "INSERT INTO experiments VALUES (?, ?)",
                [experiment.name, self._definition(experiment)],
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

    def set_status(self, name: str, status: str, **changes: Any) -> Experiment:
        """Stop, restart or promote an experiment (`changes`: other fields to set with it)."""
        exp = Experiment.from_dict({**self.get(name).to_dict(), **changes, "status": status})
        with self._lock:
            self._con.execute(
                "UPDATE experiments SET doc = ? WHERE name = ?", [self._definition(exp), name]
            )
        self._cache[name] = exp
        return exp

    # ---- exposures and outcomes --------------------------------------------------------------
    def record_exposure(
        self, rec_id: str, experiment: str, variant: str, unit: str, items: Sequence[str]
    ) -> None:
        """Buffer one exposure (hashed, sealed and written by the next `flush`)."""
        row = (rec_id, experiment, variant, unit, time.time(), [str(i) for i in items])
        with self._pending_lock:
            self._pending.append(row)

    def flush(self) -> int:
        """Write buffered exposures; returns how many."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        if pending:
            rows = [self._exposure_row(*p) for p in pending]  # sealed here, off the serving path
            with self._lock:
                self._con.execute("BEGIN")
                self._con.executemany(
                    "INSERT OR IGNORE INTO exposure_log VALUES (?, ?, ?, ?, ?)", rows
                )
                self._con.execute("COMMIT")
        return len(pending)

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
            recs = {self._hash(_REC, str(o["rec_id"])) for o in rows}
            ids = sorted(recs)
            shown: dict[str, set[str]] = {}
            for chunk in range(0, len(ids), 500):
                part = ids[chunk : chunk + 500]
                marks = ",".join("?" * len(part))
                q = f"SELECT rec, doc FROM exposure_log WHERE rec IN ({marks})"
                for rec, doc in self._con.execute(q, part).fetchall():
                    shown[rec] = set(self._exposure_doc(rec, doc)["i"])
            self._con.execute("BEGIN")
            for o in rows:
                rid, item = str(o["rec_id"]), str(o["item"])
                items = shown.get(self._hash(_REC, rid))
                if items is None or item not in items:
                    continue
                value = float(o.get("value") or 0.0)
                cur = self._con.execute(
                    "INSERT OR IGNORE INTO outcome_log VALUES (?, ?, ?)",
                    self._outcome_row(rid, str(o["type"]), item, value, time.time()),
                )
                n += cur.rowcount
            self._con.execute("COMMIT")
        return n

    def records(self, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(exposures {rec_id, variant, unit}, outcomes {rec_id, type, item, value}) of one
        experiment, for its report.

        In a sealed store ``rec_id`` and ``unit`` are their keyed hashes: enough to count units
        and join outcomes to exposures, which is all a report does.
        """
        self.get(name)
        self.flush()
        with self._lock:
            ex = self._con.execute(
                "SELECT rec, variant, unit FROM exposure_log WHERE experiment = ?", [name]
            ).fetchall()
            oc = self._con.execute(
                "SELECT o.k, o.rec, o.doc FROM outcome_log AS o "
                "JOIN exposure_log AS e ON e.rec = o.rec WHERE e.experiment = ?",
                [name],
            ).fetchall()
        outcomes = []
        for k, rec, doc in oc:
            d = self._outcome_doc(k, doc)
            outcomes.append({"rec_id": rec, "type": d["y"], "item": d["i"], "value": d["v"]})
        return [{"rec_id": r, "variant": v, "unit": u} for r, v, u in ex], outcomes

    def unit_records(self, units: Mapping[str, str]) -> list[dict[str, Any]]:
        """Exposures (with outcomes) of one shopper ({experiment: unit id}), for access requests."""
        self.flush()
        out: list[dict[str, Any]] = []
        with self._lock:
            for exp, unit in units.items():
                rows = self._con.execute(
                    "SELECT rec, variant, doc FROM exposure_log WHERE experiment = ? AND unit = ?",
                    [exp, self._hash(_UNIT, unit)],
                ).fetchall()
                found = []
                for rec, variant, doc in rows:
                    d = self._exposure_doc(rec, doc)
                    oc = [
                        self._outcome_doc(k, odoc)
                        for k, odoc in self._con.execute(
                            "SELECT k, doc FROM outcome_log WHERE rec = ?", [rec]
                        )
                    ]
                    found.append(
                        {
                            "experiment": exp,
                            "variant": variant,
                            "recommendation_id": d["r"],
                            "ts": d["t"],
                            "items": json.dumps(d["i"]),  # as versions before sealing gave it
                            "outcomes": [
                                {"type": o["y"], "item": o["i"], "value": o["v"], "ts": o["t"]}
                                for o in oc
                            ],
                        }
                    )
                out.extend(sorted(found, key=lambda r: float(r["ts"])))
        return out

    def erase_units(self, units: Mapping[str, str]) -> int:
        """Delete one shopper's exposures and outcomes ({experiment: unit id}); returns the rows."""
        self.flush()
        n = 0
        with self._lock:
            self._con.execute("BEGIN")
            for exp, unit in units.items():
                where = [exp, self._hash(_UNIT, unit)]
                ids = [
                    r[0]
                    for r in self._con.execute(
                        "SELECT rec FROM exposure_log WHERE experiment = ? AND unit = ?", where
                    )
                ]
                for chunk in range(0, len(ids), 500):
                    part = ids[chunk : chunk + 500]
                    marks = ",".join("?" * len(part))
                    n += self._con.execute(
                        f"DELETE FROM outcome_log WHERE rec IN ({marks})", part
                    ).rowcount
                n += self._con.execute(
                    "DELETE FROM exposure_log WHERE experiment = ? AND unit = ?", where
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
                "SELECT DISTINCT unit FROM exposure_log WHERE experiment = ?", [exp.name]
            )
        }
        unpinned = replace(exp, pins={})
        moved: dict[str, str] = {}
        pins: dict[str, str] = {}
        for old, new in pseudonyms.items():
            before = assign(exp, old).name  # honours the pins of earlier rotations
            new_unit = unit_id(exp.salt, new)
            old_row = self._hash(_UNIT, unit_id(exp.salt, old))  # the column holds the hash
            if old_row in exposed:
                moved[old_row] = self._hash(_UNIT, new_unit)
            if assign(unpinned, new).name != before:
                pins[new_unit] = before  # assign looks the raw unit id up; sealed when stored
        con.execute("DELETE FROM rekey_units")
        con.executemany("INSERT INTO rekey_units VALUES (?, ?)", moved.items())
        staged.count += con.execute(
            "UPDATE exposure_log SET unit = "
            "(SELECT new FROM rekey_units WHERE old = exposure_log.unit) "
            "WHERE experiment = ? AND unit IN (SELECT old FROM rekey_units)",
            [exp.name],
        ).rowcount
        staged.unmatched += len(exposed - moved.keys())
        new_exp = Experiment.from_dict({**exp.to_dict(), "pins": pins})
        con.execute(
            "UPDATE experiments SET doc = ? WHERE name = ?",
            [self._definition(new_exp), exp.name],
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
