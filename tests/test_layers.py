"""Imports flow one way: every gptviz module sits on a floor, imports only its own floor or lower ones,
and no chain of imports comes back to where it started. Every import counts, also those inside a
function or under TYPE_CHECKING (a type is a dependency too)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module imports from its own floor or below; a new module gets a floor here.
FLOORS: list[tuple[str, set[str]]] = [
    ("foundations: shapes and features, names, files", {
        "gptviz.config", "gptviz.cache", "gptviz.labels", "gptviz.gguf_header"}),
    ("what the model reads: architectures, edits, edges, tokens, packaged files", {
        "gptviz.architectures", "gptviz.edits", "gptviz.edges", "gptviz.tokenizer", "gptviz.packages"}),
    ("the model", {"gptviz.model"}),
    ("weights, sampling and edge runs", {
        "gptviz.weights", "gptviz.weights.convert", "gptviz.weights.gguf", "gptviz.weights.hf_dir",
        "gptviz.weights.hub", "gptviz.sampling", "gptviz.edge_run",
        *{f"gptviz.weights.{m}" for m in ("save", "book", "book_llama", "nanogpt", "file_options", "name_table",
                                          "safe_pickle", "user_file", "user_tokenizer")}}),
    ("loading", {"gptviz.loading"}),
    ("the trace", {"gptviz.trace"}),
    ("above the trace: interventions from traces, analyses, explanations, export", {
        "gptviz.interventions", "gptviz.features", "gptviz.export", "gptviz.analysis",
        *{f"gptviz.analysis.{m}" for m in ("attribution", "block", "circuit", "composition", "embeddings", "heads",
                                           "lens", "positions", "scaling")},
        "gptviz.training", *{f"gptviz.training.{m}" for m in ("data", "events", "settings", "loop", "curves",
                                                              "estimate", "worker")}}),
    ("plots", {"gptviz.plots", *{f"gptviz.plots.{m}" for m in ("attention", "attribution", "block", "circuit", "common",
                                                               "embeddings", "heads", "lens", "pipeline", "sampling",
                                                               "scale", "training")}}),
    ("the app's registries: pages, settings", {"gptviz.ui.navigation", "gptviz.ui.settings"}),
    ("the app's store: models, traces, results", {"gptviz.ui.own_models", "gptviz.ui.store", "gptviz.ui.models"}),
    ("the app's widgets and view", {"gptviz.ui.upload", "gptviz.ui.widgets", "gptviz.ui.view_state"}),
    ("the question the attribution pages share, the Train page's runs", {"gptviz.ui.question",
                                                                           "gptviz.ui.training"}),
    ("the app and the API", {"gptviz", "gptviz.__main__", "gptviz.ui"}),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """gptviz module -> the gptviz modules it imports (`from gptviz.x import y` names module gptviz.x.y
    when that is a module, else gptviz.x)."""
    files = {module_name(p): p for p in sorted((root / "gptviz").rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name}: relative import; write gptviz.… in full"
                if node.module and node.module.split(".")[0] == "gptviz":
                    subs = {f"{node.module}.{a.name}" for a in node.names} & files.keys()
                    deps |= subs
                    if len(subs) < len(node.names):  # names defined in node.module itself
                        deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "gptviz"}
        graph[name] = deps - {name}
    return graph


def floor_of(floors: list[tuple[str, set[str]]]) -> dict[str, int]:
    return {module: i for i, (_, modules) in enumerate(floors) for module in modules}


def upward_imports(graph: dict[str, set[str]], floors: list[tuple[str, set[str]]]) -> list[str]:
    level = floor_of(floors)
    return [f"{m} ({floors[level[m]][0]}) imports {d} ({floors[level[d]][0]})"
            for m, deps in sorted(graph.items()) for d in sorted(deps) if level[d] > level[m]]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_floor():
    graph = import_graph()
    placed = floor_of(FLOORS)
    assert sorted(set(graph) - placed.keys()) == [], "give each new module a floor in FLOORS"
    assert sorted(placed.keys() - set(graph)) == [], "FLOORS names modules that do not exist"


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_module_imports_a_higher_floor():
    assert upward_imports(import_graph(), FLOORS) == []


def test_the_checks_see_circles_and_upward_imports():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    floors = [("low", {"a", "b", "c", "e"}), ("high", {"d"})]
    assert upward_imports(graph, floors) == []
    assert upward_imports({**graph, "e": {"d"}}, floors) == ["e (low) imports d (high)"]


@pytest.mark.parametrize("module, imports", [
    ("gptviz.model", {"gptviz.config", "gptviz.edits", "gptviz.tokenizer"}),
    ("gptviz.trace", {"gptviz.edge_run", "gptviz.edges", "gptviz.edits", "gptviz.labels", "gptviz.model"}),
])
def test_what_the_model_and_the_trace_read(module, imports):
    """Edits sit below the model; the patching that builds them from traces sits above the trace."""
    assert import_graph()[module] == imports
