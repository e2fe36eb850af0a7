"""Preprocessing on Dask: the `preprocess` stage's shards mapped over a 2-worker LocalCluster.

The flow starts the cluster (`pipeline.task_runner: dask`) and names its scheduler to the
stage command in the environment. The sharded run must give byte-identical outputs to the
local one (every file of the line-art store, the histograms Parquet), and a shard that
fails is retried on its own.
"""

from __future__ import annotations

import filecmp
import functools
from pathlib import Path

import pytest

from colorization import preprocess
from colorization.acquire import run_acquire
from colorization.config import load_params
from flows.pipeline import dask_scheduler
from tests.integration.test_flows import write_tiny_params

SHARDED = {"pipeline.task_runner": "dask", "pipeline.dask_workers": 2}


@pytest.fixture
def raw(tmp_path: Path, monkeypatch):
    """The tiny params (48 images, 3 shards) with raw data acquired; cwd at tmp_path."""
    monkeypatch.chdir(tmp_path)
    params = load_params(write_tiny_params(tmp_path / "params.yaml", SHARDED))
    run_acquire(params.acquire)
    return params


def elsewhere(params, folder: str):
    """The stage's arguments, with its outputs under `folder`."""
    lineart = params.lineart.model_copy(update={"out": f"{folder}/lineart"})
    histograms = params.histograms.model_copy(update={"out": f"{folder}/histograms.parquet"})
    return params.acquire.out, lineart, histograms


def assert_same_outputs(a: Path, b: Path) -> None:
    files = sorted(p.name for p in (a / "lineart").iterdir())
    assert files == sorted(p.name for p in (b / "lineart").iterdir())
    assert sum(name.endswith(".ids.json") for name in files) == 3
    assert not any(name.endswith(".histograms.npy") for name in files)  # partials joined, then removed
    match, mismatch, errors = filecmp.cmpfiles(a / "lineart", b / "lineart", files, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert filecmp.cmp(a / "histograms.parquet", b / "histograms.parquet", shallow=False)
    assert not list(b.glob(".*.partial"))  # staging folders are gone once published


def test_preprocessing_on_a_local_dask_cluster_matches_the_local_run(raw, tmp_path, monkeypatch):
    assert preprocess.build_preprocess(*elsewhere(raw, "local"))["count"] == 48
    with dask_scheduler(raw.pipeline) as address:
        assert address is not None
        monkeypatch.setenv(preprocess.DASK_SCHEDULER_ENV, address)
        assert preprocess.build_preprocess(*elsewhere(raw, "dask"))["count"] == 48
    assert_same_outputs(tmp_path / "local", tmp_path / "dask")


def flaky_shard(job, log: str):
    """The real shard, failing the first time shard 1 is tried; every try is logged in `log`."""
    with open(log, "a") as fh:
        fh.write(f"{job.shard}\n")
    tries = Path(log).read_text().split()
    if job.shard == 1 and tries.count("1") == 1:
        raise OSError("worker lost")
    return preprocess.run_shard(job)


def test_a_failed_shard_is_retried_alone(raw, tmp_path, monkeypatch):
    log = tmp_path / "tries.txt"
    log.touch()
    # The stand-in travels to the workers by value (they are other processes): it logs to a file.
    monkeypatch.setattr(preprocess, "_run_shard", functools.partial(flaky_shard, log=str(log)))
    with dask_scheduler(raw.pipeline) as address:
        monkeypatch.setenv(preprocess.DASK_SCHEDULER_ENV, address)
        assert preprocess.build_preprocess(*elsewhere(raw, "retried"))["count"] == 48
    assert sorted(log.read_text().split()) == ["0", "1", "1", "2"]  # shard 1 again, the others once

    monkeypatch.delenv(preprocess.DASK_SCHEDULER_ENV)
    monkeypatch.setattr(preprocess, "_run_shard", preprocess.run_shard)
    preprocess.build_preprocess(*elsewhere(raw, "local"))
    assert_same_outputs(tmp_path / "local", tmp_path / "retried")
