"""The package's shape: no import cycles, and the domain never imports the orchestrator.

Imports are read from the source (module level and inside functions), so an import made
lazily to dodge a cycle still counts as the dependency it is; only imports for type
annotations (`if TYPE_CHECKING:`), which never run, are left out.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "colorization"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _runtime_nodes(tree: ast.AST):
    """Every node, except the bodies of `if TYPE_CHECKING:` (imports for annotations, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path) -> set[str]:
    """The package's modules `path` imports anywhere in its body (`from a import b`: a.b if a module)."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if is_module(child) else node.module)
    return {name for name in found if name.split(".")[0] == PACKAGE.name and is_module(name)}


def import_graph() -> dict[str, set[str]]:
    graph = {module_name(p): imported_modules(p) for p in sorted(PACKAGE.rglob("*.py"))}
    return {module: {m for m in imports if m != module} for module, imports in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "colorization.evaluate" in graph and "colorization.register" in graph
    assert "colorization.tracking.registry" in graph["colorization.register"]  # the walk sees lazy imports
    assert cycles(graph) == []


def test_tracking_only_wraps_mlflow():
    """The register stage lives in colorization.register; tracking/ never calls back into a stage."""
    graph = import_graph()
    tracking = {m: deps for m, deps in graph.items() if m.startswith("colorization.tracking")}
    stages = {"colorization.register", "colorization.evaluate", "colorization.train", "colorization.cli"}
    assert all(not deps & stages for deps in tracking.values()), tracking


def test_the_domain_imports_neither_prefect_nor_mlflow_outside_tracking():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        roots = {name.split(".")[0] for name in names}
        assert "prefect" not in roots, path
        if "tracking" not in path.parts:
            assert "mlflow" not in roots, path


def longest_functions(limit: int = 5) -> list[tuple[int, str]]:
    """The longest functions of the package (lines from `def` to the end of the body), longest first."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"
                found.append((node.end_lineno - node.lineno + 1, where))
    return sorted(found, reverse=True)[:limit]


def test_every_function_reads_in_one_screen():
    (length, where), *_ = longest_functions()
    assert length <= 60, f"{where} is {length} lines long"


# What the networks and their steps may use: the typed config, the hints (global and local), the
# device and file publishing; nothing from the data, training or serving layers above.
MODELS_MAY_IMPORT = {
    "colorization.config",
    "colorization.device",
    "colorization.histogram",
    "colorization.local_hints",
    "colorization.atomic",
}


def test_the_models_import_nothing_above_them():
    graph = import_graph()
    models = {m: deps for m, deps in graph.items() if m.startswith("colorization.models")}
    above = {
        m: sorted(d for d in deps if not d.startswith("colorization.models") and d not in MODELS_MAY_IMPORT)
        for m, deps in models.items()
    }
    assert not any(above.values()), above


def test_the_kinds_are_named_only_in_their_specs():
    """SPECS is the one list of model kinds: outside colorization/models/ no code spells a
    generator kind as a string (evaluation methods, figure panels, studio labels and default
    models all iterate over the specs), so a new kind touches only its network, step, spec,
    params section and dvc.yaml. Allowed: the studio's form fields, one per model to override."""
    kind = re.compile(r"""["'](cnn|cgan)(_auto)?(_hint)?["']""")
    found = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "flows").rglob("*.py")]):
        if PACKAGE / "models" in path.parents:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if (
                kind.search(code)
                and "_model" not in code
                and not code.strip().startswith(('"""', "colorization"))
            ):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
