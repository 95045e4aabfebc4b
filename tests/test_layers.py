"""design.md's one-way imports: a module imports only from its own layer or below."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "privrec"
LAYER = {
    "core": 0,
    "privacy": 1,
    "events": 2,
    "data": 3,
    "text": 3,
    "models": 4,
    "explain": 5,
    "evaluation": 6,
    "experiments": 6,
    "service": 7,
    "pipeline": 7,
    "server": 8,
    "cli": 8,
    "__main__": 9,
}


def _layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "privrec" or len(parts) < 2:
        return None
    return LAYER.get(parts[1])


def _violations() -> list[str]:
    bad = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        mod = ".".join(rel.parts)
        if mod.endswith(".__init__"):
            mod = mod[: -len(".__init__")]
        own = _layer_of(mod)
        if own is None:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                bad.append(f"{mod}: relative import (use absolute privrec.* imports)")
            for name in names:
                target = _layer_of(name)
                if target is not None and target > own:
                    bad.append(f"{mod} (layer {own}) imports {name} (layer {target})")
    return bad


def test_every_package_has_a_layer() -> None:
    for child in SRC.iterdir():
        if (
            child.name.startswith("_")
            or child.suffix not in ("", ".py")
            or child.name == "py.typed"
        ):
            continue
        assert child.stem in LAYER, f"{child.name} has no layer in design.md's table"


def test_no_import_points_to_a_higher_layer() -> None:
    assert _violations() == []


def test_the_check_catches_a_violation(tmp_path: Path) -> None:
    # The checker must be able to fail: a core module importing models is a violation.
    assert _layer_of("privrec.models.ease") == 4
    assert _layer_of("privrec.core.errors") == 0
    src = "from privrec.models.base import Recommender\n"
    tree = ast.parse(src)
    node = tree.body[0]
    assert isinstance(node, ast.ImportFrom) and _layer_of(node.module or "") > LAYER["core"]
