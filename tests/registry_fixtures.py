"""Tiny models logged and registered in temporary MLflow stores, as training and `register` do:
shared by the unit and the integration tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from colorization.config import DEFAULT_RECIPE, StageInputs, load_params
from colorization.evaluate import run_evaluate
from colorization.models import build_model, model_config
from colorization.tracking import registry
from colorization.tracking.runs import TrainingRun
from colorization.tracking.serving import example_input, predict
from tests.unit.test_evaluate import IMAGE_SIZE, build_project, save_model_dir

EXPERIMENT = "registry-test"


def log_toy_model(models_dir: Path, kind: str, seed: int = 0) -> str:
    """Write models/<kind> and log its serving form in a finished run, as `train` does; returns the run id."""
    net = save_model_dir(models_dir / kind, kind, seed=seed)
    run = TrainingRun(EXPERIMENT, run_name=f"train-{kind}", tags={"model": kind})
    lineart = np.full((2, IMAGE_SIZE, IMAGE_SIZE), 255, np.uint8)
    example = example_input(kind, lineart, np.full((2, 512), 1 / 512, np.float32))
    output = predict(net, json.loads((models_dir / kind / "config.json").read_text()), example)
    uri = run.log_model(models_dir / kind, example, output)
    run.finish()
    info = {"run_id": run.run_id, "experiment_id": run.experiment_id, "model_uri": uri, "kind": kind}
    (models_dir / kind / "run.json").write_text(json.dumps(info))
    return run.run_id


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    """A project (data, evaluation) and an empty sqlite registry, MLFLOW_TRACKING_URI pointed at it."""
    root = tmp_path_factory.mktemp("registry")
    params_file = build_project(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        for kind in ("cnn", "cgan", "hint"):
            log_toy_model(root / "models", kind)
        evaluate_project(params_file)
        yield params_file
    mlflow.set_tracking_uri(None)


def evaluate_project(params_file: Path) -> None:
    params = load_params(params_file)
    run_evaluate(params.evaluate, StageInputs.of(params))


NAME = "lineart-cgan"


HINT_FOLLOWING = {  # the hint's mean colour as input planes: colours follow the hint even untrained
    "cnn": {"base_channels": 4, "depth": 2, "hint_dim": 8, "hint_planes": True},
    "cgan": {"base_channels": 4, "depth": 3, "hint_dim": 8, "hint_planes": True, "local_hints": True},
}


# A line-art recipe as training records it, other than the built-in one an older model gets.
XDOG_RECIPE = DEFAULT_RECIPE.model_copy(update={"extractor": "xdog"})


def save_hint_following(folder: Path, kind: str = "cgan", seed: int = 0, recipe=None):
    """A models/<kind> folder: a tiny untrained generator whose colours follow its hint's mean."""
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    net = build_model(kind, HINT_FOLLOWING[kind]).eval()
    torch.save(net.state_dict(), folder / "model.pt")
    config = model_config(kind, HINT_FOLLOWING[kind], IMAGE_SIZE, recipe)
    (folder / "config.json").write_text(json.dumps(config))
    return net


def register_hint_following_cgan(root: Path, seed: int = 0, psnr: float = 20.0):
    """models/cgan as `train` leaves it (weights, config, run.json), logged and registered.

    Returns the network and the Registration (a better `psnr` takes champion)."""
    folder = root / f"models-{seed}" / "cgan"
    net = save_hint_following(folder, seed=seed, recipe=XDOG_RECIPE)
    paper = np.full((2, IMAGE_SIZE, IMAGE_SIZE), 255, np.uint8)
    example = example_input("cgan", paper, np.full((2, 512), 1 / 512, np.float32))
    output = predict(net, json.loads((folder / "config.json").read_text()), example)
    run = TrainingRun("serving-test", run_name="train-cgan", tags={"model": "cgan"})
    uri = run.log_model(folder, example, output)
    run.finish()
    (folder / "run.json").write_text(json.dumps({"run_id": run.run_id, "model_uri": uri, "kind": "cgan"}))
    evaluation = {"cgan": {"psnr": psnr}, "split_fingerprint": "test", "split": "test"}
    return net, registry.register_model("cgan", NAME, "cgan.psnr", "max", folder, evaluation, {})
