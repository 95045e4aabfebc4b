"""Typed results of the service, shared by the CLI, the HTTP API and the pages.

Items inside a list stay plain JSON-ready dicts (item, title, category, price, in_stock, score,
explanation): they are cached and sent as they are, which keeps the hot path cheap.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RecommendationList:
    """One served list: what ranked it, under which consent, and the items with reasons."""

    recommendation_id: str
    model: str
    version: str
    personalized: bool
    consent: str
    experiment: str | None
    variant: str | None
    items: list[dict[str, Any]]
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (no `note` key when there is none).

        Built by hand: `asdict` would deep-copy the items on every request (the hot path).
        """
        d = {
            "recommendation_id": self.recommendation_id,
            "model": self.model,
            "version": self.version,
            "personalized": self.personalized,
            "consent": self.consent,
            "experiment": self.experiment,
            "variant": self.variant,
            "items": self.items,
        }
        if self.note is not None:
            d["note"] = self.note
        return d


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Items matching a search query, with how they were matched (`mode`: hybrid, lexical or
    dense; `note` says why a mode fell back)."""

    query: str
    mode: str
    note: str | None
    personalized: bool
    model: str
    version: str
    items: list[dict[str, Any]]
    # the typo-corrected query the results answer ("Showing results for ..."), if corrected
    corrected_query: str | None = None
    # the list id (random, unguessable): outcome events send it back as recommendation_id
    recommendation_id: str = field(default_factory=lambda: secrets.token_hex(8))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ExplainedItem:
    """Why one item would be shown to a shopper: score, rank and explanation."""

    item: str
    model: str
    version: str
    score: float
    rank: int
    personalized: bool
    explanation: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TrainResult:
    """A trained model version."""

    model: str
    version: str
    train_seconds: float
    active: bool
    previous: str | None = None
    load_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ConsentChange:
    """A consent level change and when it applies."""

    level: str
    previous: str
    updated_at: str
    applies: str = "from the next request"
    events_deleted: int = 0
    models_pending_retrain: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)
