"""The content model: text profiles, recency and event weights, search, new items, save/load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privrec.core.errors import ConfigError
from privrec.core.types import EVENT_CODE, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.models.base import Recommender
from privrec.models.content import ContentRecommender
from privrec.text.cache import EmbeddingCache

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# index: (title, category, brand); groups: nails 0-2, hair 3-5, shaving 6-7, lips 8; 9 never bought
CATALOGUE = [
    ("Red nail polish, glossy lacquer", "Beauty > Makeup > Nails", "OPI"),
    ("Pink nail polish", "Beauty > Makeup > Nails", "Essie"),
    ("Quick dry top coat for nail polish", "Beauty > Makeup > Nails", "Sally Hansen"),
    ("Anti-dandruff shampoo", "Beauty > Hair Care > Shampoo", "Head & Shoulders"),
    ("Coconut oil moisturising shampoo", "Beauty > Hair Care > Shampoo", "Palmolive"),
    ("Argan oil hair conditioner", "Beauty > Hair Care > Conditioner", "Garnier"),
    ("Men's razor blades, 8 cartridges", "Beauty > Shave > Razors", "Gillette"),
    ("Sensitive skin shaving foam", "Beauty > Shave > Foam", "Nivea"),
    ("Matte red lipstick", "Beauty > Makeup > Lips", "Maybelline"),
    ("Acetone-free nail polish remover", "Beauty > Makeup > Nails", "Cutex"),
    ("Nourishing cuticle oil", "Beauty > Makeup > Nails", "CND"),
    ("Nail strengthener base coat", "Beauty > Makeup > Nails", "Nailtiques"),
    ("Repairing hair mask", "Beauty > Hair Care > Treatments", "Olaplex"),
    ("Volumising dry shampoo spray", "Beauty > Hair Care > Shampoo", "Batiste"),
    ("Soothing aftershave balm", "Beauty > Shave > After Shave", "Nivea"),
    ("Badger hair shaving brush", "Beauty > Shave > Brushes", "Edwin Jagger"),
]
GROUPS = [[0, 1, 2, 10, 11], [3, 4, 5, 12, 13], [6, 7, 14, 15]]
NAILS_AND_LIPS = {0, 1, 2, 8, 10, 11}
NEW_ITEM = 9  # nail polish remover: has text, never bought


def make_shop(seed: int = 0) -> InteractionDataset:
    """Users of three groups (nails, hair, shaving), 3-6 events each (some repeats); items 8 and 9
    have text but no events."""
    rng = np.random.default_rng(seed)
    rows = []
    ts = 1_700_000_000.0
    for g, items in enumerate(GROUPS):
        for u in range(8):
            n = int(rng.integers(3, len(items) + 1))
            seq = list(rng.choice(items, size=n, replace=False))
            if rng.random() < 0.3:
                seq.append(seq[0])  # a repeat purchase
            for it in seq:
                ts += 60.0
                rows.append(
                    (f"u{g}{u}", f"i{it}", "purchase" if rng.random() < 0.4 else "view", ts)
                )
    keys = [f"i{i}" for i in range(len(CATALOGUE))]
    meta = pd.DataFrame(
        {
            "item": keys,
            "title": [c[0] for c in CATALOGUE],
            "category": [c[1] for c in CATALOGUE],
            "brand": [c[2] for c in CATALOGUE],
        }
    )
    events = pd.DataFrame(rows, columns=["user", "item", "type", "ts"])
    return InteractionDataset.from_events(
        events, item_meta=meta, items=Vocabulary(keys), name="text-shop"
    )


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return make_shop()


@pytest.fixture(scope="module")
def model(shop: InteractionDataset) -> ContentRecommender:
    return ContentRecommender(cache=False, device="cpu").fit(shop)


def test_every_item_with_text_has_a_unit_embedding(
    model: ContentRecommender, shop: InteractionDataset
) -> None:
    e = model.item_embeddings
    assert e.shape == (shop.n_items, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # item 9 never appeared in an event, yet it has a representation and its neighbours are nails
    assert shop.item_meta.item.iloc[NEW_ITEM] not in set(shop.items.keys[i] for i in shop.item_idx)
    near, _ = model.similar_items(NEW_ITEM, k=3)
    assert set(near.tolist()) <= NAILS_AND_LIPS


def test_similar_items_exclude_the_item_itself(model: ContentRecommender) -> None:
    items, scores = model.similar_items(3, k=2)
    assert 3 not in items and items[0] == 4 and np.all(np.diff(scores) <= 0)


def test_search_finds_the_obvious_item(model: ContentRecommender) -> None:
    assert model.search("shampoo against dandruff", k=1)[0][0] == 3
    assert model.search("shaving cream for sensitive skin", k=1)[0][0] == 7
    e = model.explain_search("shampoo against dandruff", 3)
    assert e.kind == "search" and e.text == "matches your search 'shampoo against dandruff'"


def test_search_is_re_ranked_for_the_user(model: ContentRecommender) -> None:
    # "red" fits the nail polish and the lipstick; a nail-polish buyer gets the polish first
    plain = model.search("something red", k=2, personal_weight=0.0)[0]
    assert set(plain.tolist()) == {0, 8}

    def order(history: UserHistory) -> list[int]:
        ranked = model.search("something red", k=10, history=history, personal_weight=0.6)[
            0
        ].tolist()
        return [i for i in ranked if i in (0, 8)]

    assert order(UserHistory.of([1, 2])) == [0, 8]  # bought pink polish and top coat
    assert order(UserHistory.of([8])) == [8, 0]  # bought the lipstick


def test_recent_events_count_more(shop: InteractionDataset) -> None:
    m = ContentRecommender(cache=False, device="cpu", recency_half_life=1.0).fit(shop)
    hair_then_nails = m.recommend(UserHistory.of([3, 0]), k=1)[0][0]
    nails_then_hair = m.recommend(UserHistory.of([0, 3]), k=1)[0][0]
    assert hair_then_nails in NAILS_AND_LIPS | {NEW_ITEM} and nails_then_hair in GROUPS[1]


def test_purchases_count_more_than_views(model: ContentRecommender) -> None:
    view, buy = EVENT_CODE["view"], EVENT_CODE["purchase"]
    # same order twice; only the event types differ
    a = UserHistory(items=np.array([6, 3]), event_types=np.array([buy, view]))
    b = UserHistory(items=np.array([6, 3]), event_types=np.array([view, buy]))
    assert model.recommend(a, k=1)[0][0] in GROUPS[2]
    assert model.recommend(b, k=1)[0][0] in GROUPS[1]


def test_search_queries_shape_the_profile(model: ContentRecommender) -> None:
    q = model.query_embedding("razor for men")[None, :]
    h = UserHistory(items=np.array([3]), query_embeddings=q)
    top = model.recommend(h, k=1)[0][0]
    assert top == 6
    e = model.explain(h, 6)
    assert e.kind == "search" and "searches" in e.text
    only_query = UserHistory(items=np.array([], np.int64), query_embeddings=q)
    assert model.recommend(only_query, k=1)[0][0] == 6


def test_explanations_name_the_similar_history_item(model: ContentRecommender) -> None:
    h = UserHistory(
        items=np.array([3, 0]), event_types=np.array([EVENT_CODE["view"], EVENT_CODE["purchase"]])
    )
    e = model.explain(h, 1)
    assert e.kind == "history" and e.text.startswith("similar to 'Red nail polish, glossy lacquer'")
    assert e.contributors[0][0] == 0 and all(w > 0 for _, w in e.contributors)
    assert e.actions[0] == "purchase"  # what the user did; privrec.explain words it


def test_contributions_add_up_to_the_score(model: ContentRecommender) -> None:
    h = UserHistory(
        items=np.array([3, 0, 3, 1]),
        event_types=np.array([EVENT_CODE[t] for t in ("view", "purchase", "cart", "view")]),
    )
    items = np.arange(model.n_items)
    c = model.contributions(h, items)
    assert c.shape == (model.n_items, 4)
    np.testing.assert_allclose(c.sum(axis=1), model.score(h), rtol=1e-5, atol=1e-6)
    q = model.query_embedding("razor for men")[None, :]
    assert model.contributions(UserHistory(items=np.array([3]), query_embeddings=q), items) is None


def test_new_items_are_added_from_text(shop: InteractionDataset) -> None:
    m = ContentRecommender(cache=False, device="cpu").fit(shop)
    (new,) = m.add_items(["Glass nail file and cuticle pusher set. Beauty > Makeup > Nails. OPI"])
    assert new == shop.n_items and m.n_items == shop.n_items + 1
    s = m.score(UserHistory.of([0, 1]))
    assert s.shape == (shop.n_items + 1,)
    assert (
        s[new] > s[GROUPS[1] + GROUPS[2]].max()
    )  # a nail user sees the new nail item above hair/shave
    assert m.search("cuticle pusher", k=1)[0][0] == new
    m.set_item_text([5], ["Men's aftershave balm"])
    assert m.similar_items(5, k=1)[0][0] in GROUPS[2]


def test_save_load_round_trip_reproduces_scores(
    model: ContentRecommender, shop: InteractionDataset, tmp_path: Path
) -> None:
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "state.safetensors",
    ]
    loaded = Recommender.load(tmp_path / "m")
    assert isinstance(loaded, ContentRecommender)
    x = model.input_matrix(shop)
    np.testing.assert_array_equal(loaded.score_matrix(x), model.score_matrix(x))
    np.testing.assert_array_equal(loaded.item_embeddings, model.item_embeddings)
    assert loaded.item_titles == model.item_titles and loaded.encoder_id == model.encoder_id
    np.testing.assert_array_equal(loaded.search("shampoo", k=3)[0], model.search("shampoo", k=3)[0])
    h = shop.history(0)
    assert loaded.explain(h, 1).text == model.explain(h, 1).text


def test_input_matrix_matches_history_rows(
    model: ContentRecommender, shop: InteractionDataset
) -> None:
    x = model.input_matrix(shop)
    rows = model.history_matrix([shop.history(u) for u in range(shop.n_users)])
    np.testing.assert_allclose(x.toarray(), rows.toarray(), rtol=1e-6)


def test_item_vectors_come_from_the_cache_on_refit(
    shop: InteractionDataset, tmp_path: Path
) -> None:
    a = ContentRecommender(cache_dir=str(tmp_path), device="cpu").fit(shop)
    assert a.encoder.texts_encoded == shop.n_items
    b = ContentRecommender(cache_dir=str(tmp_path), device="cpu").fit(shop)
    assert b.encoder.texts_encoded == 0
    np.testing.assert_array_equal(a.item_embeddings, b.item_embeddings)
    assert EmbeddingCache(tmp_path).count() == shop.n_items


def test_a_different_encoder_is_refused_for_new_text(
    model: ContentRecommender, tmp_path: Path
) -> None:
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    loaded.encoder_id = "some-other-model@0000"
    with pytest.raises(ConfigError, match="refit"):
        loaded.add_items(["anything"])
