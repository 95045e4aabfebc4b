"""Models that owe a retrain after erasures, with their deadlines (`pending-retrains.json`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from privrec.core.errors import ValidationError
from privrec.core.files import write_private

PENDING_RETRAINS_FILE = "pending-retrains.json"


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class PendingRetrains:
    """Models that still carry erased shoppers' influence: {model: {deadline, since, erasures}}.

    Args:
        data_dir: the data directory (the file is ``pending-retrains.json``, mode 0600).
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / PENDING_RETRAINS_FILE
        self._lock = threading.Lock()

    def read(self) -> dict[str, dict[str, Any]]:
        """The current entries."""
        if not self.path.exists():
            return {}
        try:
            return dict(json.loads(self.path.read_text()))
        except ValueError:
            raise ValidationError(
                PENDING_RETRAINS_FILE, "is not valid JSON; retrain every model, then delete it"
            ) from None

    def _write(self, doc: dict[str, dict[str, Any]]) -> None:
        write_private(self.path, json.dumps(doc, indent=2, sort_keys=True))

    def add(self, models: Iterable[str], deadline: str, token: str) -> None:
        """Erasure `token` leaves `models` owing a retrain before `deadline`."""
        with self._lock:
            doc = self.read()
            for m in models:
                cur = doc.get(m)
                if cur is None:
                    doc[m] = {
                        "deadline": deadline,
                        "since": now_iso(),
                        "erasures": 1,
                        "erasure_ids": [token],
                    }
                else:  # the earliest deadline stands: a retrain clears every erasure before it
                    cur["erasures"] = int(cur.get("erasures", 0)) + 1
                    cur["erasure_ids"] = [*cur.get("erasure_ids", []), token]
            self._write(doc)

    def settle(self, name: str, token: str) -> None:
        """Erasure `token`'s claim on `name` is settled (updated exactly)."""
        with self._lock:
            doc = self.read()
            cur = doc.get(name)
            if cur is None or token not in cur.get("erasure_ids", []):
                return
            cur["erasure_ids"] = [t for t in cur["erasure_ids"] if t != token]
            cur["erasures"] = max(0, int(cur.get("erasures", 1)) - 1)
            if not cur["erasure_ids"]:
                doc.pop(name)
            self._write(doc)

    def clear(self, name: str) -> None:
        """`name` was retrained on the current store: it owes nothing."""
        with self._lock:
            doc = self.read()
            if doc.pop(name, None) is not None:
                self._write(doc)
