"""Prefect tasks of the model stages: the functions `colorization train|evaluate|register` call.

Training is a pure function of the processed data and its params (seeded), and the
slowest step, so it is cached like the data steps: a nightly run that fetched nothing
new keeps the models (and MLflow runs) it already has. Evaluate and register are not
cached: registering reads the MLflow registry, which changes outside these files.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from colorization.config import Params
from tasks.caching import files_and_params_key, outputs_digest

MODELS = ("cnn", "cgan", "hint")  # every one is evaluated and registered


def _train_key_args(inputs: dict) -> dict:
    """What a model's training depends on: its own section and the shared training knobs."""
    params, kind = inputs["params"], inputs["kind"]
    others = set(MODELS) - {kind}
    return {"kind": kind, "train": params.train.model_dump(exclude=others)}


def _train_reads(inputs: dict) -> list[Path]:
    # The store's meta.json carries the fingerprint of every line-art image and its params.
    params = inputs["params"]
    return [Path(params.lineart.out) / "meta.json", Path(params.histograms.out)]


def train_outputs(kind: str) -> list[str]:
    """The train_<kind> stage's outs in dvc.yaml (train() writes them at these default paths)."""
    return [f"models/{kind}", f"plots/train/{kind}.csv"]


TRAIN_CODE = ("colorization.augment", "colorization.train", "colorization.models", "colorization.device")


@task(
    name="train",
    task_run_name="train-{kind}",
    cache_key_fn=files_and_params_key(reads=_train_reads, code=TRAIN_CODE, key_args=_train_key_args),
    persist_result=True,
)
def train_model(params: Params, kind: str) -> dict:
    """Train one model into models/<kind>; returns its run.json (the MLflow run id)."""
    from colorization.train import train

    folder = train(params, kind)
    return {
        "model_dir": str(folder),
        "run": json.loads((folder / "run.json").read_text()),
        "outputs": outputs_digest(train_outputs(kind)),
    }


@task(name="evaluate")
def evaluate(params: Params) -> dict:
    """Score every method on the test split and log it to MLflow, as `colorization evaluate` does.

    Returns the metrics and the id of the MLflow run holding them (None without MLflow).
    """
    from colorization.evaluate import evaluate_stage

    metrics, run_id = evaluate_stage(params)
    return {"metrics": metrics, "mlflow_run_id": run_id}


@task(name="register")
def register(params: Params) -> list[dict]:
    """Register every trained model; promotes a version only when it beats the champion."""
    from dataclasses import asdict

    from colorization.register import run_register

    return [asdict(r) for r in run_register(params)]
