"""A person's local colour hints (docs/colorize.md): an RGBA picture the input's size, or a JSON list of
points [{"x", "y", "color": "#rrggbb", "radius"}], read into one RGBA layer (opaque = a colour hint)."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np

from colorization.images import ImageRejected, decode_rgba

DEFAULT_RADIUS = 4  # px at the input's size: a dot a person would click
MAX_POINTS = 10_000
_HEX = re.compile(r"^#([0-9a-fA-F]{6})$")


class HintLayerError(ValueError):
    """A refused hint layer; the message is one line."""


def _number(point: dict, key: str, where: str, default=None) -> float:
    value = point.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise HintLayerError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def parse_points(data: bytes, height: int, width: int) -> np.ndarray:
    """A JSON list of points -> the RGBA layer [height, width, 4] with a disc per point, later ones on top."""
    try:
        points = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HintLayerError(f"not a JSON list of points ({err.__class__.__name__}: {err})") from None
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise HintLayerError('expected a JSON list of points like {"x": 10, "y": 20, "color": "#ff0000"}')
    if len(points) > MAX_POINTS:
        raise HintLayerError(f"{len(points)} points: at most {MAX_POINTS}")
    discs = []
    for i, point in enumerate(points):
        where = f"point {i + 1}"
        x, y = _number(point, "x", where), _number(point, "y", where)
        radius = _number(point, "radius", where, DEFAULT_RADIUS)
        if not (0 <= x < width and 0 <= y < height):
            raise HintLayerError(f"{where}: ({x:g}, {y:g}) is outside the {width}x{height} picture")
        if radius < 0:
            raise HintLayerError(f"{where}: radius must be 0 or more, got {radius:g}")
        colour = point.get("color")
        if not (match := _HEX.match(colour) if isinstance(colour, str) else None):
            raise HintLayerError(f"{where}: colour {colour!r} is not #rrggbb")
        discs.append(((round(x), round(y)), round(radius), (*bytes.fromhex(match.group(1)), 255)))
    layer = np.zeros((height, width, 4), np.uint8)
    for centre, radius, rgba in discs:  # drawn once all are valid
        cv2.circle(layer, centre, radius, rgba, thickness=-1)
    return layer


def hint_layer(data: bytes, name: str, height: int, width: int, max_pixels: int) -> np.ndarray:
    """The RGBA hint layer [height, width, 4] from a file's bytes: JSON points (by `name`'s suffix or
    content) or an RGBA picture of that size."""
    if name.lower().endswith(".json") or data.lstrip()[:1] in (b"[", b"{"):
        return parse_points(data, height, width)
    try:
        layer = decode_rgba(data, max_pixels=max_pixels)
    except ImageRejected as err:
        raise HintLayerError(f"unreadable hint layer ({err})") from None
    if layer.shape[:2] != (height, width):
        raise HintLayerError(
            f"the hint layer is {layer.shape[1]}x{layer.shape[0]}, the picture {width}x{height}: "
            "paint it on a layer the picture's size"
        )
    return layer
