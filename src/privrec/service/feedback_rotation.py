"""A pseudonym key rotation reaches the feedback log: the known shoppers' rows move to their new
pseudonyms' hashes, so an access or erasure request after the rotation still finds them.

Rows of shoppers the rotation does not know (shoppers with no stored event, consent record or
rejected row: e.g. a new shopper who was only shown lists) cannot be moved, since a keyed hash
cannot be reversed; they are counted in `unmatched` and leave with the retention.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping

from privrec.service.feedback import SHOPPER_DOMAIN, FeedbackLog

__all__ = ["StagedFeedbackRekey", "stage_rekey"]


class StagedFeedbackRekey:
    """The re-keying held in an open SQLite transaction until `commit` or `rollback`.

    Attributes:
        count: rows (lists and outcomes) moved to new shoppers' hashes.
        unmatched: shoppers in the log whom the rotation did not know.
    """

    def __init__(self, log: FeedbackLog | None, count: int = 0, unmatched: int = 0) -> None:
        self._log = log
        self.count = count
        self.unmatched = unmatched

    def commit(self) -> None:
        """Make the re-keying durable (a no-op when nothing was staged)."""
        log, self._log = self._log, None
        if log is None:
            return
        try:
            log.con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                log.con.execute("ROLLBACK")
            raise
        finally:
            log._lock.release()

    def rollback(self) -> None:
        """Drop the re-keying."""
        log, self._log = self._log, None
        if log is None:
            return
        try:
            with contextlib.suppress(sqlite3.Error):
                log.con.execute("ROLLBACK")
        finally:
            log._lock.release()


def stage_rekey(log: FeedbackLog, known: Mapping[str, str], generation: int) -> StagedFeedbackRekey:
    """Stage moving the rows of the known shoppers (old pseudonym -> new) to the new hashes.

    A log already at `generation` (an interrupted rotation being finished) gives an empty
    staging; so does a log that was never written.
    """
    if not log._ready():
        return StagedFeedbackRekey(None)
    con = log.con
    log._lock.acquire()
    try:
        con.execute("BEGIN IMMEDIATE")
    except BaseException:
        log._lock.release()
        raise
    staged = StagedFeedbackRekey(log)
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'pseudonym_generation'").fetchone()
        if row is not None and int(row[0]) == generation:
            staged.rollback()
            return StagedFeedbackRekey(None)
        present = {
            r[0]
            for r in con.execute(
                "SELECT shopper FROM lists WHERE shopper IS NOT NULL "
                "UNION SELECT shopper FROM outcomes WHERE shopper IS NOT NULL"
            )
        }
        moves = {}
        for old, new in known.items():
            h = log._hash(SHOPPER_DOMAIN, old)
            if h in present:
                moves[h] = log._hash(SHOPPER_DOMAIN, new)
        con.execute(
            "CREATE TEMP TABLE IF NOT EXISTS rekey_shoppers (old TEXT PRIMARY KEY, new TEXT)"
        )
        con.execute("DELETE FROM rekey_shoppers")
        con.executemany("INSERT INTO rekey_shoppers VALUES (?, ?)", moves.items())
        for table in ("lists", "outcomes"):
            staged.count += con.execute(
                f"UPDATE {table} SET shopper = "
                f"(SELECT new FROM rekey_shoppers WHERE old = {table}.shopper) "
                "WHERE shopper IN (SELECT old FROM rekey_shoppers)"
            ).rowcount
        staged.unmatched = len(present - moves.keys())
        con.execute(
            "INSERT OR REPLACE INTO meta VALUES ('pseudonym_generation', ?)", [str(generation)]
        )
    except BaseException:
        staged.rollback()
        raise
    return staged
