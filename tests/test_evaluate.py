"""Stage `evaluate`: every method scored on the test split, the figure, the CLI.

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
from colorization.config import load_params
from colorization.evaluate import (
    METHODS,
    evaluate_models,
    flat_fill,
    grey,
    load_models,
    load_split,
    run_evaluate,
    score_model,
)
from colorization.histogram import bin_centers
from colorization.models import build_model, model_config
from colorization.preprocess import build_histograms, build_lineart
from tests.conftest import synthetic_data_params

REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32
TINY_ARCH = {
    "cnn": {"base_channels": 4, "depth": 2, "hint_dim": 8},
    "cgan": {"base_channels": 4, "depth": 3, "hint_dim": 8},
    "hint": {"base_channels": 4, "depth": 2},
}


def save_model_dir(folder: Path, kind: str, run_id: str | None = None, model_uri: str | None = None, seed=0):
    """A models/<kind> folder as the train stage writes it, with untrained toy weights."""
    torch.manual_seed(seed)
    net = build_model(kind, TINY_ARCH[kind]).eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(json.dumps(model_config(kind, TINY_ARCH[kind], IMAGE_SIZE)))
    (folder / "run.json").write_text(json.dumps({"run_id": run_id, "model_uri": model_uri, "kind": kind}))
    return net


def write_test_params(root: Path) -> Path:
    """params.yaml with every path under `root`: 30 synthetic images at 32 px, a third of them test."""
    p = synthetic_data_params(root, count=30, image_size=IMAGE_SIZE)
    p["lineart"]["split"].update(val=0.1, test=0.3)
    p["train"]["mlflow"] = False
    p["evaluate"].update(
        lineart=str(root / "lineart"),
        histograms=str(root / "histograms.parquet"),
        models_dir=str(root / "models"),
        metrics=str(root / "metrics/evaluation.json"),
        reports=str(root / "reports"),
        figure_examples=2,
        batch_size=4,  # several chunks, to exercise the chunked averaging
    )
    p["registry"].update(
        models_dir=str(root / "models"),
        evaluation=str(root / "metrics/evaluation.json"),
        out=str(root / "metrics/registry.json"),
    )
    path = root / "params.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


def build_project(root: Path) -> Path:
    """Processed store + three toy model folders under `root`; returns the params file."""
    path = write_test_params(root)
    params = load_params(path)
    run_acquire(params.acquire)
    build_lineart(params.lineart)
    build_histograms(params.histograms)
    for kind in TINY_ARCH:
        save_model_dir(root / "models" / kind, kind, run_id=f"run-{kind}")
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return build_project(tmp_path_factory.mktemp("evaluate"))


def test_baselines():
    lineart = np.array([[[0, 255], [255, 255]]], np.uint8)
    hints = np.zeros((1, 512), np.float32)
    hints[0, 300] = 1.0
    filled = flat_fill(lineart, hints)
    np.testing.assert_array_equal(filled[0, 0, 0], [0, 0, 0])  # lines stay dark
    np.testing.assert_array_equal(filled[0, 1, 1], bin_centers()[300])
    np.testing.assert_array_equal(grey(lineart)[0, 0, 1], [255, 255, 255])


def test_run_evaluate_writes_metrics_figure_and_logs(project):
    params = load_params(project)
    logged = {}
    result = run_evaluate(
        params.evaluate, log_run=lambda r, fig, runs: logged.update(r=r, fig=fig, runs=runs)
    )

    on_disk = json.loads(Path(params.evaluate.metrics).read_text())
    assert on_disk == result
    assert result["split"] == "test" and result["images"] == len(load_split(params.evaluate)) > 4
    assert len(result["split_fingerprint"]) == 16
    for method in METHODS:
        scores = result[method]
        assert set(scores) == {"psnr", "ssim", "l1", "hint_chi2", "colorfulness"}
        assert 0.0 <= scores["hint_chi2"] <= 1.0 and 0.0 <= scores["l1"] <= 1.0
        assert -1.0 <= scores["ssim"] <= 1.0 and scores["psnr"] > 0
    assert result["grey"]["colorfulness"] == 0.0
    assert result["original"]["colorfulness"] > 0.0
    assert set(result["hint"]) == {"chi2", "kl"}
    assert "fid" not in result["cgan"]  # no fid_weights: skipped

    figure = cv2.imread(str(Path(params.evaluate.reports) / "comparison.png"))
    assert figure is not None and figure.shape[0] > figure.shape[1]  # 2 images x 2 rows over 3 columns
    assert logged["r"] == result and logged["fig"].exists()
    assert logged["runs"] == {kind: f"run-{kind}" for kind in TINY_ARCH}


def test_score_model_matches_the_evaluation_section(project):
    params = load_params(project)
    split = load_split(params.evaluate)
    models = load_models(params.evaluate.models_dir)
    full, _ = evaluate_models(models, split, batch_size=4)
    for kind in ("cgan", "hint"):
        assert score_model(kind, models[kind], split, batch_size=3) == pytest.approx(full[kind], abs=1e-4)


def test_fid_runs_only_with_a_local_feature_extractor(project, tmp_path):
    class MeanPool(torch.nn.Module):  # stands in for a TorchScript Inception file
        def forward(self, x, return_features: bool = False):
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    weights = tmp_path / "inception.pt"
    torch.jit.script(MeanPool()).save(str(weights))
    params = load_params(
        project, {"evaluate.fid_weights": str(weights), "evaluate.metrics": str(tmp_path / "m.json")}
    )
    result = run_evaluate(params.evaluate)
    assert all(result[m]["fid"] >= 0.0 for m in METHODS)

    missing = load_params(project, {"evaluate.fid_weights": str(tmp_path / "nope.pt")})
    with pytest.raises(FileNotFoundError, match="fid_weights"):
        run_evaluate(missing.evaluate)


def test_cli_prints_the_table_and_refuses_missing_models(project, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["evaluate", "--params", str(project), "--metrics", str(tmp_path / "e.json")])
    assert ok.exit_code == 0, ok.output
    assert "cgan_auto_hint" in ok.output and "psnr" in ok.output
    missing = runner.invoke(app, ["evaluate", "--params", str(project), "--models", str(tmp_path / "none")])
    assert missing.exit_code == 1
    assert "model.pt not found" in missing.output and "train_cnn" in missing.output
