"""The Prefect tasks and flows against a temporary Prefect API (prefect_test_harness).

Retries and their failure, cache keys (unhashable arguments, stale or missing outputs),
the data half of the `pipeline` flow on a tiny project with DVC kept in step, the run
summary artifact, and the deployment's schedule.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from colorization.config import load_params
from flows.pipeline import (
    DVC_STAGES,
    acquire_stage,
    changed_params,
    histograms_stage,
    lineart_stage,
    parse_overrides,
    pipeline,
)
from tasks.caching import files_and_params_key, jsonable_inputs
from tasks.dvc import dvc_stages, overridden_tracked_params
from tasks.summary import SUMMARY_KEY, summary_markdown

REPO = Path(__file__).resolve().parents[1]

# A profile small enough for tests: 48 synthetic images at 32 px, a few training steps.
TINY = {
    "acquire.synthetic.count": 48,
    "acquire.synthetic.size": 32,
    "acquire.min_size": 32,
    "lineart.image_size": 32,
    "lineart.shard_size": 16,
    "lineart.workers": 1,
    "lineart.split.val": 0.2,
    "lineart.split.test": 0.2,
    "histograms.workers": 1,
    "train.device": "cpu",
    "train.checkpoint_every": 1000,
    "train.sample_every": 1000,
    "train.log_every": 1000,
    "train.cnn.steps": 2,
    "train.cnn.batch_size": 8,
    "train.cgan.steps": 2,
    "train.cgan.batch_size": 8,
    "train.cgan.depth": 3,
    "train.hint.steps": 2,
    "train.hint.batch_size": 8,
    "train.hint.depth": 3,
    "evaluate.batch_size": 16,
    "evaluate.figure_examples": 2,
    "pipeline.retries": 1,
    "pipeline.retry_delay_s": 0.0,
}


def write_tiny_params(path: Path, extra: dict | None = None) -> Path:
    """The project's params.yaml with the TINY profile (and `extra`) applied; paths stay relative."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in {**TINY, **(extra or {})}.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        assert last in node, f"params.yaml has no {key}"
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tiny_project(root: Path, remote: Path | None = None) -> Path:
    """A DVC project (no git) with this repo's dvc.yaml and code, and the tiny params."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    # dvc.yaml lists the code as deps; the flow still imports it from the installed package.
    shutil.copytree(
        REPO / "colorization", root / "colorization", ignore=shutil.ignore_patterns("__pycache__")
    )
    write_tiny_params(root / "params.yaml")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "--quiet"], cwd=root, check=True)
    if remote is not None:
        subprocess.run([*dvc, "remote", "add", "--default", "local", str(remote)], cwd=root, check=True)
    return root


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One temporary Prefect server and result store for every test of this module."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    before = os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # no telemetry calls from the test server
    storage = tmp_path_factory.mktemp("prefect-results")
    try:
        with (
            temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}),
            prefect_test_harness(server_startup_timeout=120),
        ):
            yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_SERVER_ANALYTICS_ENABLED", None)
        else:
            os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = before


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch):
    """The tiny params, loaded, with the working directory at their folder (paths are relative)."""
    monkeypatch.chdir(tmp_path)
    return load_params(write_tiny_params(tmp_path / "params.yaml"))


def counting(monkeypatch, target: str, fail_first: int = 0, error: BaseException | None = None):
    """Replace `module.function` by a wrapper that counts calls and raises `error` the first times."""
    module_name, name = target.rsplit(".", 1)
    module = __import__(module_name, fromlist=[name])
    real = getattr(module, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if error is not None and len(calls) <= fail_first:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


# ---------------------------------------------------------------- retries and failure


def test_transient_failure_is_retried_until_it_succeeds(prefect_api, tiny, monkeypatch):
    calls = counting(
        monkeypatch, "colorization.acquire.run_acquire", fail_first=2, error=ConnectionError("reset by peer")
    )
    result = acquire_stage(tiny.acquire, retries=2, retry_delay_s=0.0)
    assert len(calls) == 3
    assert result["accepted"] == 48


def test_failure_after_retries_fails_the_flow_with_its_cause(prefect_api, tiny, monkeypatch, caplog):
    def down(params):
        calls.append(params)
        raise ConnectionError("safebooru.org unreachable")

    calls = []
    monkeypatch.setattr("colorization.acquire.run_acquire", down)
    state = acquire_stage(tiny.acquire, retries=2, retry_delay_s=0.0, return_state=True)
    assert state.is_failed()
    assert len(calls) == 3  # one try and two retries
    with pytest.raises(ConnectionError, match="unreachable"):
        state.result()
    assert "safebooru.org unreachable" in caplog.text  # the task's traceback is in the run log


def test_a_bad_input_is_not_retried(prefect_api, tiny, monkeypatch):
    calls = counting(monkeypatch, "colorization.acquire.run_acquire")
    params = tiny.acquire.model_copy(update={"source": "folder"})  # data/inbox does not exist
    state = acquire_stage(params, retries=3, retry_delay_s=0.0, return_state=True)
    assert state.is_failed() and len(calls) == 1


def test_safebooru_crawl_holds_the_download_slot_and_retries_an_empty_crawl(prefect_api, tiny, monkeypatch):
    from prefect.client.orchestration import get_client

    from colorization.acquire import AcquireSummary, NothingAcquired
    from tasks.data import SAFEBOORU_LIMIT, ensure_download_limit

    def active_slots() -> int:
        with get_client(sync_client=True) as client:
            return client.read_global_concurrency_limit_by_name(SAFEBOORU_LIMIT).active_slots

    def crawl(params):
        held.append(active_slots())
        if len(held) == 1:  # the site answered nothing: down for a moment
            raise NothingAcquired("no valid image acquired from source 'safebooru'")
        return AcquireSummary(5, 0, Path("data/raw/manifest.parquet"))

    ensure_download_limit()
    ensure_download_limit()  # idempotent
    held: list[int] = []
    monkeypatch.setattr("colorization.acquire.run_acquire", crawl)
    result = acquire_stage(tiny.acquire.model_copy(update={"source": "safebooru"}), 1, 0.0)
    assert result["accepted"] == 5
    assert held == [1, 1]  # each attempt held the one slot while crawling
    assert active_slots() == 0


def run_summary(flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[SUMMARY_KEY]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    assert len(artifacts) == 1
    return artifacts[0].data


def test_pipeline_failure_stops_the_chain_and_publishes_why(prefect_api, tmp_path, monkeypatch, caplog):
    write_tiny_params(tmp_path / "params.yaml")
    # What an earlier run left: a trained model and its evaluation.
    (tmp_path / "models" / "cnn").mkdir(parents=True)
    (tmp_path / "models" / "cnn" / "run.json").write_text(json.dumps({"run_id": "earlier-run-1"}))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "evaluation.json").write_text(json.dumps({"cnn": {"psnr": 12.5}}))
    monkeypatch.setattr(
        "colorization.acquire.run_acquire",
        lambda params: (_ for _ in ()).throw(TimeoutError("read timed out")),
    )
    lineart = counting(monkeypatch, "colorization.preprocess.build_lineart")
    state = pipeline(workdir=str(tmp_path), return_state=True)
    assert state.is_failed() and not lineart
    assert not (tmp_path / "dvc.lock").exists()
    text = run_summary(state.state_details.flow_run_id)
    assert "**Failed** in stage `acquire`: `TimeoutError: read timed out`" in text
    assert "- stages finished in this run: none" in text
    # The earlier results are shown as earlier, with their MLflow run.
    training = text.split("## MLflow training runs")[1].split("##")[0]
    assert "_Earlier result: not from this run" in training and "`earlier-run-1`" in training
    assert "_Earlier result: not from this run" in text.split("## Evaluation")[1]
    # The parent flow run's log says which stage started and why it failed.
    assert "stage acquire started" in caplog.text
    assert "stage acquire failed after" in caplog.text and "read timed out" in caplog.text


def test_a_bad_override_fails_the_run_with_a_summary_naming_it(prefect_api, tmp_path):
    write_tiny_params(tmp_path / "params.yaml")
    state = pipeline(workdir=str(tmp_path), overrides={"lineart.image_size": 3}, return_state=True)
    assert state.is_failed()
    text = run_summary(state.state_details.flow_run_id)
    assert "**Failed** in stage `params`: `ParamsError: override lineart.image_size=3: " in text
    assert "params.yaml" not in text.split("**Failed**")[1].splitlines()[0]


# ---------------------------------------------------------------- caching


def test_cache_key_leaves_out_unhashable_arguments(tmp_path, monkeypatch, tiny):
    (tmp_path / "in.txt").write_text("a")
    key = files_and_params_key(reads=lambda i: ["in.txt"], code=["colorization.lineart"])
    ctx = SimpleNamespace(task=SimpleNamespace(name="step"))
    first = key(ctx, {"params": tiny.lineart, "lock": threading.Lock()})
    assert isinstance(first, str)
    assert key(ctx, {"params": tiny.lineart, "lock": threading.Lock(), "handle": object()}) == first
    assert key(ctx, {"params": tiny.lineart.model_copy(update={"workers": 2})}) == first  # speed only
    assert key(ctx, {"params": tiny.lineart.model_copy(update={"image_size": 48})}) != first
    (tmp_path / "in.txt").write_text("b")
    assert key(ctx, {"params": tiny.lineart}) != first
    assert "lock" not in jsonable_inputs({"lock": threading.Lock(), "n": 1})


def test_task_with_unhashable_argument_is_cached(prefect_api, tmp_path, monkeypatch):
    from prefect import flow, task

    monkeypatch.chdir(tmp_path)
    runs = []

    @task(cache_key_fn=files_and_params_key(reads=lambda i: []), persist_result=True)
    def step(config: dict, lock) -> int:
        runs.append(1)
        return config["n"] * 2

    @flow
    def twice() -> list:
        return [step({"n": 21}, threading.Lock(), return_state=True) for _ in range(2)]

    first, second = twice()
    assert first.result() == second.result() == 42
    assert len(runs) == 1 and second.name == "Cached"


def test_data_stages_are_cached_until_inputs_or_outputs_change(prefect_api, tiny, monkeypatch):
    built = counting(monkeypatch, "colorization.preprocess.build_lineart")
    assert acquire_stage(tiny.acquire, retries=0, retry_delay_s=0.0)["accepted"] == 48
    first = lineart_stage(tiny.lineart)
    assert lineart_stage(tiny.lineart) == first and len(built) == 1
    assert histograms_stage(tiny.histograms)["count"] == 48

    out = Path(tiny.lineart.out)
    shutil.rmtree(out)  # deleted output: rebuilt, not served from the cache
    lineart_stage(tiny.lineart)
    assert len(built) == 2 and (out / "meta.json").exists()

    shard = next(out.glob("*.npy"))
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))  # changed on disk
    lineart_stage(tiny.lineart)
    assert len(built) == 3

    lineart_stage(tiny.lineart.model_copy(update={"workers": 2}))  # a speed knob: still cached
    assert len(built) == 3


# ---------------------------------------------------------------- DVC


def test_pipeline_data_half_keeps_dvc_in_step(prefect_api, tmp_path, caplog):
    project = tiny_project(tmp_path / "project", remote=tmp_path / "remote")
    result = pipeline(workdir=str(project), until="histograms")
    assert result["stages"] == ["acquire", "lineart", "histograms"]
    assert set(result["seconds"]) == {"acquire", "lineart", "histograms"}
    for stage in result["stages"]:  # progress on the parent flow run's log
        assert f"stage {stage} started" in caplog.text
        assert f"stage {stage} finished in {result['seconds'][stage]:.1f} s" in caplog.text
    assert result["dvc_committed"] == ["acquire", "lineart", "histograms"]
    assert result["dvc_remote"] == "local" and any((tmp_path / "remote").rglob("*"))
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"acquire", "lineart", "histograms"}
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "acquire", "lineart", "histograms"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "up to date" in status.stdout, status.stdout


def test_flow_stages_are_the_dvc_stages():
    assert list(dvc_stages(REPO / "dvc.yaml")) == list(DVC_STAGES)


def test_overrides_of_tracked_params_are_reported(tmp_path, monkeypatch):
    params_path = write_tiny_params(tmp_path / "params.yaml")
    changed = changed_params(
        params_path, {"acquire.synthetic.count": 48, "acquire.synthetic.size": 64, "lineart.workers": 2}
    )
    assert changed == {"acquire.synthetic.size": 64, "lineart.workers": 2}  # count is unchanged
    monkeypatch.chdir(REPO)
    found = overridden_tracked_params(["acquire", "lineart"], changed)
    assert found == {"acquire": ["acquire.synthetic.size"]}  # lineart.workers is not a DVC param


def test_parse_overrides_reads_values_as_yaml():
    assert parse_overrides(["a.b=3", "c=true", "d=x y", "e=[1, 2]"]) == {
        "a.b": 3,
        "c": True,
        "d": "x y",
        "e": [1, 2],
    }
    assert parse_overrides(["pipeline.cron=* * * * *"]) == {"pipeline.cron": "* * * * *"}  # not YAML
    with pytest.raises(SystemExit):
        parse_overrides(["no-equals"])


# ---------------------------------------------------------------- summary and schedule


def test_summary_lists_metrics_runs_and_versions():
    run = {"flow_run_name": "r", "params_path": "params.yaml", "workdir": "/p", "stages": ["acquire"]}
    evaluation = {"split": "test", "images": 7, "cnn": {"psnr": 20.5, "ssim": 0.7}}
    registry = {"lineart-cnn": {"version": "3", "promoted": True, "source_run_id": "abc"}}
    text = summary_markdown(
        {**run, "evaluate_run_id": "ev1"}, evaluation, {"cnn": {"run_id": "abc"}}, registry
    )
    for needle in ("| cnn | 20.5 | 0.7 |", "| lineart-cnn | 3 | True | abc |", "ev1", "| cnn | abc |"):
        assert needle in text, needle
    assert "**Failed**" in summary_markdown({**run, "failed": "OSError: disk"}, None, {}, None)


def test_deployment_carries_the_schedule_from_params(tmp_path):
    from flows.serve import deployment_settings

    params = load_params(
        write_tiny_params(tmp_path / "params.yaml"),
        {"pipeline.cron": "15 2 * * 1", "pipeline.timezone": "Europe/Paris", "pipeline.deployment": "weekly"},
    )
    settings = deployment_settings(params, "params.yaml", tmp_path)
    (schedule,) = settings["schedules"]
    assert settings["name"] == "weekly"
    assert (schedule.cron, schedule.timezone) == ("15 2 * * 1", "Europe/Paris")
    assert schedule.parameters == {"overrides": params.pipeline.overrides}
    assert settings["parameters"] == {"params_path": "params.yaml", "workdir": str(tmp_path)}
    json.dumps(settings["parameters"])  # deployment parameters must be JSON
