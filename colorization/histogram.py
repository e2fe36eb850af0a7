"""The colour hint, in one place: a 512-bin RGB histogram, L1-normalised, float32[512], with bin =
(r >> 5) * 64 + (g >> 5) * 8 + (b >> 5). Everything that knows the bin layout is here (numpy and torch)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

BINS_PER_CHANNEL = 8
HIST_BINS = BINS_PER_CHANNEL**3
HINT_FORMAT = "rgb-histogram-8x8x8"  # what config.json records; a model of another format is refused
_SHIFT = 8 - int(np.log2(BINS_PER_CHANNEL))  # 8 bins: a channel's top 3 bits


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")  # a tensor, known without importing torch


def colour_bins(rgb):
    """The bin of each colour, channels last [..., 3]: integers 0..255, numpy or torch."""
    q = (rgb.long() if _is_torch(rgb) else np.asarray(rgb, np.int64)) >> _SHIFT
    return (q[..., 0] * BINS_PER_CHANNEL + q[..., 1]) * BINS_PER_CHANNEL + q[..., 2]


def color_histogram(rgb: np.ndarray) -> np.ndarray:
    """512-bin histogram of an RGB uint8 image [H, W, 3], summing to 1."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    # calcHist over channels (0, 1, 2) = (R, G, B) with 8 uniform bins of width 32 is
    # exactly the shift rule above, and runs in C without the GIL.
    counts = cv2.calcHist([np.ascontiguousarray(rgb)], [0, 1, 2], None, [BINS_PER_CHANNEL] * 3, [0, 256] * 3)
    counts = counts.reshape(HIST_BINS).astype(np.float64)
    return (counts / counts.sum()).astype(np.float32)


def batch_histograms(images: np.ndarray) -> np.ndarray:
    """The 512-bin hint of every image, [N, 512]; equal to `color_histogram` per image."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    n = images.shape[0]
    # One bincount for the whole batch: offset each image's bins into its own block.
    flat = (colour_bins(images).reshape(n, -1) + np.arange(n)[:, None] * HIST_BINS).ravel()
    counts = np.bincount(flat, minlength=n * HIST_BINS).reshape(n, HIST_BINS)
    return counts / counts.sum(axis=1, keepdims=True)


def torch_histograms(levels):
    """The 512-bin hint of integer pictures [B, 3, H, W] (0..255) on their device, float [B, 512]."""
    import torch

    bins = colour_bins(levels.permute(0, 2, 3, 1)).flatten(1)
    counts = torch.zeros(levels.shape[0], HIST_BINS, device=levels.device)
    counts.scatter_add_(1, bins, torch.ones_like(bins, dtype=counts.dtype))
    return counts / bins.shape[1]


@lru_cache(maxsize=1)
def bin_centers() -> np.ndarray:
    """RGB uint8 colour at the centre of each of the 512 bins, [512, 3] (read-only)."""
    levels = np.arange(BINS_PER_CHANNEL) * (256 // BINS_PER_CHANNEL) + 128 // BINS_PER_CHANNEL
    centres = np.stack(np.meshgrid(*[levels] * 3, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.uint8)
    centres.flags.writeable = False
    return centres


def mean_colour(hints):
    """The mean RGB colour (0..255) of hints [N, 512]: numpy (float64), or a float tensor on its device."""
    if _is_torch(hints):
        import torch

        hints = hints.float().clamp_min(0)
        centres = torch.tensor(bin_centers(), dtype=hints.dtype, device=hints.device)
        return hints @ centres / hints.sum(dim=-1, keepdim=True).clamp_min(1e-8)
    hints = np.asarray(hints, np.float64)
    return hints @ bin_centers().astype(np.float64) / np.maximum(hints.sum(axis=-1, keepdims=True), 1e-12)


def weighted_hint(colours: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The hint of colours [K, 3] (0..255) with weights [K]: float32 [512], sums to 1."""
    hint = np.bincount(colour_bins(colours), weights=np.asarray(weights, np.float64), minlength=HIST_BINS)
    return (hint / hint.sum()).astype(np.float32)


def one_hot_hint(rgb: tuple[int, int, int], n: int = 1) -> np.ndarray:
    """n copies of the hint of a picture of one colour, float32 [n, 512]."""
    return np.repeat(weighted_hint(np.array([rgb]), np.ones(1))[None], n, axis=0)


def heaviest_bins(
    hint: np.ndarray, most: int, mass: float = float("inf"), min_weight: float = 0.0
) -> np.ndarray:
    """The bins a hint is drawn with, heaviest first: at most `most`, until `mass` is covered,
    each heavier than zero and at least `min_weight`; at least the heaviest one."""
    hint = np.asarray(hint, np.float64)
    order = np.argsort(-hint, kind="stable")
    count = int(np.searchsorted(np.cumsum(hint[order]), mass)) + 1
    keep = order[: max(1, min(most, count))]
    heavy = keep[(hint[keep] > 0) & (hint[keep] >= min_weight)]
    return heavy if heavy.size else keep[:1]
