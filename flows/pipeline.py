"""The `pipeline` flow: acquire -> lineart -> histograms -> train -> evaluate -> register.

    python -m flows.pipeline [--params params.yaml] [--workdir .] [--set key=value ...]
    colorization pipeline

Each stage is a subflow, so the Prefect UI shows the chain, and each calls the same
function as its `dvc.yaml` command with the same params.yaml. When a stage has
published its outputs, `dvc commit` records it in dvc.lock: DVC knows what the run
produced, later stages (register tags versions with the data's DVC hash) see it, and a
failed run still leaves DVC in step with every stage that finished. At the end the
outputs are pushed to the default DVC remote and a `pipeline-summary` artifact is
published, for failed runs too.
"""

# No `from __future__ import annotations`: Prefect validates flow parameters against the
# annotations, and string annotations fail to resolve when a deployment loads this module.

import argparse
import logging
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml
from prefect import flow
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from colorization.config import (
    AcquireParams,
    HistogramParams,
    LineartParams,
    Params,
    ParamsError,
    PipelineParams,
    load_params,
)
from tasks import data, dvc, model, summary
from tasks.caching import call_pure, refresh_if_stale, run_logger

DATA_STAGES = ("acquire", "lineart", "histograms")
TRAIN_STAGES = tuple(f"train_{kind}" for kind in model.MODELS)
DVC_STAGES = (*DATA_STAGES, *TRAIN_STAGES, "evaluate", "register")  # the stages of dvc.yaml, in order


@contextmanager
def working_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Run in `path`: params paths are relative to it, as they are for `dvc repro` there."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield Path.cwd()
    finally:
        os.chdir(before)


class _InARun(logging.Filter):
    """Pass records logged inside a flow or task run; a domain worker thread has no run."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.context import FlowRunContext, TaskRunContext

        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


@contextmanager
def domain_logs_in_prefect() -> Iterator[None]:
    """Show the `colorization` loggers' INFO records in the run's log (Prefect UI) meanwhile."""
    from prefect.logging.handlers import APILogHandler

    domain = logging.getLogger("colorization")
    handler, level = APILogHandler(), domain.level
    handler.addFilter(_InARun())
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


# ---------------------------------------------------------------- stages (subflows)


@flow(name="acquire")
def acquire_stage(params: AcquireParams, retries: int = 3, retry_delay_s: float = 30.0) -> dict:
    delays = exponential_backoff(backoff_factor=retry_delay_s) if retry_delay_s > 0 else 0
    if params.source == "safebooru":
        data.ensure_download_limit()
    return data.acquire.with_options(retries=retries, retry_delay_seconds=delays)(params)


@flow(name="lineart")
def lineart_stage(params: LineartParams, sharded: bool = False) -> dict:
    """`sharded`: map the shards over this flow's task runner (give it a DaskTaskRunner)."""
    return call_pure(data.lineart, params=params, sharded=sharded)


@flow(name="histograms")
def histograms_stage(params: HistogramParams, sharded: bool = False) -> dict:
    """`sharded`: map the shards over this flow's task runner (give it a DaskTaskRunner)."""
    return call_pure(data.histograms, params=params, sharded=sharded)


# A temporary LocalCluster's workers are processes (one thread each): OpenCV and NumPy then
# use one core per worker without contending for the GIL.
LOCAL_CLUSTER_PROCESSES = True


@contextmanager
def preprocessing_runner(settings: PipelineParams) -> Iterator[Any]:
    """The task runner `lineart` and `histograms` map their shards over; None = local processes.

    `pipeline.task_runner: dask` with `pipeline.dask_address` null starts a LocalCluster of
    `pipeline.dask_workers` workers for as long as the block runs; else it joins that scheduler.
    """
    if settings.task_runner == "local":
        yield None
        return
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        yield DaskTaskRunner(address=settings.dask_address)
        return
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=settings.dask_workers,
        threads_per_worker=1,
        processes=LOCAL_CLUSTER_PROCESSES,
        dashboard_address=None,
    ) as cluster:
        yield DaskTaskRunner(address=cluster.scheduler_address)


def on_runner(stage, runner):
    """`stage` (a subflow) running its tasks on `runner`, or as it is when runner is None."""
    return stage if runner is None else stage.with_options(task_runner=runner)


@flow(name="train")
def train_stage(params: Params) -> dict[str, dict]:
    """The three trainings; they run side by side when the flow's task runner has the workers."""
    futures = {kind: model.train_model.submit(params=params, kind=kind) for kind in model.MODELS}
    wait(list(futures.values()))  # let every training finish (or fail) before reporting any
    return {
        kind: refresh_if_stale(model.train_model, future.result(), params=params, kind=kind)
        for kind, future in futures.items()
    }


@flow(name="evaluate")
def evaluate_stage(params: Params) -> dict:
    return model.evaluate(params)


@flow(name="register")
def register_stage(params: Params) -> list[dict]:
    return model.register(params)


# ---------------------------------------------------------------- the pipeline


def dvc_stage_names(stage: str) -> tuple[str, ...]:
    """The dvc.yaml stages a flow stage produces (the train subflow runs three)."""
    return TRAIN_STAGES if stage == "train" else (stage,)


STAGES = ("acquire", "lineart", "histograms", "train", "evaluate", "register")  # the flow's, in order


@flow(name="pipeline", description="acquire -> lineart -> histograms -> train -> evaluate -> register")
def pipeline(
    params_path: str = "params.yaml",
    workdir: str = ".",
    overrides: dict[str, Any] | None = None,
    until: str | None = None,
) -> dict:
    """Run the stages on `workdir`'s data with `params_path` (+ dotted-key `overrides`).

    `until` names the last stage to run (default: all, up to register). Each stage's start,
    end and duration, and a failure's cause, are logged on this (the parent) flow run, so
    `prefect deployment run --watch` and the run's log show the progress of the subflows.
    """
    logger = run_logger()
    run: dict[str, Any] = {
        "flow_run_name": flow_run.get_name(),
        "params_path": params_path,
        "workdir": workdir,
        "overrides": overrides or {},
        "until": until,
        "stages": [],
        "seconds": {},
        "dvc_committed": [],
        "data": {},
    }
    outputs: tuple[str | None, ...] = (None, None, None)  # unknown until the params are read
    with working_directory(workdir) as root, domain_logs_in_prefect(), ExitStack() as cluster:
        run["workdir"] = str(root)
        stage, started = "params", time.monotonic()
        try:
            if until is not None and until not in STAGES:
                raise ValueError(f"until: unknown stage {until!r}; expected one of {', '.join(STAGES)}")
            params = load_params(params_path, overrides)
            outputs = (params.evaluate.metrics, params.evaluate.models_dir, params.registry.out)
            changed = changed_params(params_path, overrides)
            settings = params.pipeline
            trainer = train_stage.with_options(
                task_runner=ThreadPoolTaskRunner(max_workers=settings.parallel_trainings)
            )
            runner: list[Any] = []  # the preprocessing task runner, started when lineart first needs it

            def preprocessing() -> Any:
                if not runner:
                    runner.append(cluster.enter_context(preprocessing_runner(settings)))
                return runner[0]

            def sharded(subflow, stage_params) -> dict:
                mapped = preprocessing()
                return on_runner(subflow, mapped)(stage_params, sharded=mapped is not None)

            plan = {
                "acquire": lambda: acquire_stage(params.acquire, settings.retries, settings.retry_delay_s),
                "lineart": lambda: sharded(lineart_stage, params.lineart)["meta"],
                "histograms": lambda: {"count": sharded(histograms_stage, params.histograms)["count"]},
                "train": lambda: {kind: r["run"] for kind, r in trainer(params).items()},
                "evaluate": lambda: evaluate_stage(params),
                "register": lambda: register_stage(params),
            }
            assert tuple(plan) == STAGES
            stages = STAGES[: STAGES.index(until) + 1] if until else STAGES
            logger.info("pipeline: stages %s on %s", ", ".join(stages), root)
            for stage in stages:
                started = time.monotonic()
                logger.info("stage %s started", stage)
                result = plan[stage]()
                run["dvc_committed"] += dvc.commit(list(dvc_stage_names(stage)), changed, params_path)
                run["stages"].append(stage)
                run["seconds"][stage] = round(time.monotonic() - started, 1)
                logger.info("stage %s finished in %.1f s", stage, run["seconds"][stage])
                if stage in DATA_STAGES:
                    run["data"][stage] = result
                elif stage == "evaluate":
                    run["evaluate_run_id"] = result["mlflow_run_id"]
                if stage == "histograms":
                    cluster.close()  # the Dask cluster, if one was started, is done
            stage, started = "dvc_push", time.monotonic()
            run["dvc_remote"] = dvc.push(run["dvc_committed"]) if settings.dvc_push else None
        except BaseException as err:
            run["failed"] = f"{type(err).__name__}: {err}"
            run["failed_stage"] = stage
            logger.error(
                "stage %s failed after %.1f s: %s (stages finished in this run: %s)",
                stage,
                time.monotonic() - started,
                run["failed"],
                ", ".join(run["stages"]) or "none",
            )
            try:  # the summary of a failed run says how far it got; its own failure must not hide why
                summary.publish(run, *outputs)
            except Exception:
                logger.exception("could not publish the run summary")
            raise
        logger.info("pipeline finished: %s", ", ".join(f"{s} {run['seconds'][s]} s" for s in run["stages"]))
        return {**run, **summary.publish(run, *outputs)}


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are read as YAML, so `3`, `true` and `[a, b]` keep their type.

    A value that is not YAML at all (a cron `* * * * *`) is taken as the string it is.
    """
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
    parser.add_argument("--params", default="params.yaml", help="params file, relative to --workdir")
    parser.add_argument("--workdir", default=".", help="the project folder (dvc.yaml, data/)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param")
    parser.add_argument("--until", default=None, help="last stage to run (default: register)")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set) or None
    try:
        load_params(Path(args.workdir) / args.params, overrides)  # fail in one line, before Prefect starts
    except ParamsError as err:
        raise SystemExit(f"error: {err}") from None
    pipeline(params_path=args.params, workdir=args.workdir, overrides=overrides, until=args.until)


if __name__ == "__main__":
    main()
