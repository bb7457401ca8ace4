"""The package's imports follow the data flow data → embed → rewards → inference → train → eval → report → server →
cli, and no two modules import each other (directly or through others), counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "paretoalign"
LAYERS = ("data", "embed", "rewards", "inference", "train", "eval", "report", "server", "cli")
"""Upstream first: a module may import from its own layer and the layers before it (cli, the entry point of
everything, may start the server; the server never imports the command line)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module's paretoalign imports (module-level or not), as the deepest module each names."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "paretoalign":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == "paretoalign")
        # a package's own __init__ runs first anyway: importing a parent package is not an edge
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _is_subpackage_module(module: str) -> bool:
    return len(module.split(".")) > 2 or module.split(".")[-1] in LAYERS


def test_the_import_graph_is_read():
    graph = _imports()
    assert "paretoalign.inference.engine" in graph
    assert "paretoalign.inference.sampling_params" in graph["paretoalign.inference.engine"]


def test_no_import_runs_against_the_data_flow():
    bad = []
    for module, targets in _imports().items():
        source = _layer(module)
        for target in targets:
            layer = _layer(target)
            if layer is None:
                continue
            if source is None and not _is_subpackage_module(module):
                # a shared top-level module (errors, atomic_io, output_paths, ...) sits below every layer
                bad.append(f"{module} -> {target} (a shared module imports a layer)")
            elif source is not None and LAYERS.index(layer) > LAYERS.index(source):
                bad.append(f"{module} -> {target} ({source} imports the later layer {layer})")
    assert not bad, "imports against the data flow:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = _imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("layer", LAYERS[:-2])
def test_each_layer_is_a_package(layer):
    assert (PACKAGE / layer / "__init__.py").is_file()
