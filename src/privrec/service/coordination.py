"""Several API workers over one PostgreSQL store, acting as one.

Each worker holds the serving memory of `Serving` (every shopper's history, the consent levels
it has looked up, the loaded model versions, the finished-list cache). When one worker changes
any of it, the `Coordinator` it has installed tells the others through PostgreSQL's
LISTEN/NOTIFY (`privrec.events.pg_notify`), and each of them brings its own memory up to date:

- a model activated, rolled back or made the default (`ModelRegistry.on_change`): every worker
  re-reads the pointers and hot-swaps the active version (`Serving.refresh`);
- a shopper's events, consent level or erasure (`Serving.peers.shoppers`): every worker reads
  that shopper's history from the store again, forgets their cached consent level and query
  embeddings, and their cached lists with it (the list cache is keyed by history generation);
- every history (a bulk ingest, retention, key rotation) or the catalogue: every worker reloads
  them.

Messages carry pseudonyms (already stored in the same database), never raw ids. A worker that
lost its listening connection missed messages: on reconnect it reloads everything.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from privrec.core.types import EVENT_CODE
from privrec.events.pg_notify import MAX_PAYLOAD, PgListener, PgNotifier
from privrec.service.history import Peers
from privrec.service.serving import Serving

__all__ = ["LEAD_LOCK", "Coordinator"]

logger = logging.getLogger(__name__)

LEAD_LOCK = 0x70726976_0011  # advisory lock key ("priv" + n): the worker that runs the scheduler
_VERSION = 1
_PER_MESSAGE = 200  # pseudonyms per message: 32 hex each, well under the 8,000-byte payload cap
_RELOAD_ABOVE = 2_000  # more shoppers changed at once: every worker reloads every history


class Coordinator(Peers):
    """Tells the other workers what this one changed, and applies what they changed.

    Args:
        serving: this worker's serving state (its `peers` becomes this coordinator).
        url: the PostgreSQL URL of the shop's store.
        on_lead: started on the one worker that holds the leader lock (the retrain scheduler);
            None: no election.

    Attributes:
        worker_id: a random id, so that a worker ignores its own messages.
        applied: messages applied from other workers (for the metrics and tests).
        last_applied: wall time of the last one applied.
    """

    def __init__(
        self, serving: Serving, url: str, *, on_lead: Callable[[], None] | None = None
    ) -> None:
        self.serving = serving
        self.worker_id = secrets.token_hex(6)
        self._notifier = PgNotifier(url)
        self._listener = PgListener(
            url,
            self._receive,
            on_resync=self._resync,
            lead_key=LEAD_LOCK if on_lead is not None else None,
            on_lead=on_lead,
        )
        self._applying = threading.local()  # set while applying another worker's change
        self.applied = 0
        self.sent = 0
        self.send_failures = 0
        self.last_applied: float | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """LISTEN first (so no change after this call is missed), then hook into serving.

        Raises:
            StoreError: the database cannot be reached.
        """
        self._listener.start()
        self.serving.peers = self
        self.serving.registry.on_change.append(self.models)

    def stop(self) -> None:
        """Unhook and stop listening (a held leader lock is released)."""
        if self.serving.peers is self:
            self.serving.peers = Peers()
        if self.models in self.serving.registry.on_change:
            self.serving.registry.on_change.remove(self.models)
        self._listener.stop()
        self._notifier.close()

    @property
    def leader(self) -> bool:
        """Whether this worker holds the leader lock."""
        return self._listener.leader

    def stats(self) -> dict[str, Any]:
        """Counters (no personal data)."""
        return {
            "worker": self.worker_id,
            "sent": self.sent,
            "send_failures": self.send_failures,
            "received": self._listener.received,
            "applied": self.applied,
            "reconnects": self._listener.reconnects,
            "leader": self.leader,
        }

    # ---- telling the others (Peers) -----------------------------------------------------------
    def shoppers(self, pseudonyms: list[str], why: str) -> None:
        """These shoppers' events, consent or erasure changed here."""
        if not pseudonyms or getattr(self._applying, "on", False):
            return
        if len(pseudonyms) > _RELOAD_ABOVE:
            self.histories()
            return
        for i in range(0, len(pseudonyms), _PER_MESSAGE):
            self._send({"k": "shoppers", "why": why, "p": pseudonyms[i : i + _PER_MESSAGE]})

    def histories(self) -> None:
        """Every history changed here."""
        if not getattr(self._applying, "on", False):
            self._send({"k": "histories"})

    def catalogue(self) -> None:
        """The catalogue changed here."""
        if not getattr(self._applying, "on", False):
            self._send({"k": "catalogue"})

    def models(self, name: str) -> None:
        """A model was activated, rolled back or made the default here."""
        if not getattr(self._applying, "on", False):
            self._send({"k": "models", "model": name})

    def _send(self, msg: dict[str, Any]) -> None:
        msg = {"v": _VERSION, "src": self.worker_id, **msg}
        payload = json.dumps(msg, separators=(",", ":"))
        if len(payload.encode()) > MAX_PAYLOAD:  # cannot happen with the chunking above
            payload = json.dumps({"v": _VERSION, "src": self.worker_id, "k": "histories"})
        try:
            self._notifier.send(payload)
            self.sent += 1
        except Exception as exc:  # the change itself is stored; the others catch up on resync
            self.send_failures += 1
            logger.warning("coordination send failed kind=%s error=%s", msg["k"], exc)

    # ---- applying the others' changes ---------------------------------------------------------
    def _receive(self, payload: str) -> None:
        msg = json.loads(payload)
        if msg.get("v") != _VERSION or msg.get("src") == self.worker_id:
            return
        self._applying.on = True
        try:
            kind = msg.get("k")
            if kind == "shoppers":
                self._apply_shoppers([str(p) for p in msg.get("p", [])], str(msg.get("why")))
            elif kind == "histories":
                self._apply_histories()
            elif kind == "catalogue":
                self._apply_catalogue()
            elif kind == "models":
                self.serving.refresh()
            else:
                return
            self.applied += 1
            self.last_applied = time.time()
        finally:
            self._applying.on = False

    def _apply_shoppers(self, pseudonyms: list[str], why: str) -> None:
        s = self.serving
        store = s.ctx.store
        history = s.history
        for p in pseudonyms:
            s.consent.invalidate(p)
            s.search_indexes.memory.reread(p)
            if why == "erase":
                history.drop(p)
                continue
            ev = store.events(user=p)
            keys = ev["item"].astype(str).tolist()
            types = ev["type"].map(EVENT_CODE).fillna(0).astype(int).tolist()
            history.replace(p, keys, types)

    def _apply_histories(self) -> None:
        s = self.serving
        s.consent.invalidate()
        s.search_indexes.memory.reread()
        s.reload_history()  # the next request reads every history again

    def _apply_catalogue(self) -> None:
        from privrec.service.catalogue import DELETED_META_KEY

        raw = self.serving.ctx.store.meta().get(DELETED_META_KEY)
        self.serving.refresh_catalogue(set(json.loads(raw)) if raw else set())

    def _resync(self) -> None:
        """After a lost connection: messages may have been missed, so reload everything."""
        self._applying.on = True
        try:
            self._apply_histories()
            self._apply_catalogue()
            self.serving.refresh()
        finally:
            self._applying.on = False
