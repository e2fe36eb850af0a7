"""Keep DVC in step with a Prefect run: record what the flow's stages produced, then push.

The flow runs the stage functions itself (the same ones the `dvc.yaml` commands call),
so DVC has not seen the run. `dvc commit --force <stages>` then hashes each stage's
deps, params and outs as they now are, stores the outs in the DVC cache and writes
`dvc.lock` -- exactly what `dvc repro` would have recorded -- and `dvc status` is clean.
(`dvc repro --single-item` would run the stage's shell command instead, a second
definition of the step.) `--no-relink` leaves the files the step wrote in place rather
than replacing them by copies from the cache: same content, no second write, and the
digests a cached Prefect result recorded stay valid.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from prefect import task

from tasks.caching import run_logger


class DvcFailed(RuntimeError):
    """A dvc command exited non-zero; the message carries its own last lines."""


def dvc(*args: str) -> str:
    """Run `dvc ARGS` with this interpreter's DVC in the working directory; stdout back."""
    cmd = [sys.executable, "-m", "dvc", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise DvcFailed(f"`dvc {' '.join(args)}` exited {done.returncode}: {tail}")
    return done.stdout


def dvc_stages(dvc_yaml: str | Path = "dvc.yaml") -> dict[str, dict]:
    path = Path(dvc_yaml)
    return (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.exists() else {}


def tracked_params(stage: dict) -> list[str]:
    """The params.yaml keys a stage lists (entries naming other params files are skipped)."""
    keys: list[str] = []
    for entry in stage.get("params", []):
        if isinstance(entry, str):
            keys.append(entry)
        elif isinstance(entry, dict):
            keys.extend(k for file, ks in entry.items() if file == "params.yaml" for k in ks or [])
    return keys


def _touches(override: str, key: str) -> bool:
    return override == key or override.startswith(key + ".") or key.startswith(override + ".")


def overridden_tracked_params(stages: list[str], changed: dict[str, Any]) -> dict[str, list[str]]:
    """Per stage, the overrides (differing from params.yaml) that change a key DVC tracks for it."""
    found = {}
    for name, stage in dvc_stages().items():
        if name in stages:
            hits = [o for o in changed if any(_touches(o, k) for k in tracked_params(stage))]
            if hits:
                found[name] = hits
    return found


@task(name="dvc_commit", retries=2, retry_delay_seconds=5)  # retried: a concurrent dvc holds the repo lock
def commit(
    stages: list[str], changed_params: dict[str, Any] | None = None, params_file: str = "params.yaml"
) -> list[str]:
    """Record `stages` in dvc.lock and the DVC cache; returns the stages recorded."""
    logger = run_logger()
    if not Path(".dvc").is_dir():
        logger.warning("%s is not a DVC repository: outputs not recorded", Path.cwd())
        return []
    if Path(params_file).resolve() != Path("params.yaml").resolve():
        logger.warning("this run read %s; dvc.lock records the values of params.yaml", params_file)
    known = dvc_stages()
    targets = [s for s in stages if s in known]
    if unknown := [s for s in stages if s not in known]:
        logger.warning("dvc.yaml has no stage %s: not recorded", ", ".join(unknown))
    for stage, keys in overridden_tracked_params(targets, changed_params or {}).items():
        # The run's outputs are still versioned; only the params recorded with them differ.
        logger.warning(
            "stage %s ran with overrides %s: dvc.lock records the params.yaml values with its "
            "outputs, not the ones this run used (set them in params.yaml to make them reproducible)",
            stage,
            ", ".join(keys),
        )
    if targets:
        dvc("commit", "--force", "--no-relink", "--quiet", *targets)
        logger.info("dvc.lock updated for %s", ", ".join(targets))
    return targets


def default_remote() -> str | None:
    try:
        return dvc("remote", "default").strip() or None
    except DvcFailed:  # "No default remote set"
        return None


@task(name="dvc_push", retries=2, retry_delay_seconds=10)
def push(stages: list[str]) -> str | None:
    """Upload the stages' outputs to the default remote; returns its name, None if there is none."""
    logger = run_logger()
    remote = default_remote()
    if remote is None:
        logger.info("no default DVC remote: nothing pushed")
        return None
    if stages:
        dvc("push", "--quiet", *stages)
        logger.info("pushed %s to DVC remote %r", ", ".join(stages), remote)
    return remote
