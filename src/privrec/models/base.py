"""The model contract every recommender follows (design.md, "The model contract").

A user is represented by their history at request time, so a new user is served at once and an
erased user's vector disappears with their events. Learned state is set only by `fit` (or `load`)
and saved as safetensors arrays plus a JSON config: never pickle.

What a model can do beyond scoring is part of the contract, never found out from outside by name
or type: `contributions` (each history entry's additive share of a score, or None), `explain`
(the contributors and what the user did with them; the wording is `privrec.explain`'s),
`can_forget` / `forget` (exact unlearning), and `fit(..., ledger=)` (DP models charge it).
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from safetensors.numpy import load, load_file, save, save_file

from privrec.core.errors import ConfigError, NotFittedError, ValidationError
from privrec.core.types import (
    EVENT_CODE,
    Explanation,
    UserHistory,
    strongest,
    strongest_actions,
)
from privrec.data.dataset import InteractionDataset
from privrec.models.imbalance import check_type_weights, type_weight_table
from privrec.privacy.guarantee import PrivacyGuarantee
from privrec.privacy.sealed import FILE_SUFFIX, read_sealed, write_sealed

if TYPE_CHECKING:
    from privrec.models.unlearning import UnlearningResult
    from privrec.privacy.ledger import PrivacyLedger

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
STATE_FILE = "state.safetensors"
DERIVED_FILE = "derived.safetensors"  # arrays recomputable from the state (a cache)
DERIVED_PENDING = "derived.pending"  # present while a deferred `save_derived` is writing
DERIVED_WAIT_SECONDS = 60.0  # how long `load` waits for a pending derived file before recomputing
_REGISTRY: dict[str, type[Recommender]] = {}


class ModelConfig(BaseModel):
    """Base of every model's configuration: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class InputConfig(ModelConfig):
    """Shared fields of models that read the user x item matrix (see `Recommender.input_matrix`).

    Attributes:
        binary: 1.0 wherever the user touched the item (event weights and ratings ignored).
        use_ratings: take a rating event's value instead of its event-type weight.
        event_weights: weight per event type (None: the dataset's weights).
        aggregate: "max" keeps the strongest event per (user, item); "sum" adds them up.
    """

    binary: bool = False
    use_ratings: bool = False
    event_weights: dict[str, float] | None = None
    aggregate: Literal["max", "sum"] = "max"

    @field_validator("event_weights")
    @classmethod
    def _check_event_weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return check_type_weights(v, "event_weights")

    @model_validator(mode="after")
    def _weights_need_values(self) -> Self:
        if self.event_weights is not None and self.binary:
            # a 0/1 matrix ignores the weights: say so rather than train something else
            raise ValueError("event_weights: has no effect with binary=true; set binary=false too")
        return self


def register(cls: type[Recommender]) -> type[Recommender]:
    """Class decorator: make a model loadable by its `name`."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two models named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def model_class(name: str) -> type[Recommender]:
    """The registered model class called `name`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"model: unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None


def registered_models() -> dict[str, type[Recommender]]:
    """All registered model classes by name."""
    return dict(_REGISTRY)


class Recommender(ABC):
    """Base class of all recommenders.

    Subclasses set `name` and `Config`, implement `fit`, `score_matrix`, `_state` and
    `_set_state`, and may override `score` (a faster path for one history), `contributions`,
    `explain`, and `can_forget` with `forget`.
    """

    name: ClassVar[str] = "base"
    Config: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        if config is not None and params:
            raise ConfigError("give either a config object or keyword parameters, not both")
        try:
            self.config = config if config is not None else self.Config(**params)
        except Exception as exc:  # pydantic's error already names the field
            raise ConfigError(f"{self.name}: {exc}") from exc
        self.n_items: int = 0
        self.privacy: PrivacyGuarantee | None = None
        self._fitted = False

    # ---- training ------------------------------------------------------------------------
    @abstractmethod
    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> Self:
        """Learn from `dataset`; returns self.

        Args:
            dataset: the training interactions.
            rng: a seed or Generator (None: the config's seed where the model has one).
            ledger: the privacy-budget ledger a DP model records its release in before drawing
                noise; models without a DP release ignore it.
        """

    def input_matrix(self, dataset: InteractionDataset) -> sp.csr_matrix:
        """The user x item matrix this model trains on, weighted as its config says.

        Its rows are also the right history rows for `score_matrix` (evaluation should build test
        histories with this, so training and scoring see the same weighting).
        """
        c = self.config
        return dataset.matrix(
            getattr(c, "event_weights", None),
            binary=bool(getattr(c, "binary", False)),
            use_ratings=bool(getattr(c, "use_ratings", False)),
            aggregate=getattr(c, "aggregate", "max"),
        )

    def _history_input(self, histories: sp.csr_matrix) -> sp.csr_matrix:
        """Validate a history matrix (float32 CSR, n_items columns; 1.0 values if config.binary)."""
        self._check_fitted()
        h = sp.csr_matrix(histories, dtype=np.float32, copy=True)
        if h.shape[1] != self.n_items:
            raise ValueError(
                f"histories: has {h.shape[1]} item columns but the model knows {self.n_items} "
                "items; build it with history_matrix() or input_matrix()"
            )
        h.sum_duplicates()
        h.eliminate_zeros()
        if getattr(self.config, "binary", False):
            h.data[:] = 1.0
        return h

    # ---- scoring -------------------------------------------------------------------------
    @abstractmethod
    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """Scores of every item (columns) for each user given as a row of history weights.

        This batched form is what evaluation uses; `score` derives from it.
        """

    def history_matrix(self, histories: list[UserHistory]) -> sp.csr_matrix:
        """Stack histories into a CSR matrix (max weight per item, 1.0 when unweighted)."""
        rows, cols, vals = [], [], []
        for r, h in enumerate(histories):
            w = self._entry_weights(h)
            rows.append(np.full(len(h), r, dtype=np.int64))
            cols.append(np.asarray(h.items, dtype=np.int64))
            vals.append(w)
        if not histories:
            return sp.csr_matrix((0, self.n_items), dtype=np.float32)
        row = np.concatenate(rows)
        col = np.concatenate(cols)
        v = np.concatenate(vals).astype(np.float32)
        ok = (col >= 0) & (col < self.n_items)
        n = max(self.n_items, 1)
        # duplicates: the strongest event per item, as InteractionDataset.matrix(aggregate="max")
        keys, v, _ = strongest(row[ok] * n + col[ok], v[ok])
        return sp.csr_matrix(
            (v, (keys // n, keys % n)), shape=(len(histories), self.n_items), dtype=np.float32
        )

    def history_entries(self, history: UserHistory) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The distinct in-range items of one history, the weight each has in the model's history
        row, and the entry (position in `history`) that gives it that weight.

        This is the row `history_matrix` builds (max weight per item; 1.0 in a binary model), so
        a share computed per distinct item can be attributed to one history entry.
        """
        items = np.asarray(history.items, dtype=np.int64)
        w = self._entry_weights(history)
        inside = np.flatnonzero((items >= 0) & (items < self.n_items))
        it, w, pos = strongest(items[inside], w[inside])
        keep = w != 0  # an explicit zero weight is no event at all
        it, w, pos = it[keep], w[keep], inside[pos[keep]]
        if getattr(self.config, "binary", False):
            w = np.ones_like(w)
        return it, w.astype(np.float64), pos

    def _entry_weights(self, history: UserHistory) -> np.ndarray:
        """float32 weight of each history entry: the config's `event_weights` of its event type
        where the config sets them (as the model trained), else the history's own weights (1.0
        when it has none). A rating keeps its value under `use_ratings`."""
        c = self.config
        own = (
            np.ones(len(history), np.float32)
            if history.weights is None
            else np.asarray(history.weights, dtype=np.float32)
        )
        table = getattr(c, "event_weights", None)
        if table is None or history.event_types is None or getattr(c, "binary", False):
            return own
        codes = np.asarray(history.event_types, dtype=np.int64)
        w = type_weight_table(table)[codes]
        if getattr(c, "use_ratings", False) and history.weights is not None:
            w = np.where(codes == EVENT_CODE["rating"], own, w).astype(np.float32)
        return w

    def score(self, history: UserHistory, items: np.ndarray | None = None) -> np.ndarray:
        """Scores of all items (or of `items`) for one user's history."""
        self._check_fitted()
        s = self.score_matrix(self.history_matrix([history]))[0]
        return s if items is None else s[np.asarray(items, dtype=np.int64)]

    def recommend(
        self,
        history: UserHistory,
        k: int = 10,
        *,
        exclude: np.ndarray | list[int] | None = None,
        exclude_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top-k item indices and their scores, best first.

        Args:
            history: the user's history.
            k: how many items.
            exclude: item indices never to return.
            exclude_history: drop items already in the history (the usual shop behaviour).
        """
        s = self.score(history).astype(np.float64, copy=True)
        if exclude_history and len(history):
            s[history.items[(history.items >= 0) & (history.items < self.n_items)]] = -np.inf
        if exclude is not None:
            s[np.asarray(exclude, dtype=np.int64)] = -np.inf
        return top_k(s, k)

    def contributions(self, history: UserHistory, items: np.ndarray) -> np.ndarray | None:
        """Each history entry's additive share of each requested item's score, or None.

        Row r, column e is entry e of `history`'s share of `items[r]`'s score; each row sums to
        `score(history)[items[r]] - score(empty history)[items[r]]` (up to float rounding).
        Repeated entries of one item: the entry that gives the item its weight carries the share.
        None (the default) where the model's score is not a sum over history entries.

        Args:
            history: the user's history.
            items: item indices.

        Returns:
            float64 array of shape (len(items), len(history)), or None.
        """
        return None

    def explain(self, history: UserHistory, item: int) -> Explanation:
        """Why `item` is recommended: its largest positive `contributions`, where the model has
        them; models that can say more override this."""
        self._check_fitted()
        share = self.contributions(history, np.asarray([int(item)], dtype=np.int64))
        if share is None:
            return Explanation(item=int(item), kind="model", text=f"recommended by {self.name}")
        return history_explanation(history, int(item), history.items, share[0])

    # ---- exact unlearning ----------------------------------------------------------------------
    @property
    def can_forget(self) -> bool:
        """Whether `forget` removes users exactly (the state then equals a retrain without them)."""
        return False

    def forget(self, removed: InteractionDataset) -> UnlearningResult:
        """Remove users' training events from the model exactly, in place.

        Args:
            removed: the erased users' trained events, encoded in this model's item vocabulary
                (`InteractionDataset.from_events(events, items=vocab, event_weights=...)`).

        Raises:
            ConfigError: the model cannot unlearn exactly (`can_forget` is False): retrain it.
        """
        raise ConfigError(
            f"{self.name}: no exact unlearning for this model (can_forget is False); "
            "retrain it without the users"
        )

    def removed_rows(self, removed: InteractionDataset) -> sp.csr_matrix:
        """The removed users' rows as this model trained on them (float64, canonical CSR; users
        without events left out)."""
        self._check_fitted()
        if removed.n_items != self.n_items:
            raise ValidationError(
                "removed",
                f"has {removed.n_items} items but the model knows {self.n_items}; encode the "
                "events with the model's item vocabulary",
            )
        x = sp.csr_matrix(self.input_matrix(removed), dtype=np.float64, copy=True)
        x.sum_duplicates()
        x.eliminate_zeros()
        if getattr(self.config, "binary", False):
            x.data[:] = 1.0
        # rows without events (users of the vocabulary who are not being removed) change nothing
        return sp.csr_matrix(x[np.diff(x.indptr) > 0])

    # ---- persistence -------------------------------------------------------------------------
    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """The learned arrays to save."""

    @abstractmethod
    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore learned arrays saved by `_state`."""

    def _meta(self) -> dict[str, Any]:
        """Small JSON-serialisable learned values (override to add)."""
        return {}

    def _derived(self) -> dict[str, np.ndarray]:
        """Large arrays that `_set_state` can recompute from `_state` alone (override to add).

        They are saved apart (`derived.safetensors`), so a caller in a hurry can write the state
        now and the derived arrays later (`save(..., derived=False)`, then `save_derived`);
        `_set_state` gets them when the file is there and recomputes them when not.
        """
        return {}

    def _top_level(self) -> dict[str, Any]:
        """Fields a subclass adds at the top level of config.json (markers the service reads)."""
        return {}

    def save(self, path: str | Path, *, derived: bool = True, key: bytes | None = None) -> Path:
        """Save to directory `path` (config.json + state.safetensors [+ derived.safetensors]).

        With `derived=False` the derived arrays are not written; a `derived.pending` marker says
        that `save_derived` will follow (`load` waits for it for a while, then recomputes).
        With `key` (the sidecar key) every file is written sealed instead (the same names plus
        ``.sealed``, see `privacy.sealed`): the arrays can hold exact co-occurrence counts.
        """
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
        if key is None:
            save_file(arrays, str(path / STATE_FILE))
        else:
            write_sealed(path / (STATE_FILE + FILE_SUFFIX), save(arrays), key)
        doc = {
            "format": FORMAT_VERSION,
            "model": self.name,
            "config": self.config.model_dump(mode="json"),
            "n_items": self.n_items,
            "privacy": self.privacy.to_dict() if self.privacy else None,
            "meta": self._meta(),
        }
        doc.update(self._top_level())
        text = json.dumps(doc, indent=2, sort_keys=True)
        if key is None:
            (path / CONFIG_FILE).write_text(text)
        else:
            write_sealed(path / (CONFIG_FILE + FILE_SUFFIX), text.encode("utf-8"), key)
        if derived:
            self.save_derived(path, key=key)
        elif self._derived():
            (path / DERIVED_PENDING).write_text("")
        return path

    def save_derived(self, path: str | Path, *, key: bytes | None = None) -> None:
        """Write the derived arrays into saved directory `path` (atomically), clear the marker.

        With `key` the file is sealed (``derived.safetensors.sealed``), as `save` does.
        """
        path = Path(path)
        arrays = {k: np.ascontiguousarray(v) for k, v in self._derived().items()}
        if arrays and key is not None:
            write_sealed(path / (DERIVED_FILE + FILE_SUFFIX), save(arrays), key)
        elif arrays:
            tmp = path / f".{DERIVED_FILE}.tmp"
            save_file(arrays, str(tmp))
            os.replace(tmp, path / DERIVED_FILE)
        (path / DERIVED_PENDING).unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path, *, key: bytes | None = None) -> Recommender:
        """Load a model saved by `save`; works on the base class (dispatches on the saved name).

        A sealed artifact (saved with a key) is decrypted into memory with `key`; a plaintext
        one (older versions, or saved without a key) is read as it is.

        Raises:
            ConfigError: a sealed artifact and no key.
            SealedDataError: the key does not open it, or a file was changed.
        """
        path = Path(path)
        doc = read_config(path, key)
        sealed = is_sealed_artifact(path)
        if doc.get("format") != FORMAT_VERSION:
            raise ConfigError(f"{path}: unsupported model format {doc.get('format')!r}")
        klass = model_class(doc["model"]) if cls is Recommender else cls
        if klass.name != doc["model"]:
            raise ConfigError(f"{path}: holds a {doc['model']!r} model, not {klass.name!r}")
        model = klass(klass.Config(**doc["config"]))
        model.n_items = int(doc["n_items"])
        if doc.get("privacy"):
            model.privacy = PrivacyGuarantee(**doc["privacy"])
        arrays = _read_arrays(path / STATE_FILE, key if sealed else None)
        derived = _wait_for_derived(path, sealed)
        if derived is not None:
            arrays.update(_read_arrays(path / DERIVED_FILE, key if sealed else None))
        model._set_state(arrays, doc.get("meta", {}))
        model._fitted = True
        return model

    # ---- helpers -----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError(f"{self.name}: call fit() or load() first")

    def _mark_fitted(self, n_items: int) -> None:
        self.n_items = int(n_items)
        self._fitted = True


def is_sealed_artifact(path: str | Path) -> bool:
    """Whether the saved directory `path` holds a sealed artifact (``config.json.sealed``)."""
    return (Path(path) / (CONFIG_FILE + FILE_SUFFIX)).exists()


def has_artifact(path: str | Path) -> bool:
    """Whether `path` holds a saved model (its config, sealed or plaintext)."""
    p = Path(path)
    return (p / CONFIG_FILE).exists() or is_sealed_artifact(p)


def read_config(path: str | Path, key: bytes | None = None) -> dict[str, Any]:
    """The saved `config.json` of directory `path` (decrypted with `key` when sealed).

    Raises:
        ConfigError: the artifact is sealed and no key was given.
    """
    p = Path(path)
    if is_sealed_artifact(p):
        if key is None:
            raise ConfigError(f"{p}: the model artifact is sealed; load it with the sidecar key")
        doc: dict[str, Any] = json.loads(read_sealed(p / (CONFIG_FILE + FILE_SUFFIX), key))
        return doc
    plain: dict[str, Any] = json.loads((p / CONFIG_FILE).read_text())
    return plain


def _read_arrays(path: Path, key: bytes | None) -> dict[str, np.ndarray]:
    """A safetensors file, or with `key` its sealed twin decrypted in memory."""
    if key is None:
        return load_file(str(path))
    # decrypted into memory only: the plaintext arrays never touch the disk
    return load(read_sealed(path.with_name(path.name + FILE_SUFFIX), key))


def _wait_for_derived(path: Path, sealed: bool = False) -> Path | None:
    """The derived file of saved directory `path`, waiting while a writer is still at it.

    A marker older than DERIVED_WAIT_SECONDS is taken as a writer that died: None (recompute).
    """
    name = DERIVED_FILE + (FILE_SUFFIX if sealed else "")
    derived, marker = path / name, path / DERIVED_PENDING
    while not derived.exists():
        try:
            age = time.time() - marker.stat().st_mtime
        except FileNotFoundError:  # no writer pending (or it finished between the two checks)
            return derived if derived.exists() else None
        if age > DERIVED_WAIT_SECONDS:
            return None
        time.sleep(0.05)
    return derived


def seed_from(rng: int | np.random.Generator | None, default: int) -> int:
    """The integer seed a training run uses: `default` (the config's seed), an int given to
    `fit(rng=...)`, or one drawn from a Generator given to it."""
    if rng is None:
        return int(default)
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**31 - 1))
    return int(rng)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest finite scores, best first (ties: lower index first)."""
    k = int(min(k, scores.shape[0]))
    if k <= 0:
        return np.empty(0, np.int64), np.empty(0, scores.dtype)
    part = np.argpartition(-scores, k - 1)[:k]
    order = np.lexsort((part, -scores[part]))
    idx = part[order]
    idx = idx[np.isfinite(scores[idx])]
    return idx.astype(np.int64), scores[idx]


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise top-k indices (best first) of a dense score matrix."""
    k = int(min(k, scores.shape[1]))
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


_SMALL = 256  # history_explanation: up to this many entries, summed in Python


def history_explanation(
    history: UserHistory,
    item: int,
    items: np.ndarray,
    contributions: np.ndarray,
    *,
    n: int = 3,
) -> Explanation:
    """An Explanation of kind "history": the history items that contributed most to `item`'s score.

    The facts only (contributors, and what the user did with each in `actions`); the shopper-facing
    wording is `privrec.explain`'s.

    Args:
        history: the user's history (its event types fill `actions`).
        item: the explained item.
        items: history item indices (repeats allowed: their contributions add up).
        contributions: each one's additive share of the score (same length as `items`).
        n: at most this many contributors (positive contributions only).
    """
    items = np.asarray(items, dtype=np.int64)
    contributions = np.asarray(contributions, dtype=np.float64)
    if items.size <= _SMALL and np.isfinite(contributions).all():
        # a served request's few history items: the same sums (in entry order, as bincount
        # adds them) and order (largest first, ties by item), without NumPy's per-call cost
        sums: dict[int, float] = {}
        for i, c in zip(items.ravel().tolist(), contributions.ravel().tolist(), strict=True):
            sums[i] = sums.get(i, 0.0) + c
        ranked = sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))
        contributors = [(i, c) for i, c in ranked if c > 0][:n]
    else:
        if items.size:
            uniq, inv = np.unique(items, return_inverse=True)
            total = np.bincount(inv.ravel(), weights=contributions, minlength=uniq.size)
        else:
            uniq, total = items, contributions
        order = np.lexsort((uniq, -total))
        picked = [j for j in order.tolist() if total[j] > 0][:n]
        contributors = [(int(uniq[j]), float(total[j])) for j in picked]
    if not contributors:
        return Explanation(
            item=int(item), kind="model", text="no item in your history points to this one"
        )
    did = strongest_actions(history)
    actions = {i: did[i] for i, _ in contributors if i in did}
    named = ", ".join(f"item {i}" for i, _ in contributors)
    return Explanation(
        item=int(item),
        kind="history",
        text=f"items in your history point to it ({named})",
        contributors=contributors,
        actions=actions,
    )
