"""Kills leave nothing behind: a SIGKILLed stage's workers die with it; killing `dvc repro` or
`colorization pipeline` (SIGTERM or SIGKILL) ends the stage it runs; a LocalCluster's Dask
workers die with the process that started it; a safebooru download or a training run killed
mid-way resumes to the same result.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from colorization.images import decode_rgb
from colorization.manifest import write_manifest
from colorization.sources.safebooru import acquire_safebooru
from tests.conftest import (
    REPO,
    TINY,
    kill_at_first_checkpoint,
    random_bgr,
    run_folder,
    train_model,
    write_image,
    write_params,
)
from tests.servers import HUNG_S
from tests.unit.test_sources_safebooru import (
    add_posts,
    assert_consistent,
    make_cfg,
    site,  # noqa: F401 (a fixture)
)
from tests.unit.test_train import (
    store_params,  # noqa: F401 (a fixture)
    tiny_params,
)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, session id) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[3])


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def in_session(sid: int) -> set[int]:
    """The processes of session `sid`: a child started with start_new_session=True and all it
    started, even those an ended parent left to init."""
    return {pid for pid in _all_pids() if (info := _stat(pid)) is not None and info[2] == sid}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for child in _all_pids():
        if (info := _stat(child)) is not None:
            children.setdefault(info[1], []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pids: set[int]) -> set[int]:
    """The pids still alive (a zombie is dead: it only waits for a parent to read its status)."""
    return {pid for pid in pids if (info := _stat(pid)) is not None and info[0] != "Z"}


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(interval)


def test_sigkill_of_preprocess_leaves_no_worker(tmp_path, params_dict):
    raw = tmp_path / "raw"
    write_image(raw / "images/one.png", random_bgr(256, 256))
    row = {"source": "folder", "path": "images/one.png", "width": 256, "height": 256, "sha256": "0"}
    write_manifest(raw, [{**row, "id": f"img-{i:05d}"} for i in range(6000)])  # minutes of work
    params_dict["acquire"]["out"] = str(raw)  # what preprocess reads (dvc.yaml: --raw ${acquire.out})
    params_dict["lineart"].update(out=str(tmp_path / "lineart"), image_size=32, shard_size=20, workers=2)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_dict))
    staging = tmp_path / ".lineart.partial"

    proc = subprocess.Popen(
        [sys.executable, "-m", "colorization", "preprocess", "--params", str(params)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    tree: set[int] = set()
    try:
        # Kill it at work: both workers started and shards being written.
        def at_work():
            assert proc.poll() is None, proc.stderr.read().decode()
            tree.update(descendants(proc.pid))
            return len(tree) >= 2 and staging.is_dir() and any(staging.glob("*.ids.json"))

        wait_until(at_work, HUNG_S, "preprocess workers to finish a shard")
        tree.update(descendants(proc.pid))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_until(
            lambda: not running(tree), 10, f"processes {sorted(running(tree))} of the killed stage to end"
        )
    finally:
        for pid in running(tree):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(tree) >= 2  # the two workers (and the resource tracker)


# ---------------------------------------------------------------- kills of the top of a run

# Processes of a killed run end within this (each one notices its owner's end at once; the
# rest is the machine's load).
ENDS_WITHIN_S = 15


PREFECT_TEMPORARY_SERVER = "prefect.server.api.server:create_app"  # Prefect's own, see below


def start_in_own_session(cmd: list[str], cwd: Path, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """The command as the head of a new session: all it starts stays findable by session id.
    It imports this checkout (flows/, tasks/ too), runs this venv's commands, as `make` does,
    and finds no Prefect server but the one `env` names."""
    bin_dir = str(Path(sys.executable).parent)  # dvc runs `colorization ...` from this venv
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        **(env or {}),
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
        "PYTHONPATH": path,
    }
    return subprocess.Popen(cmd, cwd=cwd, env=full_env, start_new_session=True, **kwargs)


def kill_and_expect_no_survivor(proc: subprocess.Popen, sig: int, under_way, what: str, spare=()) -> set[int]:
    """Once `under_way(tree)` holds, send `sig` to `proc` alone, then wait (bounded) until no
    process it started runs; `spare` names command lines left out (and killed here)."""
    tree: set[int] = set()
    try:

        def ready():
            assert proc.poll() is None, f"{what} ended early with {proc.returncode}"
            tree.update(descendants(proc.pid))
            return under_way(tree)

        wait_until(ready, HUNG_S, what, interval=0.2)
        tree.update(descendants(proc.pid))
        os.kill(proc.pid, sig)
        proc.wait(timeout=HUNG_S)

        def survivors() -> set[int]:
            alive = running(tree | in_session(proc.pid))
            return {pid for pid in alive if not any(s in cmdline(pid) for s in spare)}

        deadline = time.monotonic() + ENDS_WITHIN_S
        while (left := survivors()) and time.monotonic() < deadline:
            time.sleep(0.1)
        named = "; ".join(f"{pid} {cmdline(pid)[:120]}" for pid in sorted(left))
        assert not left, f"{what}: {ENDS_WITHIN_S} s after {signal.Signals(sig).name}, still running: {named}"
    finally:
        for pid in running(tree | in_session(proc.pid)):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return tree


def endless_training_project(root: Path) -> Path:
    """A DVC project (tests/integration/test_flows.py's tiny one) whose cnn trains for ever, with tiny
    networks and a checkpoint every 5 steps."""
    from tests.conftest import TINY
    from tests.integration.test_flows import tiny_project, write_tiny_params

    project = tiny_project(root)
    endless = {**TINY, "train.cnn.steps": 10**7, "train.checkpoint_every": 5}
    write_tiny_params(project / "params.yaml", endless)
    return project


def training(project: Path):
    """`under_way`: the cnn trainer runs and has written a checkpoint."""
    checkpoint = project / "checkpoints/cnn/last.pt"
    return lambda tree: checkpoint.exists() and any(" train cnn " in cmdline(pid) for pid in tree)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_dvc_repro_ends_the_stage_it_runs(tmp_path, sig):
    project = endless_training_project(tmp_path / "project")
    proc = start_in_own_session(
        [sys.executable, "-m", "dvc", "repro", "train@cnn"],
        project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_and_expect_no_survivor(proc, sig, training(project), "dvc repro training cnn")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_colorization_pipeline_ends_dvc_and_its_stage(tmp_path, sig):
    """The flow runs `dvc repro --single-item`; killed, it leaves neither DVC nor the trainer.

    Without a Prefect API configured, Prefect starts a temporary server of its own, stopped
    at a normal exit only: a kill leaves it (Prefect's, no stage), so it is spared here."""
    project = endless_training_project(tmp_path / "project")
    env = {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = start_in_own_session(
        [sys.executable, "-m", "colorization", "pipeline", "--until", "train"],
        project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spare = [PREFECT_TEMPORARY_SERVER]
    kill_and_expect_no_survivor(proc, sig, training(project), "colorization pipeline training cnn", spare)


def first_line(proc: subprocess.Popen, timeout_s: float = 120) -> bytes:
    """The child's first line of output, or b"" if none comes in time (a crashed child must fail
    the test, not hang it)."""
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    return proc.stdout.readline() if ready else b""


# A stand-in for DVC: it runs a stage command through a shell that stays in between (it has
# more to do after the command), with DVC_STAGE set as DVC sets it; the stage arms its watch.
_DVC_WITH_A_SHELL_BETWEEN = """
import os, subprocess, sys, time
stage = "import colorization.processes as p; p.die_with_stage_runners(); print('armed', flush=True); "
stage += "time.sleep(3600)"
env = {**os.environ, "DVC_STAGE": "train@cnn", "STAGE": stage}
subprocess.Popen(["/bin/sh", "-c", '"$0" -c "import time; $STAGE"; exit 0', sys.executable], env=env)
time.sleep(3600)
"""


def test_a_stage_dies_with_dvc_even_through_a_shell_that_lives_on(tmp_path):
    """PR_SET_PDEATHSIG would only see the shell: the stage watches DVC itself."""
    proc = start_in_own_session(
        [sys.executable, "-c", _DVC_WITH_A_SHELL_BETWEEN], tmp_path, stdout=subprocess.PIPE
    )
    assert first_line(proc) == b"armed\n", "the stage never started"
    shell_and_stage = lambda tree: len(tree) >= 2 and any(cmdline(p).startswith("/bin/sh") for p in tree)  # noqa: E731
    kill_and_expect_no_survivor(proc, signal.SIGKILL, shell_and_stage, "a stage under a shell")


_DASK_CLUSTER = """
import sys, time
from colorization.config import load_params
from flows.pipeline import dask_scheduler
params = load_params(sys.argv[1], {"pipeline.task_runner": "dask", "pipeline.dask_workers": 2})
with dask_scheduler(params.pipeline) as address:
    print(address, flush=True)
    time.sleep(3600)
"""


def test_dask_workers_die_with_the_process_that_started_the_cluster(tmp_path):
    proc = start_in_own_session(
        [sys.executable, "-c", _DASK_CLUSTER, str(REPO / "params.yaml")],
        tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert first_line(proc).startswith(b"tcp://"), "no LocalCluster started"
    workers = lambda tree: len([pid for pid in tree if "dask worker" in cmdline(pid)]) >= 2  # noqa: E731
    tree = kill_and_expect_no_survivor(proc, signal.SIGKILL, workers, "LocalCluster's two workers")
    assert len(tree) >= 2


def test_a_process_whose_owner_is_already_gone_ends_at_once(tmp_path):
    """The owner ended (or its pid is some other process now, no ancestor of ours) before the
    watch was armed: the process ends there, it does not run on unwatched."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    stranger = subprocess.Popen(["sleep", "60"])  # alive, but no ancestor of the child below
    try:
        for owner in (ended.pid, stranger.pid):
            code = f"from colorization.processes import die_with; die_with({owner}); print('ran on')"
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=HUNG_S
            )
            assert (done.returncode, done.stdout) == (-signal.SIGKILL, ""), (owner, done.stderr)
    finally:
        stranger.kill()
        stranger.wait()


_CHILD = """
import sys
from pathlib import Path
from colorization.config import SafebooruSource
from colorization.manifest import write_manifest
from colorization.sources.safebooru import acquire_safebooru
out = Path(sys.argv[2])
rows, _ = acquire_safebooru(SafebooruSource.model_validate_json(sys.argv[1]), out)
write_manifest(out, rows)
"""


def _journalled(out: Path) -> int:
    journal = out / ".safebooru-journal.jsonl"
    if not journal.exists():
        return 0
    return journal.read_text().count('{"accepted":')


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(site, tmp_path):  # noqa: F811
    add_posts(site, range(1, 61))
    site.hold_files_after = 12  # the 13th file onwards stalls half-sent: the kill lands mid-download
    cfg = make_cfg(site, concurrent_downloads=4, timeout_s=30.0)  # held downloads must not time out
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, cfg.model_dump_json(), str(tmp_path)], cwd=REPO, env=env
    )
    try:
        deadline = time.monotonic() + HUNG_S  # the server holds it there: no race to lose
        while not (_journalled(tmp_path) == 12 and len(site.file_requests()) >= 16):
            assert child.poll() is None, "the child ended before it could be killed"
            assert time.monotonic() < deadline, "the child never reached the kill point"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (tmp_path / "manifest.parquet").exists()
    published = list((tmp_path / "images").glob("safebooru-*"))
    assert len(published) == 12 and all(decode_rgb(f.read_bytes()) is not None for f in published)
    site.hold_files_after = None
    site.release.set()
    rows, rejected = acquire_safebooru(cfg, tmp_path)
    assert [r["post_id"] for r in rows] == list(range(1, 61)) and not rejected
    assert max(site.completed_files.values()) == 1  # nothing downloaded twice
    assert_consistent(tmp_path, rows)


def test_sigkill_then_resume_ends_bit_identical(store_params: Path, tmp_path: Path):  # noqa: F811
    steps = 60
    reference = train_model(
        tiny_params(store_params), "cgan", steps=steps, **run_folder(tmp_path, "reference")
    )

    # The same run as a CLI process (cwd = its own folder, so its default output paths land
    # there), SIGKILLed once a checkpoint exists, then started again.
    work = tmp_path / "killed"
    work.mkdir()
    write_params(work / "params.yaml", store_params, {**TINY, "train.cgan.steps": steps})
    cmd = [sys.executable, "-m", "colorization", "train", "cgan", "--params", "params.yaml"]
    # Float sums depend on the thread count: the child must use this process's.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    checkpoint = work / "checkpoints" / "cgan" / "last.pt"
    kill_at_first_checkpoint(cmd[3:], work, env)
    killed_at = torch.load(checkpoint, weights_only=True)["step"]
    assert killed_at == TINY["train.checkpoint_every"] < steps
    assert not (work / "models" / "cgan").exists()
    (work / "plots" / "train" / "cgan.csv").unlink()  # as `dvc repro` does before re-running the stage

    resumed = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=HUNG_S)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming cgan from step {killed_at}" in resumed.stderr

    expected = torch.load(reference / "model.pt", weights_only=True)
    got = torch.load(work / "models" / "cgan" / "model.pt", weights_only=True)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    # The loss log reads as one uninterrupted run, too: the rows up to the checkpoint came from it.
    ref_rows = (tmp_path / "reference" / "losses.csv").read_text()
    assert (work / "plots" / "train" / "cgan.csv").read_text() == ref_rows
    assert len(ref_rows.splitlines()) == steps + 1
    assert not checkpoint.exists()  # a finished run leaves no resume state behind
