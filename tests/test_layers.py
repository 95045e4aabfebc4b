"""design.md's one-way imports: a module imports only from its own layer or below, and no cycles.

The checker reads every module's syntax tree and classifies every way a module can be imported:

- ``import privrec.x`` and ``import privrec.x.y as z``
- ``from privrec import x`` (the target is ``privrec.x``, not the root package)
- ``from privrec.x import y`` (``privrec.x.y`` where that is a module, else ``privrec.x``)
- relative imports (``from . import x``, ``from .x import y``): always rejected
- string imports: ``importlib.import_module(...)``, ``import_module(...)``, ``__import__(...)``
  with a literal string, a module-level constant (a string or a tuple/list/set of strings) or a
  loop variable over one. A dynamic import whose target cannot be read from the source is
  rejected, since it would be invisible to this check.

Imports anywhere count: at module level, inside functions and classes, under ``if TYPE_CHECKING``
and in ``try`` blocks. Every such import is also an edge of the module graph, and a cycle in that
graph is reported with its path.

The self-tests plant each kind of violation in a small fake package and run the same checker.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "privrec"

# Top-level packages and modules of src/privrec and their layer (design.md, "Layers").
LAYER: dict[str, int] = {
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
}
# The root package (``import privrec``, ``from privrec import __version__``) runs only
# ``privrec/__init__.py``, which must stay at the bottom so that any module may import it.
ROOT_LAYER = 0

_IMPORT_FUNCTIONS = {"import_module", "__import__"}


@dataclass(frozen=True)
class _Import:
    """One import found in a module: the dotted name as written and where."""

    line: int
    name: str | None  # None: a dynamic import whose target the checker cannot read
    relative: bool = False


# ---- reading imports out of one module -----------------------------------------------------------
def _strings(node: ast.expr | None) -> set[str] | None:
    """The strings a literal denotes: a string, or a tuple/list/set of strings; else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        out: set[str] = set()
        for elt in node.elts:
            inner = _strings(elt)
            if inner is None:
                return None
            out |= inner
        return out
    return None


def _known_strings(tree: ast.Module) -> dict[str, set[str]]:
    """Names bound to string literals: assignments of literals and loop variables over them.

    Not scope-aware: a name bound in several places gets the union of its values, and a name
    that is ever bound to something else (a computed value, a function parameter) is dropped, so
    an import through it is reported as unresolved rather than guessed.
    """
    values: dict[str, set[str]] = {}

    def resolve(node: ast.expr) -> set[str] | None:
        if isinstance(node, ast.Name):
            return values.get(node.id)
        return _strings(node)

    def bindings() -> Iterator[tuple[ast.expr, set[str] | None]]:
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    yield target, _strings(node.value)
            elif isinstance(node, ast.AnnAssign | ast.NamedExpr):
                yield node.target, _strings(node.value) if node.value is not None else None
            elif isinstance(node, ast.AugAssign):
                yield node.target, None  # `x += ...`: no longer the literal it started as
            elif isinstance(node, ast.For | ast.AsyncFor | ast.comprehension):
                yield node.target, resolve(node.iter)

    # A loop may run over a constant defined further down the file: repeat until nothing changes.
    while True:
        before = {k: set(v) for k, v in values.items()}
        for target, value in bindings():
            if isinstance(target, ast.Name) and value is not None:
                values.setdefault(target.id, set()).update(value)
        if values == before:
            break
    opaque = {t.id for t, v in bindings() if isinstance(t, ast.Name) and v is None}
    opaque |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    return {k: v for k, v in values.items() if k not in opaque}


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _imports(tree: ast.Module) -> Iterator[_Import]:
    """Every import in `tree`, at any depth, as dotted names."""
    known = _known_strings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _Import(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0:
                yield _Import(node.lineno, node.module, relative=True)
                continue
            assert node.module is not None
            for alias in node.names:
                # `from a import b` imports the module a.b if there is one; `_resolve` decides.
                yield _Import(node.lineno, f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Call) and _call_name(node.func) in _IMPORT_FUNCTIONS:
            if not node.args:
                yield _Import(node.lineno, None)
                continue
            arg = node.args[0]
            names = known.get(arg.id) if isinstance(arg, ast.Name) else _strings(arg)
            if names is None:
                yield _Import(node.lineno, None)
                continue
            for name in sorted(names):
                yield _Import(node.lineno, name, relative=name.startswith("."))


# ---- the checker ---------------------------------------------------------------------------------
def _modules(pkg_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at `pkg_dir`."""
    out: dict[str, Path] = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        rel = path.relative_to(pkg_dir.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: Mapping[str, Path]) -> str:
    """The module `name` executes: the longest prefix of it that is a module of the package."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return name


def _layer(module: str, layers: Mapping[str, int]) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:
        return ROOT_LAYER
    return layers.get(parts[1])


def _cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)

    return sorted(components)


def _shortest_cycle(graph: Mapping[str, set[str]], component: list[str]) -> list[str]:
    """The shortest cycle inside one strongly connected component, as a path of modules."""
    members = set(component)
    best: list[str] | None = None
    for start in component:
        # Breadth-first from `start` back to itself, inside the component.
        parent: dict[str, str] = {}
        frontier = [start]
        last = None
        while frontier and last is None:
            nxt = []
            for v in frontier:
                if start in graph.get(v, ()):
                    last = v
                    break
                for w in sorted(graph.get(v, ())):
                    if w in members and w not in parent and w != start:
                        parent[w] = v
                        nxt.append(w)
            frontier = nxt
        assert last is not None
        path = [last]
        while path[0] != start:
            path.insert(0, parent[path[0]])
        if best is None or len(path) < len(best) - 1:
            best = [*path, start]
    assert best is not None
    return best


def check_package(pkg_dir: Path, layers: Mapping[str, int]) -> list[str]:
    """Every layer violation, relative import, unresolved dynamic import and cycle in a package."""
    root = pkg_dir.name
    modules = _modules(pkg_dir)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    problems: list[str] = []
    for module, path in modules.items():
        where = path.relative_to(pkg_dir.parent)
        own = _layer(module, layers)
        if own is None:
            problems.append(f"{where}: {module} has no layer")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for imp in _imports(tree):
            at = f"{where}:{imp.line}"
            if imp.relative:
                problems.append(f"{at}: relative import (use absolute {root}.* imports)")
                continue
            if imp.name is None:
                problems.append(
                    f"{at}: dynamic import whose target is not a literal string"
                    " (the layer check cannot see it)"
                )
                continue
            if imp.name != root and not imp.name.startswith(root + "."):
                continue  # the standard library or a third-party package
            target = _resolve(imp.name, modules)
            if target != module:
                graph[module].add(target)
            layer = _layer(target, layers)
            if layer is None:
                problems.append(f"{at}: {module} imports {target}, which has no layer")
            elif layer > own:
                problems.append(f"{at}: {module} (layer {own}) imports {target} (layer {layer})")
    for component in _cycles(graph):
        cycle = _shortest_cycle(graph, component)
        others = sorted(set(component) - set(cycle))
        also = f" (modules in other cycles through these: {', '.join(others)})" if others else ""
        problems.append("import cycle: " + " -> ".join(cycle) + also)
    return problems


def unlayered(pkg_dir: Path, layers: Mapping[str, int]) -> list[str]:
    """Top-level packages/modules of the package without a layer, and layers naming nothing."""
    present = {
        child.stem
        for child in pkg_dir.iterdir()
        if (child.is_dir() and (child / "__init__.py").exists())
        or (child.suffix == ".py" and child.name != "__init__.py")
    }
    missing = [
        f"{name} has no layer in design.md's table" for name in sorted(present - set(layers))
    ]
    stale = [
        f"{name} is in the layer table but not in the package"
        for name in sorted(set(layers) - present)
    ]
    return missing + stale


# ---- the real tree -------------------------------------------------------------------------------
def test_every_package_has_a_layer() -> None:
    assert unlayered(SRC, LAYER) == []


def test_no_layer_violations_or_cycles() -> None:
    problems = check_package(SRC, LAYER)
    assert problems == [], "\n".join(problems)


# ---- the checker can fail: planted violations in a fake package ----------------------------------
_CLEAN = {
    "__init__.py": "from importlib.metadata import version\n",
    "core/__init__.py": "",
    "core/errors.py": "class Error(Exception):\n    pass\n",
    "core/rng.py": (
        "import importlib\n"
        "import privrec\n"
        "import privrec.core.errors as errors\n"
        "from privrec import core\n"
        "from privrec.core import errors as e2\n"
        "from privrec.core.errors import Error\n"
        "\n"
        "def lazy():\n"
        "    import privrec.core.errors\n"
        "    return importlib.import_module('privrec.core.errors')\n"
    ),
    "models/__init__.py": "",
    "models/base.py": "from privrec.core.errors import Error\nimport numpy\n",
    "models/ease.py": (
        "from privrec.models.base import *\n"
        "MODULES = ('privrec.models.base', 'privrec.core.rng')\n"
        "for m in MODULES:\n"
        "    __import__(m)\n"
    ),
    "server.py": "import privrec.models.ease\nfrom privrec.models import base\n",
}
_LAYERS = {"core": 0, "models": 4, "server": 8}


def _write(root: Path, files: Mapping[str, str]) -> Path:
    pkg = root / "privrec"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_a_clean_fake_package_passes(tmp_path: Path) -> None:
    pkg = _write(tmp_path, _CLEAN)
    assert check_package(pkg, _LAYERS) == []
    assert unlayered(pkg, _LAYERS) == []


_UP = "privrec.core.bad (layer 0) imports privrec.models.ease (layer 4)"
_UP_PKG = "privrec.core.bad (layer 0) imports privrec.models (layer 4)"
_RELATIVE = "relative import (use absolute privrec.* imports)"
_DYNAMIC = "dynamic import whose target is not a literal string"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("import privrec.models.ease\n", _UP, id="import"),
        pytest.param("import privrec.models.ease as z\n", _UP, id="import-as"),
        pytest.param("import privrec.models\n", _UP_PKG, id="import-package"),
        pytest.param("from privrec import models\n", _UP_PKG, id="from-root-import-package"),
        pytest.param("from privrec.models import ease\n", _UP, id="from-package-import-module"),
        pytest.param("from privrec.models.ease import X\n", _UP, id="from-module-import-name"),
        pytest.param("from privrec.models import Thing\n", _UP_PKG, id="from-package-import-name"),
        pytest.param("def f():\n    import privrec.models.ease\n", _UP, id="in-function"),
        pytest.param(
            "class C:\n    def m(self):\n        from privrec.models.ease import X\n",
            _UP,
            id="in-method",
        ),
        pytest.param(
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import privrec.models.ease\n",
            _UP,
            id="type-checking",
        ),
        pytest.param(
            "import importlib\nimportlib.import_module('privrec.models.ease')\n",
            _UP,
            id="importlib-import-module",
        ),
        pytest.param(
            "from importlib import import_module\n"
            "def f():\n    return import_module('privrec.models.ease')\n",
            _UP,
            id="import-module-in-function",
        ),
        pytest.param("__import__('privrec.models.ease')\n", _UP, id="dunder-import"),
        pytest.param(
            "import importlib\n"
            "MODULES: tuple[str, ...] = ('privrec.core.errors', 'privrec.models.ease')\n"
            "for name in MODULES:\n    importlib.import_module(name)\n",
            _UP,
            id="import-module-loop-over-constant",
        ),
        pytest.param(
            "import importlib\nNAME = 'privrec.models.ease'\nimportlib.import_module(NAME)\n",
            _UP,
            id="import-module-constant",
        ),
        pytest.param(
            "import importlib\ndef f(name):\n    return importlib.import_module(name)\n",
            _DYNAMIC,
            id="import-module-unresolved",
        ),
        pytest.param(
            "import importlib\n"
            "def load():\n    for m in LATER:\n        importlib.import_module(m)\n"
            "LATER = ['privrec.models.ease']\n",
            _UP,
            id="import-module-loop-over-later-constant",
        ),
        pytest.param(
            "import importlib\nname = 'privrec.core.errors'\n"
            "def f(name):\n    return importlib.import_module(name)\n",
            _DYNAMIC,
            id="import-module-parameter-shadows-constant",
        ),
        pytest.param(
            "import importlib\nimportlib.import_module(f'privrec.models.{1}')\n",
            _DYNAMIC,
            id="import-module-fstring",
        ),
        pytest.param("from . import errors\n", _RELATIVE, id="relative-from-dot"),
        pytest.param("from .errors import Error\n", _RELATIVE, id="relative-from-module"),
        pytest.param("from ..models import ease\n", _RELATIVE, id="relative-parent"),
        pytest.param(
            "import importlib\nimportlib.import_module('.errors', 'privrec.core')\n",
            _RELATIVE,
            id="relative-string",
        ),
    ],
)
def test_the_check_catches_a_planted_violation(tmp_path: Path, source: str, expected: str) -> None:
    pkg = _write(tmp_path, {**_CLEAN, "core/bad.py": source})
    problems = check_package(pkg, _LAYERS)
    assert len(problems) == 1, problems
    assert problems[0].startswith("privrec/core/bad.py:"), problems
    assert expected in problems[0], problems


def test_the_check_catches_a_two_module_cycle(tmp_path: Path) -> None:
    # One edge at module level, the other inside a function: both count.
    files = {
        **_CLEAN,
        "models/x.py": "from privrec.models import y\n",
        "models/y.py": "def f():\n    import privrec.models.x\n",
    }
    problems = check_package(_write(tmp_path, files), _LAYERS)
    assert problems == ["import cycle: privrec.models.x -> privrec.models.y -> privrec.models.x"]


def test_the_check_catches_a_cycle_through_string_imports(tmp_path: Path) -> None:
    files = {
        **_CLEAN,
        "models/reg.py": (
            "import importlib\n"
            "MODS = ('privrec.models.a', 'privrec.models.ease')\n"
            "for _m in MODS:\n    importlib.import_module(_m)\n"
        ),
        "models/a.py": "import importlib\n"
        "def g():\n    importlib.import_module('privrec.models.b')\n",
        "models/b.py": "from privrec.models.reg import MODS\n",
    }
    problems = check_package(_write(tmp_path, files), _LAYERS)
    assert problems == [
        "import cycle: privrec.models.a -> privrec.models.b -> privrec.models.reg"
        " -> privrec.models.a"
    ]


def test_the_check_catches_a_module_without_a_layer(tmp_path: Path) -> None:
    files = {**_CLEAN, "utils/__init__.py": "", "pipeline.py": "import privrec.core.rng\n"}
    pkg = _write(tmp_path, files)
    assert unlayered(pkg, _LAYERS) == [
        "pipeline has no layer in design.md's table",
        "utils has no layer in design.md's table",
    ]
    problems = check_package(pkg, _LAYERS)
    assert "privrec/pipeline.py: privrec.pipeline has no layer" in problems
    assert "privrec/utils/__init__.py: privrec.utils has no layer" in problems
    # ... and importing a module that has no layer is reported where it is imported.
    files["core/bad.py"] = "import privrec.utils\n"
    problems = check_package(_write(tmp_path, files), _LAYERS)
    assert any(
        p.startswith("privrec/core/bad.py:1:") and "imports privrec.utils, which has no layer" in p
        for p in problems
    )


def test_a_stale_layer_entry_is_reported(tmp_path: Path) -> None:
    pkg = _write(tmp_path, _CLEAN)
    assert unlayered(pkg, {**_LAYERS, "gone": 3}) == [
        "gone is in the layer table but not in the package"
    ]
