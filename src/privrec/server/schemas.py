"""Request and response bodies of the /v1 API (what the OpenAPI schema documents)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Id = Field(min_length=1, max_length=256)
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RulesIn(Strict):
    """Business rules of one request."""

    exclude_items: list[str] = Field(
        default_factory=list, max_length=1000, description="item ids never to return"
    )
    exclude_purchased: bool = Field(default=True, description="drop items the shopper bought")
    exclude_seen: bool = Field(default=True, description="drop every item in the shopper's history")
    include_categories: list[str] = Field(
        default_factory=list, max_length=50, description="only these categories (path prefixes)"
    )
    exclude_categories: list[str] = Field(
        default_factory=list, max_length=50, description="never these categories (path prefixes)"
    )
    in_stock: bool = Field(default=False, description="only items not marked out of stock")
    price_min: float | None = Field(default=None, ge=0, le=1e9)
    price_max: float | None = Field(default=None, ge=0, le=1e9)
    diversity: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="maximal marginal relevance trade-off: 0 relevance only, 1 variety",
    )
    category_cap: int | None = Field(
        default=None, ge=1, le=1000, description="at most this many items per category"
    )
    pin_items: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="item ids placed first, in this order, where the other rules allow them "
        "(explained as 'placed by a shop rule')",
    )


class RecommendIn(Strict):
    """A recommendation request. The user id travels in the body, never in a URL."""

    user: str = Id
    k: int = Field(default=10, ge=1, le=100)
    model: str | None = Field(default=None, pattern=NAME_PATTERN)
    rules: RulesIn | None = None
    context_item: str | None = Field(
        default=None, min_length=1, max_length=256, description="the item the shopper is looking at"
    )
    experiment: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="a running experiment: its variant decides model and rules",
    )


class ExplanationOut(BaseModel):
    kind: Literal["rule", "history", "search", "context", "cold_item", "popular"]
    text: str
    because: list[dict[str, Any]]


class ItemOut(BaseModel):
    item: str
    title: str | None
    category: str | None
    price: float | None
    in_stock: bool
    score: float | None = None
    explanation: ExplanationOut | None = None


class RecommendationOut(BaseModel):
    recommendation_id: str
    model: str
    version: str
    personalized: bool
    consent: str
    experiment: str | None
    variant: str | None
    items: list[ItemOut]


class SearchIn(Strict):
    query: str = Field(min_length=1, max_length=200)
    user: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="personalises the order if the shopper consented",
    )
    k: int = Field(default=10, ge=1, le=100)
    rules: RulesIn | None = None
    mode: Literal["hybrid", "lexical", "dense"] = Field(
        default="hybrid",
        description="hybrid: words (BM25, typo-tolerant) and meaning (MiniLM) fused; lexical: "
        "words only; dense: meaning only",
    )


class SearchMatchOut(BaseModel):
    lexical: bool | None = None
    semantic: float | None = Field(default=None, description="cosine of query and item text")


class SearchItemOut(ItemOut):
    match: SearchMatchOut | None = None


class SearchOut(BaseModel):
    query: str
    mode: Literal["hybrid", "lexical", "dense"] = Field(
        description="how the items were retrieved (lexical when the semantic index is unavailable)"
    )
    note: str | None = Field(description="why the mode differs from the one asked for, if it does")
    corrected_query: str | None = Field(
        default=None, description="the typo-corrected query the results answer, if corrected"
    )
    personalized: bool
    model: str
    version: str
    items: list[SearchItemOut]


class ExplainIn(Strict):
    user: str = Id
    item: str = Id
    model: str | None = Field(default=None, pattern=NAME_PATTERN)


class ExplainOut(BaseModel):
    item: str
    model: str
    version: str
    score: float
    rank: int
    personalized: bool
    explanation: ExplanationOut


class EventIn(Strict):
    """One behaviour event; `recommendation_id` marks it as the outcome of a recommendation."""

    user: str = Id
    item: str = Id
    type: Literal["view", "search", "cart", "favorite", "purchase", "rating"]
    timestamp: float | str = Field(description="Unix seconds or an ISO-8601 date-time")
    rating: float | None = None
    query: str | None = Field(default=None, max_length=1000)
    session: str | None = Field(default=None, min_length=1, max_length=256)
    event_id: str | None = Field(default=None, min_length=1, max_length=256)
    recommendation_id: str | None = Field(default=None, min_length=1, max_length=64)
    value: float | None = Field(
        default=None,
        ge=0,
        le=1e9,
        description="revenue of a purchase (default: the catalogue price)",
    )


class IngestOut(BaseModel):
    received: int
    accepted: int
    duplicates: int
    rejected: int
    consent_dropped: int
    outcomes_attributed: int
    rejects: list[dict[str, Any]]
    seconds: float


class ConsentIn(Strict):
    level: Literal["personalized", "purchases_only", "anonymous"]


class ConsentOut(BaseModel):
    level: str
    previous: str | None = None
    updated_at: str | None = None
    applies: str | None = None
    events_deleted: int | None = None
    models_pending_retrain: list[str] | None = None
    levels: dict[str, str] | None = None


class AdminUserIn(Strict):
    user: str = Id


class ShopperTokenIn(Strict):
    """A request for a shopper token; the shop's backend asks for the shopper it signed in."""

    user: str = Id
    ttl_seconds: int | None = Field(
        default=None,
        ge=1,
        le=24 * 3600,
        description="lifetime in seconds (default: the server's PRIVREC_SHOPPER_TOKEN_TTL, 900)",
    )


class ShopperTokenOut(BaseModel):
    """A shopper token, to be sent by the shopper's browser as `X-Shopper-Token`."""

    token: str
    expires_at: str = Field(description="when the token stops working, ISO 8601 UTC")


class ActivateIn(Strict):
    version: str = Field(min_length=2, max_length=64, pattern=r"^v[0-9A-Za-z_.-]+$")


class TrainIn(Strict):
    params: dict[str, Any] = Field(default_factory=dict)


class VariantIn(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    model: str | None = Field(default=None, pattern=NAME_PATTERN)
    weight: float = Field(default=1.0, gt=0, le=1e6)
    params: RulesIn | None = None


class GuardrailIn(Strict):
    metric: Literal["revenue_per_shopper", "coverage", "ctr", "conversion"]
    max_drop: float = Field(ge=0.0, lt=1.0, description="largest allowed relative drop (0.05 = 5%)")


class ExperimentIn(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=500)
    variants: list[VariantIn] = Field(min_length=2, max_length=10)
    primary: Literal["conversion", "ctr"] = "conversion"
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    tau2: float = Field(default=1e-4, gt=0.0, lt=1.0, description="mSPRT mixing variance")
    guardrails: list[GuardrailIn] | None = Field(default=None, max_length=10)


class PromoteIn(Strict):
    force: bool = False
    arm: str | None = Field(default=None, pattern=NAME_PATTERN)


class ReplayIn(Strict):
    k: int = Field(default=10, ge=1, le=100)
    paired: bool = False
    max_users: int | None = Field(default=5000, ge=1, le=1_000_000)


class JobOut(BaseModel):
    id: str
    kind: str
    status: str
    created_at: float
    result: Any = None
    error: str | None = None
    progress: dict[str, Any] | None = Field(
        default=None, description="latest progress of a job that reports it: stage, done, total"
    )
