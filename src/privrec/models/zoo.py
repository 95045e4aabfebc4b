"""The model zoo: importing it registers every model, so any can be built or loaded by name.

Add a new model module to `MODEL_MODULES`. Modules import their heavy optional dependencies
(torch, implicit) only when training, so importing the zoo is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from privrec.models.base import Recommender, model_class, registered_models

MODEL_MODULES: tuple[str, ...] = (
    "privrec.models.popularity",
    "privrec.models.itemknn",
    "privrec.models.ease",
    "privrec.models.als",
    "privrec.models.bpr",
    "privrec.models.apr",
    "privrec.models.sasrec",
    "privrec.models.bert4rec",
    "privrec.models.content",
    "privrec.models.hybrid",
    "privrec.models.dp.popularity",
    "privrec.models.dp.itemknn",
    "privrec.models.dp.ease",
    "privrec.models.dp.bpr",
    "privrec.models.dp.sasrec",
    "privrec.models.dp.hybrid",
    "privrec.models.dp.als",
    "privrec.models.dp.prior",
    "privrec.models.dp.textknn",
)

for _module in MODEL_MODULES:
    importlib.import_module(_module)


def available_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(registered_models())


def create_model(name: str, **params: Any) -> Recommender:
    """A new, unfitted model `name` configured by `params` (ConfigError: unknown name/field)."""
    return model_class(name)(**params)
