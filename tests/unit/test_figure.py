"""colorization.figure: the comparison figure's layout and the palette bar."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from colorization.figure import palette_bar
from colorization.histogram import bin_centers


def test_comparison_figure_puts_each_method_in_its_place(tmp_path):
    """The poster's grid: per test image, row 1 original | line art | hint, row 2 CNN | c-GAN |
    c-GAN with the automatic hint; images one under the other. Each panel a solid colour of its
    own, found back by its pixels."""
    from colorization.figure import Example, comparison_figure

    def solid(rgb) -> np.ndarray:
        return np.full((16, 16, 3), rgb, np.uint8)

    def one_hot(r: int, g: int, b: int) -> np.ndarray:  # bins of 32 levels: centre 16 + 32 * bin
        hint = np.zeros(512)
        hint[r * 64 + g * 8 + b] = 1.0
        return hint

    colours = [  # per example: original, cnn, cgan, cgan_auto (the hint panel: a bin centre)
        [(255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)],
        [(128, 0, 0), (0, 0, 128), (128, 128, 0), (128, 0, 128)],
    ]
    hints = [((0, 7, 0), (16, 240, 16)), ((0, 3, 7), (16, 112, 240))]
    examples = [
        Example(
            image_id=f"img{k}",
            original=solid(c[0]),
            lineart=np.full((16, 16), 60 + 100 * k, np.uint8),
            hint=one_hot(*hints[k][0]),
            results={"CNN": solid(c[1]), "c-GAN": solid(c[2]), "c-GAN, automatic": solid(c[3])},
        )
        for k, c in enumerate(colours)
    ]
    figure = cv2.cvtColor(cv2.imread(str(comparison_figure(examples, tmp_path / "f.png"))), cv2.COLOR_BGR2RGB)

    def centre(rgb) -> tuple[float, float]:
        ys, xs = np.nonzero((figure == np.array(rgb, np.uint8)).all(axis=2))
        assert len(ys) > 100, f"{rgb} not drawn"
        return float(ys.mean()), float(xs.mean())

    for k, c in enumerate(colours):
        grey = 60 + 100 * k
        row1 = [centre(c[0]), centre((grey, grey, grey)), centre(hints[k][1])]
        row2 = [centre(rgb) for rgb in c[1:]]
        for row in (row1, row2):
            assert max(y for y, _ in row) - min(y for y, _ in row) < 5  # one row
            assert row[0][1] < row[1][1] < row[2][1]  # in the poster's order
        assert row2[0][0] > row1[0][0]  # the methods under the original
        assert [x for _, x in row1] == pytest.approx([x for _, x in row2], abs=5)  # same columns
    assert centre(colours[1][0])[0] > centre(colours[0][1])[0]  # the second image under the first


def test_palette_bar_widths_follow_the_hint():
    hint = np.zeros(512, np.float32)
    hint[[0, 511]] = [0.75, 0.25]
    bar = palette_bar(hint, height=3, width=100)
    assert bar.shape == (3, 100, 3) and bar.dtype == np.uint8
    assert (bar[0] == bin_centers()[0]).all(axis=1).sum() == 75
    assert (bar[0] == bin_centers()[511]).all(axis=1).sum() == 25
