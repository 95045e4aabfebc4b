"""Business rules as requests give them (JSON fields) turned into `Rules` for one catalogue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from privrec.core.errors import ValidationError
from privrec.service.rules import Rules

RULE_FIELDS: tuple[str, ...] = (
    "exclude_items",
    "exclude_purchased",
    "exclude_seen",
    "include_categories",
    "exclude_categories",
    "in_stock",
    "price_min",
    "price_max",
    "diversity",
    "category_cap",
    "pin_items",
)


def freeze(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """A hashable form of a rule spec (part of a cached list's key)."""
    return tuple(
        sorted((k, tuple(v) if isinstance(v, list | tuple | set) else v) for k, v in spec.items())
    )


def rules_from(spec: Mapping[str, Any], index: Mapping[str, int] | None = None) -> Rules:
    """`Rules` from request fields; `exclude_items` keys are mapped through `index`.

    Raises ValidationError naming the first unknown field. Without `index` (validating an
    experiment's variant before any catalogue is known) excluded and pinned items are checked for
    form only; item ids not in the catalogue are ignored.
    """
    unknown = sorted(set(spec) - set(RULE_FIELDS))
    if unknown:
        raise ValidationError(unknown[0], f"is not a rule; the rules are {', '.join(RULE_FIELDS)}")
    kw: dict[str, Any] = {}
    for key, v in spec.items():
        if v is None:
            continue
        if key in ("exclude_items", "pin_items"):
            keys = [str(x) for x in v]
            found = (index.get(x, -1) for x in keys) if index is not None else ()
            kw[key] = tuple(i for i in found if i >= 0)
        elif key in ("include_categories", "exclude_categories"):
            kw[key] = tuple(str(x) for x in v)
        elif key in ("exclude_purchased", "exclude_seen", "in_stock"):
            kw[key] = bool(v)
        elif key in ("price_min", "price_max", "diversity"):
            kw[key] = float(v)
        elif key == "category_cap":
            kw[key] = int(v)
    return Rules(**kw)
