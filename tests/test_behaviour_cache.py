"""The training cache key: a checkpoint is resumed only by a run with the same settings, data
and code; more steps alone keep it, a changed setting or a code change starts afresh."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

import colorization.models
from colorization.config import load_params
from tests.conftest import built_synthetic_store, train_model

TINY = {
    "tracking.mlflow": False,
    "train.checkpoint_every": 5,
    "train.sample_every": 1000,
    "train.log_every": 100,
    "train.cnn.base_channels": 4,
    "train.cnn.depth": 2,
    "train.cnn.hint_dim": 8,
    "train.cnn.batch_size": 4,
    "train.cnn.steps": 20,
}


class Interrupted(Exception):
    """Raised right after the first checkpoint is published, as a kill would end the run there."""


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    return built_synthetic_store(root, count=24, image_size=32)


def interrupted_run(params, folders: dict, monkeypatch) -> None:
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if Path(dst).name == "last.pt":
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace)
        with pytest.raises(Interrupted):
            train_model(params, "cnn", **folders)
    assert torch.load(folders["checkpoint_dir"] / "last.pt", weights_only=True)["step"] == 5


def folders(tmp_path: Path) -> dict:
    return {
        "out_dir": tmp_path / "model",
        "checkpoint_dir": tmp_path / "checkpoints",
        "plots_path": tmp_path / "losses.csv",
    }


def test_more_steps_alone_resume_the_checkpoint(params_file, tmp_path, monkeypatch, caplog):
    where = folders(tmp_path)
    interrupted_run(load_params(params_file, TINY), where, monkeypatch)
    with caplog.at_level(logging.INFO, logger="colorization"):
        train_model(
            load_params(params_file, {**TINY, "train.cnn.steps": 8}), "cnn", **where
        )  # steps in params
    assert "resuming cnn from step 5" in caplog.text
    assert "starting from scratch" not in caplog.text


def test_a_changed_setting_starts_afresh(params_file, tmp_path, monkeypatch, caplog):
    where = folders(tmp_path)
    interrupted_run(load_params(params_file, TINY), where, monkeypatch)
    with caplog.at_level(logging.INFO, logger="colorization"):
        train_model(load_params(params_file, {**TINY, "train.cnn.lr": 0.0005}), "cnn", steps=8, **where)
    assert "starting from scratch" in caplog.text and "resuming" not in caplog.text


def test_a_code_change_starts_afresh(params_file, tmp_path, monkeypatch, caplog):
    where = folders(tmp_path)
    interrupted_run(load_params(params_file, TINY), where, monkeypatch)
    # One more module among the networks' sources: the code is no longer the checkpoint's code.
    probe = Path(colorization.models.__file__).parent / "zz_cache_key_probe.py"
    probe.write_text("# written by tests/test_behaviour_cache.py, removed after it\n")
    try:
        with caplog.at_level(logging.INFO, logger="colorization"):
            train_model(load_params(params_file, TINY), "cnn", steps=8, **where)
    finally:
        probe.unlink()
    assert "starting from scratch" in caplog.text and "resuming" not in caplog.text
