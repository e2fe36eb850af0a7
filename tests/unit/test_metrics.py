"""Metric functions: agree with the reference implementations, behave at the extremes."""

from __future__ import annotations

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
