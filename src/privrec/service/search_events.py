"""A shopper's choice from a search list, stored as their `search` event.

A search shows items; it does not choose one. So searching stores no event (only the sealed
query embedding, `query_memory`); the `search` event is stored when the shopper acts on a result:
an outcome (click = view, cart, purchase) sent with the search list's `recommendation_id`, which
the feedback log attributes to the list and hands over as a choice (`FeedbackLog.on_search_choice`,
wired by `SearchIndexes.attach`). The event then names the item the shopper chose, so their
history, the models and "found X through a search" never name an item they only saw.

The event passes the same live gate as every HTTP event (validation, pseudonym, keyed event id,
query minimisation, flood limit) and the same consent rule (only where the shopper's level keeps
searches). It is dated when the search was made (the search came before the click), carries the
query text only where the shop keeps query text, and its id is derived from the list and the item,
so a second outcome of the same choice is stored once. Bulk-ingested `search` events (a shop's own
log) do not come this way: they are stored as sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from privrec.events.gate import Gate
from privrec.events.store_api import EventStoreAPI
from privrec.privacy import consent as policy
from privrec.service.consent import ConsentBook
from privrec.service.query_memory import QueryMemory

__all__ = ["store_choices"]


class _Serving(Protocol):
    consent: ConsentBook

    def add_events(self, accepted: pd.DataFrame) -> None:
        """Gated, stored events reach the in-memory histories."""
        ...


class _Ingestion(Protocol):
    @property
    def live_gate(self) -> Gate:
        """The server's gate."""
        ...

    @property
    def serving(self) -> _Serving:
        """The serving memory."""
        ...


def store_choices(
    ingestion: _Ingestion,
    memory: QueryMemory,
    store: EventStoreAPI,
    choices: Sequence[Mapping[str, Any]],
) -> int:
    """Store the `search` event of each item a shopper chose from a search list.

    Args:
        ingestion: the live gate and the serving memory the events reach.
        memory: the kept query embeddings (for the query text, where the shop keeps it).
        store: the event store.
        choices: {rec_id, item, user (the raw id, in memory only), shopper (pseudonym), ts (when
            the search was made)} per choice, as the feedback log hands them over.

    Returns:
        The events stored.
    """
    serving = ingestion.serving
    rows = []
    for c in choices:
        user, p = c.get("user"), c.get("shopper")
        if not user or not p:
            continue
        if "search" not in policy.allowed_types(serving.consent.level(str(p))):
            continue  # a level that keeps no searches: the choice is only an outcome
        rid, item = str(c["rec_id"]), str(c["item"])
        rec = {
            "user": str(user),
            "item": item,
            "type": "search",
            "timestamp": float(c["ts"]),
            "event_id": f"search-choice:{rid}:{item}",  # keyed with the user by the gate
        }
        kept = memory.search_of(str(p), rid)
        if kept is not None and kept[1]:
            rec["query"] = kept[1]  # kept only where the shop keeps query text
        rows.append(rec)
    if not rows:
        return 0
    lines = np.arange(1, len(rows) + 1, dtype=np.int64)
    result = ingestion.live_gate.process_frame(pd.DataFrame(rows), line_numbers=lines)
    if not len(result.accepted):
        return 0
    inserted, _ = store.append(result.accepted)
    if inserted:  # a choice already stored (a repeat delivery) must not count twice in memory
        serving.add_events(result.accepted)
    return int(inserted)
