"""colorization.local_eval: obedience to local hints, measured at the given points."""

from __future__ import annotations

import numpy as np

from colorization.local_eval import POINT_COUNTS, local_obedience
from tests.unit.test_colorize import save_local_model
from tests.unit.test_evaluate import IMAGE_SIZE
from tests.unit.test_inference import FLAT_HINT


def test_local_obedience_measures_distance_at_the_given_points(tmp_path):
    net = save_local_model(tmp_path / "cgan")
    lineart = np.full((4, IMAGE_SIZE, IMAGE_SIZE), 255, np.uint8)
    scores = local_obedience(
        net, lineart, np.repeat(FLAT_HINT, 4, axis=0), seed=0, device="cpu", batch_size=4
    )
    assert len(scores["distance"]) >= 4 * 8  # ~10 points per picture (a few may coincide)
    assert 0 <= scores["distance"].mean() <= 255 and set(np.unique(scores["within_30"])) <= {0.0, 1.0}
    assert POINT_COUNTS == (0, 1, 2, 5, 10, 20)
