"""An append-only, hash-chained audit log (JSON lines, mode 0600) for erasure receipts and the like.

Each line is one JSON object with the fields given by the caller plus

- ``seq``: 0, 1, 2, ... (position in the log),
- ``time``: UTC ISO time of the append,
- ``prev``: the ``hash`` of the previous line ("" for the first),
- ``hash``: HMAC-SHA256 of the line's canonical JSON without ``hash`` itself, keyed with the
  audit key (``keys/audit.key``, mode 0600), so that nobody without the key can write a chain that
  verifies (a plain hash could be recomputed after an edit).

Rewriting or deleting an earlier line breaks the chain, which `verify` reports. Cutting lines off
the end leaves a valid shorter chain, so every append also records the count and the last hash in
an `Anchor` kept elsewhere (the service keeps it inside the encrypted event store): `verify`
compares the log's end with it, and a truncated or replaced tail is reported. Appending only needs
the last line. The log holds pseudonyms and counts, never raw user ids or event contents
(callers pass only those; `append` refuses a few obviously personal keys as a guard).

With a sealing key (the service always gives one: the sidecar key, not the HMAC key) each line
is stored sealed (`privacy.sealed`: base64 of the AES-256-GCM-sealed JSON); the chain's hashes are
still computed over the plaintext entry, so sealing changes nothing in `verify`. Plaintext lines
of older logs are still read, and a log may mix both.

Erasure receipts (`erasure_receipt`) record: the pseudonym, the time, what was deleted (events,
consent record, cached results), which models were updated exactly, which are left for a retrain
and the deadline by which that retrain must happen.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from privrec.core.errors import ValidationError
from privrec.core.files import open_private_append
from privrec.privacy.sealed import SealedDataError, seal_line, unseal_line

AUDIT_FILE = "audit.log"
AUDIT_KEY_FILE = "audit.key"
AUDIT_AAD = b"privrec:audit"
_FORBIDDEN_KEYS = frozenset({"user_id", "raw_user_id", "email", "name", "ip", "query"})


def _canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Anchor(Protocol):
    """Where the log's length and last hash are kept, away from the log itself."""

    def get(self) -> tuple[int, str] | None:
        """(entries, hash of the last one) as last recorded, or None before the first entry."""
        ...

    def set(self, count: int, last_hash: str) -> None:
        """Record the log's new length and last hash."""
        ...


class AuditLog:
    """The append-only audit log at ``<data_dir>/audit.log`` (or a given file path).

    Args:
        path: the data directory or the log file.
        key: the HMAC key of the chain (None: plain SHA-256, for logs of older versions).
        anchor: where the length and last hash are also recorded (None: no truncation check).
        seal_key: the sidecar key that seals each line (None: plaintext JSON lines).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        key: bytes | None = None,
        anchor: Anchor | None = None,
        seal_key: bytes | None = None,
    ) -> None:
        p = Path(path)
        self.path = p if p.suffix else p / AUDIT_FILE
        self._key = key
        self._anchor = anchor
        self._seal_key = seal_key

    def _read(self, line: str, number: int) -> dict[str, Any]:
        entry: dict[str, Any] = unseal_line(
            line, self._seal_key, aad=AUDIT_AAD, where=f"{self.path} line {number}"
        )
        return entry

    def _digest(self, body: Mapping[str, Any]) -> str:
        if self._key is None:
            return hashlib.sha256(_canonical(body)).hexdigest()
        return hmac.new(self._key, _canonical(body), hashlib.sha256).hexdigest()

    def append(self, action: str, **fields: Any) -> dict[str, Any]:
        """Append one entry (`action` plus JSON-ready fields); return it with seq, time, hash."""
        bad = _FORBIDDEN_KEYS & set(fields)
        if bad:
            raise ValidationError(
                sorted(bad)[0],
                "personal data does not belong in the audit log; record the pseudonym only",
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open_private_append(self.path) as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                fh.seek(0)
                last = None
                seq = 0
                for line in fh:
                    if line.strip():
                        last = line
                        seq += 1
                # a line written before the log was chained has no hash: chain from "" then
                prev = str(self._read(last, seq).get("hash", "")) if last else ""
                entry: dict[str, Any] = {
                    "seq": seq,
                    "time": _iso(time.time()),
                    "action": action,
                    **fields,
                    "prev": prev,
                }
                entry["hash"] = self._digest(entry)
                fh.seek(0, os.SEEK_END)
                if self._seal_key is None:
                    line = json.dumps(entry, sort_keys=True, default=str)
                else:
                    line = seal_line(entry, self._seal_key, aad=AUDIT_AAD)
                fh.write(line + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                if self._anchor is not None:  # under the lock: anchors follow appends in order
                    self._anchor.set(seq + 1, entry["hash"])
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return entry

    def entries(self, action: str | None = None) -> list[dict[str, Any]]:
        """Every entry (optionally only those of one action), oldest first."""
        if not self.path.exists():
            return []
        out = [
            self._read(line, i)
            for i, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1)
            if line.strip()
        ]
        return [e for e in out if action is None or e.get("action") == action]

    def verify(self) -> tuple[bool, int | None]:
        """(True, None) if the chain is intact, else (False, seq of the first broken entry).

        With an anchor, a log shorter than recorded, or whose last hash differs from the one
        recorded, is broken at the first entry that is missing or differs.
        """
        prev = ""
        entries: list[dict[str, Any]] = []
        if self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            for line in filter(str.strip, lines):
                try:
                    entries.append(self._read(line, len(entries) + 1))
                except (SealedDataError, ValueError):
                    return False, len(entries)  # a changed sealed line breaks the chain there
        for i, e in enumerate(entries):
            body = {k: v for k, v in e.items() if k != "hash"}
            if e.get("seq") != i or e.get("prev") != prev or self._digest(body) != e.get("hash"):
                return False, i
            prev = e["hash"]
        anchored = self._anchor.get() if self._anchor is not None else None
        if anchored is not None:
            count, last = anchored
            if len(entries) < count:
                return False, len(entries)  # entries were cut off the end
            if count and entries[count - 1].get("hash") != last:
                return False, count - 1
        return True, None


def erasure_receipt(
    pseudonym: str,
    *,
    events_deleted: int,
    consent_deleted: bool = False,
    cache_entries_deleted: int = 0,
    models_updated: Iterable[str] = (),
    models_pending: Iterable[str] = (),
    retrain_within_days: float = 30.0,
    seconds: float | None = None,
    erased_at: float | None = None,
) -> dict[str, Any]:
    """The receipt of one erasure (what `AuditLog.append("erase", **receipt)` records).

    Args:
        pseudonym: the erased user's pseudonym.
        events_deleted: events removed from the store.
        consent_deleted: whether a consent record was removed.
        cache_entries_deleted: cached results removed.
        models_updated: models whose state was downdated exactly (the user's influence is gone).
        models_pending: models that still carry aggregate influence until their next retrain.
        retrain_within_days: the deadline for that retrain, in days after the erasure.
        seconds: how long the erasure took.
        erased_at: Unix time of the erasure (now by default).
    """
    t = time.time() if erased_at is None else float(erased_at)
    pending = sorted(set(models_pending))
    return {
        "pseudonym": pseudonym,
        "erased_at": _iso(t),
        "deleted": {
            "events": int(events_deleted),
            "consent_record": bool(consent_deleted),
            "cached_results": int(cache_entries_deleted),
        },
        "models_updated_exactly": sorted(set(models_updated)),
        "models_pending_retrain": pending,
        "retrain_deadline": _iso(t + retrain_within_days * 86400.0) if pending else None,
        **({"seconds": round(float(seconds), 4)} if seconds is not None else {}),
    }
