"""The training loop: exact resume after SIGKILL, NaN stop, hint steering, MLflow on / off.

Everything trains tiny networks on a small synthetic store at 32 px, so each test takes
seconds on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from colorization.atomic import OUTPUT_MARKER, NotOurFolder
from colorization.config import load_params
from colorization.histogram import color_histogram
from colorization.inference import colorize, predict_hint
from colorization.locking import FolderBusy
from colorization.metrics import kl_divergence
from colorization.models import load_trained
from colorization.models.specs import SPECS
from colorization.store import ProcessedStore
from colorization.train import NonFiniteLoss, learning_rate
from tests.conftest import (
    TINY,
    built_synthetic_store,
    kill_at_first_checkpoint,
    run_folder,
    train_model,
    write_params,
)
from tests.servers import HUNG_S

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store_params(tmp_path_factory) -> Path:
    """A params file whose store holds 160 synthetic images at 32 px (built once per module)."""
    root = tmp_path_factory.mktemp("store")
    return built_synthetic_store(root, count=160, image_size=32)


def tiny_params(path: Path, **overrides):
    return load_params(path, {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}})


def test_sigkill_then_resume_ends_bit_identical(store_params: Path, tmp_path: Path):
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


def test_hint_steers_cgan_output_histogram(store_params: Path, tmp_path: Path):
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


def test_mlflow_run_has_params_metrics_images_and_model(store_params: Path, tmp_path: Path, monkeypatch):
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


def test_importing_the_training_path_does_not_import_mlflow():
    code = "import sys, colorization.train, colorization.cli; assert 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_a_second_trainer_on_the_same_checkpoints_refuses(store_params: Path, tmp_path: Path):
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


@pytest.mark.parametrize("l2_weight", [0.0, 200.0])
def test_an_uncertain_hint_asks_the_cgan_for_the_mean_colour(l2_weight: float):
    """Three pictures share one line art and one hint that says nothing (certainty 0): two are
    black, one white. L1 alone wants their median, black; the uncertain-hint L2 pulls the
    output towards their mean, a dark grey (PSNR's best guess when the colours are unknown)."""
    from colorization.models.cgan import PatchDiscriminator, UNetGenerator
    from colorization.models.steps import Batch, Nets, cgan_step

    torch.manual_seed(0)
    section = load_params(REPO / "params.yaml").train.cgan.model_copy(
        update={"uncertain_l2_weight": l2_weight, "lr": 0.01}
    )
    gen = UNetGenerator(base_channels=4, depth=3, hint_dim=8, hint_planes=True)
    disc = PatchDiscriminator(base_channels=4, layers=2)
    modules = {"model": gen, "discriminator": disc}
    optimizers = {
        k: torch.optim.Adam(v.parameters(), lr=section.lr, betas=(0.5, 0.999)) for k, v in modules.items()
    }
    nets = Nets(modules, dict(modules), optimizers)
    lineart = torch.where(torch.rand(1, 1, 16, 16) < 0.2, -1.0, 1.0).expand(3, 1, 16, 16)
    color = torch.tensor([-1.0, -1.0, 1.0])[:, None, None, None].expand(3, 3, 16, 16)
    hint = torch.full((3, 512), 1 / 512)
    batch = Batch(lineart=lineart, color=color, hint=hint, certainty=torch.zeros(3))
    for _ in range(150):
        cgan_step(nets, batch, section, torch.device("cpu"))
    with torch.no_grad():
        level = gen(lineart, hint).mean().item()
    if l2_weight:
        assert -0.7 < level < -0.1, level  # near the mean, -1/3
    else:
        assert level < -0.8, level  # the median, black


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


@pytest.mark.parametrize("local_weight", [0.0, 50.0])
def test_the_local_l1_term_makes_the_cgan_obey_its_dots(local_weight: float):
    """Red dots on pictures that are white there: L1 alone paints the dots white (the target);
    the local term (`local_l1_weight`) asks for the colour the dots give."""
    from colorization.models.cgan import PatchDiscriminator, UNetGenerator
    from colorization.models.steps import Batch, Nets, cgan_step

    torch.manual_seed(0)
    section = load_params(REPO / "params.yaml").train.cgan.model_copy(
        update={"local_l1_weight": local_weight, "uncertain_l2_weight": 0.0, "lr": 0.01}
    )
    gen = UNetGenerator(base_channels=4, depth=3, hint_dim=8, hint_planes=True, local_hints=True)
    disc = PatchDiscriminator(base_channels=4, layers=2)
    modules = {"model": gen, "discriminator": disc}
    optimizers = {
        k: torch.optim.Adam(v.parameters(), lr=section.lr, betas=(0.5, 0.999)) for k, v in modules.items()
    }
    nets = Nets(modules, dict(modules), optimizers)
    lineart = torch.ones(2, 1, 16, 16)
    color = torch.ones(2, 3, 16, 16)  # white
    local = torch.zeros(2, 4, 16, 16)
    local[:, :, 4, 4] = local[:, :, 11, 9] = torch.tensor([1.0, -1.0, -1.0, 1.0])  # red dots
    batch = Batch(lineart=lineart, color=color, hint=torch.full((2, 512), 1 / 512), local=local)
    for _ in range(150):
        cgan_step(nets, batch, section, torch.device("cpu"))
    with torch.no_grad():
        green_at_dots = gen(lineart, batch.hint, local)[:, 1][local[:, 3] > 0].mean().item()
    if local_weight:
        assert green_at_dots < -0.5, green_at_dots  # red: the dots' colour
    else:
        assert green_at_dots > 0.5, green_at_dots  # white: the target's
