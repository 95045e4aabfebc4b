"""The feedback loop: served lists are logged as impressions, outcomes are attributed within the
window, metrics per version and arm, consent, erasure, retention; experiments promote."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from privrec.core.errors import ConflictError
from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.service import RecSys
from tests.conftest import assert_no_raw_ids


@pytest.fixture()
def rs(data_dir: Path) -> Iterator[RecSys]:
    events, catalogue = generate_shop(n_items=80, n_users=40, seed=3)
    with RecSys(Settings(data_dir=data_dir, attribution_window_hours=2.0)) as r:
        r.add_items(catalogue)
        r.ingest_frame(events)
        r.train("popularity")
        r.train("itemknn", params={"k": 20})
        r.set_default_model("itemknn")
        yield r


def _outcome(user: str, item: str, rid: str, kind: str = "view", **extra: object) -> dict:
    return {
        "user": user,
        "item": item,
        "type": kind,
        "timestamp": time.time(),
        "recommendation_id": rid,
        **extra,
    }


def test_served_lists_are_impressions_and_outcomes_count_within_the_window(rs: RecSys) -> None:
    out = rs.recommend("alice", k=5)
    assert len(out.recommendation_id) == 16  # 64 random bits, hex
    first = out.items[0]["item"]
    rep = rs.ingestion.batch(
        [
            _outcome("alice", first, out.recommendation_id),
            _outcome("alice", first, out.recommendation_id, "purchase", value=12.5),
            _outcome("alice", "not-on-the-list", out.recommendation_id),
            _outcome("mallory", first, out.recommendation_id, "cart"),  # not her list
        ]
    )
    assert rep["outcomes_attributed"] == 2
    rows = rs.experiments.feedback.metrics(by="version", days=1)
    (row,) = [r for r in rows if r["model"] == "itemknn"]
    assert row["impressions"] == 1 and row["tracked"] == 1 and row["shoppers"] == 1
    assert row["ctr"] == 1.0 and row["conversion"] == 1.0
    assert row["revenue"] == 12.5 and row["revenue_per_shopper"] == 12.5
    assert row["items_shown"] == 5 and row["coverage"] == pytest.approx(5 / 80)
    assert row["day"] == time.strftime("%Y-%m-%d", time.gmtime())


def test_an_outcome_after_the_window_does_not_count(rs: RecSys) -> None:
    out = rs.recommend("bob", k=3)
    late = time.time() + 3 * 3600  # the window is 2 hours
    fb = rs.experiments.feedback
    fb.clock = lambda: late
    rep = rs.ingestion.batch(
        [_outcome("bob", out.items[0]["item"], out.recommendation_id, timestamp=late)]
    )
    assert rep["outcomes_attributed"] == 0


def test_search_and_similar_lists_carry_an_id_and_are_logged(rs: RecSys) -> None:
    item = rs.recommend("carol", k=1).items[0]["item"]
    sim = rs.serving.similar(item, k=4)
    assert len(sim["recommendation_id"]) == 16
    title = rs.serving.item(item)["title"]
    found = rs.search(title.split()[0], k=3, user_id="carol")
    assert len(found.recommendation_id) == 16
    assert found.to_dict()["recommendation_id"] == found.recommendation_id
    rows = rs.experiments.feedback.summary(by="version", days=1)
    assert sum(r["impressions"] for r in rows) == 3
    # a click on a similar-items list counts for that list
    rep = rs.ingestion.batch([_outcome("carol", sim["items"][0]["item"], sim["recommendation_id"])])
    assert rep["outcomes_attributed"] == 1


def test_anonymous_shoppers_are_counted_but_not_recorded(rs: RecSys) -> None:
    rs.set_consent("dave", "anonymous")
    out = rs.recommend("dave", k=5)
    rs.ingestion.batch([_outcome("dave", out.items[0]["item"], out.recommendation_id)])
    (row,) = rs.experiments.feedback.summary(by="version", days=1)
    assert row["impressions"] == 1 and row["anonymous_impressions"] == 1
    assert row["tracked"] == 0 and row["ctr"] is None
    assert rs.experiments.feedback.records_of(rs.ctx.pseudonymise("dave")) == []


def test_export_erase_and_retention(rs: RecSys, data_dir: Path) -> None:
    out = rs.recommend("erin", k=3)
    rs.ingestion.batch([_outcome("erin", out.items[0]["item"], out.recommendation_id)])
    rs.recommend("frank", k=3)
    (mine,) = rs.export_user("erin")["served_lists"]
    assert mine["recommendation_id"] == out.recommendation_id
    assert mine["items"] == [i["item"] for i in out.items]
    assert mine["outcomes"][0]["type"] == "click" and mine["outcomes"][0]["position"] == 0
    rs.experiments.feedback.flush()
    assert_no_raw_ids(data_dir, ["erin", "frank"])
    receipt = rs.forget("erin")
    assert receipt["experiment_rows_deleted"] >= 2
    fb = rs.experiments.feedback
    assert fb.records_of(rs.ctx.pseudonymise("erin")) == []
    assert len(fb.records_of(rs.ctx.pseudonymise("frank"))) == 1
    # retention: everything is older than 90 days, 91 days from now
    assert fb.expire(now=time.time() + 91 * 86400) > 0
    assert fb.records_of(rs.ctx.pseudonymise("frank")) == []


def _run_experiment(rs: RecSys, n: int, rate: dict[str, float]) -> None:
    """`n` new shoppers each see one list; each arm's shoppers buy its first item at `rate`."""
    events = []
    for u in range(n):
        user = f"exp-shopper-{u:04d}"
        out = rs.recommend(user, k=5, experiment="pop-vs-knn")
        assert out.variant is not None
        # a deterministic share of each arm buys (u's position decides)
        if (u * 7919 % 1000) / 1000 < rate[out.variant]:
            item = out.items[0]["item"]
            events.append(_outcome(user, item, out.recommendation_id, "purchase", value=10.0))
    rs.ingestion.batch(events)


def test_promotion_waits_for_the_sequential_test_and_activates_the_winner(rs: RecSys) -> None:
    spec = {
        "name": "pop-vs-knn",
        "variants": [
            {"name": "control", "model": "itemknn"},
            {"name": "pop", "model": "popularity"},
        ],
        "tau2": 0.01,  # the mixing variance of the large effects these tests simulate
        "guardrails": [{"metric": "revenue_per_shopper", "max_drop": 0.05}],
    }
    rs.experiments.create(spec)
    _run_experiment(rs, 40, {"control": 0.05, "pop": 0.5})
    report = rs.experiments.report("pop-vs-knn")
    assert not report["decision"]["concluded"]  # too few shoppers to conclude
    assert report["sequential"]["pop"]["conversion"]["method"].startswith("mSPRT")
    with pytest.raises(ConflictError, match="cannot be promoted yet"):
        rs.experiments.promote_served(rs.serving, "pop-vs-knn")
    _run_experiment(rs, 400, {"control": 0.05, "pop": 0.5})
    report = rs.experiments.report("pop-vs-knn")
    seq = report["sequential"]["pop"]["conversion"]
    assert seq["concluded"] and seq["effect"] > 0.2 and seq["p_value"] <= 0.05
    assert report["decision"] == {
        **report["decision"],
        "winner": "pop",
        "ready": True,
        "blocked_by": [],
    }
    arms = {r["arm"]: r for r in report["online"]}
    assert arms["pop"]["conversion"] > arms["control"]["conversion"]
    (guard,) = report["guardrails"]["pop"]
    assert (
        guard["metric"] == "revenue_per_shopper" and not guard["breached"] and guard["change"] > 0
    )
    done = rs.experiments.promote_served(rs.serving, "pop-vs-knn")
    assert done["promoted"]["arm"] == "pop" and done["promoted"]["model"] == "popularity"
    assert done["promoted"]["version"] == rs.registry.active("popularity")
    assert rs.registry.default_name() == "popularity"
    assert rs.recommend("someone-new", k=3).model in ("popularity",)
    assert rs.experiments.get("pop-vs-knn")["status"] == "promoted"
    with pytest.raises(ConflictError, match="already promoted"):
        rs.experiments.promote_served(rs.serving, "pop-vs-knn")


def test_a_guardrail_breach_blocks_promotion_unless_forced(rs: RecSys) -> None:
    spec = {
        "name": "guarded",
        "variants": [
            {"name": "control", "model": "itemknn"},
            {"name": "pop", "model": "popularity"},
        ],
        # pop converts more shoppers but earns less per shopper than the control
        "tau2": 0.01,  # the mixing variance of the large effects these tests simulate
        "guardrails": [{"metric": "revenue_per_shopper", "max_drop": 0.0}],
    }
    rs.experiments.create(spec)
    events = []
    for u in range(300):
        user = f"g-{u:04d}"
        out = rs.recommend(user, k=5, experiment="guarded")
        buys = (u * 7919 % 1000) / 1000 < (0.6 if out.variant == "pop" else 0.05)
        if buys:
            value = 1.0 if out.variant == "pop" else 500.0  # pop converts, control earns more
            events.append(
                _outcome(user, out.items[0]["item"], out.recommendation_id, "purchase", value=value)
            )
    rs.ingestion.batch(events)
    d = rs.experiments.report("guarded")["decision"]
    assert d["winner"] == "pop" and d["blocked_by"] == ["revenue_per_shopper"] and not d["ready"]
    with pytest.raises(ConflictError, match="guardrails"):
        rs.experiments.promote_served(rs.serving, "guarded")
    forced = rs.experiments.promote_served(rs.serving, "guarded", force=True)
    assert forced["promoted"]["forced"] and forced["promoted"]["arm"] == "pop"


def test_a_key_rotation_keeps_the_shoppers_lists_findable(rs: RecSys) -> None:
    known = "shopper-00025"  # has stored events: the rotation knows them
    assert len(rs.ctx.store.events(user=rs.ctx.pseudonymise(known)))
    out = rs.recommend(known, k=3)
    rs.recommend("only-shown-lists", k=3)  # no stored event: the rotation cannot know them
    rs.rotate_key()
    mine = rs.export_user(known)["served_lists"]
    assert [r["recommendation_id"] for r in mine] == [out.recommendation_id]
    assert rs.forget(known)["experiment_rows_deleted"] >= 1
    assert rs.experiments.feedback.records_of(rs.ctx.pseudonymise(known)) == []


def test_becoming_anonymous_deletes_the_shoppers_served_lists(rs: RecSys) -> None:
    rs.recommend("gina", k=3)
    p = rs.ctx.pseudonymise("gina")
    assert len(rs.experiments.feedback.records_of(p)) == 1
    rs.set_consent("gina", "purchases_only")
    assert len(rs.experiments.feedback.records_of(p)) == 1
    rs.set_consent("gina", "anonymous")
    assert rs.experiments.feedback.records_of(p) == []
    (row,) = rs.experiments.feedback.summary(by="version", days=1)
    assert row["impressions"] == 1  # the count stays: it is not about anyone
