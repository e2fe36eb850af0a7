"""Stage `evaluate`: every method scored on the test split, the yardsticks, the CLI.

Models are the real architectures at toy widths with untrained weights: evaluation must
work whatever the quality; the numbers themselves are checked against the metric
functions and the baselines' known properties.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from colorization.acquire import run_acquire
from colorization.cli import app
from colorization.config import StageInputs, load_params
from colorization.evaluate import (
    METHODS,
    TrainingReference,
    evaluate_models,
    flat_fill,
    grey,
    hint_obedience,
    load_models,
    load_split,
    run_evaluate,
    score_model,
)
from colorization.histogram import bin_centers
from colorization.histogram import mean_colour as hint_mean_colour
from colorization.models import build_model, model_config
from colorization.preprocess import build_preprocess
from tests.conftest import synthetic_data_params, write_image

REPO = Path(__file__).resolve().parents[2]


IMAGE_SIZE = 32


TINY_ARCH = {
    "cnn": {"base_channels": 4, "depth": 2, "hint_dim": 8},
    "cgan": {"base_channels": 4, "depth": 3, "hint_dim": 8},
    "hint": {"base_channels": 4, "depth": 2, "trust": 0.25},
}


def save_model_dir(folder: Path, kind: str, run_id: str | None = None, model_uri: str | None = None, seed=0):
    """A models/<kind> folder as the train stage writes it, with untrained toy weights."""
    torch.manual_seed(seed)
    net = build_model(kind, TINY_ARCH[kind]).eval()
    if kind == "hint":  # a training set's average hint: far from the untrained net's near-uniform guess
        net.prior.copy_(torch.softmax(torch.randn(512) * 3, dim=0))
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(json.dumps(model_config(kind, TINY_ARCH[kind], IMAGE_SIZE)))
    (folder / "run.json").write_text(json.dumps({"run_id": run_id, "model_uri": model_uri, "kind": kind}))
    return net


def write_test_params(root: Path) -> Path:
    """params.yaml with every path under `root`: 30 synthetic images at 32 px, a third of them test."""
    p = synthetic_data_params(root, count=30, image_size=IMAGE_SIZE)
    p["lineart"]["split"].update(val=0.1, test=0.3)
    p["tracking"]["mlflow"] = False
    p["train"]["out"] = str(root / "models")
    p["evaluate"].update(
        metrics=str(root / "metrics/evaluation.json"),
        reports=str(root / "reports"),
        figure_examples=2,
        batch_size=4,  # several chunks, to exercise the chunked averaging
    )
    p["registry"]["out"] = str(root / "metrics/registry.json")
    path = root / "params.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def build_project(root: Path) -> Path:
    """Processed store + three toy model folders under `root`; returns the params file."""
    path = write_test_params(root)
    params = load_params(path)
    run_acquire(params.acquire)
    build_preprocess(params.acquire.out, params.lineart, params.histograms)
    for kind in TINY_ARCH:
        save_model_dir(root / "models" / kind, kind, run_id=f"run-{kind}")
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return build_project(tmp_path_factory.mktemp("evaluate"))


def test_flat_fills_paint_the_hint_mean_or_a_given_colour_everywhere():
    lineart = np.array([[[0, 255], [255, 255]]], np.uint8)
    hints = np.zeros((1, 512), np.float32)
    hints[0, 0], hints[0, 511] = 0.25, 0.75  # centres (16,16,16) and (240,240,240)
    mean = hint_mean_colour(hints)
    np.testing.assert_allclose(mean, [[0.25 * 16 + 0.75 * 240] * 3])  # 184
    filled = flat_fill(lineart, mean)
    assert filled.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(filled.reshape(-1, 3), np.full((4, 3), 184))  # the line pixel too
    two = flat_fill(np.zeros((2, 1, 1), np.uint8), np.array([200.4, 99.6, 50.0]))
    np.testing.assert_array_equal(two.reshape(-1, 3), [[200, 100, 50]] * 2)  # one colour for every image
    np.testing.assert_array_equal(grey(lineart)[0, 0, 1], [255, 255, 255])


class PaintTheHintMean(torch.nn.Module):
    """A generator that paints the hint's mean colour (obeys perfectly), or a fixed colour."""

    def __init__(self, obey: bool):
        super().__init__()
        self.obey = obey
        self.centres = torch.from_numpy(bin_centers().astype(np.float32)) / 127.5 - 1

    def forward(self, lineart, hint):
        colour = hint @ self.centres if self.obey else torch.tensor([[0.5, 0.0, -0.5]]).expand(len(hint), 3)
        return colour[:, :, None, None].expand(-1, -1, *lineart.shape[2:])


def test_hint_obedience_is_red_minus_blue_of_the_outputs():
    lineart = np.full((3, 8, 8), 255, np.uint8)
    # Pure red hint -> bin centre (240, 16, 16): R - B = 224; pure blue -> -224; difference 448.
    np.testing.assert_allclose(hint_obedience(PaintTheHintMean(True), lineart, "cpu", 2), 448.0, atol=1.0)
    np.testing.assert_allclose(hint_obedience(PaintTheHintMean(False), lineart, "cpu", 2), 0.0)


def test_training_reference_is_the_train_split_average(project):
    from colorization.store import ProcessedStore

    params = load_params(project)
    store = ProcessedStore(params.lineart.out, params.histograms.out)
    ref = TrainingReference.of_store(store)
    train = store.load("train")
    np.testing.assert_allclose(ref.mean_colour, train.color.reshape(-1, 3).mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(ref.mean_hint, train.hint.mean(axis=0), atol=1e-6)
    assert not np.allclose(ref.mean_colour, store.load("test").color.reshape(-1, 3).mean(axis=0))


TRAIN_RGB, TEST_RGB = (220, 60, 40), (40, 90, 210)  # histogram bins far apart


def two_colour_project(root: Path) -> Path:
    """build_project's layout from an inbox folder whose train pictures are all TRAIN_RGB and
    test pictures all TEST_RGB, each with a black ring of its own; returns the params file."""
    from colorization.sources.folder import acquire_folder
    from colorization.store import split_of

    path = write_test_params(root)
    data = yaml.safe_load(path.read_text())
    data["acquire"]["source"] = "folder"
    data["acquire"]["folder"]["input"] = str(root / "inbox")
    data["lineart"]["split"].update(val=0.0, test=0.5)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    params = load_params(path)
    for k in range(16):  # a picture of each colour; the ones in the other colour's split go
        for name, rgb in (("train", TRAIN_RGB), ("test", TEST_RGB)):
            image = np.full((48, 48, 3), rgb[::-1], np.uint8)  # BGR, as cv2 writes it
            cv2.circle(image, (14 + k, 30 - k // 2), 6 + k // 3, (0, 0, 0), 2)
            write_image(root / "inbox" / f"{name}-{k}.png", image)
    accepted, _ = acquire_folder(root / "inbox", root / "ids", params.acquire.min_size)
    for record in accepted:  # the acquire step names the id, the store's rule its split
        if not record["tags"].startswith(split_of(record["id"], **params.lineart.split.model_dump())):
            (root / "inbox" / record["tags"]).unlink()
    run_acquire(params.acquire)
    build_preprocess(params.acquire.out, params.lineart, params.histograms)
    for kind in TINY_ARCH:
        save_model_dir(root / "models" / kind, kind)
    return path


def test_the_no_oracle_yardsticks_come_from_the_train_split(tmp_path, monkeypatch):
    """flat_fill_train_mean, cgan_avg_hint and the average hint see nothing of a test picture:
    they are the train split's averages. Train pictures are one colour, test pictures another, so
    a yardstick taken from the split being scored would match it and score far better."""
    import colorization.evaluate as evaluate
    from colorization.metrics import chi2_distance, image_metrics
    from colorization.store import ProcessedStore

    params = load_params(two_colour_project(tmp_path))
    store = ProcessedStore(params.lineart.out, params.histograms.out)
    train, test = store.load("train"), store.load("test")
    assert len(train) >= 4 and len(test) >= 4
    real_load = evaluate.load_models  # the c-GAN: one that paints its hint's mean colour
    monkeypatch.setattr(evaluate, "load_models", lambda *a: {**real_load(*a), "cgan": PaintTheHintMean(True)})
    result = run_evaluate(params.evaluate, StageInputs.of(params), device="cpu")

    def painted(colour: np.ndarray) -> dict:  # the scores of `colour` painted on every test picture
        scores = image_metrics(flat_fill(test.lineart, colour), test.color, test.hint)
        return {k: float(scores[k].mean()) for k in ("psnr", "hint_chi2")}

    def scored(method: str) -> dict:
        return {k: result[method][k] for k in ("psnr", "hint_chi2")}

    def avg_chi2(mean_hint: np.ndarray) -> float:
        return float(chi2_distance(np.broadcast_to(mean_hint, test.hint.shape), test.hint).mean())

    train_colour, test_colour = (s.color.reshape(-1, 3).mean(axis=0) for s in (train, test))
    train_hint, test_hint = train.hint.mean(axis=0), test.hint.mean(axis=0)
    assert scored("flat_fill_train_mean") == pytest.approx(painted(train_colour), abs=2e-3)
    assert scored("cgan_avg_hint") == pytest.approx(painted(hint_mean_colour(train_hint[None])[0]), abs=2e-3)
    assert result["hint"]["avg_chi2"] == pytest.approx(avg_chi2(train_hint), abs=1e-4)
    # And the train split's averages are far from the test split's own: the checks above tell them apart.
    assert painted(train_colour)["psnr"] < painted(test_colour)["psnr"] - 5
    assert avg_chi2(train_hint) > 0.5 > avg_chi2(test_hint)


def test_run_evaluate_writes_metrics_figure_and_logs(project):
    params = load_params(project)
    logged = {}
    result = run_evaluate(
        params.evaluate,
        StageInputs.of(params),
        log_run=lambda r, fig, runs: logged.update(r=r, fig=fig, runs=runs),
    )

    on_disk = json.loads(Path(params.evaluate.metrics).read_text())
    assert on_disk == result
    assert (
        result["split"] == "test"
        and result["images"] == len(load_split(params.evaluate, StageInputs.of(params))) > 4
    )
    assert len(result["split_fingerprint"]) == 16
    for method in METHODS:
        scores = result[method]
        assert set(scores) == {"psnr", "ssim", "l1", "hint_chi2", "colorfulness"}
        assert 0.0 <= scores["hint_chi2"] <= 1.0 and 0.0 <= scores["l1"] <= 1.0
        assert -1.0 <= scores["ssim"] <= 1.0 and scores["psnr"] > 0
    assert result["grey"]["colorfulness"] == 0.0
    assert result["original"]["colorfulness"] > 0.0
    assert set(result["hint"]) == {"chi2", "kl", "avg_chi2", "avg_kl", "chi2_vs_avg"}
    assert result["hint"]["chi2_vs_avg"] == pytest.approx(
        result["hint"]["chi2"] / result["hint"]["avg_chi2"], abs=1e-4
    )
    assert set(result["obedience"]) == {"cnn", "cgan"}
    assert "fid" not in result["cgan"]  # no fid_weights: skipped

    figure = cv2.imread(str(Path(params.evaluate.reports) / "comparison.png"))
    assert figure is not None and figure.shape[0] > figure.shape[1]  # the layout: test_comparison_figure_*
    assert logged["r"] == result and logged["fig"].exists()
    assert logged["runs"] == {kind: f"run-{kind}" for kind in TINY_ARCH}


def test_score_model_matches_the_evaluation_section(project):
    params = load_params(project)
    split = load_split(params.evaluate, StageInputs.of(params))
    models = load_models(params.train.out)
    reference = TrainingReference(mean_colour=np.full(3, 128.0), mean_hint=split.hint.mean(axis=0))
    full, _ = evaluate_models(models, split, reference, batch_size=4)
    for kind in ("cgan", "hint"):
        alone = score_model(kind, models[kind], split, batch_size=3)
        assert alone == pytest.approx({k: full[kind][k] for k in alone}, abs=1e-4)


def test_fid_runs_only_with_a_local_feature_extractor(project, tmp_path):
    class MeanPool(torch.nn.Module):  # stands in for a TorchScript Inception file
        def forward(self, x, return_features: bool = False):
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    weights = tmp_path / "inception.pt"
    torch.jit.script(MeanPool()).save(str(weights))
    params = load_params(
        project, {"evaluate.fid_weights": str(weights), "evaluate.metrics": str(tmp_path / "m.json")}
    )
    result = run_evaluate(params.evaluate, StageInputs.of(params))
    assert all(result[m]["fid"] >= 0.0 for m in METHODS)

    missing = load_params(project, {"evaluate.fid_weights": str(tmp_path / "nope.pt")})
    with pytest.raises(FileNotFoundError, match="fid_weights"):
        run_evaluate(missing.evaluate, StageInputs.of(missing))


def test_cli_prints_the_table_and_refuses_missing_models(project, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["evaluate", "--params", str(project), "--metrics", str(tmp_path / "e.json")])
    assert ok.exit_code == 0, ok.output
    assert "cgan_auto_hint" in ok.output and "psnr" in ok.output
    missing = runner.invoke(app, ["evaluate", "--params", str(project), "--models", str(tmp_path / "none")])
    assert missing.exit_code == 1
    assert "model.pt not found" in missing.output and "train@cnn" in missing.output
