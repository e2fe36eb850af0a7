"""Training under torchrun: two gloo ranks on CPU end with identical weights, one MLflow run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from colorization.acquire import run_acquire
from colorization.config import load_params
from colorization.preprocess import build_preprocess
from tests.conftest import synthetic_data_params
from tests.servers import HUNG_S

# torch's console script sits beside the interpreter running the tests, whichever venv that is.
TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_torchrun_is_installed_beside_the_interpreter():
    assert TORCHRUN.exists(), f"{TORCHRUN} missing: torch installs it; the DDP test would not run"


def test_two_ranks_train_identical_weights_one_mlflow_run(tmp_path: Path):
    mlflow = pytest.importorskip("mlflow")
    p = synthetic_data_params(tmp_path, count=24, image_size=32)
    p["tracking"].update(mlflow=True, experiment="ddp")
    p["train"].update(checkpoint_every=3, sample_every=1000, log_every=1)
    p["train"]["cnn"].update(base_channels=8, depth=2, hint_dim=16, batch_size=4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    params = load_params(tmp_path / "params.yaml")
    run_acquire(params.acquire)
    build_preprocess(params.acquire.out, params.lineart, params.histograms)

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": db}
    # --standalone: the rendezvous store binds port 0 on this host, so no port can be taken first.
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "colorization", "-v", "train", "cnn"]
    cmd += ["--params", "params.yaml", "--steps", "5"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HUNG_S)
    assert done.returncode == 0, done.stderr[-4000:]

    hashes = dict(re.findall(r"rank (\d) weights ([0-9a-f]{16})", done.stderr))
    assert set(hashes) == {"0", "1"}, done.stderr[-4000:]
    assert hashes["0"] == hashes["1"]
    assert "rank 0 of 2" in done.stderr and "rank 1 of 2" in done.stderr

    model = tmp_path / "models" / "cnn" / "model.pt"
    assert model.exists() and torch.load(model, weights_only=True)
    assert not (tmp_path / "checkpoints" / "cnn" / "last.pt").exists()  # removed once published
    rows = (tmp_path / "plots" / "train" / "cnn.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3", "4", "5"]  # one writer, no dupes

    client = mlflow.MlflowClient(db)
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1
    assert runs[0].data.params["world_size"] == "2"
    assert len(client.get_metric_history(runs[0].info.run_id, "loss")) == 5
