"""A toy log where views and purchases disagree: after trigger item x, most people VIEW v(x) next,
but the ones who buy, buy p(x). A model trained on every event ranks v(x) first after x; a
purchase-oriented one should rank p(x) first."""

from __future__ import annotations

import numpy as np
import pandas as pd

from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary

N_TRIGGERS = 4  # triggers t0..t3; viewed follow-ups v0..v3; purchased follow-ups p0..p3
VIEW_SHARE = 0.8


def trigger(x: int) -> int:
    """Item index of trigger x."""
    return x


def viewed(x: int) -> int:
    """Item index of the item mostly viewed after trigger x."""
    return N_TRIGGERS + x


def bought(x: int) -> int:
    """Item index of the item bought after trigger x."""
    return 2 * N_TRIGGERS + x


def toy_dataset(n_users: int = 200, seed: int = 0) -> InteractionDataset:
    """Each user views a trigger, then views its v(x) (80%) or buys its p(x) (20%)."""
    rng = np.random.default_rng(seed)
    keys = (
        [f"t{x}" for x in range(N_TRIGGERS)]
        + [f"v{x}" for x in range(N_TRIGGERS)]
        + [f"p{x}" for x in range(N_TRIGGERS)]
    )
    rows = []
    ts = 1_700_000_000.0
    for u in range(n_users):
        x = int(rng.integers(0, N_TRIGGERS))
        ts += 10.0
        rows.append((f"u{u:03d}", f"t{x}", "view", ts))
        ts += 1.0
        if rng.random() < VIEW_SHARE:
            rows.append((f"u{u:03d}", f"v{x}", "view", ts))
        else:
            rows.append((f"u{u:03d}", f"p{x}", "purchase", ts))
    events = pd.DataFrame(rows, columns=["user", "item", "type", "ts"])
    return InteractionDataset.from_events(events, items=Vocabulary(keys), name="toy-imbalance")
