"""Start a run of the served deployment by hand, with overrides, and follow it.

    colorization trigger [--deployment pipeline/nightly] [--set key=value ...] [--until STAGE] [--watch]
    colorization summary [--run FLOW_RUN_NAME_OR_ID]

`--set` overrides add to the deployment's own, checked here first when its params file is on this
machine. `--watch` prints the run's log until it ends, then its `pipeline-summary`; a failed run
exits 1. `summary` prints a run's `pipeline-summary` as text (`prefect artifact inspect` escapes it).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from tasks.summary import SUMMARY_KEY

PAGE = 200  # logs per request: the most the Prefect API returns


class TriggerError(RuntimeError):
    """No such deployment or run, or the run could not be followed; the message is one line."""


def run_parameters(
    defaults: dict[str, Any], overrides: dict[str, Any] | None, until: str | None
) -> dict[str, Any]:
    """The parameters of the new run: the deployment's overrides plus `overrides`, and `until`."""
    parameters: dict[str, Any] = {}
    if overrides:
        parameters["overrides"] = {**(defaults.get("overrides") or {}), **overrides}
    if until:
        parameters["until"] = until
    return parameters


def check_locally(defaults: dict[str, Any], parameters: dict[str, Any]) -> None:
    """Check the run's params, overrides and `until` as the flow would, when its project is here."""
    from flows.pipeline import check_run

    workdir = Path(defaults.get("workdir", "."))
    if (workdir / "dvc.yaml").exists():
        overrides = parameters.get("overrides", defaults.get("overrides"))
        check_run(defaults.get("params_path", "params.yaml"), overrides, parameters.get("until"), workdir)


async def _summary_of(client, flow_run_id: UUID) -> str | None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    found = await client.read_artifacts(
        artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[SUMMARY_KEY]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
        )
    )
    return found[0].data if found else None


async def _trigger(name: str, overrides: dict[str, Any] | None, until: str | None, watch: bool, echo) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            deployment = await client.read_deployment_by_name(name)
        except httpx.HTTPError as err:
            raise TriggerError(f"cannot reach the Prefect server at {client.api_url}: {err}") from None
        except ObjectNotFound:
            raise TriggerError(
                f"no deployment {name!r} on {client.api_url} (is `colorization serve` running?)"
            ) from None
        defaults = deployment.parameters or {}
        parameters = run_parameters(defaults, overrides, until)
        check_locally(defaults, parameters)
        run = await client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        echo(f"created flow run {run.name!r} ({run.id}) of {name}, parameters {parameters or '(defaults)'}")
        if not watch:
            return True
        state = await follow(client, run.id, echo)
        summary = await _summary_of(client, run.id)
    if summary:
        echo("\n" + summary)
    if state is not None and state.is_completed():
        echo(f"flow run {run.name!r} finished: {state.name}")
        return True
    name_, message = (state.name, state.message) if state else ("unknown", "")
    echo(f"flow run {run.name!r} finished: {name_}: {message}")
    return False


async def follow(client, flow_run_id: UUID, echo, poll_s: float = 2.0):
    """Print the run's log (stage progress, failures) until it ends; its final state. Polled: the
    logs websocket needs PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED (off by default)."""
    from datetime import timedelta

    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterTimestamp
    from prefect.client.schemas.sorting import LogSort

    seen: set[UUID] = set()
    since, final_reads = None, 0
    while True:
        flow_run = await client.read_flow_run(flow_run_id)
        if flow_run.state is not None and flow_run.state.is_final():
            final_reads += 1
        # Logs reach the server in batches, not in order: re-read a window and skip what was shown.
        window = LogFilterTimestamp(after_=since - timedelta(seconds=30)) if since else None
        logs, page = [], PAGE
        while page == PAGE:  # the API returns at most 200 logs a request
            batch = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]), timestamp=window),
                sort=LogSort.TIMESTAMP_ASC,
                limit=PAGE,
                offset=len(logs),
            )
            logs, page = logs + batch, len(batch)
        for log in logs:
            if log.id not in seen:
                seen.add(log.id)
                echo(f"{log.timestamp:%H:%M:%S} {logging.getLevelName(log.level):<7} {log.message}")
                since = max(since, log.timestamp) if since else log.timestamp
        if final_reads > 1:  # the log read once more after the end: its last batch may come late
            return flow_run.state
        await asyncio.sleep(poll_s)


def trigger(
    name: str,
    overrides: dict[str, Any] | None = None,
    until: str | None = None,
    watch: bool = False,
    echo=print,
) -> bool:
    """Create a run of deployment `name` ('pipeline/nightly'); `watch` follows it. False if it failed."""
    return asyncio.run(_trigger(name, overrides, until, watch, echo))


async def _latest_summary(run: str | None) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterName,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    async with get_client() as client:
        if run is None:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[SUMMARY_KEY])),
                sort=ArtifactSort.CREATED_DESC,
                limit=1,
            )
            if not found:
                raise TriggerError(f"no {SUMMARY_KEY} artifact on {client.api_url} yet")
            return found[0].data
        try:
            flow_run_id = UUID(run)
        except ValueError:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run]))
            )
            if not runs:
                raise TriggerError(f"no flow run named {run!r}") from None
            flow_run_id = runs[0].id
        summary = await _summary_of(client, flow_run_id)
        if summary is None:
            raise TriggerError(f"flow run {run!r} has no {SUMMARY_KEY} artifact")
        return summary


def latest_summary(run: str | None = None) -> str:
    """The markdown of run `run`'s `pipeline-summary` (a flow run name or id), or the newest one."""
    return asyncio.run(_latest_summary(run))
