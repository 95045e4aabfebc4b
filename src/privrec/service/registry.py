"""Model versions on disk: save, activate, list, the default model, and deleting old versions.

Layout: ``models/<name>/v<stamp>-<n>/`` holds one version (the model's own files, its item
vocabulary ``items.json`` and, where known, the record of the events it was trained on);
``models/<name>/ACTIVE`` names the served version; ``models/DEFAULT`` the model served when a
request names none. Every pointer is swapped atomically (write a temp file, rename).
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import ConflictError, NotFoundError
from privrec.core.files import private_dir, write_private
from privrec.data.vocab import Vocabulary
from privrec.models.base import (
    CONFIG_FILE,
    DERIVED_FILE,
    STATE_FILE,
    Recommender,
    has_artifact,
    read_config,
)
from privrec.privacy.sealed import FILE_SUFFIX, read_sealed, write_sealed

logger = logging.getLogger(__name__)

ACTIVE_FILE = "ACTIVE"
DEFAULT_FILE = "DEFAULT"
ITEMS_FILE = "items.json"
# Beside each saved version: what it was trained on, so an erasure can take out exactly the
# events the model saw. Event ids are keyed HMACs; only their first 64 bits are kept.
TRAINED_EVENTS_FILE = "trained_events.npy"
# In a version that still holds erased shoppers (a model that cannot unlearn exactly): it may go on
# serving until the retrain deadline if it is the active one, but can never be activated again.
QUARANTINE_FILE = "QUARANTINED"
TRAINING_FILE = "training.json"
# ``models/<name>/HISTORY``: the versions activated, oldest first (what a rollback goes back on);
# ``ROLLED_BACK`` in a version: why it was rolled back (a rollback never goes back to it)
HISTORY_FILE = "HISTORY"
ROLLED_BACK_FILE = "ROLLED_BACK"


@dataclass(frozen=True)
class TrainingRecord:
    """What a version was trained on: 64-bit prefixes of event ids, key generation, weights."""

    event_ids: np.ndarray  # sorted unique uint64
    generation: int | None
    event_weights: dict[str, float]

    @staticmethod
    def _keys(event_ids: Iterable[str]) -> np.ndarray:
        return np.fromiter((int(str(e)[:16], 16) for e in event_ids), dtype=np.uint64)

    @classmethod
    def of(
        cls, events: pd.DataFrame, generation: int | None, weights: Mapping[str, float]
    ) -> TrainingRecord:
        """The record of training on `events` (their `event_id` column)."""
        return cls(np.unique(cls._keys(events["event_id"])), generation, dict(weights))

    def contains(self, event_ids: Iterable[str]) -> np.ndarray:
        """Per event id, whether the model was trained on it."""
        keys = self._keys(event_ids)
        if not len(self.event_ids):
            return np.zeros(len(keys), bool)
        pos = np.minimum(np.searchsorted(self.event_ids, keys), len(self.event_ids) - 1)
        return np.asarray(self.event_ids[pos] == keys)

    def without(self, event_ids: Iterable[str]) -> TrainingRecord:
        """The record after the given events were taken out of the model."""
        gone = np.unique(self._keys(event_ids))
        kept = np.setdiff1d(self.event_ids, gone, assume_unique=True)
        return TrainingRecord(kept, self.generation, self.event_weights)

    def write(self, path: Path, *, key: bytes | None = None) -> None:
        """Write the record into a version folder (sealed ``*.sealed`` files with `key`)."""
        # event-id prefixes can be matched to a shopper's stored events: private files
        buf = io.BytesIO()
        np.save(buf, self.event_ids, allow_pickle=False)
        doc = {
            "events": len(self.event_ids),
            "pseudonym_generation": self.generation,
            "event_weights": self.event_weights,
        }
        if key is None:
            write_private(path / TRAINED_EVENTS_FILE, buf.getvalue())
            write_private(path / TRAINING_FILE, json.dumps(doc))
        else:
            write_sealed(path / (TRAINED_EVENTS_FILE + FILE_SUFFIX), buf.getvalue(), key)
            write_sealed(path / (TRAINING_FILE + FILE_SUFFIX), json.dumps(doc).encode(), key)

    @classmethod
    def read(cls, path: Path, *, key: bytes | None = None) -> TrainingRecord | None:
        """The record of a version folder, or None where there is none (or it is unreadable).

        Sealed files are read with `key`; plaintext ones of older versions as they are.

        Raises:
            SealedDataError: a sealed record that the key does not open (changed, or another key).
        """
        sealed = path / (TRAINING_FILE + FILE_SUFFIX)
        try:
            if key is not None and sealed.exists():
                doc = json.loads(read_sealed(sealed, key))
                raw = read_sealed(path / (TRAINED_EVENTS_FILE + FILE_SUFFIX), key)
                ids = np.load(io.BytesIO(raw), allow_pickle=False)
            else:
                doc = json.loads((path / TRAINING_FILE).read_text())
                ids = np.load(path / TRAINED_EVENTS_FILE, allow_pickle=False)
        except (OSError, ValueError):
            return None
        weights = dict(doc.get("event_weights") or {})
        return cls(ids.astype(np.uint64), doc.get("pseudonym_generation"), weights)


@dataclass(frozen=True)
class ModelInfo:
    """One saved model: its versions, the active one and its privacy guarantee."""

    name: str
    versions: list[str]
    active: str | None
    default: bool
    privacy: dict[str, Any] | None
    quarantined: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "versions": self.versions,
            "active": self.active,
            "default": self.default,
            "privacy": self.privacy,
            "quarantined": self.quarantined,
        }


class ModelRegistry:
    """The versioned model artifacts of one data directory.

    Args:
        models_dir: the data directory's ``models`` folder.
        key: the sidecar key: artifacts and training records are saved sealed with it and
            read back with it (None: plaintext, as older versions were saved).
    """

    def __init__(self, models_dir: Path, *, key: bytes | None = None) -> None:
        self.models_dir = models_dir
        self.key = key
        # (model, version) -> the fitted object still in memory, so an erasure can update it
        # exactly without loading it first
        self.live: dict[tuple[str, str], Recommender] = {}
        self._deleters: list[threading.Thread] = []
        # told the model's name after each activation or default change (the other API workers
        # of a shared store hear of it through `privrec.service.coordination`)
        self.on_change: list[Callable[[str], None]] = []

    # ---- versions ---------------------------------------------------------------------------
    def path(self, name: str, version: str) -> Path:
        """The folder of a version; NotFoundError if it does not exist."""
        path = self.models_dir / name / version
        if not has_artifact(path):
            raise NotFoundError(
                f"model {name!r} has no version {version!r}; list them with `privrec models`"
            )
        return path

    def save(
        self,
        model: Recommender,
        items: Vocabulary,
        *,
        name: str | None = None,
        training: TrainingRecord | None = None,
        derived: bool = True,
    ) -> Path:
        """Save a fitted model as a new (inactive) version with its item vocabulary.

        `training` lets an erasure unlearn exactly later; `derived=False` leaves the derived
        arrays to `model.save_derived` (see `Recommender.save`).
        """
        base = self.models_dir / (name or model.name)
        base.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        numbers = [p.name.rsplit("-", 1)[-1] for p in base.glob("v*-*")]
        n = max([int(x) for x in numbers if x.isdigit()] + [0]) + 1
        version = f"{stamp}-{n:03d}"
        path = base / f"v{version}"
        tmp = base / f".tmp-{version}"
        try:
            self._save_model(model, private_dir(tmp), derived)
            # item keys are public catalogue ids; no user data goes into an artifact
            (tmp / ITEMS_FILE).write_text(json.dumps(items.keys))
            if training is not None:
                training.write(tmp, key=self.key)
            for f in tmp.iterdir():
                f.chmod(0o600)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a half-written version must not linger
            raise
        return path

    def _save_model(self, model: Recommender, path: Path, derived: bool) -> None:
        """`model.save` into `path`, sealed with the registry's key."""
        if self.key is None:
            model.save(path, derived=derived)
        elif "key" in inspect.signature(model.save).parameters:
            model.save(path, derived=derived, key=self.key)
        else:
            # a subclass whose save() does not take a key yet (it edits config.json after the
            # base save): it writes into the hidden temporary version folder, sealed right after
            model.save(path, derived=derived)
            seal_artifact(path, self.key)

    def training_record(self, name: str, version: str) -> TrainingRecord | None:
        """The record of the events a saved version was trained on (None where there is none)."""
        return TrainingRecord.read(self.path(name, version), key=self.key)

    def load_path(self, path: Path) -> Recommender:
        """The model saved in version folder `path` (decrypted with the registry's key)."""
        return Recommender.load(path, key=self.key)

    def load(self, name: str, version: str) -> tuple[Recommender, Vocabulary]:
        """A saved version's model and item vocabulary."""
        path = self.path(name, version)
        items = Vocabulary(json.loads((path / ITEMS_FILE).read_text()))
        return Recommender.load(path, key=self.key), items

    def items_of(self, name: str, version: str) -> Vocabulary:
        """The item vocabulary of a saved version."""
        return Vocabulary(json.loads((self.path(name, version) / ITEMS_FILE).read_text()))

    def config_of(self, name: str, version: str) -> dict[str, Any]:
        """A saved version's `config.json` (model name, hyper-parameters, privacy guarantee)."""
        return read_config(self.path(name, version), self.key)

    # ---- pointers -------------------------------------------------------------------------------
    def activate(self, name: str, version: str) -> None:
        """Make `version` the active version of model `name` (atomic pointer swap).

        Raises:
            ConflictError: the version holds erased shoppers (it is quarantined) and is not the
                one already active: retrain the model instead.
        """
        path = self.path(name, version)
        if self.config_of(name, version).get("reproducible_noise"):
            raise ConflictError(
                f"model {name!r} version {version!r} was trained with reproducible (seeded) noise: "
                "it is not a differentially private release and cannot be served; retrain it"
            )
        if (path / QUARANTINE_FILE).exists() and self.active(name) != version:
            raise ConflictError(
                f"model {name!r} version {version!r} still holds erased shoppers and can never "
                f"be activated again; retrain it (`privrec train --model {name}`)"
            )
        base = path.parent
        previous = self.active(name)
        tmp = base / f".{ACTIVE_FILE}.tmp"
        tmp.write_text(version)
        tmp.replace(base / ACTIVE_FILE)
        if previous != version:
            self._remember(name, version)
        (path / ROLLED_BACK_FILE).unlink(missing_ok=True)  # activated on purpose: good again
        self._changed(name)

    def _changed(self, name: str) -> None:
        for tell in self.on_change:
            tell(name)

    # ---- activation history and rollback --------------------------------------------------------
    def history(self, name: str) -> list[str]:
        """The versions of `name` activated so far, oldest first (some may be gone since)."""
        f = self.models_dir / name / HISTORY_FILE
        if not f.exists():
            return []
        try:
            return [str(v) for v in json.loads(f.read_text())]
        except ValueError:
            return []

    def _remember(self, name: str, version: str) -> None:
        versions = [*self.history(name), version][-100:]
        write_private(self.models_dir / name / HISTORY_FILE, json.dumps(versions))

    def rolled_back(self, name: str, version: str) -> str | None:
        """Why `version` was rolled back, or None."""
        f = self.models_dir / name / version / ROLLED_BACK_FILE
        return f.read_text() if f.exists() else None

    def previous_good(self, name: str) -> str | None:
        """The version a rollback of `name` returns to: the latest earlier-activated version
        that still exists, is not quarantined, was not rolled back and is not the active one."""
        active = self.active(name)
        for v in reversed(self.history(name)):
            path = self.models_dir / name / v
            if v == active or not has_artifact(path):
                continue
            if (path / QUARANTINE_FILE).exists() or (path / ROLLED_BACK_FILE).exists():
                continue
            return v
        return None

    def rollback(
        self,
        name: str,
        *,
        reason: str = "rolled back by the operator",
        activate: Callable[[str, str], Any] | None = None,
    ) -> dict[str, Any]:
        """Go back to `name`'s previous good version and mark the current one rolled back.

        Args:
            name: the model.
            reason: recorded in the rolled-back version (a later rollback skips it).
            activate: how to switch (default `activate`, the pointer; the serving layer passes
                its hot swap so that requests get the old version at once).

        Returns:
            {"model", "active", "previous", "reason"}.

        Raises:
            ConflictError: there is no earlier good version (older versions are deleted when an
                erasure reaches a model, and the first version has none).
        """
        current = self.require_active(name)
        target = self.previous_good(name)
        if target is None:
            raise ConflictError(
                f"model {name!r}: no earlier good version to roll back to (versions deleted by "
                "an erasure or never activated are not candidates); activate one with "
                f"`privrec activate {name} VERSION` or retrain it"
            )
        (activate or self.activate)(name, target)
        write_private(self.models_dir / name / current / ROLLED_BACK_FILE, reason)
        return {"model": name, "active": target, "previous": current, "reason": reason}

    def active(self, name: str) -> str | None:
        """The active version of `name`, or None."""
        f = self.models_dir / name / ACTIVE_FILE
        return f.read_text().strip() if f.exists() else None

    def require_active(self, name: str) -> str:
        """The active version of `name`; NotFoundError naming the fix otherwise."""
        version = self.active(name)
        if version is None:
            raise NotFoundError(
                f"model {name!r} has no active version; train it first "
                f"(`privrec train --model {name}` or POST /v1/models/{name}/train)"
            )
        return version

    def default_name(self) -> str | None:
        """The model served when a request names none, or None before any training."""
        f = self.models_dir / DEFAULT_FILE
        return f.read_text().strip() if f.exists() else None

    def set_default(self, name: str) -> None:
        """Make `name` the default model."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.models_dir / f".{DEFAULT_FILE}.tmp"
        tmp.write_text(name)
        tmp.replace(self.models_dir / DEFAULT_FILE)
        self._changed(name)

    def models(self) -> dict[str, ModelInfo]:
        """Every saved model with its versions, the active one and its privacy guarantee."""
        out: dict[str, ModelInfo] = {}
        if not self.models_dir.exists():
            return out
        default = self.default_name()
        for base in sorted(p for p in self.models_dir.iterdir() if p.is_dir()):
            versions = sorted(p.name for p in base.glob("v*") if has_artifact(p))
            active = self.active(base.name)
            privacy = None
            if active is not None:
                try:
                    privacy = self.config_of(base.name, active).get("privacy")
                except (OSError, ValueError, NotFoundError):
                    privacy = None
            quarantined = [v for v in versions if (base / v / QUARANTINE_FILE).exists()]
            out[base.name] = ModelInfo(
                base.name, versions, active, base.name == default, privacy, quarantined
            )
        return out

    # ---- deletion -------------------------------------------------------------------------------
    def drop_versions(self, name: str, *, keep: str) -> int:
        """Delete every version of `name` but `keep` (they hold an erased user's influence).

        Each is renamed out of the way at once (no longer listed, loadable or activatable) and
        its files are unlinked on a background thread: unlinking a 1 GB EASE artifact takes
        about 0.4 s. Returns the number of versions removed.
        """
        base = self.models_dir / name
        return self._trash(name, [p.name for p in base.glob("v*") if p.is_dir() and p.name != keep])

    def _trash(self, name: str, versions: list[str]) -> int:
        base = self.models_dir / name
        doomed = []
        for v in versions:
            trash = base / f".trash-{v}"
            (base / v).rename(trash)
            doomed.append(trash)
            self.live.pop((name, v), None)
        renamed = len(doomed)
        doomed += [p for p in base.glob(".trash-*") if p not in doomed]  # an interrupted run's
        if doomed:
            t = threading.Thread(
                target=_remove_all, args=(doomed,), name="privrec-drop-versions", daemon=True
            )
            t.start()
            self._deleters.append(t)
        return renamed

    def quarantine(self, name: str, version: str, reason: str) -> None:
        """Mark a version that still holds erased shoppers: it can never be activated again."""
        write_private(self.path(name, version) / QUARANTINE_FILE, reason)

    def drop_quarantined(self, name: str) -> int:
        """Delete `name`'s quarantined versions other than the active one; returns how many."""
        active = self.active(name)
        doomed = [
            p.name
            for p in (self.models_dir / name).glob("v*")
            if (p / QUARANTINE_FILE).exists() and p.name != active
        ]
        self._trash(name, doomed)
        return len(doomed)

    def keep_live(self, name: str, version: str, model: Recommender) -> None:
        """Hold the fitted `model` in memory as `name`'s version `version` (for erasures)."""
        self.live = {k: v for k, v in self.live.items() if k[0] != name}
        self.live[(name, version)] = model

    def close(self) -> None:
        """Wait for background deletions."""
        for t in self._deleters:
            t.join()
        self._deleters.clear()


def seal_artifact(path: Path, key: bytes) -> None:
    """Seal the plaintext model files of version folder `path` in place (``*.sealed``)."""
    for name in (STATE_FILE, DERIVED_FILE, CONFIG_FILE):
        plain = path / name
        if plain.exists():
            write_sealed(path / (name + FILE_SUFFIX), plain.read_bytes(), key)
            plain.unlink()


def _remove_all(paths: list[Path]) -> None:
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)
