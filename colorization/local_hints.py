"""Local colour hints: colours pointed at in the picture, as the planes the generators read.

Format (`LOCAL_FORMAT`, recorded in a model's config.json): float [N, 4, S, S] at the model's
size. Planes 0-2 hold the hint colour in [-1, 1] where a hint is and 0 elsewhere; plane 3 is
the mask (1 = a hint here). All zeros means no local hints: the global hint alone decides.

Where they come from:
- training and evaluation: `reveal` shows the true colour of random patches of the target
  (ideepcolor's simulated points), after recolouring, so they move with the picture's colours;
- a person: a hint layer (an RGBA picture the size of the input, opaque = colour) or a list of
  points, fitted into the model's square exactly as the line art is (`layer_to_square`);
- at the input's size, `fill_regions` gives each region the input's lines close the colour
  of the hints inside it, so a dot colours its region, not a blur around it.

Inside a generator, `guide_planes` turns the sparse hints into a dense first guess (each
pixel's nearby hints, averaged, and how sure that is) that the network corrects.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch.nn import functional as F

LOCAL_PLANES = 4
LOCAL_FORMAT = "rgb-mask-v1"  # colour planes in [-1, 1] times the mask, then the mask
PATCH_RADII = (0, 1, 2)  # revealed patches of 1x1, 3x3 and 5x5 pixels, their mean colour
SPREAD_SCALE = 4  # the dense guess is made at 1/4 of the model's size, then scaled up
SPREAD_SIGMA = 2.0  # its Gaussian, in those coarse pixels (8 model pixels)


def no_hints(n: int, size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    return torch.zeros(n, LOCAL_PLANES, size, size, device=device, dtype=dtype)


def point_counts(b: int, gen: torch.Generator, max_points: int, none_p: float) -> torch.Tensor:
    """int [B]: 0 with probability `none_p`, else log-uniform in 1..max_points (few points are common)."""
    u = torch.rand(b, 2, generator=gen, device=gen.device)
    counts = torch.floor((max_points + 1.0) ** u[:, 0]).clamp(1, max(max_points, 1)).long()
    return torch.where(u[:, 1] < none_p, torch.zeros_like(counts), counts) if max_points else counts * 0


def reveal(
    color: torch.Tensor,
    counts: torch.Tensor,
    gen: torch.Generator,
    max_points: int,
    radii: tuple[int, ...] = PATCH_RADII,
) -> torch.Tensor:
    """Local hints [B, 4, S, S] showing `counts[i]` (<= max_points) random patches of picture i
    (float [B, 3, S, S] in [-1, 1]), each its own mean colour, of a random radius of `radii`.
    `max_points` places are drawn whatever the counts: fewer points are the first of the same draw."""
    b, _, s, _ = color.shape
    local = no_hints(b, s, color.device, color.dtype)
    u = torch.rand(b, max_points, 3, generator=gen, device=gen.device)
    k = min(int(counts.max()), max_points) if counts.numel() else 0
    if k == 0:
        return local
    ys, xs = (u[..., 0] * s).long().clamp(max=s - 1), (u[..., 1] * s).long().clamp(max=s - 1)
    radius = (u[..., 2] * len(radii)).long().clamp(max=len(radii) - 1)
    pooled = torch.stack([F.avg_pool2d(color, 2 * r + 1, 1, r, count_include_pad=False) for r in radii])
    grid = torch.arange(s, device=color.device)
    images = torch.arange(b, device=color.device)
    for j in range(k):
        r = torch.tensor(radii, device=color.device)[radius[:, j]]  # [B]
        colour = pooled[radius[:, j], images, :, ys[:, j], xs[:, j]]  # [B, 3]
        rows = (grid[None] - ys[:, j, None]).abs() <= r[:, None]
        cols = (grid[None] - xs[:, j, None]).abs() <= r[:, None]
        inside = rows[:, :, None] & cols[:, None, :] & (j < counts)[:, None, None]  # [B, S, S]
        local[:, :3] = torch.where(inside[:, None], colour[:, :, None, None], local[:, :3])
        local[:, 3] = torch.where(inside, torch.ones_like(local[:, 3]), local[:, 3])
    return local


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).repeat(x.shape[1], 1)[:, None]  # [C, 1, K]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel[:, :, None, :], groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel[:, :, :, None], groups=x.shape[1])


def spread(local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense guess from sparse hints: (colour [N, 3, S, S] in [-1, 1], confidence [N, 1, S, S] in
    [0, 1]). Each pixel gets the Gaussian-weighted mean of the hints near it (normalised
    convolution); confidence rises with the hint mass nearby, 0 far from every hint."""
    s = local.shape[-1]
    f = SPREAD_SCALE if s % SPREAD_SCALE == 0 and s >= 4 * SPREAD_SCALE else 1
    mask = local[:, 3:]
    coarse = _blur(F.avg_pool2d(torch.cat([local[:, :3] * mask, mask], dim=1), f), SPREAD_SIGMA)
    weight = coarse[:, 3:]
    colour = coarse[:, :3] / weight.clamp_min(1e-6)
    # One revealed pixel alone weighs ~1/(2 pi sigma^2 f^2) after pooling and blurring.
    confidence = 1 - torch.exp(-weight * (2 * math.pi * SPREAD_SIGMA**2 * f * f))
    if f > 1:
        colour = F.interpolate(colour, size=(s, s), mode="bilinear", align_corners=False)
        confidence = F.interpolate(confidence, size=(s, s), mode="bilinear", align_corners=False)
    colour = torch.where(confidence > 1e-4, colour.clamp(-1, 1), torch.zeros_like(colour))
    return colour, confidence.clamp(0, 1)


def guide_planes(local: torch.Tensor, base: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What a generator with local hints adds to its input: the hints (4 planes) and the dense
    guess (colour + confidence, 4 planes); and the colour its output deviates from: the guess
    where it is sure, `base` (the global hint's mean colour planes) elsewhere."""
    colour, confidence = spread(local.float())
    planes = torch.cat([local.float(), colour, confidence], dim=1)
    if base is None:
        return planes, None
    return planes, confidence * colour + (1 - confidence) * base.float()


# ---------------------------------------------------------------- from a person, to the model's square


def layer_to_square(
    rgba: np.ndarray, box: tuple[int, int, int, int], size: int
) -> np.ndarray:
    """An RGBA hint layer at the input's size -> local hints float32 [4, size, size] in the
    model's square, where the line art's fit put the picture (`box`: top, left, height, width).

    Area-averaged, so a dot smaller than one model pixel still marks that pixel, with its colour."""
    top, left, h, w = box
    alpha = rgba[..., 3].astype(np.float32) / 255.0
    opaque = (alpha >= 0.5).astype(np.float32)
    premult = rgba[..., :3].astype(np.float32) * opaque[..., None]
    both = np.concatenate([premult, opaque[..., None]], axis=2)
    small = cv2.resize(both, (w, h), interpolation=cv2.INTER_AREA)
    out = np.zeros((LOCAL_PLANES, size, size), np.float32)
    mask = small[..., 3] > 0
    colour = small[..., :3] / np.maximum(small[..., 3:], 1e-6)
    out[:3, top : top + h, left : left + w] = np.where(mask[..., None], colour / 127.5 - 1.0, 0).transpose(2, 0, 1)
    out[3, top : top + h, left : left + w] = mask
    return out


def points_layer(points: list[tuple[float, float, tuple[int, int, int], float]], height: int, width: int) -> np.ndarray:
    """An RGBA hint layer [height, width, 4] with a disc per point (x, y, rgb, radius), later points on top."""
    layer = np.zeros((height, width, 4), np.uint8)
    for x, y, rgb, radius in points:
        cv2.circle(layer, (round(x), round(y)), max(0, round(radius)), (*map(int, rgb), 255), thickness=-1)
    return layer


# ---------------------------------------------------------------- at the input's size


def fill_regions(
    colour: np.ndarray, lines: np.ndarray, layer: np.ndarray, max_share: float = 0.25
) -> np.ndarray:
    """The colour layer [H, W, 3] with each region closed by `lines` ([H, W] bool, True = line)
    that holds hints (`layer`, RGBA, opaque = hint) shifted so its mean is the hints' mean
    colour; its shading (the model's variation inside it) stays.

    A region larger than `max_share` of the picture is not closed in any useful sense (the
    paper around an open drawing): the model's own colour stays there. Regions are 4-connected,
    so a one-pixel diagonal line closes them."""
    opaque = layer[..., 3] >= 128
    if not opaque.any():
        return colour
    count, labels = cv2.connectedComponents((~lines).astype(np.uint8), connectivity=4)
    labels = labels.ravel()  # label 0: the lines themselves (connectedComponents' background)
    hinted = labels[opaque.ravel()]
    hint_rgb = layer[..., :3][opaque].astype(np.float64)
    hint_n = np.bincount(hinted, minlength=count)
    sizes = np.bincount(labels, minlength=count)
    flat = colour.reshape(-1, 3)
    shift = np.zeros((count, 3))
    for c in range(3):
        target = np.bincount(hinted, hint_rgb[:, c], minlength=count) / np.maximum(hint_n, 1)
        mean = np.bincount(labels, flat[:, c].astype(np.float64), minlength=count) / np.maximum(sizes, 1)
        shift[:, c] = target - mean
    use = (hint_n > 0) & (sizes <= max_share * labels.size)
    use[0] = False
    shift[~use] = 0
    out = np.empty_like(flat)
    for c in range(3):  # a channel at a time: float32 [H*W], not float64 [H*W, 3]
        out[:, c] = np.clip(flat[:, c] + shift.astype(np.float32)[labels, c], 0, 255).round()
    return out.reshape(colour.shape)
