"""The `pipeline` flow: the stages of dvc.yaml, run through DVC, with retries and a summary.

`python -m flows.pipeline [--workdir .] [--set key=value ...] [--until STAGE]` or `colorization pipeline`
(docs/orchestration.md); an override of a key a stage tracks is refused (dvc.lock stays true)."""

# No `from __future__ import annotations`: a deployment must resolve the flow's parameter annotations.

import argparse
import logging
import time
from collections.abc import Iterator
from contextlib import chdir, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import yaml
from prefect import flow
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from colorization.acquire import TEMPORARY_FAILURE
from colorization.atomic import NotOurFolder, check_replaceable
from colorization.config import Params, ParamsError, PipelineParams, load_params
from colorization.preprocess import DASK_SCHEDULER_ENV
from colorization.store import STORE_OUTPUT
from tasks import dvc, summary
from tasks.data import SAFEBOORU_LIMIT, ensure_download_limit
from tasks.dvc import PARAMS_FILE, run_logger


@contextmanager
def domain_logs_in_prefect() -> Iterator[None]:
    """Show the `colorization` loggers' INFO records in the run's log (Prefect UI) meanwhile."""
    domain = logging.getLogger("colorization")
    handler, level = APILogHandler(), domain.level
    # Only records logged inside a flow or task run: a domain worker thread has no run.
    handler.addFilter(lambda record: FlowRunContext.get() is not None or TaskRunContext.get() is not None)
    domain.addHandler(handler)
    if level == logging.NOTSET or level > logging.INFO:
        domain.setLevel(logging.INFO)
    try:
        yield
    finally:
        domain.removeHandler(handler)
        domain.setLevel(level)


def changed_params(params_path: str | Path, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The overrides whose value differs from the params file's."""
    data = yaml.safe_load(Path(params_path).read_text()) or {}
    changed = {}
    for key, value in (overrides or {}).items():
        node: Any = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if value is not None and node != value:
            changed[key] = value
    return changed


def check_run(
    params_path: str | Path, overrides: dict[str, Any] | None, until: str | None, root: str | Path = "."
) -> tuple[Params, list[str], dict[str, Any]]:
    """(params, the stages to run, the overrides to pass on), or ParamsError in one line: for a params
    file not dvc.yaml's, an override of a tracked key (dvc.lock would lie) or an unknown `until`."""
    root = Path(root)
    if Path(root / params_path).resolve() != (root / PARAMS_FILE).resolve():
        raise ParamsError(
            f"params {params_path}: the stages of dvc.yaml read {PARAMS_FILE}; apply a profile with "
            "`dvc exp run $(colorization profile FILE)`"
        )
    params = load_params(root / PARAMS_FILE, overrides)
    tracked = dvc.tracked_params(root)
    for key, value in changed_params(root / PARAMS_FILE, overrides).items():
        if stages := dvc.stages_tracking(key, tracked):
            raise ParamsError(
                f"override {key}={value}: dvc.yaml tracks it (stage {', '.join(stages)}), so dvc.lock "
                f"must record it: set it in {PARAMS_FILE} or run `dvc exp run -S {key}={value}`"
            )
    stages = dvc.pipeline_stages(root)
    if until is not None:
        last = [i for i, s in enumerate(stages) if until in (s, s.split("@")[0])]
        if not last:
            groups = dict.fromkeys(s.split("@")[0] for s in stages)
            raise ParamsError(f"until: unknown stage {until!r}; expected one of {', '.join(groups)}")
        stages = stages[: last[-1] + 1]
    check_stage_folders(params, stages, root)
    return params, stages, dict(overrides or {})


def check_stage_folders(params: Params, stages: list[str], root: Path) -> None:
    """ParamsError (one line) when a stage's output folder holds what the project did not write:
    DVC removes a stage's outs before its command could check (`atomic.check_replaceable`)."""
    from colorization.models import KINDS, MODEL_OUTPUT  # torch: only once a run is checked

    folders = {"preprocess": (root / params.lineart.out, STORE_OUTPUT)}
    folders |= {f"train@{kind}": (root / params.train.out / kind, MODEL_OUTPUT) for kind in KINDS}
    for stage in [s for s in stages if s in folders]:
        try:
            check_replaceable(*folders[stage])
        except NotOurFolder as err:
            raise ParamsError(f"stage {stage}: {err}") from None


def retry_temporary(task, task_run, state) -> bool:
    """`retry_condition_fn`: retry a stage whose command exited with acquire's 'try again later'."""
    try:
        state.result()
    except Exception as exc:
        return isinstance(exc, dvc.DvcFailed) and exc.status == TEMPORARY_FAILURE
    return False


@contextmanager
def dask_scheduler(settings: PipelineParams) -> Iterator[str | None]:
    """The Dask scheduler for preprocess's shards (None: local processes); a LocalCluster if no address."""
    address = settings.dask_address if settings.task_runner == "dask" else None
    if settings.task_runner == "local" or address:  # local processes, or the given cluster
        yield address
        return
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=settings.dask_workers,
        threads_per_worker=1,
        processes=True,  # one core per worker for OpenCV and NumPy, no contention for the GIL
        dashboard_address=None,
    ) as cluster:
        yield cluster.scheduler_address


def stage_runner(stage: str, settings: PipelineParams):
    """The task that runs `stage`: acquire (the network) is retried when its command says so."""
    if stage != "acquire":
        return dvc.run_stage
    delays = exponential_backoff(backoff_factor=settings.retry_delay_s) if settings.retry_delay_s > 0 else 0
    return dvc.run_stage.with_options(
        retries=settings.retries,
        retry_delay_seconds=delays,
        retry_jitter_factor=0.5 if settings.retry_delay_s > 0 else None,
        retry_condition_fn=retry_temporary,
    )


# persist_result: a final state the server re-sends (SQLite contention) still has the summary, not
# MissingResult in `state.result()`.
@flow(name="pipeline", description="the stages of dvc.yaml, run through DVC", persist_result=True)
def pipeline(
    params_path: str = PARAMS_FILE,
    workdir: str = ".",
    overrides: dict[str, Any] | None = None,
    until: str | None = None,
) -> dict:
    """Run dvc.yaml's stages on `workdir` (up to `until`, a stage or a foreach group like `train`),
    logging each stage's start, end or skip, duration and failure on the flow run."""
    logger = run_logger()
    outputs: tuple[str | None, ...] = (None, None, None)  # unknown until the params are read
    with chdir(workdir), domain_logs_in_prefect():  # params paths are relative to it, as for dvc
        root = Path.cwd()
        run: dict[str, Any] = {
            "flow_run_name": flow_run.get_name(),
            "params_path": params_path,
            "workdir": str(root),
            "overrides": overrides or {},
            "until": until,
            "stages": [],
            "ran": [],
            "skipped": [],
            "seconds": {},
        }
        stage, started = "params", time.monotonic()
        try:
            params, stages, passed_on = check_run(params_path, overrides, until)
            outputs = (params.evaluate.metrics, params.train.out, params.registry.out)
            settings = params.pipeline
            logger.info("pipeline: stages %s on %s", ", ".join(stages), root)
            for stage in stages:
                started = time.monotonic()
                logger.info("stage %s started", stage)
                slot, crawl = None, stage == "acquire" and params.acquire.source == "safebooru"
                if crawl:  # the site has new posts without any local change: always run it
                    ensure_download_limit()
                    slot = SAFEBOORU_LIMIT  # one crawl of the site at a time, across flow runs
                with dask_scheduler(settings) if stage == "preprocess" else nullcontext() as address:
                    env = {DASK_SCHEDULER_ENV: address} if address else {}
                    ran = stage_runner(stage, settings)(stage, passed_on, env, slot, force=crawl)
                run["stages"].append(stage)
                run["ran" if ran else "skipped"].append(stage)
                run["seconds"][stage] = round(time.monotonic() - started, 1)
                logger.info("stage %s finished in %.1f s", stage, run["seconds"][stage])
            stage, started = "dvc_push", time.monotonic()
            run["dvc_remote"] = dvc.push(run["stages"]) if settings.dvc_push else None
        except BaseException as err:
            run["failed"], run["failed_stage"] = f"{type(err).__name__}: {err}", stage
            message = "stage %s failed after %.1f s: %s (stages finished in this run: %s)"
            finished = ", ".join(run["stages"]) or "none"
            logger.error(message, stage, time.monotonic() - started, run["failed"], finished)
            try:  # the summary of a failed run says how far it got; its own failure must not hide why
                summary.publish(run, *outputs)
            except Exception:
                logger.exception("could not publish the run summary")
            raise
        logger.info("pipeline finished: %s", ", ".join(f"{s} {run['seconds'][s]} s" for s in run["stages"]))
        return {**run, **summary.publish(run, *outputs)}


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs, values read as YAML (`3`, `true`, `[a, b]`), or as strings (a cron `* * * * *`)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --set {pair!r}: expected key=value")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            overrides[key.strip()] = value
    return overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=".", help="the project folder (dvc.yaml, data/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    parser.add_argument("--until", default=None, help="last stage to run (default: register)")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set) or None
    try:
        check_run(PARAMS_FILE, overrides, args.until, args.workdir)  # fail in one line, before Prefect starts
    except ParamsError as err:
        raise SystemExit(f"error: {err}") from None
    pipeline(workdir=args.workdir, overrides=overrides, until=args.until)


if __name__ == "__main__":
    main()
