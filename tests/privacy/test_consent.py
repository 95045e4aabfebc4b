"""Consent levels: what may be stored, who is served personally, and the small consent table."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from privrec.core.errors import ValidationError
from privrec.core.types import EVENT_TYPES
from privrec.privacy.consent import (
    ConsentLevel,
    ConsentStore,
    allowed_types,
    filter_types,
    parse_level,
    personalised,
    stores_events,
)


def test_filter_types_semantics() -> None:
    types = ["view", "purchase", "cart", "purchase", "search", "rating", "favorite"]
    assert filter_types("personalized", types) == types
    assert filter_types("purchases_only", types) == ["purchase", "purchase"]
    assert filter_types(ConsentLevel.ANONYMOUS, types) == []
    assert allowed_types("personalized") == frozenset(EVENT_TYPES)


def test_levels_decide_storage_and_personalisation() -> None:
    assert (
        stores_events("personalized")
        and stores_events("purchases_only")
        and not stores_events("anonymous")
    )
    assert personalised("purchases_only") and not personalised("anonymous")
    assert parse_level(" Anonymous ") is ConsentLevel.ANONYMOUS
    with pytest.raises(ValidationError, match="personalized"):
        parse_level("everything")


def test_store_set_get_change_delete(tmp_path: Path) -> None:
    store = ConsentStore(tmp_path)
    p = "a" * 32
    assert store.get(p) is ConsentLevel.PERSONALIZED  # the default
    store.set(p, "anonymous")
    assert store.get(p) is ConsentLevel.ANONYMOUS
    store.set(p, ConsentLevel.PURCHASES_ONLY)  # a change applies to the next read
    assert ConsentStore(tmp_path).get(p) is ConsentLevel.PURCHASES_ONLY
    assert store.record(p)["level"] == "purchases_only"
    assert store.levels([p, "b" * 32]) == {
        p: ConsentLevel.PURCHASES_ONLY,
        "b" * 32: ConsentLevel.PERSONALIZED,
    }
    assert store.count() == {"purchases_only": 1}
    assert store.delete(p) and not store.delete(p)
    assert store.record(p) is None
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_default_level_is_configurable(tmp_path: Path) -> None:
    assert ConsentStore(tmp_path, default="anonymous").get("c" * 32) is ConsentLevel.ANONYMOUS


def test_many_levels_at_once(tmp_path: Path) -> None:
    store = ConsentStore(tmp_path)
    ps = [f"{i:032x}" for i in range(2000)]
    for p in ps[:5]:
        store.set(p, "anonymous")
    got = store.levels(ps)
    assert sum(v is ConsentLevel.ANONYMOUS for v in got.values()) == 5 and len(got) == 2000
