"""The package's floors (ARCHITECTURE.md): what each part of mtl_jax may import.

Every module of ``mtl_jax`` is parsed (``ast``, nothing is imported) and each of
its ``mtl_jax`` imports, including those inside functions, becomes an edge
between two *parts*: ``core`` (the top-level private modules such as
``_jacobian.py``), a subpackage (``weighting``, ``balancers``, ...) or ``root``
(``mtl_jax/__init__.py`` and ``import mtl_jax``). The test fails when a part
imports one it may not (above all: the library importing the outer ring,
``data`` and ``experiments``) or when the parts import each other in a cycle.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "mtl_jax"

#: The outer ring: loaded only when used, never imported by the library.
OUTER = {"data", "experiments"}
#: The library's floors, lowest first.
CORE_FLOORS = ("core", "weighting", "balancers", "training")
#: What each part may import (besides itself). ``models`` holds Flax modules
#: only; paper training procedures built on ``training`` live in ``recipes``.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "weighting": {"core"},
    "balancers": {"core", "weighting"},
    "training": {"core", "weighting", "balancers"},
    "models": {"core"},
    "recipes": {"core", "weighting", "balancers", "training", "models"},
    "transfer": {"core", "weighting", "balancers", "training", "models"},
    "adaptation": {"core", "weighting", "balancers", "training", "models"},
    "root": {"core", "weighting", "balancers", "training", "models", "recipes"}
    | {"transfer", "adaptation"},
    "data": {"core"},
    "experiments": {"core", "weighting", "balancers", "training", "models", "recipes"}
    | {"transfer", "adaptation", "data", "root"},
}
#: Violations that exist today, as (importing module, imported part). Remove an
#: entry when its import is gone (the test then says so).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def _part(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    return "core" if parts[1].startswith("_") else parts[1]


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    names = list(rel.parts)
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def _imports(path: pathlib.Path) -> set[str]:
    """The ``mtl_jax`` modules (or packages) ``path`` imports, anywhere in its body."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: use absolute imports"
            if node.module == "mtl_jax":  # from mtl_jax import balancers
                out |= {f"mtl_jax.{a.name}" for a in node.names}
            elif node.module:
                out.add(node.module)
    return {m for m in out if m == "mtl_jax" or m.startswith("mtl_jax.")}


def _edges() -> set[tuple[str, str, str]]:
    """``(file, from part, to part)`` for every import between two different parts."""
    edges = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _part(_module_name(path))
        rel = path.relative_to(PACKAGE.parent).as_posix()
        for target in _imports(path):
            dst = _part(target)
            if dst != src:
                edges.add((rel, src, dst))
    return edges


def test_every_part_is_declared():
    parts = {_part(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert parts <= set(ALLOWED), f"add {sorted(parts - set(ALLOWED))} to ALLOWED"


def test_library_never_imports_the_outer_ring():
    bad = sorted((f, dst) for f, src, dst in _edges() if src not in OUTER and dst in OUTER)
    assert not bad, f"library modules importing mtl_jax.data / mtl_jax.experiments: {bad}"


def test_each_part_imports_only_the_floors_below_it():
    found = {(f, dst) for f, src, dst in _edges() if dst not in ALLOWED[src]}
    new = sorted(found - KNOWN_VIOLATIONS)
    assert not new, f"imports ALLOWED does not permit (see ARCHITECTURE.md): {new}"
    fixed = sorted(KNOWN_VIOLATIONS - found)
    assert not fixed, f"fixed, so remove from KNOWN_VIOLATIONS: {fixed}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_parts():
    graph: dict[str, set[str]] = {}
    for _, src, dst in _edges():
        graph.setdefault(src, set()).add(dst)
    assert _cycle(graph) is None, f"import cycle between parts: {' -> '.join(_cycle(graph))}"


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ],
)
def test_cycle_finder(graph, expected):
    assert _cycle(graph) == expected
