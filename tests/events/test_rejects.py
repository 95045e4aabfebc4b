"""Sealed rejects files: written sealed with the key, old plaintext lines still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privrec.events import rejects
from privrec.events.rejects import Reject, RejectWriter
from privrec.privacy.sealed import SealedDataError

KEY = bytes(range(32))
P1, P2 = "1" * 32, "2" * 32


def _write(d: Path, name: str, recs: list[Reject], key: bytes | None) -> Path:
    path = d / "rejects" / name
    with RejectWriter(path, key=key) as out:
        out.write(recs)
    return path


def test_sealed_lines_hide_pseudonyms_and_reasons(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.rejects.jsonl", [Reject(3, "item_id: empty", P1)], KEY)
    text = path.read_text()
    assert P1 not in text and "item_id" not in text
    assert rejects.lines_of(tmp_path, [P1], key=KEY) == [
        {"file": "a.rejects.jsonl", "line": 3, "reason": "item_id: empty"}
    ]
    assert rejects.pseudonyms_in(tmp_path, key=KEY) == {P1}
    with pytest.raises(SealedDataError, match=r"a\.rejects\.jsonl line 1"):
        rejects.pseudonyms_in(tmp_path)


def test_old_plaintext_files_still_read_and_erasure_seals_what_is_kept(tmp_path: Path) -> None:
    path = _write(tmp_path, "old.rejects.jsonl", [Reject(1, "x", P1), Reject(2, "y", P2)], None)
    assert json.loads(path.read_text().splitlines()[0])["user"] == P1
    assert rejects.pseudonyms_in(tmp_path, key=KEY) == {P1, P2}
    assert rejects.erase_users(tmp_path, [P1], key=KEY) == 1
    text = path.read_text()
    assert P1 not in text and P2 not in text  # the kept line was rewritten sealed
    assert rejects.lines_of(tmp_path, [P2], key=KEY)[0]["line"] == 2


def test_rekey_writes_sealed_copies(tmp_path: Path) -> None:
    _write(tmp_path, "b.rejects.jsonl", [Reject(1, "x", P1), Reject(2, "y", None)], KEY)
    staged = rejects.stage_rekey(
        tmp_path, lambda old: ["f" * 32 for _ in old], generation=1, key=KEY
    )
    staged.commit()
    assert staged.count == 1
    assert rejects.pseudonyms_in(tmp_path, key=KEY) == {"f" * 32}
    text = (tmp_path / "rejects" / "b.rejects.jsonl").read_text()
    assert "f" * 32 not in text and len(text.splitlines()) == 2


def test_rekey_without_key_keeps_plaintext(tmp_path: Path) -> None:
    _write(tmp_path, "c.rejects.jsonl", [Reject(1, "x", P1)], None)
    rejects.stage_rekey(tmp_path, lambda old: ["e" * 32 for _ in old], generation=1).commit()
    assert rejects.pseudonyms_in(tmp_path) == {"e" * 32}
