"""No import circle among core's modules, function-level imports included (ast, no imports run).

An import inside a function hides a circle from Python but not from the design: core.studies uses
core.jobs and core.analysis, and neither imports core.studies back (the CLIs that run or report a
study live in core.jobs.sweep and core.studies.report).
"""

import ast
from pathlib import Path

from tests.conftest import REPO


def module_name(path: Path, repo: Path = REPO) -> str:
    parts = path.relative_to(repo).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str]) -> set[str]:
    """The core modules `path` imports anywhere in its body (`from a import b` counts a.b if a
    module, else a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def import_graph(package: str = "core", repo: Path = REPO) -> dict[str, set[str]]:
    """{module: the core modules it imports} for every module of `package` under `repo`."""
    files = {module_name(p, repo): p for p in (repo / package).rglob("*.py")}
    known = set(files)
    return {name: imports(path, known) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each as a path [a, b, ..., a] (one per strongly connected component)."""
    found, state = [], {}  # state: 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_cycle_finder_sees_function_level_imports(tmp_path):
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b", "a"]]
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from core.x import y\n")
    assert imports(source, {"core.x", "core.x.y"}) == {"core.x.y"}


# Where the studies meet the rest: no circle may pass through these.
STUDY_SIDE = ("core.studies", "core.jobs", "core.analysis", "core.sweep", "core.report")


def test_studies_jobs_and_analysis_have_no_import_circle():
    graph = import_graph()
    assert "core.studies.run" in graph["core.jobs.sweep"]  # the sweep CLI runs studies
    assert "core.analysis.report" in graph["core.studies.report"]
    assert [c for c in cycles(graph) if any(m.startswith(STUDY_SIDE) for m in c)] == []
    # the layers, not only the absence of a circle: studies build on jobs and analysis, not back
    assert not [(m, d) for m, deps in graph.items() if m.startswith("core.analysis")
                for d in deps if d.startswith("core.studies")]
    assert not [(m, d) for m, deps in graph.items() if m.startswith("core.studies")
                for d in deps if d in ("core.jobs.sweep", "core.sweep", "core.report")]
