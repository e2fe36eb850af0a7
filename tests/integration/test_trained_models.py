"""Behaviour of trained models, measured on held-out pictures (the store's test split, never
trained on): training lowers each loss and beats a trivial baseline; the palette, the
reference and the hint decide the colours; the output follows the line art; the automatic
hint method colours with the hint model's prediction.

One tiny store and three tiny models are trained once for the module (CPU, seconds).
Each test was seen to fail on a deliberately broken version of the code it guards
(bench/MUTATION.md, "Behaviour tests and the broken versions they catch").
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from colorization import metrics as m
from colorization.acquire import run_acquire
from colorization.cli import app
from colorization.config import StageInputs, load_params
from colorization.evaluate import TrainingReference, evaluate_models, flat_fill, load_split
from colorization.histogram import color_histogram
from colorization.inference import colorize, predict_hint
from colorization.models import load_trained
from colorization.preprocess import build_preprocess
from colorization.store import ProcessedStore
from tests.conftest import TINY as BASE_TINY
from tests.conftest import synthetic_data_params, train_model

SIZE = 32
STEPS = {"cnn": 200, "cgan": 300, "hint": 150}
# conftest's tiny networks, trained longer: faster learning rates, a deeper CNN, few logs.
TINY = {
    **BASE_TINY,
    "train.checkpoint_every": 1000,
    "train.log_every": 50,
    "train.cnn.depth": 3,
    "train.cnn.lr": 0.002,
    "train.cgan.lr": 0.002,
}


class Trained:
    def __init__(self, root: Path, params_file: Path):
        self.root, self.params_file = root, params_file
        self.params = load_params(params_file, TINY)
        self.store = ProcessedStore(self.params.lineart.out, self.params.histograms.out)
        self.test = self.store.load("test")  # held out: train_model() reads only the train split
        self.train_ids = set(self.store.load("train").ids)
        self.dirs: dict[str, Path] = {}
        self.losses: dict[str, np.ndarray] = {}

    def model(self, kind: str):
        return load_trained(self.dirs[kind])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    root = tmp_path_factory.mktemp("behaviour")
    p = synthetic_data_params(root, count=160, image_size=SIZE)
    p["lineart"]["split"].update(val=0.05, test=0.2)
    p["train"]["out"] = str(root / "m")
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(p, sort_keys=False))
    params = load_params(params_file)
    run_acquire(params.acquire)
    build_preprocess(params.acquire.out, params.lineart, params.histograms)
    t = Trained(root, params_file)
    for kind, steps in STEPS.items():
        folder = root / "runs" / kind
        t.dirs[kind] = train_model(
            t.params,
            kind,
            steps=steps,
            out_dir=root / "m" / kind,
            checkpoint_dir=folder / "checkpoints",
            plots_path=folder / "losses.csv",
        )
        t.losses[kind] = np.genfromtxt(folder / "losses.csv", delimiter=",", names=True)
    return t


def test_the_test_split_is_held_out(trained):
    assert len(trained.test) >= 20
    assert not set(trained.test.ids) & trained.train_ids


# ---------------------------------------------------------------- training works


def l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.mark.parametrize("kind", ["cnn", "cgan"])
def test_training_lowers_the_loss_and_beats_a_flat_fill(trained, kind):
    losses = trained.losses[kind]["loss" if kind == "cnn" else "g_l1"]  # the L1 to the true colours
    first, last = losses[:20].mean(), losses[-20:].mean()
    assert last < 0.9 * first, f"{kind} loss {first:.4f} -> {last:.4f}"
    test = trained.test
    out = colorize(trained.model(kind), test.lineart, test.hint)
    trivial = flat_fill(test.lineart, trained.store.mean_colour("train"))  # the training mean colour
    assert l1(out, test.color) < 0.85 * l1(trivial, test.color), (
        l1(out, test.color),
        l1(trivial, test.color),
    )


def test_training_the_hint_model_beats_the_uniform_hint(trained):
    kl = trained.losses["hint"]["kl"]
    assert kl[-20:].mean() < 0.9 * kl[:20].mean()
    test = trained.test
    predicted = predict_hint(trained.model("hint"), test.lineart, raw=True)  # the network alone
    uniform = np.full_like(predicted, 1.0 / predicted.shape[1])
    got, trivial = m.kl_divergence(test.hint, predicted).mean(), m.kl_divergence(test.hint, uniform).mean()
    assert got < 0.9 * trivial, (got, trivial)


# ---------------------------------------------------------------- colours come from the hint


def paper_mean(images: np.ndarray, lineart: np.ndarray) -> np.ndarray:
    """Mean RGB of each picture over its paper (non-line) pixels: float [N, 3]."""
    paper = (lineart > 127)[..., None]
    return (images * paper).sum(axis=(1, 2)) / paper.sum(axis=(1, 2))


def write_drawings(folder: Path, lineart: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, lines in enumerate(lineart):
        cv2.imwrite(str(folder / f"{i:03d}.png"), lines)
    return folder


def read_outputs(folder: Path, count: int) -> np.ndarray:
    return np.stack(
        [cv2.cvtColor(cv2.imread(str(folder / f"{i:03d}.png")), cv2.COLOR_BGR2RGB) for i in range(count)]
    )


def colorize_cli(trained: Trained, kind: str, drawings: Path, out: Path, *hint: str) -> np.ndarray:
    args = ["colorize", str(drawings), "-o", str(out), "--model", str(trained.dirs[kind])]
    result = CliRunner().invoke(app, [*args, *hint, "--params", str(trained.params_file), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return read_outputs(out, len(trained.test))


@pytest.mark.parametrize("kind", ["cnn", "cgan"])
def test_a_red_palette_colours_held_out_drawings_redder_than_a_blue_one(trained, kind, tmp_path):
    drawings = write_drawings(tmp_path / "drawings", trained.test.lineart)
    red = paper_mean(
        colorize_cli(trained, kind, drawings, tmp_path / "red", "--palette", "#ff0000"), trained.test.lineart
    )
    blue = paper_mean(
        colorize_cli(trained, kind, drawings, tmp_path / "blue", "--palette", "#0000ff"), trained.test.lineart
    )
    redness = lambda rgb: rgb[:, 0] - rgb[:, 2]  # noqa: E731
    assert (redness(red) > redness(blue)).mean() >= 0.9, (redness(red), redness(blue))
    assert (redness(red) - redness(blue)).mean() > 40  # R - B levels, out of 510


def test_a_reference_moves_the_output_toward_its_own_colours(trained, tmp_path):
    test = trained.test
    drawings = write_drawings(tmp_path / "drawings", test.lineart)
    # Two held-out pictures of far-apart colours as references.
    means = test.color.reshape(len(test), -1, 3).mean(axis=1)
    a, b = int(np.argmax(means[:, 0] - means[:, 2])), int(np.argmax(means[:, 2] - means[:, 0]))
    refs = {}
    for name, index in (("a", a), ("b", b)):
        refs[name] = tmp_path / f"ref-{name}.png"
        cv2.imwrite(str(refs[name]), cv2.cvtColor(test.color[index], cv2.COLOR_RGB2BGR))
    out = {
        name: colorize_cli(trained, "cgan", drawings, tmp_path / name, "--reference", str(ref))
        for name, ref in refs.items()
    }
    hist = {name: color_histogram(test.color[i]) for name, i in (("a", a), ("b", b))}

    def distance(images: np.ndarray, target: np.ndarray) -> np.ndarray:  # L1 of histograms, 0..2
        return np.array([np.abs(color_histogram(x) - target).sum() for x in images])

    # With reference A the outputs are nearer A's colours than with reference B, and vice versa.
    for own, other in (("a", "b"), ("b", "a")):
        closer = distance(out[own], hist[own]) < distance(out[other], hist[own])
        assert closer.mean() >= 0.8, (own, closer)
        mean_own = paper_mean(out[own], test.lineart).mean(axis=0)
        mean_other = paper_mean(out[other], test.lineart).mean(axis=0)
        target = test.color[a if own == "a" else b].reshape(-1, 3).mean(axis=0)
        assert np.abs(mean_own - target).sum() < np.abs(mean_other - target).sum()


def test_the_hint_steers_held_out_outputs_to_its_colours(trained):
    """Target: given another picture's hint, the output's mean colour lies nearer that hint's
    mean colour than its own hint's, for at least 3 in 4 held-out pictures."""
    from colorization.histogram import mean_colour as hint_mean_colour

    test = trained.test
    other = np.roll(test.hint, len(test) // 2, axis=0)
    generator = trained.model("cgan")
    steered = colorize(generator, test.lineart, other).reshape(len(test), -1, 3).mean(axis=1)
    to_other = np.abs(steered - hint_mean_colour(other)).sum(axis=1)
    to_own = np.abs(steered - hint_mean_colour(test.hint)).sum(axis=1)
    assert (to_other < to_own).mean() >= 0.75, (to_other, to_own)


def test_the_output_follows_the_line_art(trained):
    test = trained.test
    generator = trained.model("cgan")
    out = colorize(generator, test.lineart, test.hint).astype(np.float64)
    luma = out.mean(axis=3)
    lines = test.lineart < 128
    line_level = np.array([luma[i][lines[i]].mean() for i in range(len(test))])
    paper_level = np.array([luma[i][~lines[i]].mean() for i in range(len(test))])
    darker = paper_level - line_level
    assert (darker > 0).mean() >= 0.9 and darker.mean() > 20, darker  # lines are drawn dark
    # Other line art, same hints: the pictures change, and where the lines moved.
    swapped = colorize(generator, np.roll(test.lineart, 1, axis=0), test.hint).astype(np.float64)
    moved = lines != np.roll(lines, 1, axis=0)
    assert np.abs(swapped - out).mean(axis=3)[moved].mean() > 30


# ---------------------------------------------------------------- evaluation methods


def test_the_auto_hint_method_colours_with_the_predicted_hint(trained):
    split = load_split(trained.params.evaluate, StageInputs.of(trained.params))
    models = {kind: trained.model(kind) for kind in STEPS}
    reference = TrainingReference.of_store(trained.store)
    result, _ = evaluate_models(models, split, reference, batch_size=16)

    def scored(images: np.ndarray) -> dict:
        return {k: float(v.mean()) for k, v in m.image_metrics(images, split.color, split.hint).items()}

    predicted = predict_hint(models["hint"], split.lineart)
    auto = scored(colorize(models["cgan"], split.lineart, predicted))
    true = scored(colorize(models["cgan"], split.lineart, split.hint))
    assert result["cgan_auto_hint"] == pytest.approx(auto, abs=2e-4)
    assert abs(auto["hint_chi2"] - true["hint_chi2"]) > 1e-3, "the two hints must colour differently"
    assert result["cgan_auto_hint"]["hint_chi2"] != pytest.approx(true["hint_chi2"], abs=2e-4)
