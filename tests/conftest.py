"""Shared fixtures: a small params file and image factories for bad-input tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# Fixtures that unit and integration tests share, without importing them into each module. They
# need MLflow, which the GPU machine lacks: there (bench/gpu_session.sh) only the CUDA tests run.
pytest_plugins = ["tests.registry_fixtures"] if importlib.util.find_spec("mlflow") else []
# Tests run the CLI in-process too (typer's CliRunner), and bit-compare runs in this process with
# runs in child processes: both keep this machine's own CPU kernels, never the pinned ones
# (tests/integration/test_cpu_kernels.py switches the pinning back on for its own children).
os.environ["COLORIZATION_CPU_KERNELS"] = "native"


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    """Registry models loaded by tests are cached in a temporary folder, never in ~/.cache."""
    os.environ["COLORIZATION_MODEL_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))


@pytest.fixture(autouse=True)
def _restore_environment():
    """Undo what a library leaves in os.environ (Dask's LocalCluster sets OMP_NUM_THREADS=1
    and friends), so a later test's subprocess runs as a user's would."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def params_dict() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def synthetic_data_params(root: Path, count: int, image_size: int) -> dict:
    """The repository's params with the data stages writing under `root`: `count` synthetic
    64 px pictures, line art at `image_size`, one worker."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["acquire"].update(out=str(root / "raw"), source="synthetic", min_size=32)
    p["acquire"]["synthetic"].update(count=count, size=64)
    p["lineart"].update(out=str(root / "lineart"), image_size=image_size, workers=1)
    p["histograms"].update(out=str(root / "histograms.parquet"))
    return p


def built_synthetic_store(root: Path, count: int, image_size: int) -> Path:
    """A params file under `root` whose acquire + preprocess outputs are already built."""
    from colorization.acquire import run_acquire
    from colorization.config import load_params
    from colorization.preprocess import build_preprocess

    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(synthetic_data_params(root, count, image_size), sort_keys=False))
    params = load_params(path)
    run_acquire(params.acquire)
    build_preprocess(params.acquire.out, params.lineart, params.histograms)
    return path


def train_model(params, kind: str, **kwargs) -> Path:
    """`train` on the store the params' preprocess stage wrote, wired as dvc.yaml wires it."""
    from colorization.config import StageInputs
    from colorization.train import train

    return train(params, kind, StageInputs.of(params), **kwargs)


# Tiny networks for training tests on a 32 px store: seconds per test on 2 CPU cores.
TINY = {
    "tracking.mlflow": False,
    "train.checkpoint_every": 10,
    "train.sample_every": 1000,
    "train.log_every": 10,
    "train.cnn.base_channels": 8,
    "train.cnn.depth": 2,
    "train.cnn.hint_dim": 16,
    "train.cgan.base_channels": 8,
    "train.cgan.depth": 5,
    "train.cgan.hint_dim": 32,
    "train.cgan.disc_channels": 8,
    "train.cgan.disc_layers": 2,
    "train.cgan.batch_size": 8,
    "train.hint.base_channels": 8,
    "train.hint.depth": 3,
}


def run_folder(tmp_path: Path, name: str) -> dict:
    """Where an in-process `train` writes: under tmp_path, never the working directory."""
    return {
        "out_dir": tmp_path / name / "model",
        "checkpoint_dir": tmp_path / name / "checkpoints",
        "plots_path": tmp_path / name / "losses.csv",
    }


def write_params(path: Path, source: Path, overrides: dict) -> None:
    """`source`'s params with dotted-key `overrides`, as a file a CLI run reads."""
    data = yaml.safe_load(source.read_text())
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))


# `python -c` this, then the CLI's arguments: the CLI, stopping itself once last.pt is published.
_STOP_AT_FIRST_CHECKPOINT = """
import os, runpy, signal
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if os.path.basename(os.fspath(dst)) == "last.pt":
        os.kill(os.getpid(), signal.SIGSTOP)
os.replace = replace
runpy.run_module("colorization", run_name="__main__")
"""


def kill_at_first_checkpoint(cli_args: list[str], cwd: Path, env: dict | None = None) -> None:
    """Run `colorization <cli_args>` until its first checkpoint is in place, and SIGKILL it there.

    The run stops itself (SIGSTOP) the moment last.pt is published and is killed while
    stopped: it dies right after that checkpoint, however loaded the machine."""
    stopped = subprocess.Popen(
        [sys.executable, "-c", _STOP_AT_FIRST_CHECKPOINT, *cli_args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status = os.waitpid(stopped.pid, os.WUNTRACED)  # returns when it stops (or ends)
    assert os.WIFSTOPPED(status), f"the run ended before its first checkpoint (status {status})"
    os.kill(stopped.pid, signal.SIGKILL)
    stopped.wait()


@pytest.fixture
def small_params(tmp_path: Path, params_dict: dict) -> Path:
    """params.yaml pointed at tmp_path, with a tiny synthetic dataset."""
    p = params_dict
    p["acquire"]["out"] = str(tmp_path / "raw")
    p["acquire"]["synthetic"].update(count=24, size=64)
    p["acquire"]["folder"]["input"] = str(tmp_path / "inbox")
    p["lineart"].update(out=str(tmp_path / "processed/lineart"), image_size=32)
    p["lineart"]["shard_size"] = 10
    p["lineart"]["workers"] = 1
    p["histograms"].update(out=str(tmp_path / "processed/histograms.parquet"))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def write_image(path: Path, image: np.ndarray, ext: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(ext or path.suffix, image)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def random_bgr(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The project's pipeline files copied into a fresh git + DVC working tree."""
    dest = tmp_path / "repo"
    ignore = shutil.ignore_patterns(
        ".venv",
        "data",
        "models",
        "metrics",
        "plots",
        "reports",
        "mlruns",
        "mlartifacts",
        "mlflow.db",
        "checkpoints",
        ".dvc-remote",
        "__pycache__",
        ".git",
        ".prefect",
        "*.egg-info",
        ".pytest_cache",
        ".ruff_cache",
    )
    shutil.copytree(REPO, dest, ignore=ignore)
    return dest
