"""colorization.histogram: the 512-bin hint contract, bin centres, one-hot hints, batches."""

from __future__ import annotations

import numpy as np
import pytest

from colorization.histogram import HIST_BINS, batch_histograms, bin_centers, color_histogram, one_hot_hint
from tests.unit.test_metrics import pair  # noqa: F401 (a fixture)


def reference_histogram(rgb: np.ndarray) -> np.ndarray:
    """The contract, written out independently: bin = (r>>5)*64 + (g>>5)*8 + (b>>5)."""
    r, g, b = (rgb[..., c].astype(np.int64) >> 5 for c in range(3))
    counts = np.bincount((r * 64 + g * 8 + b).ravel(), minlength=512).astype(np.float64)
    return counts / counts.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_shift_rule_on_random_images(seed):
    rgb = np.random.default_rng(seed).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    hist = color_histogram(rgb)
    assert hist.dtype == np.float32 and hist.shape == (HIST_BINS,)
    np.testing.assert_allclose(hist, reference_histogram(rgb), atol=1e-6)
    assert hist.sum() == pytest.approx(1.0, abs=1e-6)


def test_bin_edges_are_exact():
    # Values either side of every bin boundary (31|32, 63|64, ...) land in the right bin.
    edges = np.array([0, 31, 32, 63, 64, 95, 96, 127, 128, 159, 160, 191, 192, 223, 224, 255], np.uint8)
    r, g, b = np.meshgrid(edges, edges, edges, indexing="ij")
    rgb = np.stack([r, g, b], axis=-1).reshape(16, 256, 3)
    np.testing.assert_allclose(color_histogram(rgb), reference_histogram(rgb), atol=1e-7)


def test_channel_order_is_rgb():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert np.argmax(color_histogram(red)) == 7 * 64


def test_bin_centers_fall_in_their_own_bins():
    centers = bin_centers()
    for k in (0, 1, 100, 511):
        hist = color_histogram(centers[k].reshape(1, 1, 3))
        assert np.argmax(hist) == k


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError):
        color_histogram(np.zeros((4, 4), np.uint8))


def test_the_refusal_names_what_it_got():
    with pytest.raises(ValueError, match=r"expected uint8 \[H, W, 3\], got float32 \(4, 4, 3\)"):
        color_histogram(np.zeros((4, 4, 3), np.float32))


def test_numpy_batch_and_torch_histograms_are_the_one_contract():
    import torch

    from colorization.histogram import batch_histograms, torch_histograms

    images = np.random.default_rng(3).integers(0, 256, size=(3, 9, 11, 3), dtype=np.uint8)
    expected = np.stack([reference_histogram(im) for im in images])
    np.testing.assert_allclose(batch_histograms(images), expected, atol=1e-7)
    on_device = torch_histograms(torch.from_numpy(images).permute(0, 3, 1, 2))
    np.testing.assert_allclose(on_device.numpy(), expected, atol=1e-6)


def test_mean_colour_is_the_same_in_numpy_and_torch_and_one_hot_is_a_flat_picture():
    import torch

    from colorization.histogram import mean_colour, one_hot_hint

    hints = np.random.default_rng(4).random((5, HIST_BINS))
    centres = bin_centers().astype(np.float64)
    np.testing.assert_allclose(mean_colour(hints), hints @ centres / hints.sum(1, keepdims=True))
    np.testing.assert_allclose(mean_colour(torch.from_numpy(hints)).numpy(), mean_colour(hints), rtol=1e-5)
    flat = np.full((2, 3, 3), (200, 40, 90), np.uint8)
    np.testing.assert_array_equal(one_hot_hint((200, 40, 90), 2), np.stack([color_histogram(flat)] * 2))
    np.testing.assert_allclose(mean_colour(one_hot_hint((200, 40, 90))), [[208, 48, 80]])  # its bin's centre


def test_the_heaviest_bins_stop_at_the_count_the_mass_and_the_weight():
    from colorization.histogram import heaviest_bins

    hint = np.zeros(HIST_BINS)
    hint[[5, 9, 300, 7]] = [0.5, 0.3, 0.15, 0.05]
    assert heaviest_bins(hint, 16).tolist() == [5, 9, 300, 7]  # heaviest first, no empty bins
    assert heaviest_bins(hint, 2).tolist() == [5, 9]
    assert heaviest_bins(hint, 16, mass=0.75).tolist() == [5, 9]  # 0.8 covers 0.75
    assert heaviest_bins(hint, 16, min_weight=0.1).tolist() == [5, 9, 300]
    assert heaviest_bins(np.zeros(HIST_BINS), 16).tolist() == [0]  # at least one


def test_no_other_module_writes_the_bin_formula():
    """The bin layout (`>> 5`, `* 64`) is written once, in colorization/histogram.py."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "colorization"
    formula = re.compile(r">>\s*(5|_SHIFT)\b|[^*]\*\s*64\b|BINS_PER_CHANNEL\s*\*\*\s*2")
    found = [
        f"{path.relative_to(package)}:{n}"
        for path in package.rglob("*.py")
        if path.name != "histogram.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if formula.search(line.split("#")[0])
    ]
    assert not found, found


def test_one_hot_hints_are_the_histograms_of_flat_pictures():
    from colorization.histogram import color_histogram

    for rgb in [(255, 0, 0), (0, 0, 255), (40, 200, 90)]:
        flat = np.broadcast_to(np.array(rgb, np.uint8), (4, 4, 3)).copy()
        np.testing.assert_array_equal(one_hot_hint(rgb, 2), np.stack([color_histogram(flat)] * 2))


def test_batch_histograms_equal_the_hint_contract(pair):  # noqa: F811
    pred, _ = pair
    batch = batch_histograms(pred)
    for i in range(len(pred)):
        np.testing.assert_allclose(batch[i], color_histogram(pred[i]), atol=1e-7)
