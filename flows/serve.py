"""Serve `pipeline` as a scheduled deployment (default 'pipeline/nightly').

    python -m flows.serve [--params params.yaml] [--workdir .]     (or `colorization serve`)

The schedule, its timezone, the deployment name and the overrides of scheduled runs come
from the `pipeline:` section of params.yaml. This process registers the deployment with
the Prefect server at PREFECT_API_URL and then runs its flow runs, scheduled or
triggered (`prefect deployment run 'pipeline/nightly'`), each in a subprocess, until
stopped (Ctrl-C pauses the schedule).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from colorization.config import Params, ParamsError, load_params


def deployment_settings(params: Params, params_path: str, workdir: Path) -> dict[str, Any]:
    """The keyword arguments of `pipeline.serve` for these params."""
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    settings = params.pipeline
    return {
        "name": settings.deployment,
        # Only scheduled runs get the overrides (e.g. incremental crawling); a run
        # triggered by hand uses params.yaml as it is.
        "schedules": [
            Cron(settings.cron, timezone=settings.timezone, parameters={"overrides": settings.overrides})
        ],
        "parameters": {"params_path": params_path, "workdir": str(workdir)},
        "description": f"The whole pipeline on {workdir}, scheduled '{settings.cron}' ({settings.timezone}).",
        "tags": ["colorization"],
        # One run at a time: runs share the workspace, its data folders and DVC's lock.
        "global_limit": 1,
        "limit": 1,
        # Imported by module path, so runs work whatever folder the serving process is in.
        "entrypoint_type": EntrypointType.MODULE_PATH,
    }


def serve(params_path: str = "params.yaml", workdir: str = ".") -> None:
    root = Path(workdir).resolve()
    params = load_params(root / params_path)
    load_params(root / params_path, params.pipeline.overrides)  # a bad scheduled override fails now
    from flows.pipeline import pipeline
    from tasks.data import ensure_download_limit

    ensure_download_limit()
    pipeline.serve(**deployment_settings(params, params_path, root))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file, relative to --workdir")
    parser.add_argument("--workdir", default=".", help="the project folder (dvc.yaml, data/)")
    args = parser.parse_args(argv)
    try:
        serve(args.params, args.workdir)
    except ParamsError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
