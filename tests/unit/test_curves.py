"""`colorization curves`: dvc.yaml's training curves as PNGs and a page that needs no network."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from colorization.cli import app
from colorization.curves import LINE_COLOURS, CurvesError, plot_definitions, render_curves

REPO = Path(__file__).resolve().parents[2]

DVC_YAML = """
stages: {}
plots:
  - rising:
      title: A rising line
      x: step
      y:
        curves/a.csv: loss
  - missing:
      title: Not there yet
      x: step
      y:
        curves/none.csv: loss
"""


def offline(page: str, folder: Path) -> None:
    """Nothing in the page reaches the network, and every image it shows is beside it."""
    assert "<script" not in page.lower()
    assert not re.search(r"(?i)(src|href)\s*=\s*[\"']?(https?:)?//", page)
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert (folder / src).is_file(), src


def line_pixels(png: Path, hex_colour: str) -> np.ndarray:
    bgr = cv2.imread(str(png))
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return np.argwhere(np.abs(bgr[..., ::-1].astype(int) - rgb).sum(axis=2) < 40)


def test_the_curves_are_drawn_from_the_csv_into_an_offline_page(tmp_path):
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "curves").mkdir()
    rows = "\n".join(f"{step},{step * 2}" for step in range(1, 51))
    (tmp_path / "curves/a.csv").write_text("step,loss\n" + rows + "\n")
    out = tmp_path / "out"
    written = render_curves(tmp_path / "dvc.yaml", out)
    assert [p.name for p in written] == ["rising.png", "index.html"]
    page = (out / "index.html").read_text()
    offline(page, out)
    assert "A rising line" in page and "50 points, first 2, last 100" in page
    assert "Not there yet" in page and "not trained yet: no curves/none.csv" in page

    pixels = line_pixels(out / "rising.png", LINE_COLOURS[0])
    assert len(pixels) > 100, "the line is not drawn"
    (top, left), (bottom, right) = pixels.min(axis=0), pixels.max(axis=0)
    height, width = cv2.imread(str(out / "rising.png")).shape[:2]
    assert bottom - top > height / 2 and right - left > width / 2  # it spans the axes: the data is there
    # Rising: the line's leftmost pixels are lower in the picture than its rightmost.
    assert pixels[pixels[:, 1] < left + 10][:, 0].mean() > pixels[pixels[:, 1] > right - 10][:, 0].mean()


def test_the_projects_plots_render_from_its_tracked_csvs(tmp_path):
    assert [p.name for p in plot_definitions(REPO / "dvc.yaml")] == [
        "cnn_loss",
        "cgan_discriminator_loss",
        "cgan_generator_loss",
        "hint_kl",
    ]
    out = tmp_path / "curves"
    result = CliRunner().invoke(app, ["curves", "--dvc-yaml", str(REPO / "dvc.yaml"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "cgan_discriminator_loss.png",
        "cgan_generator_loss.png",
        "cnn_loss.png",
        "hint_kl.png",
        "index.html",
    ]
    offline((out / "index.html").read_text(), out)


def test_a_csv_without_the_column_is_a_one_line_error(tmp_path):
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "curves").mkdir()
    (tmp_path / "curves/a.csv").write_text("step,other\n1,2\n")
    with pytest.raises(CurvesError, match="no column 'loss'"):
        render_curves(tmp_path / "dvc.yaml", tmp_path / "out")
    result = CliRunner().invoke(
        app, ["curves", "--dvc-yaml", str(tmp_path / "dvc.yaml"), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "no column 'loss'" in result.output and "Traceback" not in result.output
