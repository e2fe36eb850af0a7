"""The mutation score of `make mutate`, per module, from mutmut's results in mutants/.

Prints Markdown: a table of killed / survived / no tests / timeout per module, the score
against the 85 % target, and every surviving mutant as the lines it changed.

    python bench/mutation_report.py [--no-diffs] > bench/MUTATION-results.md

The promotion rule lives in colorization/tracking/registry.py beside the MLflow plumbing
(exercised by the slow server tests, not the fast ones): only its functions count towards
the promotion rule's row, the rest of the file is reported on a row of its own.
"""

from __future__ import annotations

import ast
import difflib
import json
import sys
from collections import Counter
from pathlib import Path

MUTANTS = Path("mutants")
TARGET = 0.85
PROMOTION_RULE = ("x_beats", "x_decide_promotion", "x_metric_value")
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout", 37: "killed"}
STATUS |= {code: "timeout" for code in (-24, 24, 152, 255)}


def module_of(key: str) -> str:
    """'colorization.tracking.registry.x_beats__mutmut_1' -> the row it counts in."""
    module, function = key.rsplit("__mutmut_", 1)[0].rsplit(".", 1)
    if module == "colorization.tracking.registry":
        name = function.split("ǁ")[-1]
        return "registry: promotion rule" if name in PROMOTION_RULE else "registry: MLflow plumbing"
    return module.removeprefix("colorization.")


def results() -> dict[str, dict[str, str]]:
    by_module: dict[str, dict[str, str]] = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        for key, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            status = "not checked" if code is None else STATUS.get(code, f"other ({code})")
            by_module.setdefault(module_of(key), {})[key] = status
    return by_module


def _functions(path: Path) -> dict[str, list[str]]:
    """Source lines of every function (methods included) in a mutated file, by name."""
    lines = path.read_text().splitlines()
    found = {}
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = [line.strip() for line in lines[node.lineno - 1 : node.end_lineno]]
            found[node.name] = [body[0].replace(node.name, "f", 1), *body[1:]]  # the name is not a change
    return found


_SOURCES: dict[str, dict[str, list[str]]] = {}


def show(key: str) -> str:
    """The lines a mutant changed: its function against the original, as - / + lines."""
    module, function = key.rsplit(".", 1)
    path = MUTANTS / (module.replace(".", "/") + ".py")
    if module not in _SOURCES:
        _SOURCES[module] = _functions(path)
    functions = _SOURCES[module]
    original = functions.get(function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", [])
    diff = difflib.unified_diff(original, functions.get(function, []), lineterm="", n=0)
    return "\n".join(line for line in diff if line[:1] in "-+" and line[:3] not in ("---", "+++"))


def main() -> None:
    diffs = "--no-diffs" not in sys.argv
    by_module = results()
    print("| module | mutants | killed | survived | no tests | timeout | not run | score (killed / all) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total = Counter()
    for module, statuses in by_module.items():
        c = Counter(statuses.values())
        total.update(c)
        n = len(statuses)
        score = c["killed"] / n if n else 0.0
        mark = "meets" if score >= TARGET else "below"
        print(
            f"| {module} | {n} | {c['killed']} | {c['survived']} | {c['no tests']} | {c['timeout']} "
            f"| {c['not checked']} "
            f"| {score:.1%} ({mark} {TARGET:.0%}) |"
        )
    n = sum(total.values())
    print(
        f"| **all** | {n} | {total['killed']} | {total['survived']} | {total['no tests']} "
        f"| {total['timeout']} | {total['not checked']} "
        f"| {total['killed'] / max(n, 1):.1%} |"
    )
    if not diffs:
        return
    print("\n## Surviving mutants\n")
    for module, statuses in by_module.items():
        survivors = [k for k, s in statuses.items() if s == "survived"]
        if not survivors:
            continue
        print(f"### {module}\n")
        for key in survivors:
            print(f"`{key}`\n```diff\n{show(key)}\n```")
        print()


if __name__ == "__main__":
    main()
