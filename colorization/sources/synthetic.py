"""Procedural cel-shaded illustrations: the offline default source, the same on every machine.
Each shape family has its own colours (docs/pipeline.md), so the line art tells which colour goes
where, leaving exact hue, shading and background to the colour hint."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

# family -> (hue range in degrees, saturation range, value range)
FAMILIES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "disc": ((-20.0, 40.0), (0.55, 0.95), (0.75, 1.0)),  # reds, oranges, yellows
    "box": ((190.0, 240.0), (0.45, 0.9), (0.55, 0.95)),  # blues
    "triangle": ((80.0, 150.0), (0.45, 0.9), (0.5, 0.9)),  # greens
    "star": ((265.0, 310.0), (0.35, 0.8), (0.55, 0.95)),  # violets
}
OUTLINE = (24, 20, 28)


@dataclass(frozen=True)
class SyntheticImage:
    rgb: np.ndarray  # uint8 [size, size, 3]
    families: tuple[str, ...]


def _hsv_to_rgb(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v)) * 255.0


def _shape_polygon(rng: np.random.Generator, family: str, cx: float, cy: float, r: float) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    if family == "disc":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([cx + r * np.cos(t), cy + r * rng.uniform(0.75, 1.0) * np.sin(t)], axis=1)  # oval
    if family == "box":
        t = angle + np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        return np.stack([cx + r * np.cos(t), cy + r * rng.uniform(0.6, 1.0) * np.sin(t)], axis=1)
    if family == "triangle":
        t = angle + np.array([0.0, 2.0, 4.0]) * np.pi / 3
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    # star: alternate outer and inner radius
    t = angle + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    return np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)


def _fill(mask_size: int, pts: np.ndarray, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    mask = np.zeros((mask_size, mask_size), np.uint8)
    poly = np.round((pts + np.asarray(shift)) * 16).astype(np.int32)  # 4 bits of sub-pixel
    cv2.fillPoly(mask, [poly], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def render(index: int, seed: int, size: int) -> SyntheticImage:
    rng = np.random.default_rng([seed, index])
    # Background: any hue, mostly light and soft, so shapes stand out as on a real illustration.
    a, b = (_hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.05, 0.5), rng.uniform(0.6, 1.0)) for _ in range(2))
    canvas = np.empty((size, size, 3), np.float32)
    if (style := rng.integers(3)) == 0:  # flat
        canvas[:] = a
    elif style == 1:  # vertical gradient
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
        canvas[:] = a * (1 - t) + b * t
    else:  # two-tone split, like a floor line
        canvas[:] = b
        canvas[: int(size * rng.uniform(0.55, 0.8))] = a
    canvas = canvas.round().astype(np.uint8)
    thickness = max(1, size // 96)
    families = []
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1)])  # one light per picture
    light /= np.linalg.norm(light) + 1e-6
    for _ in range(int(rng.integers(2, 6))):
        family = str(rng.choice(list(FAMILIES)))
        families.append(family)
        r = size * rng.uniform(0.12, 0.28)
        cx, cy = rng.uniform(r * 0.6, size - r * 0.6, size=2)
        pts = _shape_polygon(rng, family, cx, cy, r)
        hue, sat, val = FAMILIES[family]
        base = _hsv_to_rgb(rng.uniform(*hue), rng.uniform(*sat), rng.uniform(*val))
        body = _fill(size, pts)
        canvas[body] = base.round()
        # Shadow band: the part of the shape not covered by itself moved toward the light.
        shadow = body & ~_fill(size, pts, tuple(light * r * 0.35))
        canvas[shadow] = (base * 0.62).round()
        # Highlight: a small ellipse near the lit edge, lighter and less saturated.
        hx, hy = (np.array([cx, cy]) + light * r * 0.45).astype(int)
        highlight = np.zeros((size, size), np.uint8)
        axes = (max(1, int(r * 0.18)), max(1, int(r * 0.1)))
        cv2.ellipse(highlight, (int(hx), int(hy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
        canvas[highlight.astype(bool) & body] = (base * 0.4 + 255 * 0.6).round()
        # Outline now, so a shape drawn later hides it like any other part of this one.
        poly = np.round(pts * 16).astype(np.int32)
        cv2.polylines(canvas, [poly], True, OUTLINE, thickness, lineType=cv2.LINE_AA, shift=4)
    return SyntheticImage(rgb=canvas, families=tuple(families))
