"""The RecSys facade (layer 7): ingest, train, recommend, explain, forget, export.

Everything the CLI and the HTTP server do goes through here, so privacy rules live in one
place: raw user ids are pseudonymised on entry and never leave this object.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import NotFoundError, ValidationError
from privrec.core.settings import Settings
from privrec.core.types import EVENT_CODE, UserHistory
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
