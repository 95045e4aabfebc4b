"""Stateful property test: random sequences of what shops and shoppers do, privacy checked after
every step.

Steps: ingest on every path (records, a bulk frame, an HTTP-style batch, a file), consent
changes, erasure, retention, key rotation, training (an exact-unlearning model and a DP model)
and serving. Invariants: no raw id anywhere in the data directory; an anonymous shopper has no
stored event; a forgotten shopper is in no store row, cached list or in-memory history, and
every activatable version of an exact model equals a retrain without them; the ledger never
exceeds its budget and holds no epsilon-infinity entry.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from privrec.core.settings import Settings
from privrec.core.types import UserHistory
from privrec.models.zoo import create_model
from privrec.service import RecSys
from tests.conftest import assert_no_raw_ids

SHOPPERS = [f"raw-shopper-{i:02d}-5e1f" for i in range(8)]
ITEMS = [f"sku-{i:03d}" for i in range(14)]
TYPES = ["view", "cart", "favorite", "purchase"]
LEVELS = ["personalized", "purchases_only", "anonymous"]
T0 = 1_764_400_000.0
DAY = 86_400.0

events = st.lists(
    st.tuples(
        st.sampled_from(SHOPPERS),
        st.sampled_from(ITEMS),
        st.sampled_from(TYPES),
        st.integers(0, 60),
    ),
    min_size=1,
    max_size=12,
)


def _records(rows: list[tuple[str, str, str, int]]) -> list[dict[str, object]]:
    return [
        {"user": u, "item": i, "type": t, "timestamp": T0 + d * DAY + k}
        for k, (u, i, t, d) in enumerate(rows)
    ]


class ShopMachine(RuleBasedStateMachine):
    """One data directory driven through the service facade."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="privrec-stateful-"))
        self.rs = RecSys(
            Settings(data_dir=self.dir / "data", privacy_budget_epsilon=3.0, expected_users=1000)
        )
        catalogue = pd.DataFrame({"item": ITEMS, "title": [f"Thing {i}" for i in ITEMS]})
        self.rs.add_items(catalogue)
        self.level = dict.fromkeys(SHOPPERS, "personalized")
        self.forgotten: set[str] = set()
        self.n_files = 0

    def teardown(self) -> None:
        self.rs.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _ingested(self, rows: list[tuple[str, str, str, int]]) -> None:
        self.forgotten -= {u for u, *_ in rows}  # a shopper who comes back is a shopper again

    # ---- what happens ---------------------------------------------------------------------------
    @rule(rows=events)
    def ingest_records(self, rows: list[tuple[str, str, str, int]]) -> None:
        self.rs.ingest_events(_records(rows))
        self._ingested(rows)

    @rule(rows=events)
    def ingest_frame(self, rows: list[tuple[str, str, str, int]]) -> None:
        self.rs.ingest_frame(pd.DataFrame(_records(rows)))
        self._ingested(rows)

    @rule(rows=events)
    def ingest_http_batch(self, rows: list[tuple[str, str, str, int]]) -> None:
        self.rs.ingestion.batch(_records(rows))
        self._ingested(rows)

    @rule(rows=events)
    def ingest_file(self, rows: list[tuple[str, str, str, int]]) -> None:
        self.n_files += 1
        path = self.dir / f"events-{self.n_files}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in _records(rows)))
        self.rs.ingest_file(path)
        path.unlink()  # the shop's own file, not part of the data directory
        self._ingested(rows)

    @rule(user=st.sampled_from(SHOPPERS), level=st.sampled_from(LEVELS))
    def set_consent(self, user: str, level: str) -> None:
        self.rs.set_consent(user, level)
        self.level[user] = level

    @rule(user=st.sampled_from(SHOPPERS))
    def forget(self, user: str) -> None:
        self.rs.forget(user)
        self.level[user] = "personalized"  # the consent record goes too
        self.forgotten.add(user)

    @rule(days=st.integers(1, 3000))
    def retention(self, days: int) -> None:
        self.rs.retention(days)

    @rule()
    def rotate_key(self) -> None:
        self.rs.rotate_key()  # consent levels and everything else must follow the new key

    @rule(name=st.sampled_from(["itemknn", "popularity"]))
    def train_exact(self, name: str) -> None:
        if len(self.rs.store.events()):
            self.rs.train(name, params={"k": 5} if name == "itemknn" else {})

    @rule()
    def train_dp(self) -> None:
        if len(self.rs.store.events()):
            try:
                self.rs.train("dp_popularity", params={"epsilon": 1.0})
            except Exception as exc:  # over budget: refused before any noise, nothing saved
                assert type(exc).__name__ == "BudgetExceededError", exc

    @rule(user=st.sampled_from(SHOPPERS))
    def serve(self, user: str) -> None:
        if self.rs.registry.default_name() is None:
            return
        out = self.rs.recommend(user, 3)
        assert out.consent == self.level[user]
        if self.level[user] == "anonymous":
            assert not out.personalized

    # ---- what must always hold ------------------------------------------------------------------
    @invariant()
    def no_raw_id_on_disk(self) -> None:
        assert_no_raw_ids(self.dir / "data", SHOPPERS)

    @invariant()
    def stored_events_follow_consent(self) -> None:
        for user, level in self.level.items():
            ev = self.rs.store.events(user=self.rs.ctx.pseudonymise(user))
            if level == "anonymous":
                assert len(ev) == 0
            elif level == "purchases_only":
                assert set(ev["type"]) <= {"purchase"}

    @invariant()
    def forgotten_shoppers_are_gone(self) -> None:
        for user in self.forgotten:
            p = self.rs.ctx.pseudonymise(user)
            assert len(self.rs.store.events(user=p)) == 0
            assert self.rs.serving.history.get(p) == ([], [])

    @invariant()
    def exact_models_equal_a_retrain(self) -> None:
        events = self.rs.store.events()
        for name in ("itemknn", "popularity"):
            info = self.rs.registry.models().get(name)
            if info is None or info.active is None or info.quarantined or not len(events):
                continue
            served, items = self.rs.registry.load(name, info.active)
            record = self.rs.registry.training_record(name, info.active)
            assert record is not None
            trained = len(record.event_ids)
            if trained != len(events):
                continue  # trained on less than the store holds (events arrived since)
            fresh = create_model(name, **self.rs.registry.config_of(name, info.active)["config"])
            ds = self.rs.dataset()
            fresh.fit(ds)
            assert ds.items.keys == items.keys
            for row in ds.matrix()[:6].toarray():
                idx = np.flatnonzero(row)
                h = UserHistory(items=idx, weights=row[idx].astype(np.float32))
                np.testing.assert_allclose(served.score(h), fresh.score(h), rtol=1e-5, atol=1e-6)

    @invariant()
    def the_ledger_stays_within_budget(self) -> None:
        entries = self.rs.ctx.ledger.entries()
        assert all(math.isfinite(float(e["epsilon"])) for e in entries)
        assert self.rs.ctx.ledger.spent().epsilon <= 3.0 + 1e-9


TestShop = ShopMachine.TestCase
TestShop.settings = settings(
    max_examples=12,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
)
