"""colorization.hint_layer: points and colour layers read, bad ones refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from colorization.hint_layer import HintLayerError, hint_layer
from colorization.images import encode_png


def test_points_and_layers_are_read_and_bad_ones_refused_in_one_line():
    points = json.dumps(
        [{"x": 10, "y": 5, "color": "#ff0000", "radius": 2}, {"x": 30, "y": 20, "color": "#0000ff"}]
    )
    layer = hint_layer(points.encode(), "hints.json", 40, 50, 10**6)
    assert layer.shape == (40, 50, 4) and tuple(layer[5, 10]) == (255, 0, 0, 255) and layer[0, 0, 3] == 0
    good = np.zeros((40, 50, 4), np.uint8)
    assert hint_layer(encode_png(good), "layer.png", 40, 50, 10**6).shape == (40, 50, 4)
    bad = {
        "the hint layer is 50x40, the picture 60x40": (encode_png(good), 40, 60),
        "no transparency": (encode_png(good[..., :3]), 40, 50),
        "unreadable hint layer": (b"\x89PNG\r\n\x1a\nbroken", 40, 50),
        "is not #rrggbb": (b'[{"x": 1, "y": 1, "color": "red"}]', 40, 50),
        "outside the 50x40 picture": (b'[{"x": 60, "y": 1, "color": "#ff0000"}]', 40, 50),
        "not a JSON list of points": (b"[{", 40, 50),
    }
    for message, (data, height, width) in bad.items():
        with pytest.raises(HintLayerError, match=message) as err:
            hint_layer(data, "hints", height, width, 10**6)
        assert "\n" not in str(err.value)
