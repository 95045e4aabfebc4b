"""The consent policy (what each level stores, uses, serves and enrols), its texts and its table.

The expected values below are written out from design.md's "Privacy semantics", not derived
from the module, so a change to the policy fails here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privrec.core.errors import ValidationError
from privrec.core.types import EVENT_CODE, EVENT_TYPES
from privrec.privacy import consent
from privrec.privacy.consent import (
    DEFAULT_LEVEL,
    LEVEL_TEXTS,
    ConsentLevel,
    allowed_types,
    describe,
    enrolled_in_experiments,
    keeps,
    parse_level,
    personalised,
    served_types,
    uses,
)
from privrec.privacy.consent_store import ConsentStore
from privrec.privacy.sealed import SealedDataError

ALL = frozenset({"view", "search", "cart", "favorite", "purchase", "rating"})
# level -> (stored types, served types, personalised, enrolled in experiments)
EXPECTED = {
    "personalized": (ALL, ALL, True, True),
    "purchases_only": (frozenset({"purchase"}), frozenset({"purchase"}), True, True),
    "anonymous": (frozenset(), frozenset(), False, False),
}


def test_the_levels_and_the_default() -> None:
    assert [lv.value for lv in ConsentLevel] == list(EXPECTED)
    assert DEFAULT_LEVEL is ConsentLevel.PERSONALIZED
    assert frozenset(EVENT_TYPES) == ALL  # a new event type must be placed in the policy


@pytest.mark.parametrize("level", list(EXPECTED))
def test_policy_of_each_level(level: str) -> None:
    stored, served, pers, exp = EXPECTED[level]
    lv = parse_level(level)
    assert allowed_types(lv) == stored and allowed_types(level) == stored
    assert served_types(lv) == served
    assert personalised(lv) is pers
    assert enrolled_in_experiments(lv) is exp


@pytest.mark.parametrize("level", list(EXPECTED))
def test_masks_follow_the_policy_for_every_type(level: str) -> None:
    stored, served, _, _ = EXPECTED[level]
    types = np.array(sorted(ALL) * 2, dtype=object)
    want_kept = np.array([t in stored for t in types])
    want_used = np.array([t in served for t in types])
    assert keeps(level, types).tolist() == want_kept.tolist()
    assert uses(level, types).tolist() == want_used.tolist()
    codes = np.array([EVENT_CODE[t] for t in types], dtype=np.int8)  # UserHistory.event_types
    assert keeps(level, codes).tolist() == want_kept.tolist()
    assert uses(ConsentLevel(level), codes).tolist() == want_used.tolist()
    assert keeps(level, types.astype(str)).tolist() == want_kept.tolist()  # numpy strings


def test_anonymous_stores_and_uses_nothing() -> None:
    types = np.array(list(EVENT_TYPES) * 3)
    assert not keeps("anonymous", types).any() and not uses("anonymous", types).any()


def test_purchases_only_drops_everything_but_purchases() -> None:
    types = ["view", "purchase", "cart", "purchase", "search", "rating", "favorite"]
    assert types_kept("purchases_only", types) == ["purchase", "purchase"]
    assert types_kept("personalized", types) == types


def types_kept(level: str, types: list[str]) -> list[str]:
    return [t for t, k in zip(types, keeps(level, types), strict=True) if k]


def test_unknown_types_are_never_kept_nor_used() -> None:
    odd = np.array(["click", "", None, "VIEW", 3.5], dtype=object)
    for level in EXPECTED:
        assert not keeps(level, odd).any() and not uses(level, odd).any()
    assert not uses("personalized", np.array([-1, 99])).any()


def test_a_level_per_event() -> None:
    levels = ["personalized", "purchases_only", "anonymous", ConsentLevel.PURCHASES_ONLY]
    types = np.array(["view", "view", "purchase", "purchase"])
    assert keeps(levels, types).tolist() == [True, False, False, True]
    assert uses(np.array(levels, dtype=object), types).tolist() == [True, False, False, True]
    assert keeps(["Anonymous"], ["view"]).tolist() == [False]
    assert keeps([], []).tolist() == []
    with pytest.raises(ValueError, match="one per event"):
        keeps(["personalized"], ["view", "view"])
    with pytest.raises(ValidationError):
        keeps(["personalized", "everything"], ["view", "view"])


def test_parse_level() -> None:
    assert parse_level(" Anonymous ") is ConsentLevel.ANONYMOUS
    assert parse_level(ConsentLevel.PURCHASES_ONLY) is ConsentLevel.PURCHASES_ONLY
    with pytest.raises(ValidationError) as err:
        parse_level("everything")
    assert err.value.field == "level"
    assert all(lv in err.value.problem for lv in EXPECTED)


def test_level_is_its_value_as_text() -> None:
    lv = ConsentLevel.PURCHASES_ONLY
    assert (
        lv == "purchases_only"
        and f"{lv}" == "purchases_only"
        and json.dumps(lv) == '"purchases_only"'
    )


def test_texts_of_every_level() -> None:
    assert set(LEVEL_TEXTS) == set(ConsentLevel)
    titles = [t.title for t in LEVEL_TEXTS.values()]
    assert len(set(titles)) == len(titles)
    for lv in ConsentLevel:
        d = describe(lv.value)
        assert d == {
            "level": lv.value,
            "title": LEVEL_TEXTS[lv].title,
            "description": LEVEL_TEXTS[lv].description,
        }
        assert d["title"] and d["description"].endswith(".")
        assert d["description"].count(".") == 1  # one sentence


def test_texts_say_what_the_policy_does() -> None:
    """What a shopper reads must match the policy: a text that promised more would fail here."""
    words = {
        "view": "views",
        "search": "searches",
        "cart": "carts",
        "favorite": "favourites",
        "purchase": "purchases",
        "rating": "ratings",
    }
    personal = LEVEL_TEXTS[ConsentLevel.PERSONALIZED].description.lower()
    assert all(words[t] in personal for t in allowed_types("personalized"))
    purchases = LEVEL_TEXTS[ConsentLevel.PURCHASES_ONLY].description.lower()
    assert "only your purchases" in purchases
    assert not any(words[t] in purchases for t in ALL - allowed_types("purchases_only"))
    anonymous = LEVEL_TEXTS[ConsentLevel.ANONYMOUS].description.lower()
    assert "nothing" in anonymous and "popular" in anonymous
    assert not personalised("anonymous") and "instead of personal" in anonymous


# ---- the consent table ------------------------------------------------------------------------
@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_store_set_get_change_delete(tmp_path: Path, open_umask: None) -> None:
    store = ConsentStore(tmp_path)
    other = ConsentStore(tmp_path)  # another worker's handle
    p = "a" * 32
    assert store.get(p) is ConsentLevel.PERSONALIZED  # the default
    assert other.levels([p]) == {p: ConsentLevel.PERSONALIZED}
    store.set(p, "anonymous")
    assert store.get(p) is ConsentLevel.ANONYMOUS
    store.set(p, ConsentLevel.PURCHASES_ONLY)
    # a change applies to the next request: the other handle, read before, sees it now
    assert other.get(p) is ConsentLevel.PURCHASES_ONLY
    assert other.levels([p]) == {p: ConsentLevel.PURCHASES_ONLY}
    rec = store.record(p)
    assert rec is not None and rec["level"] == "purchases_only"
    assert store.levels([p, "b" * 32]) == {
        p: ConsentLevel.PURCHASES_ONLY,
        "b" * 32: ConsentLevel.PERSONALIZED,
    }
    assert store.count() == {"purchases_only": 1}
    assert store.delete(p) and not store.delete(p)
    assert store.record(p) is None and store.get(p) is DEFAULT_LEVEL
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600  # even under umask 0
    assert os.listdir(tmp_path) == ["consent.sqlite"]  # no journal left beside it


def test_an_erased_record_is_gone_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_connect = sqlite3.connect

    def connect_insecure(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        con = real_connect(*args, **kwargs)
        con.execute("PRAGMA secure_delete=OFF")  # a SQLite build whose default is off
        return con

    monkeypatch.setattr(sqlite3, "connect", connect_insecure)
    store = ConsentStore(tmp_path)
    ps = [f"{i:x}" * 32 for i in range(5)]
    for p in ps:
        store.set(p, "anonymous")
    assert ps[2].encode() in store.path.read_bytes()
    store.delete(ps[2])
    data = store.path.read_bytes()
    assert ps[2].encode() not in data  # overwritten, not just unlinked
    assert ps[3].encode() in data


def test_store_rejects_bad_input(tmp_path: Path) -> None:
    store = ConsentStore(tmp_path)
    with pytest.raises(ValidationError) as err:
        store.set("a" * 32, "all")
    assert err.value.field == "level"
    with pytest.raises(ValidationError, match="pseudonym"):
        store.set("", "anonymous")


def test_default_level_is_configurable(tmp_path: Path) -> None:
    assert ConsentStore(tmp_path, default="anonymous").get("c" * 32) is ConsentLevel.ANONYMOUS


def test_many_levels_at_once(tmp_path: Path) -> None:
    store = ConsentStore(tmp_path)
    ps = [f"{i:032x}" for i in range(2000)]
    for p in ps[:5]:
        store.set(p, "anonymous")
    got = store.levels(ps)
    assert sum(v is ConsentLevel.ANONYMOUS for v in got.values()) == 5 and len(got) == 2000


def test_open_migrates_an_older_consent_json_once(tmp_path: Path) -> None:
    ConsentStore(tmp_path).set("b" * 32, "personalized", at=1e9)  # newer than the file
    (tmp_path / "consent.json").write_text(
        json.dumps(
            {
                "a" * 32: {"level": "anonymous", "updated_at": "2025-01-01T00:00:00Z"},
                "b" * 32: {"level": "purchases_only", "updated_at": "2025-01-01T00:00:00Z"},
            }
        )
    )
    store = ConsentStore.open(tmp_path)
    assert not (tmp_path / "consent.json").exists()
    assert store.get("a" * 32) is ConsentLevel.ANONYMOUS
    assert store.record("a" * 32) == {"level": "anonymous", "updated": "2025-01-01T00:00:00Z"}
    assert store.get("b" * 32) is ConsentLevel.PERSONALIZED  # the table's record wins
    assert ConsentStore.open(tmp_path).count() == {"anonymous": 1, "personalized": 1}


@pytest.mark.parametrize("text", ["{not json", '{"p": {"level": "everything"}}', "[]"])
def test_a_broken_consent_json_is_an_error_not_a_default(tmp_path: Path, text: str) -> None:
    (tmp_path / "consent.json").write_text(text)
    with pytest.raises(ValidationError) as err:
        ConsentStore.open(tmp_path)
    assert err.value.field == "consent.json"
    assert (tmp_path / "consent.json").exists()  # kept for the operator to restore


def test_the_policy_module_stays_pure() -> None:
    """privacy/ is audited on its own: it imports nothing above core (design.md)."""
    src = Path(consent.__file__).read_text()
    for layer in ("events", "data", "models", "service", "server", "experiments"):
        assert f"privrec.{layer}" not in src


# ---- sealed levels ------------------------------------------------------------------------------
SEAL_KEY = bytes(range(32))


def test_sealed_levels_round_trip_and_leave_no_level_name_in_the_file(tmp_path: Path) -> None:
    store = ConsentStore.open(tmp_path, key=SEAL_KEY)
    store.set("a" * 32, "anonymous")
    store.set("b" * 32, "purchases_only")
    store.set("c" * 32, "purchases_only")
    assert store.get("a" * 32) == ConsentLevel.ANONYMOUS
    assert store.levels(["b" * 32, "d" * 32]) == {
        "b" * 32: ConsentLevel.PURCHASES_ONLY,
        "d" * 32: ConsentLevel.PERSONALIZED,
    }
    assert store.count() == {"anonymous": 1, "purchases_only": 2}
    rec = store.record("c" * 32)
    assert rec is not None and rec["level"] == "purchases_only"
    raw = (tmp_path / "consent.sqlite").read_bytes()
    assert b"anonymous" not in raw and b"purchases_only" not in raw
    with pytest.raises(SealedDataError):
        ConsentStore.open(tmp_path)  # no key: refused, never a default level
    with pytest.raises(SealedDataError):
        ConsentStore.open(tmp_path, key=bytes(32))


def test_plaintext_rows_of_an_older_table_are_sealed_on_open(tmp_path: Path) -> None:
    ConsentStore.open(tmp_path).set("a" * 32, "anonymous")
    assert b"anonymous" in (tmp_path / "consent.sqlite").read_bytes()
    store = ConsentStore.open(tmp_path, key=SEAL_KEY)
    assert store.get("a" * 32) == ConsentLevel.ANONYMOUS
    raw = (tmp_path / "consent.sqlite").read_bytes()
    assert b"anonymous" not in raw and b"a" * 32 not in raw
    assert store.delete("a" * 32) and store.count() == {}


def test_sealed_rows_are_rekeyed(tmp_path: Path) -> None:
    store = ConsentStore.open(tmp_path, key=SEAL_KEY)
    store.set("a" * 32, "anonymous")
    staged = store.stage_rekey(lambda old: [p.replace("a", "b") for p in old], 1)
    assert staged.pseudonyms == ["a" * 32]
    staged.commit()
    assert store.get("b" * 32) == ConsentLevel.ANONYMOUS
    assert store.get("a" * 32) == ConsentLevel.PERSONALIZED


def test_a_record_copied_over_another_shoppers_row_is_refused(tmp_path: Path) -> None:
    store = ConsentStore.open(tmp_path, key=SEAL_KEY)
    store.set("a" * 32, "anonymous")
    store.set("b" * 32, "personalized")
    con = sqlite3.connect(tmp_path / "consent.sqlite")
    with con:
        (sealed,) = con.execute("SELECT level FROM consent ORDER BY rowid LIMIT 1").fetchone()
        con.execute("UPDATE consent SET level = ? WHERE rowid = 2", (sealed,))
    con.close()
    with pytest.raises(SealedDataError, match="another shopper"):
        store.get("b" * 32)


def test_the_kept_read_connection_sees_every_committed_change_and_a_replaced_file(
    tmp_path: Path,
) -> None:
    """Lookups reuse one connection per thread: a write by another store object (another
    process, the erasure) is seen at once, and a file replaced by a restore is reopened."""
    import shutil

    from privrec.privacy.consent_store import ConsentStore

    reader = ConsentStore(tmp_path, default="anonymous")
    writer = ConsentStore(tmp_path, default="anonymous")
    assert reader.get("p1") is ConsentLevel.ANONYMOUS
    writer.set("p1", "personalized")
    assert reader.get("p1") is ConsentLevel.PERSONALIZED
    assert reader.levels(["p1", "p2"])["p1"] is ConsentLevel.PERSONALIZED
    writer.set("p1", "purchases_only")  # the reader holds no lock that would block this
    assert reader.levels(["p1"])["p1"] is ConsentLevel.PURCHASES_ONLY
    backup = tmp_path / "backup.sqlite"
    shutil.copy(reader.path, backup)
    writer.set("p1", "anonymous")
    assert reader.get("p1") is ConsentLevel.ANONYMOUS
    backup.replace(reader.path)  # restored: a new file under the same name
    assert reader.get("p1") is ConsentLevel.PURCHASES_ONLY
