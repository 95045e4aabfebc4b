"""Small, readable modules: no source module over 600 lines."""

from __future__ import annotations

from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "privrec"
LIMIT = 600


def test_no_module_over_the_limit() -> None:
    big = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > LIMIT
    }
    assert big == {}, f"split these along their responsibilities: {big}"
