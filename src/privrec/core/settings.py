"""Settings: defaults < privrec.toml < PRIVREC_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from privrec.core.types import DEFAULT_EVENT_WEIGHTS


class Settings(BaseSettings):
    """Runtime settings of privrec.

    Attributes:
        data_dir: the one directory that holds the event store, keys, artifacts and ledger.
        pseudonym_key: hex HMAC key; if unset, one is generated into data_dir/keys with mode 0600.
        store_key: hex AES key of the event store; if unset, generated like the pseudonym key.
        key_dir: where key files live (None: data_dir/keys); keep it outside the data directory.
        store_url: None for the embedded, encrypted DuckDB store in data_dir; a
            `postgresql://...` URL (PRIVREC_STORE_URL) for the PostgreSQL store. Secret: it may
            hold a password.
        event_weights: weight of each event type in the user x item matrix.
        retention_days: per event type, how long events are kept (None = forever).
        keep_query_text: store search query text (otherwise only its embedding/hash is kept).
        rating_min / rating_max: the rating scale accepted at the gate.
        max_line_bytes: lines longer than this are rejected without being parsed.
        ingest_batch_size: rows validated and appended per batch.
        max_events_per_user_per_minute: the gate rejects a pseudonym's rows beyond this many in
            any 60 seconds of event time within one batch (a flood or a fake-shopper bot) and, in
            the server, beyond this many arriving within any 60 seconds across requests; None
            turns the limit off. Generous by default: people rarely exceed one event a second.
        privacy_budget_epsilon / privacy_budget_delta: the total (epsilon, delta) that all DP
            releases trained through the service may spend together (composed by the ledger's
            accountant). The delta defaults to 1 / (10 x expected_users) when not set.
        expected_users: the shop's expected number of shoppers, a public planning figure (never
            the exact count) that the default budget delta follows.
        retrain_deadline_days: after an erasure, models that cannot unlearn exactly must be
            retrained within this many days (the receipt names the deadline).
        attribution_window_hours: an outcome (click, cart, purchase) counts for a served list
            when it happens within this many hours after the list was shown.
        feedback_retention_days: served lists and their outcomes (the feedback log) are kept
            this many days, then deleted.
        search_personal_weight: how much a consenting shopper's own model score re-ranks search
            hits (times the spread of the retrieval scores; 0: no re-rank).
        search_query_history: the most recent stored query embeddings a shopper's history
            carries into the content and hybrid models (0: none).
        bought_together_epsilon: the epsilon of each DP release of the items-bought-together
            pairs shown on item pages (charged to the ledger; 0 turns the widget off).
        bought_together_max_pairs: pairs one shopper's purchases count in a release (the
            contribution bound: more pairs per shopper means more noise and a higher threshold).
        bought_together_refresh_days: the least time between two releases (a new one is made
            only when events changed).
    """

    model_config = SettingsConfigDict(
        env_prefix="PRIVREC_", toml_file="privrec.toml", extra="forbid"
    )

    data_dir: Path = Path("privrec-data")
    pseudonym_key: SecretStr | None = None
    store_key: SecretStr | None = None
    key_dir: Path | None = None
    store_url: SecretStr | None = None
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    retention_days: dict[str, int | None] = Field(default_factory=dict)
    keep_query_text: bool = False
    rating_min: float = 1.0
    rating_max: float = 5.0
    max_line_bytes: int = 1_000_000
    ingest_batch_size: int = 200_000
    max_events_per_user_per_minute: int | None = Field(default=600, ge=1)
    privacy_budget_epsilon: float = Field(default=10.0, gt=0.0)
    privacy_budget_delta: float = Field(default=1e-6, ge=0.0, lt=1.0)
    expected_users: int = Field(default=100_000, ge=1)
    retrain_deadline_days: float = Field(default=30.0, gt=0.0)
    attribution_window_hours: float = Field(default=24.0, gt=0.0, le=24.0 * 90)
    feedback_retention_days: int = Field(default=90, ge=1)
    search_personal_weight: float = Field(default=0.5, ge=0.0, le=10.0)
    search_query_history: int = Field(default=20, ge=0, le=1000)
    bought_together_epsilon: float = Field(default=1.0, ge=0.0, le=10.0)
    bought_together_max_pairs: int = Field(default=2, ge=1, le=100)
    bought_together_refresh_days: float = Field(default=30.0, gt=0.0)

    @model_validator(mode="after")
    def _delta_follows_expected_users(self) -> Settings:
        # delta must be well below 1/n to mean anything, but the exact n of the shop is private
        # (it would leak through the budget); a public expected size sets it instead.
        if "privacy_budget_delta" not in self.model_fields_set:
            self.__dict__["privacy_budget_delta"] = 1.0 / (10.0 * self.expected_users)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order of precedence: init arguments, environment, privrec.toml, defaults."""
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls),
            file_secret_settings,
        )
