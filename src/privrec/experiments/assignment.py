"""Deterministic A/B assignment: a pseudonym and an experiment salt always give the same variant.

bucket = the first 8 bytes of SHA-256(salt, 0x1f, pseudonym) as a number in [0, 1); the variants
own consecutive slices of [0, 1) in proportion to their weights. No state is kept, so a shopper's
variant is the same on every server and after a restart, and a new salt reshuffles everyone.
The unit id stored with exposures is another slice of the same hash: it identifies the shopper
inside one experiment only and cannot be joined with the event store without the salt.

A pseudonym key rotation changes every pseudonym and so every hash. So that a shopper keeps
their variant, the rotation pins the shoppers it knows whose hash would now land elsewhere:
`Experiment.pins` maps their new unit id to the variant they had, and `assign` honours it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from privrec.core.errors import ValidationError

__all__ = ["Experiment", "Variant", "assign", "bucket", "unit_id"]

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
STATUSES = ("running", "stopped", "promoted")
GUARDRAIL_METRICS = ("revenue_per_shopper", "coverage", "ctr", "conversion")
# a promotion is blocked when the winner loses more than this against the control
DEFAULT_GUARDRAILS: tuple[Mapping[str, Any], ...] = (
    {"metric": "revenue_per_shopper", "max_drop": 0.05},
    {"metric": "coverage", "max_drop": 0.2},
)


def _digest(salt: str, pseudonym: str) -> bytes:
    return hashlib.sha256(f"{salt}\x1f{pseudonym}".encode()).digest()


def bucket(salt: str, pseudonym: str) -> float:
    """The shopper's position in [0, 1) for this salt."""
    return int.from_bytes(_digest(salt, pseudonym)[:8], "big") / 2.0**64


def unit_id(salt: str, pseudonym: str) -> str:
    """The shopper's id inside one experiment (16 hex characters)."""
    return _digest(salt, pseudonym)[8:16].hex()


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment.

    Attributes:
        name: the variant's name ("control", "ease", ...).
        model: the model it serves (None: the default model).
        weight: its share of traffic (relative to the other variants).
        params: recommendation options it sets (diversity, category_cap, in_stock, ...).
    """

    name: str
    model: str | None = None
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "model": self.model,
            "weight": self.weight,
            "params": dict(self.params),
        }


@dataclass(frozen=True)
class Experiment:
    """An A/B test: named variants, a salt, a status.

    Attributes:
        name: lower-case id (letters, digits, '-', '_').
        variants: two or more variants; the first is the control.
        salt: the assignment salt (random when created).
        status: "running" or "stopped".
        created_at: Unix seconds.
        description: free text.
        pins: unit id -> variant name, for shoppers whose variant a key rotation kept (see the
            module docstring); stored with the salt, never shown in public views.
        primary: the metric the sequential test decides on ("conversion" or "ctr").
        alpha: the level of the always-valid sequential test.
        tau2: the mixing variance of the mSPRT (the expected squared effect on the rate).
        guardrails: metrics that must not drop, {metric, max_drop} (max_drop a fraction).
        promoted: after a promotion: the arm, model and version made the default, and when.
    """

    name: str
    variants: tuple[Variant, ...]
    salt: str = field(default_factory=lambda: secrets.token_hex(8))
    status: str = "running"
    created_at: float = 0.0
    description: str = ""
    pins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    primary: str = "conversion"
    alpha: float = 0.05
    tau2: float = 1e-4
    guardrails: tuple[Mapping[str, Any], ...] = DEFAULT_GUARDRAILS
    promoted: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValidationError(
                "name",
                "use 1-64 lower-case letters, digits, '-' or '_', starting with a letter or digit",
            )
        if len(self.variants) < 2:
            raise ValidationError(
                "variants", f"has {len(self.variants)}; an experiment needs at least two"
            )
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValidationError("variants", "two variants share a name; give each its own")
        for v in self.variants:
            if not _NAME.fullmatch(v.name):
                raise ValidationError(
                    "variants.name",
                    f"{v.name!r} is not a valid name; use lower-case letters, digits, '-' or '_'",
                )
            if not (v.weight > 0 and v.weight < 1e9):
                raise ValidationError(
                    "variants.weight", f"variant {v.name!r} needs a positive weight"
                )
        if self.status not in STATUSES:
            raise ValidationError("status", f"must be one of {', '.join(STATUSES)}")
        if self.primary not in ("conversion", "ctr"):
            raise ValidationError("primary", "must be 'conversion' or 'ctr'")
        if not 0.0 < self.alpha < 0.5:
            raise ValidationError("alpha", "must be between 0 and 0.5 (e.g. 0.05)")
        if not 0.0 < self.tau2 < 1.0:
            raise ValidationError("tau2", "must be between 0 and 1 (e.g. 0.0001)")
        for g in self.guardrails:
            if g.get("metric") not in GUARDRAIL_METRICS:
                raise ValidationError(
                    "guardrails.metric", f"must be one of {', '.join(GUARDRAIL_METRICS)}"
                )
            drop = g.get("max_drop")
            if not isinstance(drop, int | float) or not 0.0 <= float(drop) < 1.0:
                raise ValidationError(
                    "guardrails.max_drop", "must be a fraction in [0, 1) (0.05 = five per cent)"
                )
        if self.pins and not set(self.pins.values()) <= set(names):
            raise ValidationError("pins", "name a variant the experiment does not have")

    @property
    def shares(self) -> list[float]:
        """Each variant's expected share of units."""
        total = sum(v.weight for v in self.variants)
        return [v.weight / total for v in self.variants]

    def variant_of(self, pseudonym: str) -> Variant:
        """The variant this pseudonym is assigned to."""
        return assign(self, pseudonym)

    def to_dict(self, *, with_salt: bool = True) -> dict[str, Any]:
        """JSON-ready form (the salt is left out of public views)."""
        d: dict[str, Any] = {
            "name": self.name,
            "variants": [v.to_dict() for v in self.variants],
            "status": self.status,
            "created_at": self.created_at,
            "description": self.description,
            "primary": self.primary,
            "alpha": self.alpha,
            "tau2": self.tau2,
            "guardrails": [dict(g) for g in self.guardrails],
            "promoted": dict(self.promoted) if self.promoted else None,
        }
        if with_salt:
            d["salt"] = self.salt
            if self.pins:
                d["pins"] = dict(self.pins)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Experiment:
        """Inverse of `to_dict`."""
        variants = tuple(
            Variant(
                name=str(v["name"]),
                model=v.get("model"),
                weight=float(v.get("weight", 1.0)),
                params=dict(v.get("params") or {}),
            )
            for v in d.get("variants", [])
        )
        kw: dict[str, Any] = {"name": str(d["name"]), "variants": variants}
        for key in ("salt", "status", "created_at", "description", "primary", "promoted"):
            if d.get(key) is not None:
                kw[key] = d[key]
        for key in ("alpha", "tau2"):
            if d.get(key) is not None:
                kw[key] = float(d[key])
        if d.get("guardrails") is not None:
            kw["guardrails"] = tuple(
                {"metric": str(g.get("metric")), "max_drop": g.get("max_drop")}
                for g in d["guardrails"]
            )
        if d.get("pins"):
            kw["pins"] = {str(u): str(v) for u, v in dict(d["pins"]).items()}
        return cls(**kw)


def assign(
    experiment: Experiment, pseudonym: str, shares: Sequence[float] | None = None
) -> Variant:
    """The variant of `pseudonym` (deterministic from the pseudonym and the salt, or pinned)."""
    if experiment.pins:
        pinned = experiment.pins.get(unit_id(experiment.salt, pseudonym))
        if pinned is not None:
            return next(v for v in experiment.variants if v.name == pinned)
    b = bucket(experiment.salt, pseudonym)
    acc = 0.0
    sh = list(shares) if shares is not None else experiment.shares
    for v, s in zip(experiment.variants, sh, strict=True):
        acc += s
        if b < acc:
            return v
    return experiment.variants[-1]
