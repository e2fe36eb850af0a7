"""Image-quality metrics: uint8 RGB batches [N, H, W, 3] in, one float64 per image out (so evaluation
works in chunks). Nothing downloads: FID runs only with a feature extractor loaded from a local file."""

from __future__ import annotations

import functools
import warnings

import numpy as np
from scipy import linalg, ndimage

from colorization.histogram import batch_histograms

_EPS = 1e-10


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 3:
        raise ValueError(
            f"expected two [N, H, W, 3] batches of one shape, got {pred.shape} and {target.shape}"
        )


def psnr(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio in dB (peak 255); identical images are capped at 100 dB."""
    _check_pair(pred, target)
    mse = np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2, axis=(1, 2, 3))
    return np.minimum(10.0 * np.log10(255.0**2 / np.maximum(mse, _EPS)), 100.0)


def l1(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean absolute error on the 0..1 scale (the generator's L1 loss, comparable to training)."""
    _check_pair(pred, target)
    return np.mean(np.abs(pred.astype(np.float64) - target.astype(np.float64)), axis=(1, 2, 3)) / 255.0


def ssim(pred: np.ndarray, target: np.ndarray, win_size: int = 7) -> np.ndarray:
    """Mean structural similarity per image, channels averaged: skimage's `structural_similarity(...,
    channel_axis=-1, data_range=255)` (uniform 7x7 window, sample covariance), for a whole batch at once."""
    _check_pair(pred, target)
    x, y = pred.astype(np.float64), target.astype(np.float64)
    # Rows and columns only, never across images.
    mean = functools.partial(ndimage.uniform_filter, size=(1, win_size, win_size, 1))
    ux, uy = mean(x), mean(y)
    cov_norm = win_size**2 / (win_size**2 - 1)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2  # skimage drops the border where the window is reflected
    return s[:, pad:-pad, pad:-pad, :].mean(axis=(1, 2, 3))


def chi2_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Symmetric chi-squared distance between histograms [N, B]: 0.5 * sum (p-q)^2/(p+q), in [0, 1]."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return 0.5 * np.sum((p - q) ** 2 / np.maximum(p + q, _EPS), axis=-1)


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """KL(p || q) in nats over [N, B] histograms, both smoothed by `eps` so empty bins stay finite."""
    p, q = np.asarray(p, np.float64) + eps, np.asarray(q, np.float64) + eps
    p /= p.sum(axis=-1, keepdims=True)
    q /= q.sum(axis=-1, keepdims=True)
    return np.sum(p * np.log(p / q), axis=-1)


def hint_fidelity(images: np.ndarray, hints: np.ndarray) -> np.ndarray:
    """How well each output follows its colour hint: chi-squared between its histogram and the hint."""
    return chi2_distance(batch_histograms(images), hints)


def colorfulness(images: np.ndarray) -> np.ndarray:
    """Hasler & Suesstrunk (2003) colourfulness M = sigma_rgyb + 0.3 * mu_rgyb (0 for grey images)."""
    rgb = images.astype(np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    sigma = np.sqrt(rg.var(axis=(1, 2)) + yb.var(axis=(1, 2)))
    mu = np.sqrt(rg.mean(axis=(1, 2)) ** 2 + yb.mean(axis=(1, 2)) ** 2)
    return sigma + 0.3 * mu


def image_metrics(pred: np.ndarray, target: np.ndarray, hints: np.ndarray) -> dict[str, np.ndarray]:
    """Every per-image metric of a colorization method, keyed as in metrics/evaluation.json."""
    return {
        "psnr": psnr(pred, target),
        "ssim": ssim(pred, target),
        "l1": l1(pred, target),
        "hint_chi2": hint_fidelity(pred, hints),
        "colorfulness": colorfulness(pred),
    }


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, D] (the FID formula)."""
    mu_a, mu_b = feats_a.mean(axis=0), feats_b.mean(axis=0)
    cov_a, cov_b = np.cov(feats_a, rowvar=False), np.cov(feats_b, rowvar=False)
    with warnings.catch_warnings():  # fewer samples than dimensions make cov singular; handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as pytorch-fid does
        offset = np.eye(cov_a.shape[0]) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))


def inception_features(model, images: np.ndarray, device: str = "cpu", batch_size: int = 32) -> np.ndarray:
    """Features [N, D] of uint8 images from a local TorchScript Inception (docs/evaluation.md, FID): its
    pool features when its forward takes `return_features`; fed 0..255 at 299 px, as clean-fid's expects."""
    import torch
    import torch.nn.functional as F

    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            x = F.interpolate(
                x.permute(0, 3, 1, 2).float(), size=(299, 299), mode="bilinear", align_corners=False
            )
            try:
                feats = model(x, return_features=True)
            except (TypeError, RuntimeError):
                feats = model(x)
            out.append(feats.reshape(len(x), -1).double().cpu().numpy())
    return np.concatenate(out)
