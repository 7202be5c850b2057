"""The packages' imports point one way: no cycles, nothing imports a layer above it, pipelines never import each
other, and inside a pipeline the shared modules never import one of its sub-pipelines.

Every import is counted, including those inside functions (a lazy import is still a dependency), read with `ast`
from the source files, so the test needs nothing installed beyond the standard library.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import ROOT

# Lower layers first; a module may import its own layer and the layers below it.
LAYERS = (("feature_repo",), ("coinflow",), ("feature_pipeline", "training_pipeline", "inference_pipeline"))
# Sub-pipelines (one folder each) and the modules that wire them together (the CLIs): nothing else in the
# pipeline may import a sub-pipeline.
SUB_PIPELINES = {
    "feature_pipeline": ("candles", "books", "universe", "pairs", "orchestrator"),
    "training_pipeline": ("price", "action", "pairs"),
}
WIRING = {"feature_pipeline.__main__", "training_pipeline.__main__", "training_pipeline.simulation_run"}
# Declared edges between sub-pipelines: the book pipeline also runs the candle graph over the session's trades.
DECLARED = {("feature_pipeline.books", "feature_pipeline.candles")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    packages = [name for layer in LAYERS for name in layer]
    return {module_name(p): p for package in packages for p in (ROOT / package).rglob("*.py")}


def imported(path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The project modules `path` imports (the longest known module of each dotted name), with line numbers."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for end in range(len(parts), 0, -1):
                if ".".join(parts[:end]) in modules:
                    yield ".".join(parts[:end]), node.lineno
                    break


def graph() -> dict[str, set[tuple[str, int]]]:
    modules = project_modules()
    return {name: set(imported(path, modules)) - {(name, 0)} for name, path in modules.items()}


def layer_of(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if module.split(".")[0] in layer)


def sub_pipeline(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in SUB_PIPELINES.get(parts[0], ()):
        return ".".join(parts[:2])
    return None


def edge_problem(source: str, target: str) -> str | None:
    """Why `source` may not import `target`, or None."""
    if layer_of(target) > layer_of(source):
        return "imports a higher layer"
    source_top, target_top = source.split(".")[0], target.split(".")[0]
    if layer_of(source) == layer_of(target) == len(LAYERS) - 1 and source_top != target_top:
        return "imports another pipeline"
    target_sub, source_sub = sub_pipeline(target), sub_pipeline(source)
    if target_sub is None or target_sub == source_sub or source in WIRING:
        return None
    if source_sub is None:
        return "a pipeline's shared module imports one of its sub-pipelines"
    return None if (source_sub, target_sub) in DECLARED else "imports another sub-pipeline"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a cycle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def is_package_edge(source: str, target: str) -> bool:
    """A module importing its own package's ``__init__`` (``from pkg import sub`` reads pkg first): not a cycle."""
    return source.startswith(target + ".")


def test_no_import_cycles() -> None:
    edges = {
        source: {target for target, _ in targets if not is_package_edge(source, target)}
        for source, targets in graph().items()
    }
    assert cycles(edges) == []


def test_imports_point_down_and_pipelines_stay_apart() -> None:
    problems = [
        f"{source} line {line}: {target}: {problem}"
        for source, targets in sorted(graph().items())
        for target, line in sorted(targets)
        if (problem := edge_problem(source, target))
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("source", "target", "problem"),
    [
        ("coinflow.quickstart", "training_pipeline.tracking", "imports a higher layer"),
        ("inference_pipeline.model_store", "training_pipeline.model_base", "imports another pipeline"),
        (
            "feature_pipeline.runtime",
            "feature_pipeline.candles.sink",
            "a pipeline's shared module imports one of its sub-pipelines",
        ),
        ("training_pipeline.price.train", "training_pipeline.action.model", "imports another sub-pipeline"),
        ("feature_pipeline.books.runner", "feature_pipeline.candles.dataflow", None),
        ("feature_pipeline.__main__", "feature_pipeline.books.cli", None),
        ("inference_pipeline.service", "coinflow.contracts", None),
        ("coinflow.settings", "feature_repo", None),
    ],
)
def test_the_rules_catch_what_they_say(source: str, target: str, problem: str | None) -> None:
    assert edge_problem(source, target) == problem


def test_a_cycle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
