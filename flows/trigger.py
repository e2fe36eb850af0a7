"""`colorization trigger` and `summary`: what Prefect's CLI lacks. `--set` overrides add to the
deployment's own (checked first when its project is here); `--watch` prints the run's log, then its
`pipeline-summary` (a failed run exits 1); `summary` prints that artifact."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas import filters
from prefect.client.schemas.sorting import ArtifactSort, LogSort
from prefect.exceptions import ObjectNotFound

from tasks.summary import SUMMARY_KEY

PAGE = 200  # logs per request: the most the Prefect API returns


class TriggerError(RuntimeError):
    """No such deployment or run, or the run could not be followed; the message is one line."""


def _runs(run: str | UUID):  # a filter for flow run `run`: an id, else a name
    try:
        return filters.FlowRunFilter(id=filters.FlowRunFilterId(any_=[UUID(str(run))]))
    except ValueError:
        return filters.FlowRunFilter(name=filters.FlowRunFilterName(any_=[run]))


def _summary_of(client, runs) -> str | None:
    """The newest `pipeline-summary` markdown of the flow runs `runs` (None: of any run)."""
    found = client.read_artifacts(
        artifact_filter=filters.ArtifactFilter(key=filters.ArtifactFilterKey(any_=[SUMMARY_KEY])),
        flow_run_filter=runs,
        sort=ArtifactSort.CREATED_DESC,
        limit=1,
    )
    return found[0].data if found else None


def trigger(
    name: str,
    overrides: dict[str, Any] | None = None,
    until: str | None = None,
    watch: bool = False,
    echo=print,
) -> bool:
    """Create a run of deployment `name` ('pipeline/nightly'); `watch` follows it. False if it failed."""
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except httpx.HTTPError as err:
            raise TriggerError(f"cannot reach the Prefect server at {client.api_url}: {err}") from None
        except ObjectNotFound:
            raise TriggerError(
                f"no deployment {name!r} on {client.api_url} (is `colorization serve` running?)"
            ) from None
        defaults = deployment.parameters or {}
        merged = overrides and {**(defaults.get("overrides") or {}), **overrides}
        parameters = {key: value for key, value in {"overrides": merged, "until": until}.items() if value}
        workdir = Path(defaults.get("workdir", "."))
        if (workdir / "dvc.yaml").exists():  # the run's project is here: check it as the flow would
            from flows.pipeline import check_run

            run_overrides = parameters.get("overrides", defaults.get("overrides"))
            check_run(defaults.get("params_path", "params.yaml"), run_overrides, until or None, workdir)
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        echo(f"created flow run {run.name!r} ({run.id}) of {name}, parameters {parameters or '(defaults)'}")
        if not watch:
            return True
        state = follow(client, run.id, echo)
        summary = _summary_of(client, _runs(run.id))
    if summary:
        echo("\n" + summary)
    ok = state.is_completed()
    detail = "" if ok else f": {state.message}"
    echo(f"flow run {run.name!r} finished: {state.name}{detail}")
    return ok


def follow(client, flow_run_id: UUID, echo, poll_s: float = 2.0):
    """Print the run's log until it ends; its final state. Polled: the logs websocket is off by default."""
    seen: set[UUID] = set()
    since, final_reads = None, 0
    of_the_run = filters.LogFilterFlowRunId(any_=[flow_run_id])
    while True:
        flow_run = client.read_flow_run(flow_run_id)
        if flow_run.state is not None and flow_run.state.is_final():
            final_reads += 1
        # Logs reach the server in batches, not in order: re-read a window and skip what was shown.
        window = filters.LogFilterTimestamp(after_=since - timedelta(seconds=30)) if since else None
        log_filter = filters.LogFilter(flow_run_id=of_the_run, timestamp=window)
        logs, page = [], PAGE
        while page == PAGE:
            batch = client.read_logs(log_filter, limit=PAGE, offset=len(logs), sort=LogSort.TIMESTAMP_ASC)
            logs, page = logs + batch, len(batch)
        for log in logs:
            if log.id not in seen:
                seen.add(log.id)
                echo(f"{log.timestamp:%H:%M:%S} {logging.getLevelName(log.level):<7} {log.message}")
                since = max(since, log.timestamp) if since else log.timestamp
        if final_reads > 1:  # the log read once more after the end: its last batch may come late
            return flow_run.state
        time.sleep(poll_s)


def latest_summary(run: str | None = None) -> str:
    """The markdown of run `run`'s `pipeline-summary` (a flow run name or id), or the newest one."""
    with get_client(sync_client=True) as client:
        runs = None if run is None else _runs(run)
        if (summary := _summary_of(client, runs)) is not None:
            return summary
        if runs is None:
            raise TriggerError(f"no {SUMMARY_KEY} artifact on {client.api_url} yet")
        if runs.name is not None and not client.read_flow_runs(flow_run_filter=runs, limit=1):
            raise TriggerError(f"no flow run named {run!r}")
        raise TriggerError(f"flow run {run!r} has no {SUMMARY_KEY} artifact")
