"""End to end: a real `prefect server start` on 127.0.0.1, `python -m flows.serve` serving the
scheduled deployment on a tiny project: one run triggered through the REST API, and one
created by the server's scheduler from a schedule that comes due within a minute.

The server, the serving process and the flow-run subprocesses it starts live in two
process groups of their own, each stopped at the end (terminate, wait, kill).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from tasks.dvc import pipeline_stages
from tests.integration.test_flows import REPO, tiny_project
from tests.servers import uvicorn_port

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def start(cmd: list[str], log: Path, env: dict, cwd: Path) -> subprocess.Popen:
    with open(log, "wb") as out:  # the child keeps its own handle
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL what is left of it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # The group may outlive its leader (flow-run subprocesses): make sure it is gone.
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for(what: str, probe, timeout: float, procs: dict[str, subprocess.Popen], interval: float = 0.5):
    """Call `probe` until it returns something truthy; fail early if a process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode} while waiting for {what}"
        try:
            found = probe()
        except requests.RequestException:
            found = None
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def get_json(url: str):
    response = requests.get(url, timeout=10)
    return response.json() if response.status_code == 200 else None


def prefect_env(tmp_path: Path, api: str | None) -> dict[str, str]:
    """The environment of a server and a client of their own: home, database, API URL (the
    server's own has none: it learns its port when it binds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return (
        env
        | ({"PREFECT_API_URL": api} if api else {})
        | {
            "PREFECT_HOME": str(tmp_path / "prefect-home"),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",  # the API is what is checked; skips building the UI
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # the serving process picks the run up at once
            "PYTHONUNBUFFERED": "1",
        }
    )


def start_server(tmp_path: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on a port it binds itself (0), read back from uvicorn's start line:
    (the server, its API URL)."""
    env = prefect_env(tmp_path, api=None)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--log-level", "INFO"]  # uvicorn's start line (with the port it bound) is an INFO
    proc = start(cmd, log, env, tmp_path)
    try:
        return proc, f"http://127.0.0.1:{uvicorn_port(proc, log)}/api"
    except BaseException:
        stop(proc)
        raise


@pytest.mark.slow
def test_served_deployment_runs_the_pipeline(tmp_path: Path):
    project = tiny_project(tmp_path / "project", remote=tmp_path / "dvc-remote")
    procs: dict[str, subprocess.Popen] = {}
    logs = {"server": tmp_path / "server.log", "serve": tmp_path / "serve.log"}
    try:
        procs["server"], api = start_server(tmp_path, logs["server"])
        env = prefect_env(tmp_path, api)
        wait_for("the server", lambda: get_json(f"{api}/health"), 150, procs)

        procs["serve"] = start(
            [sys.executable, "-m", "flows.serve", "--workdir", str(project)], logs["serve"], env, REPO
        )
        deployment = wait_for(
            "the deployment", lambda: get_json(f"{api}/deployments/name/pipeline/nightly"), 90, procs
        )
        (schedule,) = deployment["schedules"]
        assert schedule["schedule"]["cron"] == "0 3 * * *" and schedule["schedule"]["timezone"] == "UTC"
        assert schedule["parameters"] == {"overrides": {"acquire.safebooru.incremental": True}}
        assert deployment["parameters"]["workdir"] == str(project)

        cli = [sys.executable, "-m", "colorization", "trigger", "--workdir", str(project)]
        bad = subprocess.run([*cli, "--set", "lineart.image_size=3"], env=env, capture_output=True, text=True)
        assert bad.returncode == 2 and bad.stderr.startswith("error: override lineart.image_size=3: "), bad
        assert by_hand(api, deployment["id"]) == []  # refused before a run was created

        # An override of a key DVC tracks is refused too; an untracked one runs, followed to its end.
        tracked = subprocess.run(
            [*cli, "--set", "train.cnn.steps=3"], env=env, capture_output=True, text=True
        )
        assert tracked.returncode == 2, tracked
        assert tracked.stderr.startswith("error: override train.cnn.steps=3: dvc.yaml tracks it"), tracked
        assert by_hand(api, deployment["id"]) == []  # dvc.lock could not record it: refused, no run
        watched = subprocess.run(
            [*cli, "--set", "lineart.workers=1", "--watch"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert watched.returncode == 0, watched.stdout[-6000:] + watched.stderr[-3000:]
        for stage in pipeline_stages(project):
            assert (
                f"stage {stage} started" in watched.stdout and f"stage {stage} finished in" in watched.stdout
            )
        assert "# Pipeline run" in watched.stdout and "finished: Completed" in watched.stdout
        (run,) = by_hand(api, deployment["id"])  # the schedule's own runs are for 03:00
        run_id = run["id"]
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert run["parameters"]["overrides"] == {"lineart.workers": 1}

        printed = subprocess.run(
            [sys.executable, "-m", "colorization", "summary", "--run", run["name"]],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert printed.startswith(f"# Pipeline run `{run['name']}`") and "\\n" not in printed

        found = requests.post(
            f"{api}/artifacts/filter",
            json={"artifacts": {"key": {"any_": ["pipeline-summary"]}, "flow_run_id": {"any_": [run_id]}}},
            timeout=10,
        ).json()
        assert len(found) == 1 and "MLflow registry" in found[0]["data"]

        registry = json.loads((project / "metrics" / "registry.json").read_text())
        assert {r["version"] for r in registry.values()} == {"1"}
        lock = yaml.safe_load((project / "dvc.lock").read_text())
        assert set(lock["stages"]) == set(pipeline_stages(project))
        status = subprocess.run(
            [sys.executable, "-m", "dvc", "status"], cwd=project, capture_output=True, text=True, check=True
        )
        assert "up to date" in status.stdout, status.stdout
    except BaseException:
        for name, log in logs.items():
            if log.exists():
                print(f"---- {name} log (tail)\n{log.read_text(errors='replace')[-6000:]}")
        raise
    finally:
        for name in ("serve", "server"):  # serve first: it pauses its schedule through the server
            if name in procs:
                stop(procs[name])


def flow_runs(api: str, deployment_id: str) -> list[dict]:
    response = requests.post(
        f"{api}/flow_runs/filter",
        json={"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def by_hand(api: str, deployment_id: str) -> list[dict]:
    return [run for run in flow_runs(api, deployment_id) if not run["auto_scheduled"]]


@pytest.mark.slow
def test_the_schedule_creates_a_run_and_it_completes(tmp_path: Path):
    """The server's scheduler service (not the test) creates a run of a schedule due within a
    minute, the serving process runs it to the end, and the server logs no traceback."""
    project = tiny_project(tmp_path / "project")
    procs: dict[str, subprocess.Popen] = {}
    logs = {"server": tmp_path / "server.log", "serve": tmp_path / "serve.log"}
    try:
        procs["server"], api = start_server(tmp_path, logs["server"])
        env = prefect_env(tmp_path, api)
        wait_for("the server", lambda: get_json(f"{api}/health"), 150, procs)
        serve = [sys.executable, "-m", "flows.serve", "--workdir", str(project), "--until", "acquire"]
        serve += ["--set", "pipeline.cron=* * * * *", "--set", "pipeline.deployment=every-minute"]
        procs["serve"] = start(serve, logs["serve"], env, REPO)
        started = time.monotonic()
        deployment = wait_for(
            "the deployment", lambda: get_json(f"{api}/deployments/name/pipeline/every-minute"), 90, procs
        )
        assert deployment["schedules"][0]["schedule"]["cron"] == "* * * * *"
        assert deployment["parameters"]["until"] == "acquire"

        # Nothing here creates a run: the first one must come from the server's scheduler.
        runs = wait_for("the scheduler to create runs", lambda: flow_runs(api, deployment["id"]), 90, procs)
        created_s = time.monotonic() - started
        first = runs[0]
        assert first["auto_scheduled"], first  # set only by the scheduler service
        assert first["parameters"]["overrides"] == {  # the serving overrides, then pipeline.overrides
            "pipeline.cron": "* * * * *",
            "pipeline.deployment": "every-minute",
            "acquire.safebooru.incremental": True,
        }

        def finished():
            run = get_json(f"{api}/flow_runs/{first['id']}")
            return run if run and run["state"]["type"] in TERMINAL else None

        # Due within a minute, then the run itself (acquire only).
        run = wait_for("the scheduled run to finish", finished, 240, procs, interval=1.0)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        print(
            f"scheduler created {len(runs)} runs {created_s:.0f} s after serving; the first one "
            f"finished {time.monotonic() - started:.0f} s after serving"
        )
        assert (project / "data" / "raw" / "manifest.parquet").exists()
        server_log = logs["server"].read_text(errors="replace")
        assert "Traceback" not in server_log and "| ERROR" not in server_log, server_log[-6000:]
    except BaseException:
        for name, log in logs.items():
            if log.exists():
                print(f"---- {name} log (tail)\n{log.read_text(errors='replace')[-6000:]}")
        raise
    finally:
        for name in ("serve", "server"):  # serve first: it pauses its schedule through the server
            if name in procs:
                stop(procs[name])
