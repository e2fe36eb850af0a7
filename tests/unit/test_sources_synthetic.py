"""colorization.sources.synthetic: the demo pictures, deterministic per seed."""

import numpy as np

from colorization.sources.synthetic import render


def test_synthetic_is_deterministic_for_a_seed():
    a, b, c = render(3, 0, 64), render(3, 0, 64), render(3, 1, 64)
    assert np.array_equal(a.rgb, b.rgb)
    assert not np.array_equal(a.rgb, c.rgb)
    assert a.rgb.dtype == np.uint8 and a.rgb.shape == (64, 64, 3)


def test_synthetic_shape_families_carry_their_colours():
    # Discs are warm: more red than blue on average over the disc pictures.
    warm = [render(i, 0, 64) for i in range(40)]
    assert all(len(p.families) >= 2 for p in warm)
    dark_outline = [(p.rgb.sum(axis=2) < 120).mean() for p in warm]
    assert min(dark_outline) > 0.005  # every picture has outlines
