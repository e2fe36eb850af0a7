"""Cache keys for pure steps: built from what a step reads on disk and its params.

Prefect's default key hashes the Python arguments, which says nothing about the files
a step reads, and gives up caching (with an error in the log) on any argument it cannot
serialise. A step here is keyed on
its JSON-able arguments (the params models), the digests of the files it reads, the
working directory and the domain code it runs. Arguments that cannot be serialised are
left out of the key instead of failing the run.

A step's outputs live on disk, not in Prefect's result store, so a cached result is
only good while the outputs are still what that run wrote: `call_pure` (used by every
flow) compares them and runs the step again when they changed or disappeared.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic_core import to_json

log = logging.getLogger(__name__)

PathsOf = Callable[[dict[str, Any]], Iterable[str | os.PathLike]]


def path_digest(path: str | os.PathLike) -> str:
    """Content hash of a file; for a folder, a hash of every file's path, size and mtime.

    Folders can hold thousands of images: like DVC's state database, stat data stands
    in for their content, which the steps only ever replace (never edit in place).
    """
    path = Path(path)
    if path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return "dir:" + digest.hexdigest()
    return "missing"


def outputs_digest(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    return {str(p): path_digest(p) for p in paths}


def code_digest(module: str) -> str:
    """Hash of a module's source, or of every .py file of a package; found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return "missing"
    if spec.submodule_search_locations:
        files = sorted(f for d in spec.submodule_search_locations for f in Path(d).rglob("*.py"))
    else:
        files = [Path(spec.origin)]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def jsonable_inputs(inputs: dict[str, Any], ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The arguments that serialise to JSON; the others (locks, clients...) are skipped.

    Keys named in `ignore` are dropped from mapping arguments: knobs such as `workers`
    change how fast a step runs, not what it writes.
    """
    ignore = set(ignore)
    kept = {}
    for name, value in sorted(inputs.items()):
        try:
            data = json.loads(to_json(value))
        except Exception:  # anything pydantic cannot serialise does not identify the work
            log.debug("cache key: argument %r is not serialisable, left out", name)
            continue
        kept[name] = {k: v for k, v in data.items() if k not in ignore} if isinstance(data, dict) else data
    return kept


def files_and_params_key(
    reads: PathsOf,
    code: Iterable[str] = (),
    ignore: Iterable[str] = ("workers",),
    key_args: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Callable:
    """A `cache_key_fn`: same arguments, same input files, same code -> same key.

    `code` names the modules (or packages) whose source the step runs.
    `key_args` narrows the arguments to the part the step reads (default: all of them).
    The outputs are not part of the key: they change when the step runs. A cached result
    whose outputs were deleted or edited since is caught by `call_pure`.
    """
    code = tuple(code)
    ignore = tuple(ignore)

    def cache_key(task_ctx, inputs: dict[str, Any]) -> str:
        parts = {
            "task": task_ctx.task.name,
            "cwd": os.getcwd(),
            "args": jsonable_inputs(key_args(inputs) if key_args else inputs, ignore),
            "reads": outputs_digest(reads(inputs)),
            "code": {module: code_digest(module) for module in code},
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    return cache_key


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run (shown in the UI), else this module's logger."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return log


def is_stale(result: dict) -> bool:
    """True when the outputs a step's result recorded are no longer what is on disk."""
    recorded = result["outputs"]
    return outputs_digest(recorded) != recorded


def call_pure(step, **kwargs) -> dict:
    """Run a cached step; run it again if its outputs changed since the cached run.

    The step returns a dict whose "outputs" maps each output path to its digest.
    """
    return refresh_if_stale(step, step(**kwargs), **kwargs)


def refresh_if_stale(step, result: dict, **kwargs) -> dict:
    if not is_stale(result):
        return result
    run_logger().warning("%s: outputs changed on disk since the cached run, running it again", step.name)
    return step.with_options(refresh_cache=True)(**kwargs)
