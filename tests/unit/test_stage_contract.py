"""dvc.yaml is the one contract of every stage: each stage's deps cover the package code its
command really runs (the modules the CLI command imports, and everything they import).
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from tasks.dvc import pipeline_stages
from tests.conftest import REPO
from tests.unit.test_structure import PACKAGE, import_graph


def _stage_deps(root: Path) -> dict[str, list[str]]:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {
            stage.name: [
                str(Path(dep.fs_path).relative_to(root.resolve()))
                for dep in stage.deps
                if not isinstance(dep, ParamsDependency)
            ]
            for stage in repo.index.stages
        }


def command_modules(command: str) -> set[str]:
    """The package modules the CLI function of `colorization <command>` imports."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    (function,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == command]
    found = set()
    for node in ast.walk(function):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("colorization."):
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "colorization":  # a module by name
            found |= {f"colorization.{a.name}" for a in node.names if (PACKAGE / f"{a.name}.py").is_file()}
    return found


def runs(modules: set[str]) -> set[str]:
    """`modules` and every package module they import, transitively."""
    graph, seen, todo = import_graph(), set(), list(modules)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


def module_file(module: str) -> str:
    path = Path(*module.split("."))
    return str(path / "__init__.py") if (REPO / path).is_dir() else str(path.with_suffix(".py"))


def test_every_stage_depends_on_the_code_it_runs():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    deps = _stage_deps(REPO)
    for name in pipeline_stages(REPO):
        group = name.split("@")[0]
        command = stages[group].get("cmd") or stages[group]["do"]["cmd"]
        entry = command_modules(command.split()[1])
        assert entry, f"{name}: colorization {command.split()[1]} imports no stage module"
        files = sorted(module_file(m) for m in runs(entry) if m != "colorization.cli")
        missing = [f for f in files if not any(f == d or f.startswith(d + "/") for d in deps[name])]
        assert not missing, f"stage {name} runs {missing} but dvc.yaml does not list them as deps"
