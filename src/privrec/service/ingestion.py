"""Events in: files, Python records and HTTP batches, all through the privacy gate and consent.

Every path pseudonymises at the gate and drops what the sender's consent level does not allow
before anything is stored. HTTP batches also reach the in-memory histories at once and
attribute experiment outcomes; the bulk paths make the serving memory re-read the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privrec.events.gate import ArrivalRateLimiter, Gate
from privrec.events.ingest import BatchReport, ingest_file, ingest_frame, ingest_records
from privrec.privacy import consent as policy
from privrec.service.consent import ConsentBook
from privrec.service.context import ServiceContext
from privrec.service.serving import Serving

# An event that carries a recommendation id is an outcome of that list: a view is a click.
OUTCOME_OF = {"view": "click", "cart": "cart", "purchase": "purchase"}
MAX_REJECTS_SHOWN = 100


class Ingestion:
    """The ways events enter the store.

    Args:
        ctx: the data directory's context.
        consent: the consent levels.
        serving: the serving memory that new events must reach.
    """

    def __init__(self, ctx: ServiceContext, consent: ConsentBook, serving: Serving) -> None:
        self.ctx = ctx
        self.consent = consent
        self.serving = serving
        self._live_gate: Gate | None = None

    def _rejects(self, stem: str) -> Path:
        return self.ctx.data_dir / "rejects" / f"{stem}.{int(time.time())}.rejects.jsonl"

    def _stored(self, report: BatchReport) -> BatchReport:
        self.serving.reload_history()
        return report

    def file(
        self, path: str | Path, *, progress: Callable[[int], None] | None = None
    ) -> BatchReport:
        """A JSONL, CSV or Parquet file; rejects go to DATA_DIR/rejects with line and reason."""
        rej = self._rejects(Path(path).name)
        gate, store, keep = self.ctx.gate(), self.ctx.store, self.consent.frame_filter()
        report = ingest_file(
            Path(path),
            gate,
            store,
            rejects_path=rej,
            progress=progress,
            consent=keep,
            rejects_key=self.ctx.sidecar_key,
        )
        return self._stored(report)

    def records(self, records: Iterable[Mapping[str, Any]]) -> BatchReport:
        """Python event records (Event's fields as keys)."""
        gate, store, keep = self.ctx.gate(), self.ctx.store, self.consent.frame_filter()
        report = ingest_records(
            records,
            gate,
            store,
            rejects_path=self._rejects("api"),
            consent=keep,
            rejects_key=self.ctx.sidecar_key,
        )
        return self._stored(report)

    def frame(self, frame: pd.DataFrame) -> BatchReport:
        """A raw event frame (Event's fields as columns), through the gate's bulk path."""
        gate, store, keep = self.ctx.gate(), self.ctx.store, self.consent.frame_filter()
        report = ingest_frame(
            frame,
            gate,
            store,
            rejects_path=self._rejects("frame"),
            consent=keep,
            rejects_key=self.ctx.sidecar_key,
        )
        return self._stored(report)

    @property
    def live_gate(self) -> Gate:
        """The server's gate: its arrival-rate limit holds across requests."""
        if self._live_gate is None:
            gate = self.ctx.gate()
            limit = self.ctx.settings.max_events_per_user_per_minute
            if limit is not None:
                gate.arrivals = ArrivalRateLimiter(limit)
            self._live_gate = gate
        return self._live_gate

    def reset_gate(self) -> None:
        """Build the live gate again (after a key rotation)."""
        self._live_gate = None

    def batch(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Events from the HTTP API, in memory at once; returns counts and the first rejects.

        Per record, after the consent check: `recommendation_id` (and optional `value`)
        attribute the event as an experiment outcome (view = click, cart, purchase).
        """
        t0 = time.perf_counter()
        keep: list[dict[str, Any]] = []
        lines: list[int] = []
        outcomes: list[dict[str, Any]] = []
        dropped = 0
        # every sender's level in one query (a new shopper costs no connection of their own)
        users = {u for r in records if (u := _user_of(r))}
        pseudo = {u: self.ctx.pseudonymise(u) for u in users}
        known = self.consent.levels(list(pseudo.values()))
        for line, rec in enumerate(records, start=1):
            if not isinstance(rec, dict):
                keep.append({"_bad": True})
                lines.append(line)
                continue
            rid = rec.pop("recommendation_id", None)
            value = rec.pop("value", None)
            user = _user_of(rec)
            level = known[pseudo[user]] if user else policy.DEFAULT_LEVEL
            # before the gate (which rejects malformed types for every level): an event the
            # sender's level does not keep is dropped, and must not count as an outcome either
            if level != policy.DEFAULT_LEVEL and rec.get("type") not in policy.allowed_types(level):
                dropped += 1
                continue
            if rid is not None and rec.get("type") in OUTCOME_OF:
                outcome = OUTCOME_OF[rec["type"]]
                item = str(rec.get("item"))
                outcomes.append(
                    {
                        "rec_id": str(rid),
                        "type": outcome,
                        "item": item,
                        "value": value,
                        "ts": rec.get("timestamp"),  # the attribution window counts from it
                        "shopper": pseudo[user] if user else None,  # only their own lists
                        "user": user or None,  # a search choice passes the gate (memory only)
                    }
                )
            keep.append(rec)
            lines.append(line)
        result = None
        if keep:
            frame = pd.DataFrame.from_records(keep)
            if "_bad" in frame.columns:
                frame = frame.rename(columns={"_bad": "record_is_not_an_object"})
            result = self.live_gate.process_frame(frame, line_numbers=np.asarray(lines, np.int64))
        inserted = duplicates = 0
        if result is not None and len(result.accepted):
            inserted, duplicates = self.ctx.store.append(result.accepted)
            self.serving.add_events(result.accepted)
        attributed = self._attribute(outcomes) if outcomes else 0
        rejects = []
        if result is not None:  # by input position, whatever order the checks found them in
            rejects = sorted(
                (r.to_dict() for r in result.rejects), key=lambda r: r.get("line") or 0
            )
        return {
            "received": len(records),
            "accepted": int(inserted),
            "duplicates": int(duplicates + (result.duplicates if result is not None else 0)),
            "rejected": len(rejects),
            "consent_dropped": dropped,
            "outcomes_attributed": attributed,
            "rejects": rejects[:MAX_REJECTS_SHOWN],
            "seconds": round(time.perf_counter() - t0, 4),
        }

    def _attribute(self, outcomes: list[dict[str, Any]]) -> int:
        """Record outcomes against their lists (the feedback log, and the experiment log where
        the list was served in an experiment); a purchase without a value is worth its price.

        Returns the outcomes attributed to a list (by either log).
        """
        experiments = self.serving.experiments
        cat = self.serving.model() if self.serving.registry.default_name() else None
        for o in outcomes:
            if o["value"] is None and cat is not None and o["type"] == "purchase":
                i = cat.index.get(o["item"], -1)
                price = float(cat.table.price[i]) if i >= 0 else float("nan")
                o["value"] = price if np.isfinite(price) else 0.0
        fed = experiments.feedback.record_outcomes(outcomes)
        return max(fed, experiments.log_outcomes(outcomes) if experiments.exists else 0)


def _user_of(rec: Any) -> str:
    """The sender's id of a record ('' when it has none the gate would accept)."""
    if not isinstance(rec, dict):
        return ""
    user = rec.get("user")
    if isinstance(user, str | int) and not isinstance(user, bool):
        return str(user).strip()
    return ""
