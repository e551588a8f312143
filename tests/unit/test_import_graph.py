"""The import graph of ``ivr/``, read with ``ast`` (nothing is imported): no circles, and the layering rules.

Every import counts, wherever it is written: at module level, in a function or a lambda, under ``if
TYPE_CHECKING:``, and ``__import__("ivr.x")`` / ``importlib.import_module("ivr.x")`` with a literal name. A
function-level import does not break a circle, it only postpones it. Relative imports are resolved; ``from X
import Y`` where ``X.Y`` is a module counts as importing ``X.Y`` (and ``X``); importing ``a.b.c`` also imports
the packages ``a`` and ``a.b``.

Rules:

* no import circle among ``ivr`` modules, except those in ``ALLOWED_CYCLES`` (to be emptied);
* nothing outside ``ivr/devtools`` imports ``ivr.devtools``, except ``ivr/app/cli.py`` inside a function
  (the dev commands);
* ``ivr/core`` imports only the standard library (and itself);
* ``ivr.menu.schema`` pulls in neither aiohttp nor redis, even indirectly; the node kinds do not import
  the engine that runs them (they are registered into it).
"""

from __future__ import annotations

import ast
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ivr"

# Circles that exist today outside ivr/menu, each as the set of modules of its strongly connected component.
# Being removed by the services step (ivr/api and ivr/app/controller.py restructured into services): empty this
# list then. A listed circle that no longer exists fails test_allowed_cycles_still_exist, so it is not forgotten.
ALLOWED_CYCLES: list[frozenset[str]] = []   # none left: keep it empty


@dataclass(frozen=True)
class Import:
    source: str          # the importing module
    target: str          # the imported module (an ivr module, or any top-level name for external ones)
    line: int
    in_function: bool    # inside a def, async def or lambda


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    if not level:
        return name or ""
    package = module if _is_package(module) else module.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        raise ValueError(f"{module}: relative import beyond the top-level package")
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> [a, a.b, a.b.c]: importing a module runs its packages first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _literal_import_call(node: ast.Call) -> str | None:
    """``__import__("x.y", ...)`` or ``importlib.import_module("x.y")`` / ``import_module("x.y")``."""
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if name in ("__import__", "import_module") and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str) and not node.args[0].value.startswith("."):
        return node.args[0].value
    return None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str) -> None:
        self.module = module
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, names: list[str], line: int) -> None:
        for full in names:
            for name in _with_parents(full):
                if name.split(".")[0] == "ivr":
                    if name in MODULES and name != self.module:
                        self.found.append(Import(self.module, name, line, self.depth > 0))
                else:
                    self.found.append(Import(self.module, name, line, self.depth > 0))
                    break        # external: its top-level name is enough

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        self._add([alias.name for alias in node.names], node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.module, node.level, node.module)
        if base == "__future__":
            return
        names = [base]
        for alias in node.names:
            if f"{base}.{alias.name}" in MODULES:    # from package import submodule
                names.append(f"{base}.{alias.name}")
        self._add(names, node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        name = _literal_import_call(node)
        if name:
            self._add([name], node.lineno)
        self.generic_visit(node)


def _imports() -> list[Import]:
    found: list[Import] = []
    for module, path in MODULES.items():
        collector = _Collector(module)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        found.extend(collector.found)
    return found


IMPORTS = _imports()


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if imp.target in MODULES:
            graph[imp.source].add(imp.target)
    return graph


def _components(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Tarjan's strongly connected components (iterative) with more than one module or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    members = set()
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        members.add(m)
                        if m == node:
                            break
                    if len(members) > 1 or node in graph[node]:
                        out.append(frozenset(members))
    return sorted(out, key=lambda c: sorted(c))


def _a_cycle(graph: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """One circle through the component's first module (breadth-first: a shortest one), start repeated at the end."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & component):
            if child == start:
                return paths[node] + [start]
            if child not in paths:
                paths[child] = paths[node] + [child]
                queue.append(child)
    raise AssertionError(f"no circle found in {sorted(component)}")


def _describe(graph: dict[str, set[str]], component: frozenset[str]) -> str:
    """The component, a shortest circle through it, and every import that keeps it together."""
    lines = [f"  circle among {', '.join(sorted(component))}: {' -> '.join(_a_cycle(graph, component))}"]
    for a in sorted(component):
        for b in sorted(graph[a] & component):
            where = ", ".join(f"{imp.line}{' (in a function)' if imp.in_function else ''}"
                              for imp in sorted(IMPORTS, key=lambda i: i.line) if imp.source == a and imp.target == b)
            lines.append(f"    {a} -> {b}   ({MODULES[a].relative_to(ROOT)} line {where})")
    return "\n".join(lines)


GRAPH = _graph()
COMPONENTS = _components(GRAPH)


# ------------------------------------------------------------------------------------- the graph itself
def _collect(module: str, source: str) -> set[tuple[str, bool]]:
    collector = _Collector(module)
    collector.visit(ast.parse(textwrap.dedent(source)))
    assert all(i.source == module for i in collector.found)
    return {(i.target, i.in_function) for i in collector.found}


def test_the_walk_sees_every_kind_of_import() -> None:
    """Guards the walker itself, on a made-up source placed in a real module."""
    found = _collect("ivr.app.cli", """\
        from __future__ import annotations
        import os.path
        from typing import TYPE_CHECKING
        from ..devtools import stack
        from . import config
        from ivr.menu.schema import Menu
        import importlib
        importlib.import_module("ivr.core.agi")
        if TYPE_CHECKING:
            from ivr.store import keys

        def dev() -> None:
            from ..balance.erlang import erlang_c

        class C:
            async def m(self) -> None:
                import ivr.reports.service

        run = lambda: __import__("ivr.devtools.demo", fromlist=["demo_main"]).demo_main()
        """)
    assert found == {
        ("os", False), ("typing", False), ("importlib", False),
        ("ivr", False), ("ivr.devtools", False), ("ivr.devtools.stack", False),   # from package import submodule
        ("ivr.app", False), ("ivr.app.config", False),                                # relative, the module's own package
        ("ivr.menu", False), ("ivr.menu.schema", False),                              # a name, not a module: the module
        ("ivr.core", False), ("ivr.core.agi", False),                                 # import_module("...")
        ("ivr.store", False), ("ivr.store.keys", False),                              # under TYPE_CHECKING: counted
        ("ivr", True), ("ivr.balance", True), ("ivr.balance.erlang", True),           # in a function
        ("ivr.reports", True), ("ivr.reports.service", True),                         # in a method
        ("ivr.devtools", True), ("ivr.devtools.demo", True),                          # __import__ in a lambda
    }
    assert _collect("ivr.menu", "from . import engine\nfrom .nodes import default_registry\n") == {
        ("ivr", False), ("ivr.menu.engine", False), ("ivr.menu.nodes", False)}     # a package's own level is itself
    assert _resolve("ivr.menu.nodes", 2, "balance.forecast") == "ivr.balance.forecast"
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d", "a"}, "e": set()}
    assert _components(graph) == [frozenset("abc"), frozenset("d")]
    assert _a_cycle(graph, frozenset("abc")) == ["a", "b", "c", "a"]
    assert len(MODULES) > 50 and all(m.startswith("ivr") for m in MODULES)


def test_no_import_circles() -> None:
    allowed = [c for c in COMPONENTS if any(c <= a for a in ALLOWED_CYCLES)]
    if allowed:   # shown with -s (or -rP): what the allow-list still lets through
        print("allowed import circles (ALLOWED_CYCLES, being removed by the services step):")
        print("\n".join(_describe(GRAPH, c) for c in allowed))
    bad = [c for c in COMPONENTS if c not in allowed]
    assert not bad, "import circles in ivr/ (function-level imports count):\n" + \
        "\n".join(_describe(GRAPH, c) for c in bad)


def test_allowed_cycles_still_exist() -> None:
    stale = [a for a in ALLOWED_CYCLES if not any(c <= a for c in COMPONENTS)]
    assert not stale, f"these circles are gone: remove them from ALLOWED_CYCLES: {[sorted(a) for a in stale]}"


def test_menu_has_no_allowed_cycle() -> None:
    assert not [a for a in ALLOWED_CYCLES if any(m.startswith("ivr.menu.") for m in a)]


# ------------------------------------------------------------------------------------------- layering
def test_devtools_only_from_the_cli_dev_commands() -> None:
    bad = [f"{MODULES[i.source].relative_to(ROOT)}:{i.line} imports {i.target}"
           f"{' in a function' if i.in_function else ' at module level'}"
           for i in IMPORTS
           if (i.target == "ivr.devtools" or i.target.startswith("ivr.devtools."))
           and not (i.source == "ivr.devtools" or i.source.startswith("ivr.devtools."))
           and not (i.source == "ivr.app.cli" and i.in_function)]
    assert not bad, "ivr.devtools is imported by the product:\n" + "\n".join(bad)


def test_core_imports_only_the_standard_library() -> None:
    bad = [f"{MODULES[i.source].relative_to(ROOT)}:{i.line} imports {i.target}"
           for i in IMPORTS
           if (i.source == "ivr.core" or i.source.startswith("ivr.core."))
           and not (i.target in sys.stdlib_module_names or i.target == "ivr.core" or i.target.startswith("ivr.core.")
                    or i.target == "ivr")]
    assert not bad, "ivr/core is sans-IO and standard library only:\n" + "\n".join(bad)


def _reachable(module: str) -> set[str]:
    seen, todo = {module}, [module]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


@pytest.mark.parametrize("external", ["aiohttp", "redis"])
def test_menu_schema_pulls_in_no_io_library(external: str) -> None:
    via = sorted(f"{MODULES[i.source].relative_to(ROOT)}:{i.line}"
                 for i in IMPORTS if i.source in _reachable("ivr.menu.schema") and i.target == external)
    assert not via, f"ivr.menu.schema imports {external} (through {', '.join(via)})"


def test_node_kinds_do_not_import_the_engine() -> None:
    assert "ivr.menu.engine" not in _reachable("ivr.menu.nodes")
