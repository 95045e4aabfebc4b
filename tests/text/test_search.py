"""Product search (privrec.text.search) on a tiny catalogue with the real MiniLM encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest

from privrec.core.errors import ValidationError
from privrec.text.encoder import SentenceEncoder
from privrec.text.search import SearchConfig, SearchIndex

CATALOGUE = [
    ("Red Matte Lipstick", "Makeup > Lips > Lipstick", "Glossier"),
    ("Plush Pet Bed", "Pets > Furniture > Beds", "Cozy Paws"),
    ("Burr Coffee Grinder", "Kitchen > Coffee > Grinders", "Baratza"),
    ("Blue Nail Polish", "Makeup > Nails > Nail Polish", "OPI"),
    ("Moisturising Shampoo for Dry Hair", "Hair Care > Shampoo", "Pantene"),
    ("Stainless Steel Chef Knife", "Kitchen > Knives", "Wusthof"),
    ("Waterproof Mascara Black", "Makeup > Eyes > Mascara", "Maybelline"),
    ("Yoga Mat Non Slip", "Sports > Yoga", "Manduka"),
    ("Sunscreen Lotion SPF 50", "Skin Care > Sun", "Neutrogena"),
    ("Wooden Castle Building Set", "Toys > Building", "Tinker Town"),
    ("Electric Toothbrush", "Health > Oral Care", "Oral-B"),
    ("Scented Soy Candle Vanilla", "Home > Candles", "Yankee"),
]
TITLES = [t for t, _, _ in CATALOGUE]
TEXTS = [f"{t}. {b}. {c}" for t, c, b in CATALOGUE]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(device="cpu")


@pytest.fixture(scope="module")
def index(encoder: SentenceEncoder) -> SearchIndex:
    return SearchIndex.build(TITLES, TEXTS, encoder)


def test_bm25_finds_exact_words() -> None:
    ix = SearchIndex.build(TITLES, TEXTS, None)
    hits = ix.search("chef knife", k=3)
    assert hits.items[0] == 5
    assert hits.lexical.all()
    assert np.isnan(hits.dense).all()  # no vectors: BM25 alone
    assert not ix.has_dense
    # stemming: the plural finds the singular
    assert ix.search("lipsticks", mode="lexical").items[0] == 0
    # a word no item has finds nothing rather than anything
    assert len(ix.search("trampoline", mode="lexical")) == 0


def test_typo_query_finds_the_item(index: SearchIndex) -> None:
    for mode in ("lexical", "hybrid"):
        hits = index.search("lipstik", k=3, mode=mode)  # type: ignore[arg-type]
        assert hits.items[0] == 0
        assert hits.corrected_query == "lipstick"
        assert hits.lexical[0]
    assert index.search("mascara", k=3).corrected_query is None
    # with typo correction off the misspelt word finds nothing
    off = SearchIndex.build(TITLES, TEXTS, None, config=SearchConfig(typo=False))
    assert len(off.search("lipstik", mode="lexical")) == 0


def test_dense_only_hit_found_by_hybrid(index: SearchIndex) -> None:
    query = "somewhere for my kitten to nap"
    assert len(index.search(query, mode="lexical")) == 0  # shares no word with any item
    hits = index.search(query, k=3)
    assert hits.items[0] == 1  # Plush Pet Bed
    assert not hits.lexical[0]
    assert hits.dense[0] > 0.2
    assert index.search("grind beans for my morning espresso", k=3).items[0] == 2  # Coffee Grinder
    assert index.search("something to keep my teeth clean", k=3).items[0] == 10  # Toothbrush


def test_one_shared_word_does_not_beat_a_semantic_match(encoder: SentenceEncoder) -> None:
    titles = [*TITLES, "Cat Scratching Post", "Silk Sleep Mask"]
    texts = [
        *TEXTS,
        "Cat Scratching Post. PetCo. Pets > Furniture > Scratchers",
        "Silk Sleep Mask. Slip. Beauty > Eye Masks",
    ]
    query = "something for my cat to sleep on"
    ix = SearchIndex.build(titles, texts, encoder)
    hits = ix.search(query, k=3)
    # no item holds most of the query's catalogue words ("cat", "sleep"): a partial query, so
    # the pet bed, which shares no word, ranks above the post that shares "cat"
    assert hits.match_share < ix.config.match_share
    assert hits.items.tolist()[0] == 1
    assert hits.lexical.tolist()[0] is False
    assert hits.items.tolist().index(12) > 0
    # with the partial pair's power 1 instead of 4, the one shared word wins
    linear = SearchIndex.build(titles, texts, encoder, config=SearchConfig(partial_power=1.0))
    assert linear.search(query, k=1).items.tolist() != [1]


def test_words_the_catalogue_lacks_do_not_count_in_the_share(encoder: SentenceEncoder) -> None:
    # "sleep", "something" and "my" are no catalogue word here (they may be misspellings), so
    # the post holds every known word of the query: a matched query, BM25 leads
    titles = [*TITLES, "Cat Scratching Post"]
    texts = [*TEXTS, "Cat Scratching Post. PetCo. Pets > Furniture > Scratchers"]
    hits = SearchIndex.build(titles, texts, encoder).search("something for my cat to sleep on")
    assert hits.match_share == 1.0
    assert hits.items.tolist()[0] == 12


def test_matched_and_partial_queries_get_their_own_blend(encoder: SentenceEncoder) -> None:
    # matched pair: BM25 alone (weight 1); partial pair: the cosine alone (weight 0)
    cfg = SearchConfig(match_share=0.6, lexical_weight=1.0, partial_weight=0.0)
    ix = SearchIndex.build(TITLES, TEXTS, encoder, config=cfg)
    matched = ix.search("waterproof mascara", k=5)
    assert matched.match_share == 1.0
    assert matched.items.tolist()[0] == 6
    # the cosine has no weight: items without a query word score 0
    assert matched.lexical.tolist() == [True, False, False, False, False]
    assert matched.scores[0] > 0 and not matched.scores[1:].any()
    # each of these words is in a different item: no item holds more than about a third
    partial = ix.search("vanilla yoga knife", k=5)
    assert partial.match_share < 0.5
    dense = ix.search("vanilla yoga knife", k=5, mode="dense")
    assert partial.items.tolist() == dense.items.tolist()
    np.testing.assert_allclose(partial.scores, dense.scores, rtol=1e-5)
    # match_share 0: every query is matched, so the same query is ranked by BM25 alone
    every = SearchIndex.build(
        TITLES, TEXTS, encoder, config=cfg.model_copy(update={"match_share": 0.0})
    )
    lexical = every.search("vanilla yoga knife", k=3, mode="lexical")
    assert every.search("vanilla yoga knife", k=3).items.tolist() == lexical.items.tolist()


def test_allowed_mask_respected(index: SearchIndex) -> None:
    allowed = np.ones(index.n_items, dtype=bool)
    allowed[[0, 1]] = False
    for mode in ("hybrid", "lexical", "dense"):
        for q in ("lipstick", "somewhere for my kitten to nap"):
            hits = index.search(q, k=12, mode=mode, allowed=allowed)  # type: ignore[arg-type]
            assert not np.isin(hits.items, [0, 1]).any()
    only = np.zeros(index.n_items, dtype=bool)
    only[7] = True
    assert index.search("lipstick", k=5, mode="dense", allowed=only).items.tolist() == [7]


def test_update_reembeds_only_changed_items(encoder: SentenceEncoder) -> None:
    ix = SearchIndex.build(TITLES, TEXTS, encoder)
    assert ix.search("hiking boots", k=1, mode="lexical").items.size == 0
    before = encoder.texts_encoded
    # item 3 unchanged, item 4 changed, item 12 appended
    ix.update(
        np.array([3, 4, 12]),
        [TITLES[3], "Leather Hiking Boots", "Garden Hose 20m"],
        [TEXTS[3], "Leather Hiking Boots. Trailmaster. Shoes > Outdoor", "Garden Hose 20m. Garden"],
    )
    assert encoder.texts_encoded - before == 2
    assert ix.n_items == 13
    assert ix.search("hiking boots", k=1).items.tolist() == [4]
    assert ix.search("hose for watering plants", k=1).items.tolist() == [12]
    assert 4 not in ix.search("shampoo", k=12, mode="lexical").items
    # a gap when appending stays empty and hidden
    ix.update(np.array([15]), ["Tent"], ["Tent. Camping"])
    assert ix.n_items == 16
    assert not np.isin(ix.search("tent camping", k=16).items, [13, 14]).any()
    with pytest.raises(ValidationError) as err:
        ix.update(np.array([1, 1]), ["a", "b"], ["a", "b"])
    assert err.value.field == "items"


def test_remove(encoder: SentenceEncoder) -> None:
    ix = SearchIndex.build(TITLES, TEXTS, encoder)
    ix.remove(np.array([1, 2]))
    for mode in ("hybrid", "lexical", "dense"):
        for q in ("plush pet bed", "coffee grinder", "somewhere for my kitten to nap"):
            hits = ix.search(q, k=12, mode=mode)  # type: ignore[arg-type]
            assert not np.isin(hits.items, [1, 2]).any()
    assert ix.n_items == len(TITLES)  # rows never shift
    with pytest.raises(ValidationError) as err:
        ix.remove(np.array([99]))
    assert err.value.field == "items"
    # updating a removed item brings it back
    ix.update(np.array([2]), [TITLES[2]], [TEXTS[2]])
    assert ix.search("coffee grinder", k=1).items.tolist() == [2]


@pytest.mark.parametrize("ann", ["exact", "usearch"])
def test_save_load_round_trip(encoder: SentenceEncoder, tmp_path: Path, ann: str) -> None:
    ix = SearchIndex.build(TITLES, TEXTS, encoder, config=SearchConfig(ann=ann))  # type: ignore[arg-type]
    ix.remove(np.array([5]))
    ix.update(np.array([12]), ["Garden Hose"], ["Garden Hose. Garden"])
    ix.save(tmp_path / "ix")
    back = SearchIndex.load(tmp_path / "ix", encoder)
    assert back.n_items == ix.n_items and back.has_dense
    assert back.config == ix.config
    for q in ("lipstik", "chef knife", "somewhere for my kitten to nap", "garden", "makeup"):
        for mode in ("hybrid", "lexical", "dense"):
            a = ix.search(q, k=8, mode=mode)  # type: ignore[arg-type]
            b = back.search(q, k=8, mode=mode)  # type: ignore[arg-type]
            assert a.items.tolist() == b.items.tolist()
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
            assert a.corrected_query == b.corrected_query
    assert not any(p.suffix in (".pkl", ".pickle") for p in (tmp_path / "ix").iterdir())


def test_index_saved_before_the_per_query_blend_gets_todays_fusion(tmp_path: Path) -> None:
    import json

    old = SearchIndex.build(TITLES, TEXTS, None, config=SearchConfig(k1=1.5, lexical_power=3.0))
    old.save(tmp_path / "ix")
    meta_path = tmp_path / "ix" / "index.json"
    meta = json.loads(meta_path.read_text())
    for key in ("match_share", "partial_power", "partial_weight"):
        del meta["config"][key]  # as written before those settings existed
    meta_path.write_text(json.dumps(meta))
    back = SearchIndex.load(tmp_path / "ix", None)
    assert back.config.lexical_power == SearchConfig().lexical_power
    assert back.config.k1 == 1.5  # the index's own settings are kept


def test_ann_fallback_when_mask_excludes_most(encoder: SentenceEncoder) -> None:
    ix = SearchIndex.build(TITLES, TEXTS, encoder, config=SearchConfig(ann="usearch"))
    exact = SearchIndex.build(TITLES, TEXTS, encoder, config=SearchConfig(ann="exact"))
    only = np.zeros(ix.n_items, dtype=bool)
    only[[9, 11]] = True
    got = ix.search("lipstick", k=2, mode="dense", allowed=only)
    want = exact.search("lipstick", k=2, mode="dense", allowed=only)
    assert sorted(got.items.tolist()) == [9, 11]
    assert got.items.tolist() == want.items.tolist()


def test_query_vector_passed_in_is_used(index: SearchIndex) -> None:
    qv = index.query_vector("somewhere for my kitten to nap")
    assert qv.shape == (384,) and abs(float(np.linalg.norm(qv)) - 1.0) < 1e-4
    assert index.search("zzzz", k=1, mode="dense", query_vector=qv).items.tolist() == [1]


def test_bad_input_names_the_field(index: SearchIndex) -> None:
    lexical_only = SearchIndex.build(TITLES, TEXTS, None)
    cases = [
        (lambda: index.search("   "), "query"),
        (lambda: index.search("x" * 501), "query"),
        (lambda: index.search("lipstick", k=0), "k"),
        (lambda: index.search("lipstick", mode="semantic"), "mode"),  # type: ignore[arg-type]
        (lambda: lexical_only.search("lipstick", mode="dense"), "mode"),
        (lambda: lexical_only.query_vector("lipstick"), "encoder"),
        (lambda: index.search("lipstick", allowed=np.ones(3, dtype=bool)), "allowed"),
        (lambda: index.search("lipstick", query_vector=np.ones(5)), "query_vector"),
        (lambda: SearchIndex.build(["a"], ["a", "b"], None), "texts"),
    ]
    for call, field in cases:
        with pytest.raises(ValidationError) as err:
            call()
        assert err.value.field == field
    with pytest.raises(pydantic.ValidationError, match="bm25_k1"):
        SearchConfig(bm25_k1=1.0)  # type: ignore[call-arg]
    for field, bad in (("match_share", 1.5), ("partial_power", 0.0), ("partial_weight", -0.1)):
        with pytest.raises(pydantic.ValidationError, match=field):
            SearchConfig(**{field: bad})
