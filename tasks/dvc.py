"""The flow's view of `dvc.yaml` through DVC's own API: its stages in order, the params they track,
and a stage run by `dvc repro --single-item`, so DVC alone decides staleness and writes dvc.lock."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from prefect import task
from prefect.concurrency.sync import concurrency
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from colorization.config import OVERRIDES_ENV

log = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"  # the file dvc.yaml's `params` entries name (DVC's default)


class DvcFailed(RuntimeError):
    """A dvc command exited non-zero; the message carries its own last lines (the stage's error)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the stage command's exit status, when it was the command that failed


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run (shown in the UI), else this module's logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return log


def _repo(root: str | Path = "."):
    from dvc.repo import Repo

    return Repo(str(root))


def pipeline_stages(root: str | Path = ".") -> list[str]:
    """dvc.yaml's stages (`train@cnn` for a foreach), upstream first, ties in dvc.yaml's order."""
    import networkx as nx

    with _repo(root) as repo:
        stages = [s for s in repo.index.stages if Path(s.path).name == "dvc.yaml"]
        order = {s: i for i, s in enumerate(stages)}
        graph = repo.index.graph.subgraph(stages)  # edges point from a stage to what it depends on
        ordered = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=lambda s: order[s])
        return [stage.name for stage in ordered]


def tracked_params(root: str | Path = ".") -> dict[str, list[str]]:
    """Per stage, the params.yaml keys dvc.yaml lists for it (`acquire` for a whole section)."""
    from dvc.dependency.param import ParamsDependency

    found: dict[str, list[str]] = {}
    with _repo(root) as repo:
        for stage in repo.index.stages:
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency) and Path(dep.def_path).name == PARAMS_FILE:
                    found.setdefault(stage.name, []).extend(dep.params or [])
    return found


def touches(override: str, key: str) -> bool:
    """Whether setting the dotted `override` changes the tracked `key` (or a part of it)."""
    return override == key or override.startswith(key + ".") or key.startswith(override + ".")


def stages_tracking(override: str, tracked: Mapping[str, list[str]]) -> list[str]:
    return [stage for stage, keys in tracked.items() if any(touches(override, k) for k in keys)]


def dvc(*args: str, env: Mapping[str, str] | None = None) -> str:
    """Run `dvc ARGS` with this interpreter's DVC here; stdout back. Its bin folder leads PATH, so a
    stage's `colorization` is this environment's; DVC dies with this process (its stage with DVC)."""
    bin_dir = str(Path(sys.executable).parent)
    full_env = {**os.environ, **(env or {}), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    cmd = [sys.executable, "-m", "colorization.processes", str(os.getpid()), "dvc", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=full_env)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        tail = errors[-1:] or (done.stderr or done.stdout).strip().splitlines()[-3:]
        status = re.findall(r"exited with (-?\d+)", done.stderr)  # the stage command's
        raise DvcFailed(f"`dvc {' '.join(args)}`: {' | '.join(tail)}", int(status[-1]) if status else None)
    return done.stdout


@task(name="dvc_stage", task_run_name="{stage}")
def run_stage(
    stage: str,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    slot: str | None = None,
    force: bool = False,
) -> bool:
    """Reproduce `stage` alone when DVC finds it stale (or `force`: a network source's new data); True
    when it ran. `overrides` and `env` reach its command; `slot`: a concurrency limit held meanwhile."""
    logger = run_logger()
    if not force:
        with _repo() as repo:
            if not repo.status(targets=[stage]):  # deps, params and outs as dvc.lock records them
                logger.info("stage %s is up to date (dvc status): skipped", stage)
                return False
    extra = dict(env or {})
    if overrides:
        extra[OVERRIDES_ENV] = json.dumps(overrides)
    with concurrency(slot, occupy=1) if slot else nullcontext():
        forced = ["--force", "--no-run-cache"] if force else []  # run the command, restore nothing
        output = dvc("repro", "--single-item", *forced, stage, env=extra)
    for line in output.strip().splitlines()[-5:]:
        logger.info("%s: %s", stage, line)
    return True


@task(name="dvc_push", retries=2, retry_delay_seconds=10)
def push(stages: list[str]) -> str | None:
    """Upload the stages' outputs to the default remote; returns its name, None if there is none."""
    logger = run_logger()
    try:
        remote = dvc("remote", "default").strip() or None
    except DvcFailed:  # "No default remote set"
        remote = None
    if remote is None:
        logger.info("no default DVC remote: nothing pushed")
        return None
    if stages:
        dvc("push", "--quiet", *stages)
        logger.info("pushed %s to DVC remote %r", ", ".join(stages), remote)
    return remote
