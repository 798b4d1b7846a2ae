"""The import graph of core/, ui/ and app.py, read from the source with `ast` (nothing is imported).

Every import statement counts, wherever it is: at module level, in a class, in a function, under
``if TYPE_CHECKING``. An import inside a function still makes a circle between modules (it only
postpones the failure to the call), so the cycle test counts those too; the torch test is about
import time and so counts only what runs when the module is imported.

pyproject.toml's import-linter contracts (``lint-imports``) check the layers; the two rules here
are the ones import-linter cannot state: no circle at all, even through a function, and no torch
when an orchestration module is imported (import-linter counts function-level imports as well).
"""

import ast
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "ui")

# Torch-free at import: they plan, launch and record runs; the trainer runs in a child process.
# Each may still import torch inside a function, for what only a trainer or a GPU query needs.
ORCHESTRATION = ("core.jobs", "core.studies", "core.sharing.hub", "core.runs", "core.config", "core.variants")
# What imports torch when imported. safetensors.torch does `import torch` first thing.
TORCH = ("torch", "safetensors.torch")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module: a project module when it is one, else the name as written
    line: int
    module_level: bool  # runs when the module is imported (not in a def, not under TYPE_CHECKING)

    def where(self) -> str:
        if not self.line:
            return "its package, run first"
        return f"{module_path(self.source)}:{self.line}{'' if self.module_level else ' (in a function)'}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_path(name: str) -> str:
    return _FILES[name].relative_to(REPO).as_posix()


def _project_files() -> dict[str, Path]:
    paths = [REPO / "app.py", *(p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py")))]
    return {module_name(p): p for p in paths}


_FILES = _project_files()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(name: str) -> str:
    """`name` as a project module (the longest project module it starts with), else unchanged."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in _FILES:
            return candidate
    return name


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [_resolve(alias.name) for alias in node.names]
    if node.level:  # relative: from the module's package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[:len(package) - (node.level - 1)] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    # `from core import variants` imports the module core.variants; `from core.runs import Run` core.runs
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in _FILES else _resolve(base)
            for alias in node.names]


def _imports(module: str) -> list[Import]:
    path = _FILES[module]
    found = []

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.extend(Import(module, target, node.lineno, module_level)
                         for target in _targets(node, module, path.name == "__init__.py"))
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, False)  # for type checkers only: never runs
            for stmt in node.orelse:
                visit(stmt, module_level)
            return
        inner = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


IMPORTS = {module: _imports(module) for module in _FILES}


def _graph() -> dict[str, dict[str, Import]]:
    """{module: {imported project module: the first import statement of it}}."""
    graph: dict[str, dict[str, Import]] = {}
    for module, imports in IMPORTS.items():
        edges = graph.setdefault(module, {})
        for imp in imports:
            if imp.target in _FILES and imp.target != module:
                edges.setdefault(imp.target, imp)
    return graph


def _strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's components with more than one module, each sorted (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _shortest_cycle(graph: dict[str, dict[str, Import]], members: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as [a, b, ..., a]."""
    start, inside = members[0], set(members)
    previous = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if child in inside and child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component always has one


def describe_cycles(graph: dict[str, dict[str, Import]]) -> list[str]:
    lines = []
    for members in _strongly_connected(graph):
        cycle = _shortest_cycle(graph, members)
        steps = [f"    {a} -> {b}  [{graph[a][b].where()}]" for a, b in zip(cycle, cycle[1:])]
        lines += [f"{' -> '.join(cycle)}" + (f"  (circle among {len(members)} modules: {', '.join(members)})"
                                             if len(members) > len(cycle) - 1 else ""), *steps]
    return lines


def _import_time_chain(module: str, banned: tuple[str, ...]) -> list[Import] | None:
    """The chain of module-level imports by which importing `module` imports one of `banned`
    (importing a.b.c also runs the packages a and a.b); None if it does not."""
    previous: dict[str, Import | None] = {module: None}
    queue = deque([module])
    while queue:
        node = queue.popleft()
        parents = [".".join(node.split(".")[:n]) for n in range(1, node.count(".") + 1)]
        steps = [*(Import(node, parent, 0, True) for parent in parents if parent in _FILES),
                 *(imp for imp in IMPORTS[node] if imp.module_level)]
        for imp in steps:
            if any(imp.target == name or imp.target.startswith(name + ".") for name in banned):
                chain = [imp]
                while previous[chain[-1].source] is not None:
                    chain.append(previous[chain[-1].source])
                return chain[::-1]
            if imp.target in _FILES and imp.target not in previous:
                previous[imp.target] = imp
                queue.append(imp.target)
    return None


def _chain_text(chain: list[Import]) -> str:
    return " -> ".join([chain[0].source, *(f"{imp.target} [{imp.where()}]" for imp in chain)])


# ---------------------------------------------------------------------------- the tests


def test_the_graph_sees_imports_in_functions_and_resolves_every_form():
    edges = {(imp.target, imp.module_level) for imp in IMPORTS["core.sharing.hub"]}
    assert ("core.sharing.hub_model", False) in edges  # `from core.sharing import hub_model` in a def
    assert ("core.runs", True) in edges  # `from core.runs import (...)`
    assert ("core.variants", True) in {(i.target, i.module_level) for i in IMPORTS["core.config"]}
    data = {(i.target, i.module_level) for i in IMPORTS["core.training.data"]}
    assert ("torch", False) in data and ("torch", True) not in data  # under `if TYPE_CHECKING:` only
    relative = {i.target for i in IMPORTS["core.hf_remote.modeling_ffn_explorer"]}
    assert "core.hf_remote.configuration_ffn_explorer" in relative  # `from .configuration_… import`
    assert {"core", "ui", "app", "core.sharing.hub", "ui.service"} <= set(IMPORTS)


def test_no_import_cycles():
    """No circle among core, ui and app, counting imports inside functions."""
    cycles = describe_cycles(_graph())
    assert not cycles, "import cycles (each with the statements that make it):\n" + "\n".join(cycles)


def test_core_never_imports_gradio_ui_or_app():
    """core is the library under the app: gradio, ui and app are never imported from it, not even
    in a function or through another module."""
    graph = _graph()
    bad = []
    for module in (m for m in _FILES if m == "core" or m.startswith("core.")):
        for imp in IMPORTS[module]:
            target = imp.target
            if target.split(".")[0] in ("gradio", "ui", "app"):
                bad.append(f"{module} imports {target} [{imp.where()}]")
        seen = {module}
        queue = deque([module])
        while queue:  # and not through a core module that would (gradio is imported only by ui, app)
            node = queue.popleft()
            for child in graph[node]:
                if child not in seen:
                    seen.add(child)
                    queue.append(child)
        bad += [f"{module} reaches {m}" for m in sorted(seen) if m.split(".")[0] in ("ui", "app")]
    assert not bad, "\n".join(sorted(set(bad)))


def test_nothing_imports_the_app():
    """app.py is the top (import-linter's graph cannot hold a single-file top-level module)."""
    bad = [f"{imp.source} imports app [{imp.where()}]" for imports in IMPORTS.values() for imp in imports
           if imp.target == "app" and imp.source != "app"]
    assert not bad, "\n".join(bad)


def test_orchestration_imports_no_torch_at_module_level():
    """Importing an orchestration module never imports torch, directly or through another module
    (statements in a def and under `if TYPE_CHECKING:` do not run at import)."""
    modules = [m for m in _FILES if any(m == o or m.startswith(o + ".") for o in ORCHESTRATION)]
    assert "core.jobs.launch" in modules and "core.sharing.hub" in modules
    chains = [_chain_text(chain) for m in sorted(modules) if (chain := _import_time_chain(m, TORCH))]
    assert not chains, "orchestration importing torch when imported:\n" + "\n".join(chains)


def test_every_module_is_in_a_layer_of_the_import_linter_contract():
    """The layers contract of pyproject.toml leaves nothing out (a new package must be placed)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c["layers"] for c in config["contracts"] if c["type"] == "layers")
    listed = {name.strip() for layer in layers for name in re.split(r"[|:]", layer)}
    unplaced = [m for m in _FILES if m not in ("app", "core") and not m.startswith("core.hf_remote.")
                and not any(m == name or m.startswith(name + ".") for name in listed)]
    assert not unplaced, f"modules in no layer of [tool.importlinter]: {', '.join(sorted(unplaced))}"


def test_the_cycle_finder_finds_a_cycle_through_a_function_import():
    a = Import("x.a", "x.b", 1, True)
    b = Import("x.b", "x.a", 9, False)
    graph = {"x.a": {"x.b": a}, "x.b": {"x.a": b}, "x.c": {"x.a": Import("x.c", "x.a", 2, True)}}
    assert _strongly_connected(graph) == [["x.a", "x.b"]]
    assert _shortest_cycle(graph, ["x.a", "x.b"]) == ["x.a", "x.b", "x.a"]
