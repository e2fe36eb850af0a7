"""Preprocessing on Dask: `lineart` and `histograms` shards mapped over a 2-worker LocalCluster.

The sharded run must give byte-identical outputs to the local one (every file of the
line-art store, the histograms Parquet), and a shard that fails is retried on its own.
"""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest

from colorization import preprocess
from colorization.acquire import run_acquire
from colorization.config import load_params
from flows.pipeline import histograms_stage, lineart_stage, on_runner, preprocessing_runner
from tests.test_flows import prefect_api, write_tiny_params  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("prefect_api")  # one temporary Prefect API

SHARDED = {"pipeline.task_runner": "dask", "pipeline.dask_workers": 2}


@pytest.fixture
def raw(tmp_path: Path, monkeypatch):
    """The tiny params (48 images, 3 line-art shards) with raw data acquired; cwd at tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(preprocess, "HISTOGRAM_SHARD", 16)  # 3 histogram shards as well
    params = load_params(write_tiny_params(tmp_path / "params.yaml", SHARDED))
    run_acquire(params.acquire)
    return params


def elsewhere(params, folder: str):
    """The two stages' params with their outputs under `folder` (so neither is served from cache)."""
    lineart = params.lineart.model_copy(update={"out": f"{folder}/lineart"})
    histograms = params.histograms.model_copy(update={"out": f"{folder}/histograms.parquet"})
    return lineart, histograms


def assert_same_outputs(a: Path, b: Path) -> None:
    files = sorted(p.name for p in (a / "lineart").iterdir())
    assert files == sorted(p.name for p in (b / "lineart").iterdir())
    assert sum(name.endswith(".ids.json") for name in files) == 3
    match, mismatch, errors = filecmp.cmpfiles(a / "lineart", b / "lineart", files, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert filecmp.cmp(a / "histograms.parquet", b / "histograms.parquet", shallow=False)
    assert not list(b.glob(".*.partial"))  # staging folders are gone once published


def shard_runs(flow_run_id, name: str) -> list[str]:
    """The final states of the `name` task runs of a flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name)),
        )
    return [run.state.type.value for run in runs]


def test_preprocessing_on_a_local_dask_cluster_matches_the_local_run(raw, tmp_path):
    local_lineart, local_histograms = elsewhere(raw, "local")
    assert lineart_stage(local_lineart)["meta"]["count"] == 48
    assert histograms_stage(local_histograms)["count"] == 48

    dask_lineart, dask_histograms = elsewhere(raw, "dask")
    with preprocessing_runner(raw.pipeline) as runner:
        assert runner is not None
        state = on_runner(lineart_stage, runner)(dask_lineart, sharded=True, return_state=True)
        meta = state.result()["meta"]
        count = on_runner(histograms_stage, runner)(dask_histograms, sharded=True)["count"]
    assert meta["count"] == count == 48
    assert shard_runs(state.state_details.flow_run_id, "lineart_shard") == ["COMPLETED"] * 3
    assert_same_outputs(tmp_path / "local", tmp_path / "dask")


def test_a_failed_shard_is_retried_alone(raw, tmp_path, monkeypatch):
    real, calls = preprocess.run_lineart_shard, []

    def flaky(job):
        calls.append(job.shard)
        if job.shard == 1 and calls.count(1) == 1:
            raise OSError("worker lost")
        return real(job)

    monkeypatch.setattr(preprocess, "run_lineart_shard", flaky)
    lineart, histograms = elsewhere(raw, "threads")  # the default (thread pool) task runner
    assert lineart_stage(lineart, sharded=True)["meta"]["count"] == 48
    histograms_stage(histograms, sharded=True)
    assert sorted(calls) == [0, 1, 1, 2]  # shard 1 again, the others once

    monkeypatch.setattr(preprocess, "run_lineart_shard", real)
    local_lineart, local_histograms = elsewhere(raw, "local")
    preprocess.build_lineart(local_lineart)
    preprocess.build_histograms(local_histograms)
    assert_same_outputs(tmp_path / "local", tmp_path / "threads")
