"""Training end to end (the hint steers a trained c-GAN's colours; an MLflow run holds params,
metrics, images and the model) and in child processes (a second trainer on the same
checkpoints refuses; the training path imports no MLflow).

Everything trains tiny networks on a small synthetic store at 32 px.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from colorization.histogram import color_histogram
from colorization.inference import colorize
from colorization.locking import FolderBusy
from colorization.models import load_trained
from tests.conftest import REPO, run_folder, train_model
from tests.servers import HUNG_S
from tests.unit.test_train import (
    store_params,  # noqa: F401 (a fixture)
    tiny_params,
)


def test_hint_steers_cgan_output_histogram(store_params: Path, tmp_path: Path):  # noqa: F811
    params = tiny_params(store_params, train__cgan__lr=0.002)
    model_dir = train_model(params, "cgan", steps=300, **run_folder(tmp_path, "steer"))
    generator = load_trained(model_dir)
    from colorization.store import ProcessedStore

    images = ProcessedStore(params.lineart.out, params.histograms.out).load("train", limit=48)
    other = np.roll(images.hint, 7, axis=0)  # another picture's colours: other background hue

    def distances(hints, outputs):  # L1 between each output's histogram and the given hint
        return np.array([np.abs(color_histogram(o) - h).sum() for o, h in zip(outputs, hints, strict=True)])

    own_out = colorize(generator, images.lineart, images.hint)
    other_out = colorize(generator, images.lineart, other)
    # Same line art, another hint: the output's histogram moves toward that hint, for most
    # pictures and on average.
    before, after = distances(other, own_out), distances(other, other_out)
    assert (after < before).mean() >= 0.75
    assert after.mean() < before.mean() - 0.05


def test_mlflow_run_has_params_metrics_images_and_model(store_params: Path, tmp_path: Path, monkeypatch):  # noqa: F811
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = tiny_params(store_params, tracking__mlflow=True, train__sample_every=5, tracking__experiment="t")
    model_dir = train_model(params, "cnn", steps=12, **run_folder(tmp_path, "tracked"))
    run_info = json.loads((model_dir / "run.json").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(run_info["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["cnn.lr"] == str(params.train.cnn.lr)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(1, 13))
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts beside the sqlite file
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any("samples" in p for p in images)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(run_info["model_uri"])
    assert served.metadata.signature is not None
    request = {
        "lineart": np.full((2, 32, 32), 255, np.float32),
        "hint": np.full((2, 512), 1 / 512, np.float32),
    }
    coloured = served.predict(request)
    assert coloured.shape == (2, 32, 32, 3)
    expected = colorize(load_trained(model_dir), np.full((2, 32, 32), 255, np.uint8), request["hint"])
    np.testing.assert_array_equal(coloured, expected)  # the published folder is what MLflow serves
    # The logged model says which line art it takes: its config.json is the published one.
    from colorization.tracking.model_cache import load_registered

    recipe = json.loads((model_dir / "config.json").read_text())["lineart"]
    assert recipe == params.lineart.recipe().model_dump()
    assert load_registered(run_info["model_uri"])[1]["lineart"] == recipe


def test_importing_the_training_path_does_not_import_mlflow():
    code = "import sys, colorization.train, colorization.cli; assert 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_a_second_trainer_on_the_same_checkpoints_refuses(store_params: Path, tmp_path: Path):  # noqa: F811
    # The CLI's default checkpoint folder, relative to its working directory tmp_path.
    paths = {**run_folder(tmp_path, "locked"), "checkpoint_dir": tmp_path / "checkpoints" / "hint"}
    hold = (
        "import sys; from colorization.locking import FolderLock; lock = FolderLock(sys.argv[1]);"
        " print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(paths["checkpoint_dir"])],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match=rf"in use by another trainer \(PID {holder.pid}\)"):
            train_model(tiny_params(store_params), "hint", steps=3, **paths)
        assert not paths["plots_path"].exists()  # the holder's loss log is not touched

        data = yaml.safe_load(store_params.read_text())
        data["tracking"]["mlflow"] = False
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
        cmd = [
            sys.executable,
            "-m",
            "colorization",
            "train",
            "hint",
            "--steps",
            "3",
            "--params",
            "params.yaml",
        ]
        result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=HUNG_S)
        assert result.returncode == 1
        lines = [line for line in result.stderr.splitlines() if not line.startswith("INFO ")]
        expected = (
            f"error: checkpoints/hint is in use by another trainer (PID {holder.pid}); wait for it or stop it"
        )
        assert lines == [expected], result.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    train_model(tiny_params(store_params), "hint", steps=3, **paths)  # the holder gone, the lock is free
