"""The stage order of docs/architecture.md, read from the imports of every module of src/headscope.

Data flows one way: a module imports only from its own stage and the stages to its left, and no
two modules import each other, directly or around a circle. Every `import` and `from ... import`
counts, at the top of a module or inside a function (an import moved into a function to dodge a
cycle is still the cycle). An import names the module it loads (`from headscope.scores import ov`
is `scores.ov`; `from headscope.run import Run` is `run`); the packages it passes through are not
counted (their `__init__.py` imports nothing, except the front end `headscope/__init__.py`, which
imports by name on first use).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "headscope"
ROOT = "__init__"  # headscope/__init__.py: the package's public names, a front end

ORDER = (
    "helpers", "task", "dataset", "model", "capture", "scores", "analyses", "run", "report", "sweeps",
    "front end",
)  # fmt: skip
# module or package (under headscope) -> its stage in ORDER; the longest prefix decides.
STAGE: dict[str, int] = {
    # helpers every stage reads
    "errors": 0,
    "files": 0,
    "heads": 0,
    "options": 0,
    # task: a Task, its prompts, the built-in tasks, task files, the relation library
    "tasks": 1,
    # dataset: a task's prompts tokenised for one tokenizer
    "tasks.dataset": 2,
    "tasks.tokenization": 2,
    "tasks.relation_tokens": 2,
    "scores.keywords": 2,
    # model: loading, the architecture record, the weights (it holds the model's Tokenization)
    "models": 3,
    "capture": 4,
    "embedding": 4,
    "scores": 5,
    "analyses": 6,
    "run": 7,
    "run_tables": 7,
    "report": 8,
    "sweeps": 9,
    # front ends: the Python API, the command line, the figures
    "api": 10,
    "api_causal": 10,
    "api_common": 10,
    "cli": 10,
    "plot": 10,
    ROOT: 10,
    "__main__": 10,
}


def module_names() -> dict[str, Path]:
    """Every module under headscope by dotted name ('scores.ov', 'tasks' for tasks/__init__.py)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name or ROOT] = path
    return modules


MODULES = module_names()


def _package_of(module: str) -> list[str]:
    """The package a relative import in `module` starts from, as name parts."""
    if module == ROOT:
        return []
    is_package = MODULES[module].name == "__init__.py"
    parts = module.split(".")
    return parts if is_package else parts[:-1]


def _known(dotted: str) -> str | None:
    """`dotted` (relative to headscope) as the module it loads: itself, else its nearest package."""
    while dotted:
        if dotted in MODULES:
            return dotted
        dotted = dotted.rpartition(".")[0]
    return ROOT


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The headscope modules one import statement loads."""
    if isinstance(node, ast.Import):
        found = [alias.name for alias in node.names]
        return [_known(n.removeprefix("headscope.")) for n in found if n.split(".")[0] == "headscope"]
    if node.level:
        base = _package_of(module)[: len(_package_of(module)) - (node.level - 1)]
        source = ".".join([*base, *([node.module] if node.module else [])])
    elif node.module and node.module.split(".")[0] == "headscope":
        source = node.module.removeprefix("headscope").removeprefix(".")
    else:
        return []
    within = [f"{source}.{alias.name}" if source else alias.name for alias in node.names]
    return [name if name in MODULES else _known(source) for name in within]


def import_graph() -> dict[str, set[str]]:
    """module -> the headscope modules it imports anywhere in its file (itself left out)."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
        graph[module] = {target for node in imports for target in _targets(module, node)} - {module}
    return graph


def stage_of(module: str) -> int | None:
    """The stage of the longest STAGE key that is `module` or a package holding it."""
    keys = [k for k in STAGE if module == k or (k != ROOT and module.startswith(k + "."))]
    return STAGE[max(keys, key=len)] if keys else None


def _named(module: str) -> str:
    return f"headscope.{module}" if module != ROOT else "headscope"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a (stage) imports b (stage)' for every import from a stage to one on its right."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if None not in (stage_of(module), stage_of(target)) and stage_of(target) > stage_of(module):
                found.append(
                    f"{_named(module)} ({ORDER[stage_of(module)]}) imports "
                    f"{_named(target)} ({ORDER[stage_of(target)]})"
                )
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(module: str) -> None:  # recursion depth: the longest import chain, a few dozen
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(cycles)


def _cycle_path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One circle through the component, 'a -> b -> ... -> a', by following imports inside it."""
    members, path = set(component), [component[0]]
    while True:
        following = sorted(graph[path[-1]] & members)
        step = next((m for m in following if m == path[0] or m not in path), following[0])
        path.append(step)
        if step in path[:-1]:
            return " -> ".join(_named(m) for m in path[path.index(step) :])


GRAPH = import_graph()


def test_every_module_has_a_stage_and_every_stage_a_module():
    unplaced = [_named(m) for m in MODULES if stage_of(m) is None]
    assert not unplaced, f"modules in no stage (add them to STAGE, and to docs/architecture.md): {unplaced}"
    stale = [key for key in STAGE if key not in MODULES]
    assert not stale, f"STAGE names modules that are not there: {stale}"


def test_no_module_imports_from_a_stage_to_its_right():
    found = upward_imports(GRAPH)
    assert not found, "imports against the stage order of docs/architecture.md:\n" + "\n".join(found)


def test_no_import_cycle():
    cycles = import_cycles(GRAPH)
    shown = [_cycle_path(GRAPH, component) for component in cycles]
    assert not cycles, "import cycles (an import inside a function counts):\n" + "\n".join(shown)


def _graph_of(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    return {module: set(targets) for module, targets in edges.items()}


def test_the_checks_find_what_they_are_for():
    """On a made-up graph: a stage importing a front end, and a circle closed inside a function."""
    upward = _graph_of({"scores.atlas": {"api"}, "api": set()})
    assert upward_imports(upward) == ["headscope.scores.atlas (scores) imports headscope.api (front end)"]
    circle = _graph_of({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert import_cycles(circle) == [["a", "b", "c"]]
    assert _cycle_path(circle, ["a", "b", "c"]) == "headscope.a -> headscope.b -> headscope.c -> headscope.a"
    assert import_cycles(_graph_of({"a": {"b"}, "b": set()})) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "scores.atlas",
            "from headscope.scores import ov, atlas_within",
            ["scores.ov", "scores.atlas_within"],
        ),
        ("scores.atlas", "from headscope.run import Run", ["run"]),
        ("scores.atlas", "import headscope.api as api", ["api"]),
        ("scores.atlas", "from . import ov", ["scores.ov"]),
        ("scores.atlas", "from .ov import OVOptions", ["scores.ov"]),
        ("scores.circuit.edges", "from ..interventions import InterventionRunner", ["scores.interventions"]),
        ("report.page", "def later():\n    from headscope.report.html import write_report", ["report.html"]),
        ("report", "from . import page", ["report.page"]),
        ("run", "import numpy as np\nfrom pandas import DataFrame", []),
    ],
)
def test_imports_are_read_as_the_modules_they_load(module, source, expected):
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert [target for node in nodes for target in _targets(module, node)] == expected
