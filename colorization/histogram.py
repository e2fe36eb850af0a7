"""The paper's colour hint: a 512-bin RGB histogram (8 bins per channel).

Contract: bin = (r >> 5) * 64 + (g >> 5) * 8 + (b >> 5), L1-normalised, float32[512].
"""

from __future__ import annotations

import cv2
import numpy as np

BINS_PER_CHANNEL = 8
HIST_BINS = BINS_PER_CHANNEL**3


def color_histogram(rgb: np.ndarray) -> np.ndarray:
    """512-bin histogram of an RGB uint8 image [H, W, 3], summing to 1."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    # calcHist over channels (0, 1, 2) = (R, G, B) with 8 uniform bins of width 32 is
    # exactly the shift rule above, and runs in C without the GIL.
    rng = [0, 256] * 3
    counts = cv2.calcHist([np.ascontiguousarray(rgb)], [0, 1, 2], None, [BINS_PER_CHANNEL] * 3, rng)
    counts = counts.reshape(HIST_BINS).astype(np.float64)
    return (counts / counts.sum()).astype(np.float32)


def bin_centers() -> np.ndarray:
    """RGB uint8 colour at the centre of each of the 512 bins, [512, 3]."""
    levels = np.arange(BINS_PER_CHANNEL) * 32 + 16
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()], axis=1).astype(np.uint8)
