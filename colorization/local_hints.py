"""Local colour hints, float [N, 4, S, S] at model size (`LOCAL_FORMAT`; docs/training.md, docs/colorize.md):
simulated in training (`reveal`), read from a person (`layer_to_square`), used full-size (`fill_regions`)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch.nn import functional as F

LOCAL_PLANES = 4
LOCAL_FORMAT = "rgb-mask-v1"  # colour planes in [-1, 1] times the mask (all zeros: no hints), then the mask
PATCH_RADII = (0, 1, 2)  # revealed patches of 1x1, 3x3 and 5x5 pixels, their mean colour
SPREAD_REACH = 0.25  # a hint's confidence falls to 1/e over this share of the picture's side
SPREAD_STEPS = 0.5  # and travels at most this share of the side (pixel steps)
GAP_PX_PER = 512  # fill_regions: gaps of a pixel per this many of the picture's side join no regions


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
    """Local hints [B, 4, S, S] showing `counts[i]` random patches of picture i, each its mean colour.
    `max_points` places are drawn whatever the counts: fewer points are the first of the same draw."""
    b, _, s, _ = color.shape
    u = torch.rand(b, max_points, 3, generator=gen, device=gen.device)
    k = min(int(counts.max()), max_points) if counts.numel() else 0
    if k == 0:
        return no_hints(b, s, color.device, color.dtype)
    ys, xs = (u[..., 0] * s).long().clamp(max=s - 1), (u[..., 1] * s).long().clamp(max=s - 1)
    pick = (u[..., 2] * len(radii)).long().clamp(max=len(radii) - 1)[:, :k]  # [B, k]
    pooled = torch.stack([F.avg_pool2d(color, 2 * r + 1, 1, r, count_include_pad=False) for r in radii])
    images = torch.arange(b, device=color.device)[:, None]
    colours = pooled[pick, images, :, ys[:, :k], xs[:, :k]]  # [B, k, 3]: each patch's mean colour
    r = torch.tensor(radii, device=color.device)[pick][..., None]  # [B, k, 1]
    grid = torch.arange(s, device=color.device)
    rows = (grid - ys[:, :k, None]).abs() <= r  # [B, k, S]
    cols = (grid - xs[:, :k, None]).abs() <= r
    shown = torch.arange(k, device=color.device) < counts[:, None]  # [B, k]
    inside = rows[..., :, None] & cols[..., None, :] & shown[..., None, None]  # [B, k, S, S]
    # A later patch covers an earlier one where they overlap: each pixel shows its last patch.
    order = torch.arange(1, k + 1, device=color.device)[None, :, None, None]
    last = (inside * order).amax(dim=1)  # [B, S, S], 0 = none
    colour = colours.gather(1, (last - 1).clamp_min(0).flatten(1)[..., None].expand(-1, -1, 3))  # [B, S*S, 3]
    mask = (last > 0).to(color.dtype)[:, None]
    return torch.cat([colour.transpose(1, 2).reshape(b, 3, s, s) * mask, mask], dim=1)


def propagate(local: torch.Tensor, lineart: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense guess from sparse hints that stops at lines (docs/training.md): (colour [N, 3, S, S],
    confidence [N, 1, S, S]); confidence 1 at a hint, times `decay` per step and the pixel's paperness."""
    hinted = local[:, 3].flatten(1).any(dim=1)
    if not hinted.all():  # pictures without hints (a quarter in training): no guess, confidence 0
        colour, confidence = local[:, :3].float().clone(), torch.zeros_like(local[:, 3:], dtype=torch.float32)
        if hinted.any():
            colour[hinted], confidence[hinted] = propagate(local[hinted], lineart[hinted])
        return colour, confidence
    s = local.shape[-1]
    decay = math.exp(-1.0 / (SPREAD_REACH * s))
    passable = ((lineart.float() + 1) / 2).clamp(0, 1) * decay  # [N, 1, S, S]
    confidence = local[:, 3:].float()
    # Each pixel's source: the pixel whose colour it takes (itself until a hint reaches it). One
    # index plane is carried instead of three colour planes; the colours are gathered once at the end.
    source = torch.arange(s * s, device=local.device).expand(len(local), 1, -1).reshape(confidence.shape)
    for _ in range(int(SPREAD_STEPS * s)):
        pooled, index = F.max_pool2d(confidence, 3, 1, 1, return_indices=True)
        reached = pooled * passable
        better = reached > confidence
        if not better.any():
            break
        source = torch.where(better, source.flatten(2).gather(2, index.flatten(2)).view_as(source), source)
        confidence = torch.where(better, reached, confidence)
    colour = local[:, :3].float().flatten(2).gather(2, source.flatten(2).expand(-1, 3, -1)).view(-1, 3, s, s)
    weight = confidence * passable  # 0 on line pixels: blending pulls no colour across a line
    for _ in range(2):  # blend where two hints' reaches meet: a confidence-weighted 5x5 average
        total = F.avg_pool2d(weight, 5, 1, 2)
        blended = F.avg_pool2d(colour * weight, 5, 1, 2) / total.clamp_min(1e-6)
        colour = torch.where(total > 1e-6, blended, colour)
    return colour, confidence


def guide_planes(
    local: torch.Tensor, lineart: torch.Tensor, base: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The planes a generator with local hints adds to its input (the hints, the dense guess), and the
    colour its output deviates from: the guess where it is sure, `base` (global hint's mean) elsewhere."""
    colour, confidence = propagate(local, lineart)
    planes = torch.cat([local.float(), colour, confidence], dim=1)
    return planes, None if base is None else confidence * colour + (1 - confidence) * base.float()


def layer_to_square(rgba: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """An RGBA hint layer at the input's size -> local hints [4, size, size] where the line art's fit
    put the picture (`box`); area-averaged, so a dot smaller than a model pixel still marks it."""
    top, left, h, w = box
    opaque = (rgba[..., 3] >= 128).astype(np.float32)
    premult = rgba[..., :3].astype(np.float32) * opaque[..., None]
    small = cv2.resize(np.dstack([premult, opaque]), (w, h), interpolation=cv2.INTER_AREA)
    mask = small[..., 3:] > 0
    colour = np.where(mask, small[..., :3] / np.maximum(small[..., 3:], 1e-6) / 127.5 - 1.0, 0)
    out = np.zeros((LOCAL_PLANES, size, size), np.float32)
    out[:, top : top + h, left : left + w] = np.dstack([colour, mask]).transpose(2, 0, 1)
    return out


def closed_regions(lines: np.ndarray) -> tuple[int, np.ndarray]:
    """(count, labels [H, W]) of the 4-connected regions `lines` (True = line) close; label 0: the lines,
    and slits between lines too close to be a region."""
    # Lines widened by a pixel per 512 px of the picture first, so that a gap that small (Canny's and
    # hand-drawn lines have them) joins no regions; then each region takes its widening back.
    reach = round(max(lines.shape) / GAP_PX_PER)  # 0 below 256 px: there a pixel is too much of a region
    kernel = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
    closed = cv2.dilate(lines.astype(np.uint8), kernel)
    count, labels = cv2.connectedComponents(1 - closed, connectivity=4)
    # A neighbouring region's label (float32 holds them exactly: the widened lines leave < 2**24 regions).
    near = cv2.dilate(labels.astype(np.float32), kernel).astype(labels.dtype)
    return count, np.where((closed > 0) & ~lines, near, labels)


def fill_regions(
    colour: np.ndarray,
    lines: np.ndarray,
    layer: np.ndarray,
    max_share: float = 0.25,
    unhinted: np.ndarray | None = None,
) -> np.ndarray:
    """Each region closed by `lines` (True = line) that holds hints: their mean colour plus the model's
    shading, unless over `max_share` of the image; the rest, lines too: `unhinted` (docs/colorize.md)."""
    opaque = layer[..., 3] >= 128
    if not opaque.any():
        return colour if unhinted is None else unhinted
    count, labels = closed_regions(lines)
    labels = labels.ravel()
    hinted = labels[opaque.ravel()]
    hint_n = np.bincount(hinted, minlength=count)
    sizes = np.bincount(labels, minlength=count)
    region = np.arange(count) > 0
    use = (hint_n > 0) & (sizes <= max_share * labels.size) & region
    flat = colour.reshape(-1, 3)
    if unhinted is not None:
        flat = np.where(((hint_n == 0) | ~region)[labels][:, None], unhinted.reshape(-1, 3), flat)
    luma = flat.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    region_luma = np.bincount(labels, luma, minlength=count) / np.maximum(sizes, 1)
    shading = luma - region_luma.astype(np.float32)[labels]
    inside = use[labels]
    out = flat.copy() if unhinted is None else flat  # np.where above already made a new array
    hint_rgb = layer[..., :3][opaque].astype(np.float64)
    for c in range(3):  # a channel at a time: float32 [H*W], not float64 [H*W, 3]
        target = np.bincount(hinted, hint_rgb[:, c], minlength=count) / np.maximum(hint_n, 1)
        out[inside, c] = np.clip(target.astype(np.float32)[labels[inside]] + shading[inside], 0, 255).round()
    return out.reshape(colour.shape)
