"""Serve `pipeline` as a scheduled deployment (default 'pipeline/nightly').

Its schedule and scheduled runs' overrides: params `pipeline:` (docs/orchestration.md); Ctrl-C pauses it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from colorization.config import Params, ParamsError


def deployment_settings(
    params: Params,
    params_path: str,
    workdir: Path,
    overrides: dict[str, Any] | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments of `pipeline.serve` for these params (read with `overrides` applied)."""
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    settings = params.pipeline
    given = {"overrides": dict(overrides or {}), "until": until}
    parameters = {"params_path": params_path, "workdir": str(workdir)} | {k: v for k, v in given.items() if v}
    # Only scheduled runs get pipeline.overrides (e.g. incremental crawling), on top of the serving
    # overrides; a run triggered by hand gets the serving overrides only.
    scheduled = {"overrides": {**(overrides or {}), **settings.overrides}}
    return {
        "name": settings.deployment,
        "schedules": [Cron(settings.cron, timezone=settings.timezone, parameters=scheduled)],
        "parameters": parameters,
        "description": f"The whole pipeline on {workdir}, scheduled '{settings.cron}' ({settings.timezone}).",
        "tags": ["colorization"],
        # One run at a time: runs share the workspace, its data folders and DVC's lock.
        "global_limit": 1,
        "limit": 1,
        # Imported by module path, so runs work whatever folder the serving process is in.
        "entrypoint_type": EntrypointType.MODULE_PATH,
    }


def serve(
    params_path: str = "params.yaml",
    workdir: str = ".",
    overrides: dict[str, Any] | None = None,
    until: str | None = None,
) -> None:
    from flows.pipeline import check_run, pipeline
    from tasks.data import ensure_download_limit

    root = Path(workdir).resolve()
    params, _, _ = check_run(params_path, overrides, until, root)
    # A bad scheduled override (or one of a key DVC tracks) fails now, not at 03:00.
    check_run(params_path, {**(overrides or {}), **params.pipeline.overrides}, until, root)
    ensure_download_limit()
    # Flow runs are subprocesses that import flows.pipeline by module path: from this checkout,
    # since flows/ and tasks/ are not installed packages.
    checkout = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (checkout, os.environ.get("PYTHONPATH")) if p)
    pipeline.serve(**deployment_settings(params, params_path, root, overrides, until))


def main(argv: list[str] | None = None) -> None:
    from flows.pipeline import parse_overrides

    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file, relative to --workdir")
    parser.add_argument("--workdir", default=".", help="the project folder (dvc.yaml, data/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    parser.add_argument("--until", default=None, help="last stage of every run (default: register)")
    args = parser.parse_args(argv)
    try:
        serve(args.params, args.workdir, parse_overrides(args.set) or None, args.until)
    except ParamsError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
