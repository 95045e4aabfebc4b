"""Pseudonym key rotation as one unit: every record keyed by pseudonym moves, or none does.

Records keyed by pseudonym: the events (user, session and event ids), the consent table, the
rejects files and whatever the caller adds as `parts` (the service adds the experiment store,
whose unit ids and variants derive from pseudonyms). The audit log is not rewritten: it is
hash-chained, and access requests look it up by the shopper's pseudonym of every generation
(`Pseudonymiser.pseudonyms_of`).

The protocol (`rotate`):

1. Stage. The new key exists in memory only (`Pseudonymiser.stage_rotation`). Each store
   re-keys itself inside a transaction that stays open (DuckDB, both SQLite files) or into
   complete, fsynced copies beside the originals (rejects files). Any failure here rolls every
   staging back: the key chain and every record are as before.
2. Commit point. The staged chain is written to ``keys/pseudonym.keys.pending``.
3. Commit, in this order: the caller's parts, consent, rejects (renames), events. Each store
   records the key generation it holds in the same transaction as its rows.
4. Swap. The pending chain is renamed over ``keys/pseudonym.keys`` (atomic).

The crash window is between 2 and 4. A crash there leaves some stores on the new key and the
key file on the old one; nothing is lost, because the pending file holds the new chain. While it
exists, `Pseudonymiser.from_data_dir` refuses to load (nothing is served or ingested with the
wrong key), and the next `rotate` finishes the interrupted rotation instead of starting another:
each store skips itself if its generation marker shows it committed, re-stages otherwise; the
rejects copies already written are renamed into place. A failure inside step 3 is finished the
same way at once, in the same call. What no protocol here covers: a copy of the data directory
taken inside the window, and rejects files written outside ``<data_dir>/rejects``.

Exposures of shoppers whom no store names (served, never stored anything, no consent record)
cannot follow: a unit id cannot be reversed. They are counted in the report as
``experiment_units_unmatched`` and keep their old unit id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from privrec.core.errors import StoreError
from privrec.events import rejects
from privrec.events.store_api import EventStoreAPI
from privrec.privacy.consent_store import ConsentStore
from privrec.privacy.pseudonym import Pseudonymiser

__all__ = ["RotationReport", "StagePart", "Staged", "rotate"]

logger = logging.getLogger(__name__)


class Staged(Protocol):
    """A store's re-keying, staged: durable only after `commit`; `rollback` drops it."""

    count: int

    def commit(self) -> None:
        """Make the re-keying durable."""

    def rollback(self) -> None:
        """Drop the re-keying."""


# (rotated pseudonymiser, old pseudonym -> new of every shopper the stores name) -> staging
StagePart = Callable[[Pseudonymiser, Mapping[str, str]], Staged]


@dataclass
class RotationReport:
    """What a rotation re-keyed.

    Attributes:
        pseudonymiser: the pseudonymiser of the new chain (use it from now on).
        generation: the key generation now in force.
        counts: records re-keyed per store ("events", "consent_records", "rejects_lines" and
            one entry per caller part), plus "experiment_units_unmatched" where reported.
        resumed: True when this call finished an interrupted rotation (no new key was made).
    """

    pseudonymiser: Pseudonymiser
    generation: int
    counts: dict[str, int] = field(default_factory=dict)
    resumed: bool = False


def rotate(
    data_dir: Path,
    current: Callable[[], Pseudonymiser],
    store: EventStoreAPI,
    consent: ConsentStore,
    *,
    parts: Mapping[str, StagePart] | None = None,
    env_key: str | None = None,
    rejects_key: bytes | None = None,
    key_dir: Path | None = None,
) -> RotationReport:
    """Rotate the pseudonym key and re-key every record keyed by pseudonym, as one unit.

    If an earlier rotation was interrupted after its commit point, this call finishes that one
    and makes no new key (`RotationReport.resumed`).

    Args:
        data_dir: the data directory.
        current: loads the pseudonymiser of the current chain (called only when no rotation is
            pending).
        store: the event store, already open (a store held by another process must fail before
            anything changes).
        consent: the consent table.
        parts: further stores by name, staged first and committed first.
        env_key: PRIVREC_PSEUDONYM_KEY, if the base key comes from the environment.
        rejects_key: the sidecar key the rejects lines are sealed with (None: plaintext).
        key_dir: where the key chain lives (default `data_dir/keys`).

    Raises:
        StoreError: a store refused its re-keying (then nothing changed), or committing failed
            and could not be finished at once (then run the rotation again to finish it).
    """
    parts = dict(parts or {})
    pending = Pseudonymiser.load_pending(data_dir, env_key, key_dir=key_dir)
    if pending is not None:
        logger.warning("rotate-key: finishing an interrupted rotation")
        report = _finish(data_dir, pending, store, consent, parts, rejects_key)
        report.resumed = True
        return report
    rejects.finish_staged(data_dir, None)  # copies of a rotation that never reached its commit
    rotated = current().stage_rotation()
    staged = _stage(data_dir, rotated, store, consent, parts, resume=False, rejects_key=rejects_key)
    try:
        rotated.write_pending()
    except BaseException:
        _rollback(staged)
        rotated.discard_rotation()
        raise
    try:
        _commit(staged)
    except BaseException as err:
        logger.error("rotate-key: commit failed (%s); finishing it", type(err).__name__)
        try:
            report = _finish(data_dir, rotated, store, consent, parts, rejects_key)
        except BaseException:
            raise StoreError(
                "rotate-key: interrupted after its commit point; run privrec rotate-key again "
                "to finish it (until then privrec refuses to load the key)"
            ) from err
        return report
    rotated.commit_rotation()
    return RotationReport(rotated, rotated.generation, _counts(staged))


def _stage(
    data_dir: Path,
    rotated: Pseudonymiser,
    store: EventStoreAPI,
    consent: ConsentStore,
    parts: Mapping[str, StagePart],
    *,
    resume: bool,
    rejects_key: bytes | None = None,
) -> dict[str, Staged]:
    """Stage every store, in commit order; on any failure roll back what was staged, re-raise.

    With `resume` (finishing an interrupted rotation) the rejects copies of the first attempt
    are put in place instead of re-staged: they were complete before its commit point.
    """
    target = rotated.generation
    staged: dict[str, Staged] = {}
    # consent first: its old pseudonyms are part of the shoppers the parts must follow
    consent_staged = consent.stage_rekey(rotated.rekey_many, target)
    try:
        known: Mapping[str, str] = {}
        if parts:
            old = set(consent_staged.pseudonyms) | rejects.pseudonyms_in(data_dir, key=rejects_key)
            if store.pseudonym_generation != target:
                old |= set(store.users())
            ordered = sorted(old)
            known = dict(zip(ordered, rotated.rekey_many(ordered), strict=True))
        for name, stage in parts.items():
            staged[name] = stage(rotated, known)
        staged["consent_records"] = consent_staged
        if resume:
            n = rejects.finish_staged(data_dir, target)
            staged["rejects_files_finished"] = rejects.StagedRejectsRekey([], n)
        else:
            staged["rejects_lines"] = rejects.stage_rekey(
                data_dir, rotated.rekey_many, target, key=rejects_key
            )
        staged["events"] = store.stage_rekey(rotated)  # last: it holds the store's lock
    except BaseException:
        if "consent_records" not in staged:
            consent_staged.rollback()
        _rollback(staged)
        raise
    return staged


def _commit(staged: dict[str, Staged]) -> None:
    """Commit in order; on a failure roll back the ones not yet committed, then re-raise.

    The rejects copies are kept: past the commit point they are what finishing puts in place.
    """
    items = list(staged.items())
    for i, (_, s) in enumerate(items):
        try:
            s.commit()
        except BaseException:
            rest = {
                k: v for k, v in items[i + 1 :] if not isinstance(v, rejects.StagedRejectsRekey)
            }
            _rollback(rest)
            raise


def _rollback(staged: Mapping[str, Staged]) -> None:
    """Roll back in reverse order; every one is tried even if another fails."""
    for s in reversed(list(staged.values())):
        try:
            s.rollback()
        except Exception as exc:  # the others still have to release their locks
            logger.error("rotate-key: rollback failed error=%s", type(exc).__name__)


def _finish(
    data_dir: Path,
    rotated: Pseudonymiser,
    store: EventStoreAPI,
    consent: ConsentStore,
    parts: Mapping[str, StagePart],
    rejects_key: bytes | None = None,
) -> RotationReport:
    """Roll an interrupted rotation forward: re-stage what did not commit, commit, swap."""
    staged = _stage(data_dir, rotated, store, consent, parts, resume=True, rejects_key=rejects_key)
    _commit(staged)
    rotated.commit_rotation()
    return RotationReport(rotated, rotated.generation, _counts(staged))


def _counts(staged: Mapping[str, Staged]) -> dict[str, int]:
    out = {name: int(s.count) for name, s in staged.items()}
    for name, s in staged.items():
        unmatched = getattr(s, "unmatched", None)
        if unmatched is not None:
            out[f"{name}_unmatched"] = int(unmatched)
    return out
