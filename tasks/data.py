"""Prefect tasks of the data stages: the same functions `colorization acquire|lineart|histograms` call.

`acquire` talks to the network (safebooru): it retries transient failures with an
exponential backoff, and holds a global concurrency slot so that two flow runs never
crawl the site at once (the source's own rate limit only holds within one process).
`lineart` and `histograms` are pure functions of the raw data and their params, so they
are cached on both (see tasks.caching).
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

from prefect import task
from prefect.concurrency.sync import concurrency
from prefect.tasks import exponential_backoff

from colorization.config import AcquireParams, HistogramParams, LineartParams
from tasks.caching import files_and_params_key, outputs_digest

# Global concurrency limit (created by `ensure_download_limit`); 1 = one crawl at a time.
SAFEBOORU_LIMIT = "safebooru-downloads"


class SourceUnavailable(ConnectionError):
    """The network source gave nothing this time; worth another try later."""


def is_transient(exc: BaseException) -> bool:
    """Failures of the network path, worth a retry; bad params or input folders are not."""
    import requests

    from colorization.sources.polite_http import FetchError
    from colorization.sources.safebooru_api import PageFailed

    if isinstance(exc, FetchError):
        return not exc.permanent
    return isinstance(exc, (requests.RequestException, ConnectionError, TimeoutError, PageFailed))


def retry_transient(task, task_run, state) -> bool:
    """`retry_condition_fn`: retry only what `is_transient` accepts."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


@task(
    name="run_acquire",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=30),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    tags=["network"],
)
def acquire(params: AcquireParams) -> dict:
    from colorization.acquire import NothingAcquired, run_acquire

    try:
        if params.source == "safebooru":
            with concurrency(SAFEBOORU_LIMIT, occupy=1):
                summary = run_acquire(params)
        else:
            summary = run_acquire(params)
    except NothingAcquired as err:
        if params.source == "safebooru":  # an empty crawl from a live site means it was down
            raise SourceUnavailable(str(err)) from err
        raise
    return {"accepted": summary.accepted, "rejected": summary.rejected, "manifest": str(summary.manifest)}


def _manifest(inputs: dict) -> list[Path]:
    return [Path(inputs["params"].raw) / "manifest.parquet"]


# The domain code the two steps run: a change to it must not be served from the cache.
CODE = ("colorization.histogram", "colorization.lineart", "colorization.preprocess", "colorization.store")


def _params_only(inputs: dict) -> dict:
    return {"params": inputs["params"]}  # `sharded` picks where the work runs, not what it makes


# A shard is a pure function of its images: a failed or lost one (a Dask worker gone) is
# run again; its outputs are written atomically, so a retry never sees a half-written file.
SHARD_RETRIES = 2


@task(name="lineart_shard", retries=SHARD_RETRIES, retry_delay_seconds=1)
def lineart_shard(job) -> int:
    from colorization.preprocess import run_lineart_shard

    return run_lineart_shard(job)


@task(name="histogram_shard", retries=SHARD_RETRIES, retry_delay_seconds=1)
def histogram_shard(job) -> int:
    from colorization.preprocess import run_histogram_shard

    return run_histogram_shard(job)


def _map_shards(shard_task, jobs: list) -> None:
    """Run `shard_task` on every job over the flow's task runner; raise if any shard failed."""
    if jobs:
        for future in shard_task.map(jobs):
            future.result()  # raises the first failure (after its retries)


@task(
    name="build_lineart",
    cache_key_fn=files_and_params_key(reads=_manifest, code=CODE, key_args=_params_only),
    persist_result=True,
)
def lineart(params: LineartParams, sharded: bool = False) -> dict:
    """The `lineart` stage; `sharded` maps its shards over the flow's task runner (Dask)."""
    from colorization import preprocess

    if sharded:
        plan = preprocess.plan_lineart(params)
        _map_shards(lineart_shard, plan.jobs)
        meta = preprocess.finish_lineart(params, plan)
    else:
        meta = preprocess.build_lineart(params)
    return {"meta": meta, "outputs": outputs_digest([params.out])}


@task(
    name="build_histograms",
    cache_key_fn=files_and_params_key(reads=_manifest, code=CODE, key_args=_params_only),
    persist_result=True,
)
def histograms(params: HistogramParams, sharded: bool = False) -> dict:
    """The `histograms` stage; `sharded` maps its shards over the flow's task runner (Dask)."""
    from colorization import preprocess

    if sharded:
        plan = preprocess.plan_histograms(params)
        _map_shards(histogram_shard, plan.jobs)
        count = preprocess.finish_histograms(params, plan)
    else:
        count = preprocess.build_histograms(params)
    return {"count": count, "outputs": outputs_digest([params.out])}


def ensure_download_limit(limit: int = 1) -> None:
    """Create the global concurrency limit `acquire` holds, if the server lacks it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(SAFEBOORU_LIMIT)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it meanwhile
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=SAFEBOORU_LIMIT, limit=limit)
                )
