"""The RecSys facade (layer 7): ingest, train, recommend, explain, forget, export.

Everything the CLI and the HTTP server do goes through here, so privacy rules live in one
place: raw user ids are pseudonymised on entry and never leave this object.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import NotFoundError, ValidationError
from privrec.core.settings import Settings
from privrec.core.types import EVENT_CODE, EVENT_TYPES, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.events.gate import Gate
from privrec.events.ingest import BatchReport, ingest_file, ingest_frame, ingest_records
from privrec.events.store import EventStore
from privrec.models.base import Recommender
from privrec.models.zoo import create_model
from privrec.privacy.pseudonym import Pseudonymiser

logger = logging.getLogger(__name__)

ACTIVE_FILE = "ACTIVE"


@dataclass(frozen=True)
class Recommendation:
    """One recommended item with its score and the reason, ready for JSON."""

    item: str
    score: float
    title: str | None
    category: str | None
    explanation: str
    explanation_kind: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


@dataclass
class ServedModel:
    """An artifact loaded for serving: the model, its item vocabulary and its version."""

    name: str
    version: str
    model: Recommender
    items: Vocabulary
    item_meta: pd.DataFrame


class RecSys:
    """privrec as one object over one data directory.

    Args:
        settings: runtime settings (defaults < privrec.toml < PRIVREC_* environment).
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.data_dir = Path(self.settings.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._pseudonymiser: Pseudonymiser | None = None
        self._store: EventStore | None = None
        self._served: dict[str, ServedModel] = {}

    # ---- plumbing ------------------------------------------------------------------------
    @property
    def pseudonymiser(self) -> Pseudonymiser:
        """The data directory's pseudonymiser (key created on first use, mode 0600)."""
        if self._pseudonymiser is None:
            env = self.settings.pseudonym_key.get_secret_value() if self.settings.pseudonym_key else None
            self._pseudonymiser = Pseudonymiser.from_data_dir(self.data_dir, env_key=env)
        return self._pseudonymiser

    @property
    def gate(self) -> Gate:
        """The privacy gate every event passes."""
        return Gate.from_settings(self.settings, self.pseudonymiser)

    @property
    def store(self) -> EventStore:
        """The encrypted event store (opened on first use)."""
        if self._store is None:
            key = self.settings.store_key.get_secret_value() if self.settings.store_key else None
            self._store = EventStore.open(self.data_dir, key=key)
        return self._store

    def close(self) -> None:
        """Close the store (checkpointing it)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> RecSys:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def models_dir(self) -> Path:
        """Where versioned model artifacts live."""
        return self.data_dir / "models"

    @property
    def reports_dir(self) -> Path:
        """Default folder for evaluation reports."""
        return self.data_dir / "reports"

    # ---- ingestion ---------------------------------------------------------------------------
    def ingest_file(self, path: str | Path, *, progress: Callable[[int], None] | None = None) -> BatchReport:
        """Ingest a JSONL, CSV or Parquet file through the gate; rejects go beside the store."""
        rejects = self.data_dir / "rejects" / f"{Path(path).name}.{int(time.time())}.rejects.jsonl"
        return ingest_file(Path(path), self.gate, self.store, rejects_path=rejects, progress=progress)

    def ingest_events(self, records: Iterable[Mapping[str, Any]]) -> BatchReport:
        """Ingest Python event records through the gate."""
        rejects = self.data_dir / "rejects" / f"api.{int(time.time())}.rejects.jsonl"
        return ingest_records(records, self.gate, self.store, rejects_path=rejects)

    def ingest_frame(self, frame: pd.DataFrame) -> BatchReport:
        """Ingest a raw event frame (Event's fields as columns) through the gate's bulk path."""
        rejects = self.data_dir / "rejects" / f"frame.{int(time.time())}.rejects.jsonl"
        return ingest_frame(frame, self.gate, self.store, rejects_path=rejects)

    def add_items(self, catalogue: pd.DataFrame) -> int:
        """Insert or update catalogue rows (item, title, category, brand, price, in_stock, text)."""
        return self.store.upsert_items(catalogue)

    def dataset(self, name: str = "store") -> InteractionDataset:
        """Everything in the store as an InteractionDataset (pseudonymous users)."""
        events = self.store.events()
        items = self.store.items()
        return InteractionDataset.from_events(
            events, item_meta=items if len(items) else None, event_weights=self.settings.event_weights, name=name
        )

    # ---- models ---------------------------------------------------------------------------------
    def save_model(self, model: Recommender, dataset: InteractionDataset, *, name: str | None = None, activate: bool = True) -> Path:
        """Save a fitted model as a new version with its item vocabulary; optionally activate it."""
        name = name or model.name
        base = self.models_dir / name
        base.mkdir(parents=True, exist_ok=True)
        version = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{len(list(base.glob('v*'))) + 1:03d}"
        path = base / f"v{version}"
        tmp = base / f".tmp-{version}"
        model.save(tmp)
        # Item keys are public catalogue ids; no user data goes into an artifact.
        (tmp / "items.json").write_text(json.dumps(dataset.items.keys))
        tmp.rename(path)
        if activate:
            self.activate(name, path.name)
        return path

    def activate(self, name: str, version: str) -> None:
        """Make `version` the served version of model `name` (atomic pointer swap)."""
        base = self.models_dir / name
        if not (base / version / "config.json").exists():
            raise NotFoundError(f"model {name!r} has no version {version!r}")
        tmp = base / f".{ACTIVE_FILE}.tmp"
        tmp.write_text(version)
        tmp.replace(base / ACTIVE_FILE)
        self._served.pop(name, None)
        (self.models_dir / "DEFAULT").parent.mkdir(parents=True, exist_ok=True)

    def set_default_model(self, name: str) -> None:
        """The model `recommend` uses when none is named."""
        (self.models_dir / "DEFAULT").write_text(name)
        if "_serving" in self.__dict__:
            self.__dict__["_serving"].default_name = None

    def list_models(self) -> dict[str, dict[str, Any]]:
        """Every saved model with its versions and the active one."""
        out: dict[str, dict[str, Any]] = {}
        if not self.models_dir.exists():
            return out
        for base in sorted(p for p in self.models_dir.iterdir() if p.is_dir()):
            versions = sorted(p.name for p in base.glob("v*") if (p / "config.json").exists())
            active = (base / ACTIVE_FILE).read_text().strip() if (base / ACTIVE_FILE).exists() else None
            out[base.name] = {"versions": versions, "active": active}
        return out

    def served(self, name: str | None = None) -> ServedModel:
        """The active version of model `name` (or the default model), loaded once."""
        if name is None:
            default = self.models_dir / "DEFAULT"
            if not default.exists():
                raise NotFoundError("no model has been trained yet; run `privrec train` or `privrec demo`")
            name = default.read_text().strip()
        if name in self._served:
            return self._served[name]
        active = self.models_dir / name / ACTIVE_FILE
        if not active.exists():
            raise NotFoundError(f"model {name!r} has no active version; run `privrec train --model {name}`")
        version = active.read_text().strip()
        path = self.models_dir / name / version
        model = Recommender.load(path)
        items = Vocabulary(json.loads((path / "items.json").read_text()))
        meta = InteractionDataset._align_meta(items, self.store.items())
        served = ServedModel(name=name, version=version, model=model, items=items, item_meta=meta)
        self._served[name] = served
        return served

    def train(self, model_name: str, *, params: Mapping[str, Any] | None = None, activate: bool = True, seed: int = 42) -> tuple[Path, float]:
        """Fit `model_name` on everything in the store and save it; returns (artifact, seconds)."""
        ds = self.dataset()
        if ds.n_events == 0:
            raise ValidationError("store", "holds no events; ingest some first (`privrec ingest FILE`)")
        model = create_model(model_name, **dict(params or {}))
        t0 = time.perf_counter()
        model.fit(ds, rng=seed)
        secs = time.perf_counter() - t0
        path = self.save_model(model, ds, activate=activate)
        if not (self.models_dir / "DEFAULT").exists():
            self.set_default_model(model.name)
        return path, secs

    # ---- serving -------------------------------------------------------------------------------
    def user_history(self, user_id: str, items: Vocabulary, weights: Mapping[str, float] | None = None) -> UserHistory:
        """The stored history of a raw user id, in `items`' index space (unknown items dropped)."""
        pseudonym = self.pseudonymiser.pseudonymise(user_id)
        return self._history_of(pseudonym, items, weights)

    def _history_of(self, pseudonym: str, items: Vocabulary, weights: Mapping[str, float] | None = None) -> UserHistory:
        ev = self.store.events(user=pseudonym)
        if not len(ev):
            return UserHistory.of([])
        idx = items.encode(ev["item"].astype(str).tolist())
        types = ev["type"].map(EVENT_CODE).to_numpy(np.int8)
        w = dict(weights or self.settings.event_weights)
        wv = np.array([float(w.get(t, 1.0)) for t in ev["type"]], dtype=np.float32)
        keep = idx >= 0
        return UserHistory(items=idx[keep], weights=wv[keep], event_types=types[keep])

    def recommend(self, user_id: str, k: int = 10, *, model: str | None = None) -> list[Recommendation]:
        """Top-k recommendations for a raw user id, each with its explanation."""
        if k < 1 or k > 1000:
            raise ValidationError("k", f"{k} is out of range; ask for 1 to 1000 items")
        served = self.served(model)
        history = self.user_history(user_id, served.items)
        idx, scores = served.model.recommend(history, k)
        out = []
        for i, s in zip(idx.tolist(), scores.tolist(), strict=True):
            exp = served.model.explain(history, i)
            text = exp.text
            if exp.contributors:
                names = [self._title(served, j) for j, _ in exp.contributors[:2]]
                text = "because you interacted with " + " and ".join(f"'{n}'" for n in names)
            row = served.item_meta.iloc[i]
            out.append(
                Recommendation(
                    item=served.items.key(i),
                    score=float(s),
                    title=row["title"] if isinstance(row["title"], str) else None,
                    category=row["category"] if isinstance(row["category"], str) else None,
                    explanation=text,
                    explanation_kind=exp.kind,
                )
            )
        return out

    @staticmethod
    def _title(served: ServedModel, i: int) -> str:
        t = served.item_meta.iloc[int(i)]["title"]
        return t if isinstance(t, str) and t else served.items.key(int(i))

    # ---- data-subject rights ---------------------------------------------------------------------
    def export_user(self, user_id: str) -> dict[str, Any]:
        """Right of access: everything stored about this user, as JSON-ready data."""
        pseudonym = self.pseudonymiser.pseudonymise(user_id)
        ev = self.store.events(user=pseudonym)
        return {
            "pseudonym": pseudonym,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "events": json.loads(ev.to_json(orient="records")) if len(ev) else [],
            "n_events": int(len(ev)),
            "models": "models hold no per-user state: a user's vector is derived from these events at request time",
        }

    def forget(self, user_id: str) -> dict[str, Any]:
        """Right to erasure: delete the user's events at once and write a receipt to the audit log."""
        pseudonym = self.pseudonymiser.pseudonymise(user_id)
        t0 = time.perf_counter()
        deleted = self.store.erase_user(pseudonym)
        receipt = {
            "pseudonym": pseudonym,
            "erased_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "events_deleted": int(deleted),
            "seconds": round(time.perf_counter() - t0, 4),
            "models": "user vectors are derived from stored events, so recommendations for this user no longer use them; "
            "models trained before the erasure still carry aggregate statistics until the next training run",
        }
        receipt.update(self._forget_serving_state(pseudonym))
        audit = self.data_dir / "audit.log"
        with open(audit, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"action": "erase", **receipt}) + "\n")
        audit.chmod(0o600)
        return receipt

    def retention(self, days: int | None = None) -> int:
        """Delete events older than `days` (or the per-type retention of the settings)."""
        spec: int | dict[str, int] | None = days
        if spec is None:
            spec = {t: d for t, d in self.settings.retention_days.items() if d is not None}
            if not spec:
                raise ValidationError("days", "give --days N or set retention_days in privrec.toml")
        return self.store.retention(spec)

    def rotate_key(self) -> int:
        """Rotate the pseudonym key and re-key every stored pseudonym; returns rows re-keyed."""
        rotated = self.pseudonymiser.rotate()
        n = self.store.rekey(rotated)
        self._pseudonymiser = rotated
        return n

    def reset(self) -> None:
        """Delete the whole data directory (used by the demo to start clean)."""
        self.close()
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        self.data_dir.chmod(0o700)
        self._pseudonymiser = None
        self._served.clear()

    # ==== serving (issue 5): what the HTTP server needs ==========================================
    # Requests are served from memory: every user's history (by pseudonym), the loaded model
    # versions with their compiled catalogue, and a cache of finished top-k lists keyed by the
    # user's history generation, so a new event, a consent change or an erasure invalidates
    # exactly that user's lists. The store is only written (events) and read at start-up.

    def _serving_state(self) -> _ServingState:
        state = self.__dict__.get("_serving")
        if state is None:
            with _SERVING_INIT_LOCK:
                state = self.__dict__.get("_serving")
                if state is None:
                    state = _ServingState(self)
                    self.__dict__["_serving"] = state
        return state

    def warm(self, *, preload_max_events: int = 5_000_000) -> dict[str, Any]:
        """Load histories and the default model into memory before serving; returns what was loaded."""
        st = self._serving_state()
        st.history.load(self.store, preload_max_events=preload_max_events)
        loaded = {}
        for name, info in self.list_models().items():
            if info["active"]:
                try:
                    loaded[name] = self.serving_model(name).served.version
                except Exception as exc:  # a broken artifact must not stop the others
                    logger.warning("model load failed model=%s error=%s", name, type(exc).__name__)
        return {"users": st.history.n_users, "events": st.history.n_events, "models": loaded}

    def default_model_name(self) -> str:
        """The model `recommend` uses when none is named (read once; `refresh_models` re-reads it)."""
        st = self.__dict__.get("_serving")
        if st is not None and st.default_name is not None:
            return st.default_name
        default = self.models_dir / "DEFAULT"
        if not default.exists():
            raise NotFoundError("no model has been trained yet; run `privrec train` or `privrec demo`")
        name = default.read_text().strip()
        if st is not None:
            st.default_name = name
        return name

    def serving_model(self, name: str | None = None) -> LoadedModel:
        """The active version of a model with its compiled catalogue, loaded once."""
        st = self._serving_state()
        name = name or self.default_model_name()
        got = st.loaded.get(name)
        if got is not None:
            return got
        with st.load_lock:
            got = st.loaded.get(name)
            if got is None:
                active = self.models_dir / name / ACTIVE_FILE
                if not active.exists():
                    raise NotFoundError(f"model {name!r} has no active version; train it first (POST /v1/models/{name}/train)")
                got = st.load(name, active.read_text().strip())
                st.loaded[name] = got
        return got

    def activate_model(self, name: str, version: str) -> dict[str, Any]:
        """Hot swap: load `version` fully, then switch the pointer and the served reference at once.

        Requests that already hold the old version finish on it; requests that start after the
        swap get the new one; none waits for the load or fails during it.
        """
        st = self._serving_state()
        with st.swap_lock:
            previous = st.loaded.get(name)
            loaded = st.load(name, version)  # slow part, outside any lock requests take
            self.activate(name, version)
            self._served[name] = loaded.served
            st.loaded[name] = loaded  # one reference assignment: atomic for readers
        return {"model": name, "active": version, "previous": previous.served.version if previous else None, "load_seconds": loaded.load_seconds}

    def refresh_models(self) -> list[str]:
        """Pick up versions activated outside this process (and new default models); returns swapped names."""
        st = self._serving_state()
        st.default_name = None
        swapped = []
        for name, info in self.list_models().items():
            cur = st.loaded.get(name)
            if cur is not None and info["active"] and info["active"] != cur.served.version:
                self.activate_model(name, info["active"])
                swapped.append(name)
        return swapped

    def train_and_activate(self, name: str, *, params: Mapping[str, Any] | None = None, seed: int = 42) -> dict[str, Any]:
        """Train on the store while serving continues, then hot-swap the new version in."""
        path, secs = self.train(name, params=params, activate=False, seed=seed)
        swap = self.activate_model(name, path.name)
        return {"model": name, "version": path.name, "train_seconds": round(secs, 3), **{k: v for k, v in swap.items() if k != "model"}}

    def configure_serving(self, *, cache_entries: int | None = None) -> None:
        """Serving options: how many finished lists the cache keeps (0 turns it off)."""
        if cache_entries is not None:
            self._serving_state().cache.max_entries = max(0, int(cache_entries))

    def serving_stats(self) -> dict[str, Any]:
        """Counters for the metrics endpoint (no personal data)."""
        st = self.__dict__.get("_serving")
        if st is None:
            return {}
        return {"cache_hits": st.cache.hits, "cache_misses": st.cache.misses, "cache_entries": len(st.cache),
                "users_in_memory": st.history.n_users, "events_in_memory": st.history.n_events,
                "models": {n: m.served.version for n, m in st.loaded.items()}}  # fmt: skip

    def flush_experiments(self) -> None:
        """Write buffered experiment exposures."""
        st = self.__dict__.get("_serving")
        if st is not None and st._experiments is not None:
            st._experiments.flush()

    def refresh_popularity(self) -> None:
        """Recount item popularity from the in-memory histories."""
        st = self.__dict__.get("_serving")
        if st is not None:
            st.refresh_popularity()

    def model_versions(self) -> dict[str, Any]:
        """Every saved model with its versions, the active one, the one served, and its privacy guarantee."""
        st = self._serving_state()
        out = {}
        default = (self.models_dir / "DEFAULT").read_text().strip() if (self.models_dir / "DEFAULT").exists() else None
        for name, info in self.list_models().items():
            cur = st.loaded.get(name)
            privacy = None
            if info["active"]:
                try:
                    privacy = json.loads((self.models_dir / name / info["active"] / "config.json").read_text()).get("privacy")
                except (OSError, ValueError):
                    privacy = None
            out[name] = {**info, "served": cur.served.version if cur else None, "default": name == default, "privacy": privacy}
        return out

    # ---- consent -----------------------------------------------------------------------------
    def consent(self, user_id: str) -> str:
        """The consent level of a raw user id (personalized, purchases_only or anonymous)."""
        return self._serving_state().consent_of(self.pseudonymiser.pseudonymise(user_id))

    def set_consent(self, user_id: str, level: str) -> dict[str, Any]:
        """Set a user's consent level; it applies from the next request on.

        `anonymous`: nothing more is stored and results are non-personalised; `purchases_only`:
        only purchases are stored and used; `personalized`: every event type.
        """
        if level not in CONSENT_LEVELS:
            raise ValidationError("level", f"{level!r} is not a consent level; use one of {', '.join(CONSENT_LEVELS)}")
        p = self.pseudonymiser.pseudonymise(user_id)
        st = self._serving_state()
        previous = st.consent_of(p)
        st.consent.set(p, level)
        st.consent_cache[p] = level
        st.history.bump(p)
        return {"level": level, "previous": previous, "updated_at": _now_iso(), "applies": "from the next request"}

    # ---- ingestion with consent, outcomes and cache invalidation --------------------------------
    def ingest_api(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Ingest events from the HTTP API.

        Per record, after the consent check: `recommendation_id` (and optional `value`) attribute
        the event as an experiment outcome (view = click, cart, purchase); the rest goes through
        the privacy gate into the store, and into the in-memory histories at once.
        """
        st = self._serving_state()
        t0 = time.perf_counter()
        n = len(records)
        keep: list[dict[str, Any]] = []
        lines: list[int] = []
        outcomes: list[dict[str, Any]] = []
        dropped = 0
        levels: dict[str, str] = {}
        for line, rec in enumerate(records, start=1):
            if not isinstance(rec, dict):
                keep.append({"_bad": True})
                lines.append(line)
                continue
            rid = rec.pop("recommendation_id", None)
            value = rec.pop("value", None)
            user = rec.get("user")
            if isinstance(user, (str, int)) and not isinstance(user, bool):
                u = str(user).strip()
                lvl = levels.get(u)
                if lvl is None:
                    lvl = levels[u] = st.consent_of(self.pseudonymiser.pseudonymise(u)) if u else "personalized"
                if lvl == "anonymous" or (lvl == "purchases_only" and rec.get("type") != "purchase"):
                    dropped += 1
                    continue
            if rid is not None and rec.get("type") in _OUTCOME_OF:
                outcomes.append({"rec_id": str(rid), "type": _OUTCOME_OF[rec["type"]], "item": str(rec.get("item")), "value": value})
            keep.append(rec)
            lines.append(line)
        frame = pd.DataFrame.from_records(keep) if keep else pd.DataFrame({"user": []})
        if "_bad" in frame.columns:
            frame = frame.rename(columns={"_bad": "record_is_not_an_object"})
        result = st.gate.process_frame(frame, line_numbers=np.asarray(lines, dtype=np.int64)) if keep else None
        inserted = duplicates = 0
        if result is not None and len(result.accepted):
            inserted, duplicates = self.store.append(result.accepted)
            st.history.add(result.accepted)
        attributed = 0
        if outcomes and st.experiments_ready():
            cat = self.serving_model() if self.models_dir.joinpath("DEFAULT").exists() else None
            for o in outcomes:
                if o["value"] is None and cat is not None and o["type"] == "purchase":
                    i = cat.index.get(o["item"], -1)
                    price = float(cat.table.price[i]) if i >= 0 else float("nan")
                    o["value"] = price if np.isfinite(price) else 0.0
            attributed = st.experiments.record_outcomes(outcomes)
        rejects = [] if result is None else [r.to_dict() for r in result.rejects]
        secs = time.perf_counter() - t0
        return {
            "received": n,
            "accepted": int(inserted),
            "duplicates": int(duplicates + (result.duplicates if result is not None else 0)),
            "rejected": len(rejects),
            "consent_dropped": dropped,
            "outcomes_attributed": attributed,
            "rejects": rejects[:100],
            "seconds": round(secs, 4),
        }

    # ---- recommendations -------------------------------------------------------------------------
    def recommend_for(
        self,
        user_id: str,
        k: int = 10,
        *,
        model: str | None = None,
        rules: Mapping[str, Any] | None = None,
        context_item: str | None = None,
        experiment: str | None = None,
    ) -> dict[str, Any]:
        """Top-k for a raw user id with business rules, explanations, and A/B assignment.

        Args:
            user_id: the shop's user id (pseudonymised here, never stored raw).
            k: 1 to 1000 items.
            model: a model name (default: the default model, or the experiment variant's).
            rules: `Rules` fields; `exclude_items` as item keys.
            context_item: the item the shopper is looking at.
            experiment: a running experiment's name: the variant decides model and rules.

        Returns:
            {recommendation_id, model, version, personalized, consent, experiment, variant, items}.
        """
        if k < 1 or k > 1000:
            raise ValidationError("k", f"{k} is out of range; ask for 1 to 1000 items")
        st = self._serving_state()
        p = self.pseudonymiser.pseudonymise(user_id)
        level = st.consent_of(p)
        exp_name = variant = None
        rules = dict(rules or {})
        note = None
        if experiment:
            exp = st.experiments.get(experiment)
            if exp.status != "running":
                note = "experiment is stopped; serving the default"
            elif level == "anonymous":
                note = "anonymous shoppers are not enrolled in experiments"
            else:
                from privrec.experiments.assignment import assign

                v = assign(exp, p)
                exp_name, variant = exp.name, v.name
                model = v.model or model
                rules = {**rules, **v.params}
        loaded = self.serving_model(model)
        items = st.top_items(loaded, p, level, k, rules, context_item)
        rec_id = secrets.token_hex(8)
        if exp_name is not None:
            from privrec.experiments.assignment import unit_id

            st.experiments.record_exposure(rec_id, exp_name, str(variant), unit_id(st.experiments.get(exp_name).salt, p), [r["item"] for r in items])
        out = {
            "recommendation_id": rec_id,
            "model": loaded.served.name if level != "anonymous" else "popularity",
            "version": loaded.served.version,
            "personalized": level != "anonymous",
            "consent": level,
            "experiment": exp_name,
            "variant": variant,
            "items": items,
        }
        if note:
            out["note"] = note
        return out

    def similar_items(self, item: str, k: int = 10, *, model: str | None = None, rules: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Items like `item` for a product page (no personal data involved)."""
        if k < 1 or k > 1000:
            raise ValidationError("k", f"{k} is out of range; ask for 1 to 1000 items")
        st = self._serving_state()
        loaded = self.serving_model(model)
        if loaded.index.get(item, -1) < 0:
            raise NotFoundError(f"item: {item!r} is not in the catalogue of model {loaded.served.name!r}")
        items = st.top_items(loaded, None, "anonymous", k, {**dict(rules or {}), "exclude_items": [item]}, item)
        return {"item": item, "model": loaded.served.name, "version": loaded.served.version, "items": items}

    def explain_for(self, user_id: str, item: str, *, model: str | None = None) -> dict[str, Any]:
        """Why `item` would be shown to this user (their score, rank and the explanation)."""
        from privrec.explain.explanations import explain_items

        st = self._serving_state()
        loaded = self.serving_model(model)
        i = loaded.index.get(item, -1)
        if i < 0:
            raise NotFoundError(f"item: {item!r} is not in the catalogue of model {loaded.served.name!r}")
        p = self.pseudonymiser.pseudonymise(user_id)
        level = st.consent_of(p)
        history = st.history_for(loaded, p, level)
        personalized = level != "anonymous" and len(history) > 0
        scores = st.scores(loaded, history) if personalized else loaded.table.popularity
        s = float(scores[i])
        rank = int(np.count_nonzero(scores > s)) + 1
        exp = explain_items(loaded.served.model if personalized else None, history, [i], loaded.table, personalized=personalized)[0]
        return {"item": item, "model": loaded.served.name if personalized else "popularity", "version": loaded.served.version,
                "score": s, "rank": rank, "personalized": personalized, "explanation": exp.to_dict()}  # fmt: skip

    # ---- catalogue and search ------------------------------------------------------------------------
    def catalogue(self, *, q: str | None = None, category: str | None = None, limit: int = 24, offset: int = 0) -> dict[str, Any]:
        """Browse the catalogue of the default model: optional title filter and category prefix."""
        loaded = self.serving_model()
        t = loaded.table
        mask = np.ones(t.n_items, bool)
        if category:
            mask &= t.category_mask([category])
        if q:
            mask &= loaded.title_match(q) > 0
        idx = np.flatnonzero(mask)
        idx = idx[np.lexsort((idx, -t.popularity[idx]))]
        page = idx[offset : offset + limit]
        return {"total": int(len(idx)), "offset": offset, "limit": limit, "items": [loaded.item_dict(int(i)) for i in page]}

    def categories(self) -> list[dict[str, Any]]:
        """Categories of the default model's catalogue with their item counts."""
        t = self.serving_model().table
        counts = np.bincount(t.category[t.category >= 0], minlength=len(t.categories))
        return [{"category": c, "items": int(n)} for c, n in zip(t.categories, counts.tolist(), strict=True)]

    def item(self, item: str) -> dict[str, Any]:
        """One catalogue item (public data)."""
        loaded = self.serving_model()
        i = loaded.index.get(item, -1)
        if i < 0:
            raise NotFoundError(f"item: {item!r} is not in the catalogue")
        return loaded.item_dict(i)

    def search(self, query: str, k: int = 10, *, user_id: str | None = None, rules: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Product search: semantic where a text model is available, else title substring match.

        With a user who consented to personalisation, matches are re-ranked by their model score.
        """
        query = (query or "").strip()
        if not query:
            raise ValidationError("query", "is empty; type what you are looking for")
        if k < 1 or k > 1000:
            raise ValidationError("k", f"{k} is out of range; ask for 1 to 1000 items")
        st = self._serving_state()
        loaded = self.serving_model()
        match, mode, note = st.search_scores(loaded, query)
        level = "anonymous"
        p = None
        if user_id:
            p = self.pseudonymiser.pseudonymise(user_id)
            level = st.consent_of(p)
        personalized = bool(p) and level != "anonymous"
        items = st.top_items(loaded, p, level, k, {**dict(rules or {}), "exclude_seen": False, "exclude_purchased": False},
                             None, query=query, match=match, personal_search=personalized)  # fmt: skip
        return {"query": query, "mode": mode, "note": note, "personalized": personalized, "model": loaded.served.name,
                "version": loaded.served.version, "items": items}  # fmt: skip

    # ---- experiments ------------------------------------------------------------------------------------
    def create_experiment(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create and start an A/B experiment {name, variants: [{name, model, weight, params}], description}."""
        from privrec.experiments.assignment import Experiment

        exp = Experiment.from_dict({k: v for k, v in spec.items() if k in ("name", "variants", "description")})
        known = self.list_models()
        for v in exp.variants:
            if v.model is not None and not (known.get(v.model) or {}).get("active"):
                raise ValidationError("variants.model", f"variant {v.name!r} names model {v.model!r}, which has no active version")
            _rules_from(v.params, None)  # validates the params
        return self._serving_state().experiments.create(exp).to_dict(with_salt=False)

    def list_experiments(self) -> list[dict[str, Any]]:
        """All experiments (without their salts)."""
        return [e.to_dict(with_salt=False) for e in self._serving_state().experiments.list()]

    def get_experiment(self, name: str) -> dict[str, Any]:
        """One experiment (without its salt); NotFoundError if unknown."""
        return self._serving_state().experiments.get(name).to_dict(with_salt=False)

    def stop_experiment(self, name: str) -> dict[str, Any]:
        """Stop an experiment: shoppers get the default again; its data stays for the report."""
        return self._serving_state().experiments.set_status(name, "stopped").to_dict(with_salt=False)

    def experiment_report(self, name: str, *, alpha: float = 0.05) -> dict[str, Any]:
        """CTR, conversion and revenue per variant with intervals, tests and the SRM check."""
        from privrec.experiments.stats import analyse, counts_from_records

        store = self._serving_state().experiments
        exp = store.get(name)
        exposures, outcomes = store.records(name)
        data = counts_from_records([v.name for v in exp.variants], exposures, outcomes)
        return {"experiment": exp.to_dict(with_salt=False), **analyse(data, exp.shares, alpha=alpha)}

    def replay_experiment(self, name: str, *, k: int = 10, paired: bool = False, max_users: int | None = 5000) -> dict[str, Any]:
        """Estimate an experiment offline: leave-one-out on the store, variants refitted on the rest."""
        from privrec.data.splitters import leave_one_out_test
        from privrec.experiments.replay import replay

        exp = self._serving_state().experiments.get(name)
        ds = self.dataset()
        if ds.n_events == 0:
            raise ValidationError("store", "holds no events; nothing to replay")
        train, test = leave_one_out_test(ds)

        def fit(variant: Any, data: InteractionDataset) -> Recommender:
            mname = variant.model or self.default_model_name()
            version = (self.models_dir / mname / ACTIVE_FILE).read_text().strip()
            cfg = json.loads((self.models_dir / mname / version / "config.json").read_text())["config"]
            return create_model(mname, **cfg).fit(data, rng=42)

        report = replay(exp, train, test, fit, k=k, paired=paired, max_users=max_users)
        report["experiment"] = exp.to_dict(with_salt=False)
        report["replay"]["protocol"] = "leave-one-out: each shopper's last event is held out"
        return report

    # ---- privacy ----------------------------------------------------------------------------------------
    def privacy_budget(self) -> dict[str, Any]:
        """The privacy-budget ledger (where the ledger module is present) and each served model's guarantee."""
        out: dict[str, Any] = {"ledger": None, "models": {}}
        try:
            from privrec.privacy import ledger as ledger_mod  # issue 4; optional until it lands
        except ImportError:
            ledger_mod = None
        if ledger_mod is not None:
            out["ledger"] = _ledger_summary(ledger_mod, self.data_dir)
        if out["ledger"] is None:
            out["ledger_note"] = "no privacy-budget ledger in this data directory yet (no differentially private release recorded)"
        for name, info in self.model_versions().items():
            out["models"][name] = {"version": info["active"], "privacy": info["privacy"]}
        return out

    def _forget_serving_state(self, pseudonym: str) -> dict[str, Any]:
        """Erase a pseudonym's consent record, in-memory history, cached lists and experiment rows."""
        state = self.__dict__.get("_serving")
        consent = state.consent if state is not None else _consent_backend(self.data_dir)
        out: dict[str, Any] = {"consent_record_deleted": bool(consent.delete(pseudonym))}
        if state is not None:
            state.consent_cache.pop(pseudonym, None)
            out["cached_results_deleted"] = state.history.drop(pseudonym)
        exp_path = self.data_dir / "experiments.sqlite"
        if exp_path.exists():
            from privrec.experiments.assignment import unit_id

            store = state.experiments if state is not None else _open_experiments(exp_path)
            units = {e.name: unit_id(e.salt, pseudonym) for e in store.list()}
            out["experiment_rows_deleted"] = store.erase_units(units)
            if state is None:
                store.close()
        return out


# ==== serving helpers (issue 5) ==================================================================
CONSENT_LEVELS: tuple[str, ...] = ("personalized", "purchases_only", "anonymous")
DEFAULT_CONSENT = "personalized"
# Outcome of an event that carries a recommendation id: a view of a recommended item is a click.
_OUTCOME_OF = {"view": "click", "cart": "cart", "purchase": "purchase"}
_RULE_FIELDS = (
    "exclude_items", "exclude_purchased", "exclude_seen", "include_categories", "exclude_categories",
    "in_stock", "price_min", "price_max", "diversity", "category_cap",
)  # fmt: skip
_SERVING_INIT_LOCK = threading.Lock()
_PURCHASE_CODE = EVENT_CODE["purchase"]


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _freeze(rules: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple, set)) else v) for k, v in rules.items()))


def _rules_from(spec: Mapping[str, Any], loaded: LoadedModel | None) -> Any:
    """A `Rules` object from request fields (item keys mapped to the model's indices)."""
    from privrec.models.rules import Rules

    unknown = sorted(set(spec) - set(_RULE_FIELDS))
    if unknown:
        raise ValidationError(unknown[0], f"is not a rule; the rules are {', '.join(_RULE_FIELDS)}")
    kw: dict[str, Any] = {}
    for key, v in spec.items():
        if v is None:
            continue
        if key == "exclude_items":
            keys = [str(x) for x in v]
            kw[key] = tuple(i for i in (loaded.index.get(x, -1) for x in keys) if i >= 0) if loaded is not None else ()
        elif key in ("include_categories", "exclude_categories"):
            kw[key] = tuple(str(x) for x in v)
        elif key in ("exclude_purchased", "exclude_seen", "in_stock"):
            kw[key] = bool(v)
        elif key in ("price_min", "price_max", "diversity"):
            kw[key] = float(v)
        elif key == "category_cap":
            kw[key] = int(v)
    return Rules(**kw)


@dataclass
class LoadedModel:
    """A model version ready to serve: the artifact, its compiled catalogue and item index."""

    served: ServedModel
    table: Any  # privrec.models.rules.ItemTable
    index: dict[str, int]
    pop_ranking: np.ndarray
    load_seconds: float
    _titles: list[str] | None = None

    _static: list[dict[str, Any] | None] | None = None

    def item_dict(self, i: int, score: float | None = None, explanation: dict[str, Any] | None = None) -> dict[str, Any]:
        """Public facts of item `i` (plus its score and explanation) as JSON-ready data."""
        if self._static is None:
            self._static = [None] * self.table.n_items
        base = self._static[i]
        if base is None:
            t = self.table
            price = float(t.price[i])
            base = self._static[i] = {
                "item": t.keys[i],
                "title": t.titles[i] or None,
                "category": t.category_name(i),
                "price": price if np.isfinite(price) else None,
                "in_stock": bool(t.in_stock[i]),
            }
        d = dict(base)
        if score is not None:
            d["score"] = round(float(score), 6)
        if explanation is not None:
            d["explanation"] = explanation
        return d

    def title_match(self, query: str) -> np.ndarray:
        """Substring match of the query's words in titles: 0 no match, 1 all words, 1.5 the whole phrase."""
        if self._titles is None:
            t = self.table
            self._titles = [f"{t.titles[i]} {t.category_name(i) or ''}".lower() for i in range(t.n_items)]
        q = " ".join(query.lower().split())
        words = q.split()
        out = np.zeros(len(self._titles), np.float32)
        for i, title in enumerate(self._titles):
            if all(w in title for w in words):
                out[i] = 1.5 if q in title else 1.0
        return out


class _HistoryIndex:
    """Every user's events in memory by pseudonym (item keys and type codes, oldest first), the
    number of distinct users per item, and a generation per user that changes with their data."""

    def __init__(self) -> None:
        self._users: dict[str, tuple[list[str], list[int]]] = {}
        self._gen: dict[str, int] = {}
        self._pop: dict[str, int] = {}
        self._lock = threading.Lock()
        self._store: EventStore | None = None
        self.preloaded = False
        self.loaded = False
        self.n_events = 0

    @property
    def n_users(self) -> int:
        """Users held in memory."""
        return len(self._users)

    def load(self, store: EventStore, *, preload_max_events: int = 5_000_000) -> None:
        """Read every history from the store (or, above the limit, read users on demand)."""
        with self._lock:
            if self.loaded:
                return
            self._store = store
            n = store.count()
            if n <= preload_max_events:
                ev = store.events()
                codes = ev["type"].map(EVENT_CODE).fillna(0).astype(np.int8).to_numpy()
                users = ev["user"].astype(str).to_numpy(dtype=object)
                items = ev["item"].astype(str).to_numpy(dtype=object)
                ucodes, uniq = pd.factorize(users)
                order = np.argsort(ucodes, kind="stable")
                bounds = np.searchsorted(ucodes[order], np.arange(len(uniq) + 1))
                for u, p in enumerate(uniq):
                    sel = order[bounds[u] : bounds[u + 1]]
                    keys = items[sel].tolist()
                    self._users[str(p)] = (keys, codes[sel].tolist())
                    for k in set(keys):
                        self._pop[k] = self._pop.get(k, 0) + 1
                self.n_events = len(ev)
                self.preloaded = True
            else:
                counts = store.events().groupby("item")["user"].nunique()
                self._pop = {str(k): int(v) for k, v in counts.items()}
                self.n_events = n
            self.loaded = True

    def get(self, pseudonym: str) -> tuple[list[str], list[int]]:
        """(item keys, type codes) of a pseudonym; empty lists for an unknown one."""
        got = self._users.get(pseudonym)
        if got is not None:
            return got
        if self.preloaded or self._store is None:
            return [], []
        ev = self._store.events(user=pseudonym)
        got = (ev["item"].astype(str).tolist(), ev["type"].map(EVENT_CODE).fillna(0).astype(int).tolist())
        with self._lock:
            if len(self._users) > 200_000:
                self._users.pop(next(iter(self._users)))
            self._users[pseudonym] = got
        return got

    def add(self, accepted: pd.DataFrame) -> None:
        """Append gated events (pseudonymous users) and invalidate those users' cached lists."""
        users = accepted["user"].astype(str).tolist()
        items = accepted["item"].astype(str).tolist()
        types = accepted["type"].map(EVENT_CODE).fillna(0).astype(int).tolist()
        with self._lock:
            for p, it, t in zip(users, items, types, strict=True):
                got = self._users.get(p)
                if got is None:
                    if not self.preloaded and self._store is not None:
                        self._gen[p] = self._gen.get(p, 0) + 1  # read again from the store next time
                        continue
                    got = self._users[p] = ([], [])
                if it not in got[0]:
                    self._pop[it] = self._pop.get(it, 0) + 1
                got[0].append(it)
                got[1].append(t)
                self._gen[p] = self._gen.get(p, 0) + 1
            self.n_events += len(users)

    def drop(self, pseudonym: str) -> bool:
        """Forget a pseudonym's history; returns whether anything was held."""
        with self._lock:
            got = self._users.pop(pseudonym, None)
            self._gen[pseudonym] = self._gen.get(pseudonym, 0) + 1
            if got is None:
                return False
            for k in set(got[0]):
                self._pop[k] = max(0, self._pop.get(k, 0) - 1)
            self.n_events -= len(got[0])
            return True

    def bump(self, pseudonym: str) -> None:
        """Invalidate a pseudonym's cached lists (consent changed)."""
        with self._lock:
            self._gen[pseudonym] = self._gen.get(pseudonym, 0) + 1

    def generation(self, pseudonym: str) -> int:
        """Changes whenever the pseudonym's data or consent changes."""
        return self._gen.get(pseudonym, 0)

    def popularity_for(self, keys: list[str]) -> np.ndarray:
        """Distinct users per item key."""
        pop = self._pop
        return np.fromiter((pop.get(k, 0) for k in keys), dtype=np.float64, count=len(keys))


class _ConsentBook:
    """Consent levels by pseudonym in `<data_dir>/consent.json` (mode 0600), the fallback until the
    privacy layer's consent registry is present."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._levels: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            raise ValidationError("consent.json", "is not valid JSON; restore it from a backup") from None

    def get(self, pseudonym: str) -> str | None:
        rec = self._levels.get(pseudonym)
        return None if rec is None else str(rec["level"])

    def set(self, pseudonym: str, level: str) -> None:
        with self._lock:
            self._levels[pseudonym] = {"level": level, "updated_at": _now_iso()}
            self._write()

    def delete(self, pseudonym: str) -> bool:
        with self._lock:
            if self._levels.pop(pseudonym, None) is None:
                return False
            self._write()
            return True

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._levels))
        tmp.chmod(0o600)
        tmp.replace(self.path)


class _ConsentAdapter:
    """The privacy layer's consent registry behind _ConsentBook's three methods."""

    def __init__(self, registry: Any) -> None:
        self._r = registry

    def get(self, pseudonym: str) -> str | None:
        v = self._r.get(pseudonym)
        v = getattr(v, "level", v)
        return None if v is None else str(getattr(v, "value", v))

    def set(self, pseudonym: str, level: str) -> None:
        self._r.set(pseudonym, level)

    def delete(self, pseudonym: str) -> bool:
        for name in ("delete", "erase", "forget", "remove"):
            fn = getattr(self._r, name, None)
            if callable(fn):
                return bool(fn(pseudonym))
        return False


def _consent_backend(data_dir: Path) -> Any:
    """The consent registry of the privacy layer where present (guarded), else `_ConsentBook`."""
    try:
        from privrec.privacy import consent as mod  # issue 4; optional until it lands
    except ImportError:
        mod = None
    if mod is not None:
        for cname in ("ConsentRegistry", "ConsentStore", "ConsentBook", "ConsentLedger"):
            cls = getattr(mod, cname, None)
            if cls is not None and hasattr(cls, "from_data_dir") and hasattr(cls, "get") and hasattr(cls, "set"):
                try:
                    return _ConsentAdapter(cls.from_data_dir(data_dir))
                except Exception as exc:  # fall back rather than refuse to serve
                    logger.warning("consent registry unavailable error=%s; using consent.json", type(exc).__name__)
    return _ConsentBook(data_dir / "consent.json")


def _ledger_summary(mod: Any, data_dir: Path) -> dict[str, Any] | None:
    """The ledger's own summary, whatever its class is called (guarded; None if unreadable)."""
    for cname in ("PrivacyLedger", "Ledger", "BudgetLedger"):
        cls = getattr(mod, cname, None)
        if cls is None:
            continue
        for ctor in ("from_data_dir", "open"):
            make = getattr(cls, ctor, None)
            if make is None:
                continue
            try:
                led = make(data_dir)
                for m in ("summary", "to_dict", "report"):
                    fn = getattr(led, m, None)
                    if callable(fn):
                        return json.loads(json.dumps(fn(), default=str))
            except Exception as exc:
                logger.warning("ledger unreadable error=%s", type(exc).__name__)
                return None
    return None


def _open_experiments(path: Path) -> Any:
    from privrec.experiments.store import ExperimentStore

    return ExperimentStore(path)


class _RecCache:
    """A bounded LRU of finished recommendation lists."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._d: OrderedDict[tuple[Any, ...], list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Any, ...]) -> list[dict[str, Any]] | None:
        got = self._d.get(key)
        if got is None:
            self.misses += 1
            return None
        self.hits += 1
        return got

    def put(self, key: tuple[Any, ...], value: list[dict[str, Any]]) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._d[key] = value
            if len(self._d) > self.max_entries:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


class _ServingState:
    """The in-memory side of serving for one RecSys."""

    def __init__(self, rs: RecSys) -> None:
        self.rs = rs
        self.history = _HistoryIndex()
        self.loaded: dict[str, LoadedModel] = {}
        self.load_lock = threading.Lock()
        self.swap_lock = threading.Lock()
        self.cache = _RecCache()
        self.consent = _consent_backend(rs.data_dir)
        self.consent_cache: dict[str, str] = {}
        self.gate = rs.gate
        self._experiments: Any = None
        self.default_name: str | None = None
        self._versions: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()

    # -- parts ------------------------------------------------------------------------------------
    @property
    def experiments(self) -> Any:
        if self._experiments is None:
            with self.load_lock:
                if self._experiments is None:
                    self._experiments = _open_experiments(self.rs.data_dir / "experiments.sqlite")
        return self._experiments

    def experiments_ready(self) -> bool:
        return self._experiments is not None or (self.rs.data_dir / "experiments.sqlite").exists()

    def consent_of(self, pseudonym: str) -> str:
        lvl = self.consent_cache.get(pseudonym)
        if lvl is None:
            lvl = self.consent.get(pseudonym) or DEFAULT_CONSENT
            if len(self.consent_cache) > 500_000:
                self.consent_cache.clear()
            self.consent_cache[pseudonym] = lvl
        return lvl

    def load(self, name: str, version: str) -> LoadedModel:
        """Load a version (or reuse it if it was loaded recently) with its compiled catalogue."""
        from privrec.models.rules import ItemTable

        got = self._versions.get((name, version))
        if got is not None:
            return got
        if not self.history.loaded:
            self.history.load(self.rs.store)
        t0 = time.perf_counter()
        path = self.rs.models_dir / name / version
        if not (path / "config.json").exists():
            raise NotFoundError(f"model {name!r} has no version {version!r}; list them with GET /v1/models")
        # Read the artifact once in chunks first (file reads release the GIL): the loader then
        # copies from the page cache instead of holding the GIL through the disk reads, so
        # requests keep flowing while a large model (EASE: ~1 GB) loads for a hot swap.
        for f in path.glob("*.safetensors"):
            with open(f, "rb", buffering=0) as fh:
                buf = bytearray(8 << 20)
                while fh.readinto(buf):
                    time.sleep(0)
        model = Recommender.load(path)
        items = Vocabulary(json.loads((path / "items.json").read_text()))
        meta = InteractionDataset._align_meta(items, self.rs.store.items())
        served = ServedModel(name=name, version=version, model=model, items=items, item_meta=meta)
        keys = items.keys
        table = ItemTable.from_meta(meta, popularity=self.history.popularity_for(keys))
        got = LoadedModel(served=served, table=table, index={k: i for i, k in enumerate(keys)},
                          pop_ranking=table.popularity_ranking(), load_seconds=round(time.perf_counter() - t0, 3))  # fmt: skip
        self._versions[(name, version)] = got
        # keep the two latest versions per model, so a swap back is instant
        same = [key for key in self._versions if key[0] == name]
        for key in same[:-2]:
            self._versions.pop(key, None)
        return got

    def refresh_popularity(self) -> None:
        """Recount popularity from the in-memory histories (new events move it)."""
        for loaded in list(self.loaded.values()):
            pop = self.history.popularity_for(loaded.table.keys)
            loaded.table.popularity[:] = pop
            loaded.pop_ranking = loaded.table.popularity_ranking()

    # -- scoring ------------------------------------------------------------------------------------
    def history_for(self, loaded: LoadedModel, pseudonym: str | None, level: str) -> UserHistory:
        if pseudonym is None or level == "anonymous":
            return UserHistory.of([])
        keys, types = self.history.get(pseudonym)
        if not keys:
            return UserHistory.of([])
        if level == "purchases_only":
            pairs = [(k, t) for k, t in zip(keys, types, strict=True) if t == _PURCHASE_CODE]
            keys, types = [k for k, _ in pairs], [t for _, t in pairs]
        idx_map = loaded.index
        w_of = self.rs.settings.event_weights
        items, ws, ts = [], [], []
        for k, t in zip(keys, types, strict=True):
            i = idx_map.get(k)
            if i is not None:
                items.append(i)
                ts.append(t)
                ws.append(float(w_of.get(EVENT_TYPES[t], 1.0)))
        return UserHistory(items=np.asarray(items, np.int64), weights=np.asarray(ws, np.float32), event_types=np.asarray(ts, np.int8))

    def scores(self, loaded: LoadedModel, history: UserHistory) -> np.ndarray:
        from privrec.models.rules import fast_scores

        s = fast_scores(loaded.served.model, history.items, history.weights if history.weights is not None else np.ones(len(history), np.float32))
        return s if s is not None else loaded.served.model.score(history)

    def search_scores(self, loaded: LoadedModel, query: str) -> tuple[np.ndarray, str, str | None]:
        """Per item, how well it matches the query (0: not at all), the mode and a note."""
        for cand in self.loaded.values():
            fn = getattr(cand.served.model, "search_scores", None) or getattr(cand.served.model, "score_query", None)
            if callable(fn) and cand.served.items.keys == loaded.served.items.keys:
                try:
                    s = np.asarray(fn(query), dtype=np.float32)
                    if s.shape == (loaded.table.n_items,):
                        top = np.zeros_like(s)
                        best = np.argsort(-s)[:200]
                        top[best] = np.maximum(s[best] - s[best].min(), 0) + 1.0
                        return top, "semantic", f"semantic search by model {cand.served.name!r}"
                except Exception as exc:
                    logger.warning("semantic search failed model=%s error=%s", cand.served.name, type(exc).__name__)
        return loaded.title_match(query), "substring", "title substring search (no semantic search model is served)"

    def top_items(
        self,
        loaded: LoadedModel,
        pseudonym: str | None,
        level: str,
        k: int,
        rules_spec: Mapping[str, Any],
        context_item: str | None,
        *,
        query: str | None = None,
        match: np.ndarray | None = None,
        personal_search: bool = False,
    ) -> list[dict[str, Any]]:
        """The finished list (items with explanations), from the cache when nothing changed."""
        from privrec.explain.explanations import explain_items
        from privrec.models.rules import apply_rules

        key = None
        if query is None:
            gen = self.history.generation(pseudonym) if pseudonym else 0
            key = (pseudonym, loaded.served.name, loaded.served.version, gen, level, k, _freeze(rules_spec), context_item)
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        rules = _rules_from(rules_spec, loaded)
        table = loaded.table
        history = self.history_for(loaded, pseudonym, level)
        ctx = None
        if context_item is not None:
            ctx = loaded.index.get(context_item, -1)
            if ctx < 0:
                raise NotFoundError(f"context_item: {context_item!r} is not in the catalogue")
        purchased = history.items[history.event_types == _PURCHASE_CODE] if len(history) and history.event_types is not None else None
        seen = history.items if len(history) else None
        personal = len(history) > 0
        model = loaded.served.model
        if match is not None:
            s = np.where(match > 0, match, -np.inf).astype(np.float32)
            if personal_search and personal:
                ps = self.scores(loaded, history)
                m = match > 0
                if m.any():
                    lo, hi = float(ps[m].min()), float(ps[m].max())
                    if hi > lo:
                        s[m] += 0.5 * (ps[m] - lo) / (hi - lo)
            res = apply_rules(s, k, rules, table, purchased=purchased, seen=seen, floor=-np.inf)
            exps = explain_items(model if personal_search else None, history, res.items, table, personalized=personal_search,
                                 query=query, matched=match[res.items] > 0)  # fmt: skip
        elif personal or ctx is not None:
            h = history
            if ctx is not None:
                w = float(self.rs.settings.event_weights.get("purchase", 5.0))
                h = UserHistory(
                    items=np.append(history.items, ctx).astype(np.int64),
                    weights=np.append(history.weights if history.weights is not None else np.ones(len(history), np.float32), w).astype(np.float32),
                    event_types=np.append(history.event_types if history.event_types is not None else np.zeros(len(history), np.int8),
                                          EVENT_CODE["view"]).astype(np.int8),  # fmt: skip
                )
                seen = np.append(seen if seen is not None else np.empty(0, np.int64), ctx)
            s = self.scores(loaded, h)
            res = apply_rules(s, k, rules, table, purchased=purchased, seen=seen)
            exps = explain_items(model, h, res.items, table, personalized=True, filled=res.filled, context_item=ctx)
        else:
            res = apply_rules(table.popularity, k, rules, table, purchased=purchased, seen=seen, ranking=loaded.pop_ranking)
            exps = explain_items(None, history, res.items, table, personalized=False)
        items = [loaded.item_dict(i, sc, e.to_dict()) for i, sc, e in zip(res.items.tolist(), res.scores.tolist(), exps, strict=True)]
        if key is not None:
            self.cache.put(key, items)
        return items
