"""The `pipeline` flow against a temporary Prefect API (prefect_test_harness).

The flow runs dvc.yaml's stages through DVC: the stage list comes from dvc.yaml, an
override of a tracked param is refused (dvc.lock stays truthful) while an untracked one
reaches the stage command, a temporary failure of acquire is retried and a bad input is
not, a failed run publishes why, and the data half of a run leaves DVC in step. Also the
run summary artifact and the deployment's schedule.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from colorization.atomic import OUTPUT_MARKER
from colorization.config import OVERRIDES_ENV, ParamsError, load_params
from colorization.models import KINDS
from flows.pipeline import changed_params, check_run, check_stage_folders, parse_overrides, pipeline
from tasks.dvc import pipeline_stages, tracked_params
from tasks.summary import SUMMARY_KEY, summary_markdown

REPO = Path(__file__).resolve().parents[2]

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


def dvc_status(project: Path) -> set[str]:
    """The stages `dvc status` finds stale."""
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out or "{}"))


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


def task_run_counts(flow_run_id, name: str) -> list[int]:
    """How many times each `name` task run of a flow run ran (1 + its retries)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[name])),
        )
    return [run.run_count for run in runs]


# ---------------------------------------------------------------- one definition: dvc.yaml


def test_flow_stages_are_dvc_yaml_stages_in_order():
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    stages = pipeline_stages(REPO)
    assert sorted(stages) == sorted(listed)  # every stage DVC knows, foreach ones expanded
    assert stages[0] == "acquire" and stages[-1] == "register"
    assert stages.index("preprocess") < min(stages.index(s) for s in stages if s.startswith("train@"))
    assert [s.split("@")[1] for s in stages if s.startswith("train@")] == list(KINDS)  # one per spec
    assert check_run("params.yaml", None, "train", REPO)[1] == stages[: stages.index("evaluate")]
    with pytest.raises(
        ParamsError, match="until: unknown stage 'lineart'; expected one of acquire, preprocess"
    ):
        check_run("params.yaml", None, "lineart", REPO)


def test_override_of_a_tracked_param_is_refused_in_one_line():
    tracked = tracked_params(REPO)
    assert "lineart.image_size" in tracked["preprocess"] and "train.cnn" in tracked["train@cnn"]
    with pytest.raises(ParamsError) as err:
        check_run("params.yaml", {"train.cnn.steps": 3}, None, REPO)
    message = str(err.value)
    assert message.startswith("override train.cnn.steps=3: dvc.yaml tracks it (stage train@cnn, register)")
    assert "dvc exp run -S train.cnn.steps=3" in message and "\n" not in message
    # Untracked knobs, and tracked ones set to the value params.yaml already has, pass.
    scheduled = {"acquire.safebooru.incremental": True, "lineart.workers": 1, "pipeline.retries": 0}
    assert check_run("params.yaml", scheduled, None, REPO)[2] == scheduled
    with pytest.raises(
        ParamsError, match=r"^params profiles/paper.yaml: the stages of dvc.yaml read params.yaml"
    ):
        check_run("profiles/paper.yaml", None, None, REPO)


def test_a_stage_folder_the_project_did_not_write_is_refused_before_dvc_removes_it(repo_copy):
    subprocess.run(["git", "init", "-q"], cwd=repo_copy, check=True)  # DVC reads dvc.yaml in a git tree
    params = load_params(repo_copy / "params.yaml")
    store, model = repo_copy / params.lineart.out, repo_copy / params.train.out / "cgan"
    for folder in (store, model):
        folder.mkdir(parents=True)
        (folder / "precious.txt").write_text("mine")
    check_run("params.yaml", None, "acquire", repo_copy)  # a run that stops before them is fine
    with pytest.raises(ParamsError) as err:
        check_run("params.yaml", None, None, repo_copy)
    assert str(err.value).startswith(f"stage preprocess: {store}: not a line-art store folder")
    (store / "precious.txt").unlink()  # now empty: taken
    with pytest.raises(ParamsError, match=r"^stage train@cgan: .*cgan: not a model folder[^\n]*$"):
        check_stage_folders(params, ["acquire", "preprocess", "train@cgan"], repo_copy)
    assert (model / "precious.txt").read_text() == "mine"


def test_untracked_overrides_reach_the_stage_command(tmp_path, monkeypatch):
    from colorization.cli import params_or_exit

    params_path = write_tiny_params(tmp_path / "params.yaml")
    monkeypatch.setenv(OVERRIDES_ENV, json.dumps({"lineart.workers": 2}))
    assert params_or_exit(params_path).lineart.workers == 2
    monkeypatch.delenv(OVERRIDES_ENV)
    assert params_or_exit(params_path).lineart.workers == 1


def test_changed_params_keeps_only_overrides_that_differ(tmp_path):
    params_path = write_tiny_params(tmp_path / "params.yaml")
    changed = changed_params(
        params_path, {"acquire.synthetic.count": 48, "acquire.synthetic.size": 64, "lineart.workers": 2}
    )
    assert changed == {"acquire.synthetic.size": 64, "lineart.workers": 2}  # count is unchanged


# ---------------------------------------------------------------- retries and failure


def test_acquire_command_says_whether_a_failure_is_temporary(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from colorization.acquire import TEMPORARY_FAILURE
    from colorization.cli import app

    params_path = write_tiny_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)

    def down(params):
        raise ConnectionError("reset by peer")

    monkeypatch.setattr("colorization.acquire.run_acquire", down)
    result = CliRunner().invoke(app, ["acquire", "--params", str(params_path)])
    assert result.exit_code == TEMPORARY_FAILURE, result.output
    monkeypatch.undo()
    missing = CliRunner().invoke(app, ["acquire", "--params", str(params_path), "--source", "folder"])
    assert missing.exit_code == 1  # a bad input folder: no use retrying


def safebooru_project(root: Path, base_url: str) -> Path:
    project = tiny_project(root)
    extra = {
        "acquire.source": "safebooru",
        "acquire.safebooru.base_url": base_url,
        "acquire.safebooru.allowed_hosts": [],
        "acquire.safebooru.limit": 10,
        "acquire.safebooru.min_size": 32,
        "acquire.safebooru.max_retries": 0,  # the source gives up at once; the flow retries the stage
        "acquire.safebooru.requests_per_second": 0.0,
        "acquire.safebooru.page_size": 10,
        "pipeline.retries": 2,
    }
    write_tiny_params(project / "params.yaml", extra)
    return project


def test_temporary_acquire_failure_is_retried_through_dvc(prefect_api, tmp_path):
    from tests.fake_safebooru import FakeSafebooru, Fault

    with FakeSafebooru() as site:
        for post_id in range(1, 6):
            site.add_post(post_id)
        site.api_faults.extend([Fault(status=503), Fault(status=503)])  # down for two attempts
        project = safebooru_project(tmp_path / "project", site.base_url)
        state = pipeline(workdir=str(project), until="acquire", return_state=True)
        result = state.result()
        assert result["ran"] == ["acquire"]
        assert task_run_counts(state.state_details.flow_run_id, "acquire") == [3]  # two retries
        assert "acquire" not in dvc_status(project)  # dvc.lock records the run that succeeded
        # The site has a new post, and nothing changed here: a crawl always runs, and finds it.
        site.add_post(6)
        assert pipeline(workdir=str(project), until="acquire")["ran"] == ["acquire"]
    assert pq.read_table(project / "data" / "raw" / "manifest.parquet").num_rows == 6


def test_a_bad_input_is_not_retried_and_the_failed_run_says_why(prefect_api, tmp_path, caplog):
    project = tiny_project(tmp_path / "project")
    write_tiny_params(project / "params.yaml", {"acquire.source": "folder"})  # data/inbox does not exist
    # What an earlier run left: a trained model and its evaluation.
    (project / "models" / "cnn").mkdir(parents=True)
    (project / "models" / "cnn" / "run.json").write_text(json.dumps({"run_id": "earlier-run-1"}))
    (project / "models" / "cnn" / OUTPUT_MARKER).write_text("model\n")  # the project wrote it
    (project / "metrics").mkdir()
    (project / "metrics" / "evaluation.json").write_text(json.dumps({"cnn": {"psnr": 12.5}}))
    state = pipeline(workdir=str(project), return_state=True)
    assert state.is_failed()
    flow_run_id = state.state_details.flow_run_id
    assert task_run_counts(flow_run_id, "acquire") == [1]
    assert task_run_counts(flow_run_id, "preprocess") == []  # the chain stopped
    assert not (project / "dvc.lock").exists()
    text = run_summary(flow_run_id)
    assert "**Failed** in stage `acquire`: `DvcFailed: `dvc repro --single-item acquire`: error: " in text
    assert "data/inbox" in text.split("**Failed**")[1].splitlines()[0]
    assert "- stages finished in this run: none" in text
    # The earlier results are shown as earlier, with their MLflow run.
    training = text.split("## MLflow training runs")[1].split("##")[0]
    assert "_Earlier result: not from this run" in training and "`earlier-run-1`" in training
    assert "_Earlier result: not from this run" in text.split("## Evaluation")[1]
    # The parent flow run's log says which stage started and why it failed.
    assert "stage acquire started" in caplog.text
    assert "stage acquire failed after" in caplog.text and "data/inbox" in caplog.text


def test_a_bad_override_fails_the_run_with_a_summary_naming_it(prefect_api, tmp_path):
    project = tiny_project(tmp_path / "project")
    state = pipeline(workdir=str(project), overrides={"lineart.image_size": 3}, return_state=True)
    assert state.is_failed()
    text = run_summary(state.state_details.flow_run_id)
    assert "**Failed** in stage `params`: `ParamsError: override lineart.image_size=3: " in text
    assert "params.yaml" not in text.split("**Failed**")[1].splitlines()[0]


# ---------------------------------------------------------------- DVC


def test_pipeline_data_half_keeps_dvc_in_step(prefect_api, tmp_path, caplog):
    project = tiny_project(tmp_path / "project", remote=tmp_path / "remote")
    result = pipeline(workdir=str(project), until="preprocess", overrides={"lineart.workers": 2})
    assert result["stages"] == result["ran"] == ["acquire", "preprocess"]
    assert set(result["seconds"]) == {"acquire", "preprocess"}
    for stage in result["stages"]:  # progress on the parent flow run's log
        assert f"stage {stage} started" in caplog.text
        assert f"stage {stage} finished in {result['seconds'][stage]:.1f} s" in caplog.text
    assert result["dvc_remote"] == "local" and any((tmp_path / "remote").rglob("*"))
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"acquire", "preprocess"}
    assert lock["stages"]["preprocess"]["params"]["params.yaml"]["lineart.image_size"] == 32
    assert not dvc_status(project) & {"acquire", "preprocess"}
    again = pipeline(workdir=str(project), until="preprocess")
    assert again["ran"] == [] and again["skipped"] == ["acquire", "preprocess"]


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
