"""Metric functions: agree with the reference implementations, behave at the extremes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from colorization import metrics as m
from colorization.histogram import color_histogram


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, size=(3, 24, 20, 3), dtype=np.uint8)
    noise = rng.integers(-40, 41, size=target.shape)
    return np.clip(target.astype(int) + noise, 0, 255).astype(np.uint8), target


def test_psnr_and_ssim_match_scikit_image(pair):
    pred, target = pair
    for i in range(len(pred)):
        expected_psnr = peak_signal_noise_ratio(target[i], pred[i], data_range=255)
        expected_ssim = structural_similarity(target[i], pred[i], channel_axis=-1, data_range=255)
        assert m.psnr(pred, target)[i] == pytest.approx(expected_psnr, rel=1e-9)
        assert m.ssim(pred, target)[i] == pytest.approx(expected_ssim, rel=1e-7)


def test_identical_images_are_perfect(pair):
    _, target = pair
    assert np.all(m.psnr(target, target) == 100.0)
    assert np.allclose(m.ssim(target, target), 1.0)
    assert np.all(m.l1(target, target) == 0.0)


def test_l1_is_on_the_unit_scale():
    black = np.zeros((1, 4, 4, 3), np.uint8)
    white = np.full((1, 4, 4, 3), 255, np.uint8)
    assert m.l1(black, white)[0] == pytest.approx(1.0)


def test_chi2_bounds_and_kl():
    a = np.zeros((1, 512))
    b = np.zeros((1, 512))
    a[0, 0], b[0, 1] = 1.0, 1.0
    assert m.chi2_distance(a, a)[0] == 0.0
    assert m.chi2_distance(a, b)[0] == pytest.approx(1.0)
    assert m.kl_divergence(a, a)[0] == pytest.approx(0.0, abs=1e-9)
    assert m.kl_divergence(a, b)[0] > 1.0


def test_hint_fidelity_is_zero_for_the_images_own_histogram(pair):
    pred, _ = pair
    hints = np.stack([color_histogram(img) for img in pred])
    np.testing.assert_allclose(m.hint_fidelity(pred, hints), 0.0, atol=1e-7)


def test_colorfulness_orders_grey_dull_and_vivid():
    grey = np.full((1, 8, 8, 3), 128, np.uint8)
    dull = grey.copy()
    dull[..., 0] = 150
    vivid = np.zeros((1, 8, 8, 3), np.uint8)
    vivid[:, ::2, :, 0] = 255  # red and blue stripes
    vivid[:, 1::2, :, 2] = 255
    scores = [m.colorfulness(x)[0] for x in (grey, dull, vivid)]
    assert scores[0] == 0.0
    assert scores[0] < scores[1] < scores[2]


def test_frechet_distance_is_zero_for_equal_sets_and_grows_with_shift():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(200, 4))
    assert m.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    assert m.frechet_distance(feats, feats + 3.0) == pytest.approx(36.0, rel=1e-6)


def test_inception_features_use_a_local_module():
    torch = pytest.importorskip("torch")

    class MeanPool(torch.nn.Module):  # stands in for a TorchScript Inception
        def forward(self, x, return_features: bool = False):
            assert x.shape[1:] == (3, 299, 299)
            return x.mean(dim=(2, 3))

    images = np.full((5, 16, 16, 3), 10, np.uint8)
    feats = m.inception_features(torch.jit.script(MeanPool()), images, batch_size=2)
    np.testing.assert_allclose(feats, 10.0, rtol=1e-5)


def test_only_two_rgb_batches_of_one_shape_are_compared():
    batch = np.zeros((2, 4, 4, 3), np.uint8)
    refused = [
        (batch, batch[:1]),  # one target for two predictions would broadcast silently
        (batch[0], batch[0]),  # a single image without its batch axis
        (np.zeros((2, 4, 4, 4), np.uint8),) * 2,  # RGBA
    ]
    for pred, target in refused:
        for metric in (m.psnr, m.l1, m.ssim):
            with pytest.raises(ValueError, match=re.escape(f"got {pred.shape} and {target.shape}")):
                metric(pred, target)


def test_chi2_weighs_each_bins_difference_by_its_mass():
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    q = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    # 0.5 * (0.5^2 / 1.5 + 0.5^2 / 0.5) = 1/3 for the first pair, 0 for the second
    np.testing.assert_allclose(m.chi2_distance(p, q), [1 / 3, 0.0], atol=1e-12)


def test_kl_is_one_value_per_histogram_pair():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    q = np.array([[0.5, 0.5], [0.5, 0.5]])
    expected = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    np.testing.assert_allclose(m.kl_divergence(p, q), [0.0, expected], rtol=1e-5, atol=1e-9)


def test_float32_histograms_are_scored_in_double_precision():
    """The hint model predicts and the parquet stores float32 hints; the distances between them
    are float64, the same as those of their float64 copies."""
    rng = np.random.default_rng(2)
    p, q = (rng.dirichlet(np.full(512, 0.05), size=3).astype(np.float32) for _ in range(2))
    for distance in (m.chi2_distance, m.kl_divergence):
        got = distance(p, q)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, distance(p.astype(np.float64), q.astype(np.float64)))


def test_colorfulness_follows_hasler_and_suesstrunk():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(2, 6, 5, 3), dtype=np.uint8)
    images[1] = (200, 100, 50)  # one flat colour: no spread, only the mean counts
    for image, got in zip(images, m.colorfulness(images), strict=True):
        r, g, b = (image[..., c].astype(float).ravel() for c in range(3))
        rg, yb = r - g, (r + g) / 2 - b
        expected = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
        assert got == pytest.approx(expected, rel=1e-12)
    assert m.colorfulness(images)[1] == pytest.approx(0.3 * np.hypot(100, 100))


class _Inception:
    """Stands in for the TorchScript Inception: logits by default, pool features when asked."""

    def __init__(self, torch, takes_flag: bool):
        self.torch, self.takes_flag, self.calls = torch, takes_flag, 0

    def __call__(self, x, **kwargs):
        self.calls += 1
        if kwargs and not self.takes_flag:
            raise TypeError("forward() got an unexpected keyword argument 'return_features'")
        features = x.mean(dim=(2, 3))  # [N, 3]
        return features if kwargs.get("return_features") is True else self.torch.zeros(len(x), 1000)


def test_inception_features_are_the_pool_features_one_row_per_image():
    torch = pytest.importorskip("torch")
    images = np.zeros((5, 8, 8, 3), np.uint8)
    images[..., 0] = np.arange(5)[:, None, None] * 10
    model = _Inception(torch, takes_flag=True)
    feats = m.inception_features(model, images, batch_size=2)
    assert feats.shape == (5, 3) and model.calls == 3
    np.testing.assert_allclose(feats[:, 0], [0, 10, 20, 30, 40], rtol=1e-5)
    plain = m.inception_features(_Inception(torch, takes_flag=False), images, batch_size=2)
    assert plain.shape == (5, 1000)  # a forward without the flag: its output as it comes


def test_ssim_matches_scikit_image_on_dark_pictures_too():
    """Black lines and dark fills: where the means are small, SSIM's stabilising constants
    (K1 = 0.01, K2 = 0.03 of the 255 range) decide the value."""
    rng = np.random.default_rng(4)
    target = rng.integers(0, 12, size=(2, 16, 16, 3), dtype=np.uint8)
    pred = rng.integers(0, 12, size=target.shape, dtype=np.uint8)
    for i, got in enumerate(m.ssim(pred, target)):
        expected = structural_similarity(target[i], pred[i], channel_axis=-1, data_range=255)
        assert got == pytest.approx(expected, rel=1e-7)
