import numpy as np
import pytest

from colorization.histogram import HIST_BINS, bin_centers, color_histogram


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
