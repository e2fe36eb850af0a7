"""The training loop in-process: losses fall and the model is published, the weight average,
the learning-rate schedule, the NaN stop, training without MLflow, a checkpoint resumed only
when nothing but the step count changed, and the refusals.

Everything trains tiny networks on a small synthetic store at 32 px.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import colorization.models
from colorization.atomic import OUTPUT_MARKER, NotOurFolder
from colorization.config import load_params
from colorization.inference import predict_hint
from colorization.metrics import kl_divergence
from colorization.models import load_trained
from colorization.models.specs import SPECS
from colorization.store import ProcessedStore
from colorization.train import NonFiniteLoss, learning_rate
from tests.conftest import TINY, built_synthetic_store, run_folder, train_model


@pytest.fixture(scope="module")
def store_params(tmp_path_factory) -> Path:
    """A params file whose store holds 160 synthetic images at 32 px (built once per module)."""
    root = tmp_path_factory.mktemp("store")
    return built_synthetic_store(root, count=160, image_size=32)


def tiny_params(path: Path, **overrides):
    return load_params(path, {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}})


def test_the_cgan_publishes_its_weight_average_and_training_is_unchanged(store_params: Path, tmp_path: Path):
    runs = {}
    for decay in (0.0, 0.9):
        paths = run_folder(tmp_path, f"decay-{decay}")
        params = tiny_params(store_params, train__cgan__ema_decay=decay)
        model = torch.load(train_model(params, "cgan", steps=30, **paths) / "model.pt", weights_only=True)
        runs[decay] = model, paths["plots_path"].read_text()
    (last, last_losses), (average, average_losses) = runs[0.0], runs[0.9]
    assert average_losses == last_losses  # the average is only read: the same 30 steps were taken
    assert last.keys() == average.keys()
    assert any(not torch.equal(last[k], average[k]) for k in last)  # and it is what was published


def test_non_finite_loss_stops_naming_the_step(store_params: Path, tmp_path: Path, monkeypatch):
    real_step = SPECS["cnn"].step
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        losses = real_step(*args)
        return {"loss": losses["loss"] * float("nan")} if calls["n"] == 13 else losses

    monkeypatch.setitem(SPECS, "cnn", dataclasses.replace(SPECS["cnn"], step=poisoned))
    paths = run_folder(tmp_path, "nan")
    with pytest.raises(NonFiniteLoss, match=r"step 13 .*last good checkpoint kept"):
        train_model(tiny_params(store_params), "cnn", steps=30, **paths)
    assert torch.load(paths["checkpoint_dir"] / "last.pt", weights_only=True)["step"] == 10
    assert not paths["out_dir"].exists()


def test_every_optimiser_steps_with_the_scheduled_learning_rate_also_after_a_resume(
    store_params: Path, tmp_path: Path, monkeypatch
):
    """learning_rate() is the schedule; this checks the loop applies it: at each step every
    optimiser (the c-GAN's generator and discriminator) holds learning_rate(step), constant and
    then falling, and a run resumed from its checkpoint goes on down the same schedule."""
    real_step, steps = SPECS["cgan"].step, 20
    seen: list[dict[str, float]] = []

    class Stop(Exception):  # ends the first run after step 13: its checkpoint is step 10's
        pass

    def recording(nets, *args):
        seen.append({k: g["lr"] for k, opt in nets.optimizers.items() for g in opt.param_groups})
        if len(seen) == 13:
            raise Stop
        return real_step(nets, *args)

    monkeypatch.setitem(SPECS, "cgan", dataclasses.replace(SPECS["cgan"], step=recording))
    params = tiny_params(store_params, train__lr_decay=0.5)
    base = params.train.cgan.lr
    paths = run_folder(tmp_path, "schedule")
    with pytest.raises(Stop):
        train_model(params, "cgan", steps=steps, **paths)
    train_model(params, "cgan", steps=steps, **paths)  # resumes from step 10: steps 11..20 again

    done = [*range(1, 14), *range(11, steps + 1)]
    expected = [learning_rate(base, step, steps, 0.5) for step in done]
    assert expected[9] == base > expected[10] > expected[-1] > 0  # the schedule does fall
    assert len(seen) == len(done)
    for step, lrs, lr in zip(done, seen, expected, strict=True):
        assert lrs == {"model": pytest.approx(lr), "discriminator": pytest.approx(lr)}, step


def test_losses_fall_and_outputs_are_published(store_params: Path, tmp_path: Path):
    paths = run_folder(tmp_path, "hint")
    model_dir = train_model(tiny_params(store_params), "hint", steps=40, **paths)
    kl = np.loadtxt(paths["plots_path"], delimiter=",", skiprows=1)[:, 1]
    assert kl[-10:].mean() < kl[:10].mean()
    config = json.loads((model_dir / "config.json").read_text())
    assert config["kind"] == "hint" and config["image_size"] == 32
    assert json.loads((model_dir / "run.json").read_text())["run_id"] is None  # tracking off
    assert (model_dir / "samples.png").exists()
    # The published weights are the trained ones: on its training drawings the model's hints
    # are closer to the true ones than a uniform palette (what the untrained net outputs).
    params = load_params(store_params)
    store = ProcessedStore(params.lineart.out, params.histograms.out)
    seen = store.load("train", limit=64)
    model = load_trained(model_dir)
    predicted = predict_hint(model, seen.lineart, raw=True)
    uniform = np.full_like(predicted, 1 / 512)
    assert kl_divergence(seen.hint, predicted).mean() < 0.95 * kl_divergence(seen.hint, uniform).mean()
    # The automatic hint leans towards the train split's average hint by the configured trust.
    trust = params.train.hint.trust
    assert 0 < trust < 1 and config["arch"]["trust"] == trust
    expected = trust * predicted + (1 - trust) * store.mean_hint("train")[None]
    np.testing.assert_allclose(predict_hint(model, seen.lineart), expected, atol=1e-5)


def test_train_replaces_only_a_model_folder_it_wrote(store_params: Path, tmp_path: Path):
    paths = run_folder(tmp_path, "hint")
    out = paths["out_dir"]
    out.mkdir(parents=True)
    (out / "precious.txt").write_text("mine")
    with pytest.raises(NotOurFolder) as err:  # at once: before a step is trained or logged
        train_model(tiny_params(store_params), "hint", steps=10, **paths)
    assert str(err.value).startswith(f"{out}: not a model folder") and "\n" not in str(err.value)
    assert [p.name for p in out.iterdir()] == ["precious.txt"] and (
        out / "precious.txt"
    ).read_text() == "mine"
    assert not paths["checkpoint_dir"].exists() and not paths["plots_path"].exists()
    (out / "precious.txt").unlink()
    train_model(tiny_params(store_params), "hint", steps=10, **paths)  # an empty folder: taken
    assert (out / OUTPUT_MARKER).read_text() == "model\n"
    (out / OUTPUT_MARKER).unlink()  # as the version before the marker left it: model.pt + config.json
    train_model(tiny_params(store_params), "hint", steps=10, **paths)
    assert sorted(p.name for p in out.iterdir()) == [
        OUTPUT_MARKER,
        "config.json",
        "model.pt",
        "run.json",
        "samples.png",
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["checkpoints", "losses.csv", "model"]


def test_a_store_that_records_no_line_art_recipe_is_refused_before_training(store_params, tmp_path):
    import shutil

    from colorization.config import StageInputs
    from colorization.train import train

    params = tiny_params(store_params)
    old = tmp_path / "old-store"
    shutil.copytree(params.lineart.out, old)
    meta = json.loads((old / "meta.json").read_text())
    del meta["lineart"]  # as preprocess wrote it before models recorded their recipe
    (old / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="old-store records no line-art recipe: rebuild it"):
        train(params, "cnn", StageInputs.of(params, store=old), steps=1, **run_folder(tmp_path, "old"))
    assert not (tmp_path / "old").exists()


def test_training_runs_without_mlflow_installed(store_params: Path, tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    monkeypatch.delitem(sys.modules, "colorization.tracking.runs", raising=False)
    params = tiny_params(store_params, tracking__mlflow=True)
    model_dir = train_model(params, "hint", steps=3, **run_folder(tmp_path, "no-mlflow"))
    assert json.loads((model_dir / "run.json").read_text())["run_id"] is None
    assert "training without tracking" in caplog.text


def test_the_train_command_trains_on_the_store_it_is_handed(store_params: Path, tmp_path: Path, monkeypatch):
    """dvc.yaml hands each stage its inputs (`--store ${lineart.out} ...`): the command reads
    those, never another stage's section, so a params file pointing elsewhere does not matter."""
    from typer.testing import CliRunner

    from colorization.cli import app

    built = load_params(store_params)
    data = yaml.safe_load(store_params.read_text())
    data["lineart"]["out"] = str(tmp_path / "elsewhere" / "lineart")
    data["histograms"]["out"] = str(tmp_path / "elsewhere" / "histograms.parquet")
    data["tracking"]["mlflow"] = False
    data["train"]["hint"].update(base_channels=8, depth=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)  # checkpoints/ and plots/ land here
    command = ["train", "hint", "--params", "params.yaml", "--steps", "3", "--out", "model"]

    unwired = CliRunner().invoke(app, command)
    assert unwired.exit_code == 1 and "elsewhere" in unwired.output  # its own default: not built

    handed = ["--store", built.lineart.out, "--histograms", built.histograms.out]
    wired = CliRunner().invoke(app, [*command, *handed])
    assert wired.exit_code == 0, wired.output
    losses = np.genfromtxt(tmp_path / "plots" / "train" / "hint.csv", delimiter=",", names=True)
    assert len(losses) == 3


def test_each_kind_gets_the_optimiser_and_averaging_its_spec_reads_from_its_section(store_params: Path):
    from colorization.train import build_nets

    params = tiny_params(store_params, train__cgan__beta1=0.3, train__cgan__ema_decay=0.9)
    cgan = build_nets("cgan", params, torch.device("cpu"))
    assert {o.param_groups[0]["betas"] for o in cgan.optimizers.values()} == {(0.3, 0.999)}
    assert set(cgan.averaged) == {"model"}
    cnn = build_nets("cnn", params, torch.device("cpu"))
    assert cnn.optimizers["model"].param_groups[0]["betas"] == (0.9, 0.999) and not cnn.averaged
    assert not build_nets(
        "cgan", tiny_params(store_params, train__cgan__ema_decay=0.0), torch.device("cpu")
    ).averaged


RESUME_TINY = {
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
    interrupted_run(load_params(params_file, RESUME_TINY), where, monkeypatch)
    with caplog.at_level(logging.INFO, logger="colorization"):
        train_model(
            load_params(params_file, {**RESUME_TINY, "train.cnn.steps": 8}), "cnn", **where
        )  # steps in params
    assert "resuming cnn from step 5" in caplog.text
    assert "starting from scratch" not in caplog.text


def test_a_changed_setting_starts_afresh(params_file, tmp_path, monkeypatch, caplog):
    where = folders(tmp_path)
    interrupted_run(load_params(params_file, RESUME_TINY), where, monkeypatch)
    with caplog.at_level(logging.INFO, logger="colorization"):
        train_model(
            load_params(params_file, {**RESUME_TINY, "train.cnn.lr": 0.0005}), "cnn", steps=8, **where
        )
    assert "starting from scratch" in caplog.text and "resuming" not in caplog.text


def test_a_code_change_starts_afresh(params_file, tmp_path, monkeypatch, caplog):
    where = folders(tmp_path)
    interrupted_run(load_params(params_file, RESUME_TINY), where, monkeypatch)
    # One more module among the networks' sources: the code is no longer the checkpoint's code.
    probe = Path(colorization.models.__file__).parent / "zz_cache_key_probe.py"
    probe.write_text("# written by tests/unit/test_train.py, removed after it\n")
    try:
        with caplog.at_level(logging.INFO, logger="colorization"):
            train_model(load_params(params_file, RESUME_TINY), "cnn", steps=8, **where)
    finally:
        probe.unlink()
    assert "starting from scratch" in caplog.text and "resuming" not in caplog.text


def test_learning_rate_is_constant_then_falls_linearly_to_nearly_zero():
    from colorization.train import learning_rate

    steps = 100
    lrs = [learning_rate(1e-3, step, steps, decay=0.5) for step in range(1, steps + 1)]
    assert lrs[:50] == [1e-3] * 50  # the first half untouched
    assert all(a > b for a, b in zip(lrs[50:], lrs[51:], strict=False))  # then strictly falling
    assert lrs[-1] == pytest.approx(1e-3 / 51)  # the last step still moves, a little
    assert [learning_rate(1e-3, s, steps, decay=0.0) for s in (1, 99, 100)] == [1e-3] * 3
