"""The hybrid's components: built from the settings, fitted, and saved inside one artifact.

Components (each an ordinary privrec model, fitted on the same data):
    "cf"          collaborative filtering (EASE by default; any registered model name);
    "sequential"  optional, e.g. "sasrec" when that model is available (None: left out);
    "content"     the text model (`ContentRecommender`), always present;
    "popularity"  the `Popularity` model.

Saving: one `state.safetensors` holds every component's arrays under "<component>.<name>" and
config.json holds each component's model name, config and metadata (`components_meta`), so
`Recommender.load` restores the whole hybrid (and the shared conformance suite's two-file layout
holds). DP hybrids store their components the same way.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender, model_class
from privrec.models.content import ContentRecommender
from privrec.models.ease import EASE  # noqa: F401  (registers "ease", the default CF component)
from privrec.models.hybrid_config import HybridConfig
from privrec.models.itemknn import ItemKNN  # noqa: F401  (registers "itemknn", the other item-item CF)
from privrec.models.popularity import Popularity
from privrec.privacy.guarantee import PrivacyGuarantee

if TYPE_CHECKING:
    from privrec.privacy.ledger import PrivacyLedger

log = logging.getLogger(__name__)

__all__ = [
    "build_components",
    "component_class",
    "components_meta",
    "components_state",
    "fit_components",
    "restore_components",
]


def component_class(name: str) -> type[Recommender]:
    """The registered class of a component; its module must have been imported (the zoo imports
    every model module; this module imports the classic ones itself)."""
    try:
        return model_class(name)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}; import privrec.models.zoo (or the model's module) to register every model"
        ) from None


def build_components(c: HybridConfig) -> dict[str, Recommender]:
    """Unfitted components named by `c`, after checking that its weights name only them."""
    out: dict[str, Recommender] = {}
    try:
        if c.cf is not None:
            out["cf"] = component_class(c.cf)(**c.cf_params)
        if c.sequential is not None:
            out["sequential"] = component_class(c.sequential)(**c.sequential_params)
        out["content"] = ContentRecommender(**c.content_params)
        out["popularity"] = Popularity(**c.popularity_params)
    except ConfigError as exc:
        raise ConfigError(f"hybrid: {exc}") from exc
    for key in (*(c.weights or {}), *(c.cold_weights or {})):
        if key not in out:
            raise ConfigError(
                f"hybrid.weights: {key!r} is not a component of this hybrid ({list(out)})"
            )
    missing = [k for k in c.cold_components if k not in out]
    if missing:
        raise ConfigError(
            f"hybrid.cold_components: {missing} not among this hybrid's components ({list(out)})"
        )
    if c.cold_weights is not None and any(k not in c.cold_components for k in c.cold_weights):
        raise ConfigError(
            f"hybrid.cold_weights: the cold route uses only {list(c.cold_components)} "
            "(cold_components)"
        )
    return out


def fit_components(
    components: dict[str, Recommender],
    dataset: InteractionDataset,
    seed: int,
    *,
    content: bool,
    ledger: PrivacyLedger | None = None,
) -> None:
    """Fit every component on `dataset` with `seed` (the content one only when `content`)."""
    for name, comp in components.items():
        if name == "content" and not content:
            continue  # item embeddings depend on item text only, not on the interactions
        t0 = time.perf_counter()
        # only a given ledger is passed on: a component written before `ledger` joined the
        # contract still fits
        extra = {"ledger": ledger} if ledger is not None else {}
        comp.fit(dataset, rng=seed, **extra)
        log.info("hybrid component=%s fit_seconds=%.2f", name, time.perf_counter() - t0)


# ---- components inside one artifact (also used by `dp_hybrid`) ---------------------------------
def components_state(
    components: dict[str, Recommender], *, derived: bool = False
) -> dict[str, np.ndarray]:
    """Every component's arrays (or derived arrays) under "<component>.<name>"."""
    return {
        f"{name}.{key}": arr
        for name, comp in components.items()
        for key, arr in (comp._derived() if derived else comp._state()).items()
    }


def components_meta(components: dict[str, Recommender]) -> dict[str, Any]:
    """What `restore_components` needs besides the arrays: model name, config, privacy, metadata."""
    return {
        name: {
            "model": comp.name,
            "config": comp.config.model_dump(mode="json"),
            "n_items": comp.n_items,
            "privacy": comp.privacy.to_dict() if comp.privacy else None,
            "meta": comp._meta(),
        }
        for name, comp in components.items()
    }


def restore_components(
    arrays: dict[str, np.ndarray], docs: dict[str, Any]
) -> dict[str, Recommender]:
    """Fitted components rebuilt from `components_state` arrays and `components_meta` documents."""
    comps: dict[str, Recommender] = {}
    for name, doc in docs.items():
        klass = component_class(doc["model"])
        comp = klass(klass.Config(**doc["config"]))
        comp.n_items = int(doc["n_items"])
        if doc.get("privacy"):
            comp.privacy = PrivacyGuarantee(**doc["privacy"])
        prefix = f"{name}."
        comp._set_state(
            {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)},
            doc.get("meta", {}),
        )
        comp._fitted = True
        comps[name] = comp
    return comps
