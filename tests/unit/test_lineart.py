"""colorization.lineart: the extractors (Canny, XDoG) and thickening pinned to hand-computed
values, the resize rules (crop, pad, interpolation) and the training pair.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from colorization.config import LineartParams
from colorization.lineart import canny, extract_lineart, prepare_pair, resize_square, thicken, xdog


def square_picture(size: int = 64) -> np.ndarray:
    rgb = np.full((size, size, 3), 240, np.uint8)
    rgb[16:48, 16:48] = (200, 40, 40)
    return rgb


def test_canny_draws_black_lines_on_white_paper():
    lines = canny(square_picture(), 100, 200, 3)
    assert lines.dtype == np.uint8 and lines.shape == (64, 64)
    assert set(np.unique(lines)) == {0, 255}
    assert lines[32, 32] == 255 and lines[2, 2] == 255  # flat regions are paper
    assert (lines[14:19, 32] == 0).any()  # the square's top edge is a line
    assert (lines == 0).mean() < 0.2


def test_canny_on_a_flat_image_is_blank_paper():
    assert (canny(np.full((20, 20, 3), 90, np.uint8), 50, 150, 0) == 255).all()


def test_xdog_is_dark_at_edges_and_light_inside():
    lines = xdog(square_picture(), sigma=0.8, k=1.6, tau=0.98, epsilon=0.0, phi=200.0)
    assert lines.dtype == np.uint8 and lines.shape == (64, 64)
    assert lines[32, 32] > 200 and lines[2, 2] > 200
    assert lines[14:19, 32].min() < 100


def test_thicken_widens_lines():
    lines = np.full((9, 9), 255, np.uint8)
    lines[4, 4] = 0
    assert (thicken(lines, 1) == 0).sum() >= 5 and thicken(lines, 1)[3:6, 4].max() == 0
    assert thicken(lines, 0) is lines


@pytest.mark.parametrize("shape", [(100, 60), (60, 100), (64, 64), (20, 30)])
def test_center_crop_fills_the_square(shape):
    rgb = np.random.default_rng(0).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    out = resize_square(rgb, 32, "center_crop")
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_pad_keeps_the_whole_picture_on_white():
    rgb = np.zeros((100, 50, 3), np.uint8)
    out = resize_square(rgb, 32, "pad")
    assert out.shape == (32, 32, 3)
    assert (out[:, :8] == 255).all() and (out[:, 24:] == 255).all()  # white side bands
    assert (out[:, 9:23] == 0).all()


@pytest.mark.parametrize("blur", [0, 3, 5])
@pytest.mark.parametrize("shape", [(64, 64), (37, 91), (3, 200)])
def test_canny_is_the_papers_formula(shape, blur):
    # grey, Gaussian blur, cv2.Canny on the grey image, inverted: written out the plain way.
    rng = np.random.default_rng(sum(shape) + blur)
    rgb = cv2.resize(
        rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST
    )
    rgb = np.clip(rgb + rng.normal(0, 20, rgb.shape), 0, 255).astype(np.uint8)  # edges reach the borders
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if blur:
        gray = cv2.GaussianBlur(gray, (blur, blur), 0)
    for low, high in ((100, 200), (20, 60)):
        np.testing.assert_array_equal(canny(rgb, low, high, blur), 255 - cv2.Canny(gray, low, high))


def test_the_extractor_table_is_the_configs_choice_and_each_runs_with_its_own_settings():
    from typing import get_args

    from colorization.config import DEFAULT_RECIPE, LineartRecipe
    from colorization.lineart import EXTRACTORS, extract_lineart

    assert (
        get_args(LineartRecipe.model_fields["extractor"].annotation) == tuple(EXTRACTORS) == ("canny", "xdog")
    )
    rgb = np.zeros((32, 32, 3), np.uint8)
    cv2.circle(rgb, (16, 16), 9, (200, 80, 40), -1)
    c, x = DEFAULT_RECIPE.canny, DEFAULT_RECIPE.xdog
    by_name = {
        "canny": canny(rgb, c.low, c.high, c.blur),
        "xdog": xdog(rgb, x.sigma, x.k, x.tau, x.epsilon, x.phi),
    }
    for name in EXTRACTORS:
        recipe = DEFAULT_RECIPE.model_copy(update={"extractor": name})
        np.testing.assert_array_equal(extract_lineart(rgb, recipe), by_name[name])
    assert not np.array_equal(by_name["canny"], by_name["xdog"])


def lineart_params(params_dict, **changes) -> LineartParams:
    section = {**params_dict["lineart"], **changes}
    return LineartParams.model_validate(section)


def picture(seed: int = 0) -> np.ndarray:
    """Soft shapes on a gradient: edges of every strength, so thresholds matter."""
    rng = np.random.default_rng(seed)
    image = np.tile(np.linspace(60, 200, 64, dtype=np.float32)[None, :, None], (64, 1, 3))
    for _ in range(6):
        centre = tuple(int(v) for v in rng.integers(8, 56, 2))
        cv2.circle(
            image, centre, int(rng.integers(4, 14)), tuple(float(v) for v in rng.integers(0, 256, 3)), -1
        )
    return cv2.GaussianBlur(image, (5, 5), 1.5).astype(np.uint8)


# ---------------------------------------------------------------- extractors


def test_canny_is_grey_blur_canny_inverted_with_the_given_thresholds():
    rgb = picture()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    expected = 255 - cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 0), 20, 60)
    np.testing.assert_array_equal(canny(rgb, 20, 60, 5), expected)
    assert (canny(rgb, 20, 60, 5) != canny(rgb, 60, 60, 5)).any(), "the low threshold matters here"
    assert (canny(rgb, 20, 60, 5) != canny(rgb, 20, 150, 5)).any(), "the high threshold matters here"


def test_extract_lineart_runs_the_configured_extractor_with_its_settings(params_dict):
    rgb = picture(1)
    c = {"low": 20, "high": 60, "blur": 5}
    x = {"sigma": 1.2, "k": 1.6, "tau": 0.97, "epsilon": 0.01, "phi": 50.0}
    by_canny = extract_lineart(rgb, lineart_params(params_dict, extractor="canny", canny=c, dilate=0))
    np.testing.assert_array_equal(by_canny, canny(rgb, 20, 60, 5))
    by_xdog = extract_lineart(rgb, lineart_params(params_dict, extractor="xdog", xdog=x, dilate=0))
    np.testing.assert_array_equal(by_xdog, xdog(rgb, 1.2, 1.6, 0.97, 0.01, 50.0))
    assert (by_xdog != by_canny).any()
    thick = extract_lineart(rgb, lineart_params(params_dict, extractor="canny", canny=c, dilate=1))
    np.testing.assert_array_equal(thick, thicken(canny(rgb, 20, 60, 5), 1))


def test_xdog_on_flat_grey_follows_the_formula():
    # Flat: both blurs are the grey g itself, so d = g (1 - tau); below epsilon the soft ramp
    # 1 + tanh(phi (d - epsilon)) applies, at or above it is paper.
    flat = np.full((8, 8, 3), 128, np.uint8)
    g = 128 / 255.0
    d = g * (1 - 0.98)
    expected = round((1.0 + np.tanh(100.0 * (d - 0.02))) * 255.0)  # = 61
    assert (xdog(flat, 0.8, 1.6, 0.98, 0.02, 100.0) == expected).all()
    assert (xdog(flat, 0.8, 1.6, 0.98, 0.0, 100.0) == 255).all()
    ramp = xdog(picture(2), 0.8, 1.6, 0.98, 0.0, 200.0)
    assert ramp.dtype == np.uint8 and ramp.min() < 128 and ramp.max() == 255


def test_thicken_grows_a_dot_by_an_ellipse_of_the_given_radius():
    dot = np.full((11, 11), 255, np.uint8)
    dot[5, 5] = 0
    cross = np.argwhere(thicken(dot, 1) == 0)
    assert sorted(map(tuple, cross)) == [(4, 5), (5, 4), (5, 5), (5, 6), (6, 5)]  # no diagonals
    two = thicken(dot, 2) == 0
    expected = np.zeros((11, 11), bool)
    expected[3, 5] = expected[7, 5] = True  # the tips of the 5 x 5 ellipse
    expected[4:7, 3:8] = True
    np.testing.assert_array_equal(two, expected)
    assert thicken(dot, 0) is dot


# ---------------------------------------------------------------- resize interpolation


def test_shrinking_averages_areas_and_enlarging_is_bicubic():
    rgb = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    small = resize_square(rgb, 16)  # the default mode: center_crop, here a plain 4x shrink
    block_means = rgb.reshape(16, 4, 16, 4, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(small.astype(np.float64) - block_means).max() <= 0.5 + 1e-9
    tiny = rgb[:24, :24]
    big = resize_square(tiny, 32, "pad")  # x 4/3: enlarged
    np.testing.assert_array_equal(big, cv2.resize(tiny, (32, 32), interpolation=cv2.INTER_CUBIC))


def test_pad_of_a_one_pixel_line_keeps_one_row():
    line = np.full((1, 40, 3), 9, np.uint8)  # 1 x 40 -> scaled to 0.25 rows: kept as 1 row
    out = resize_square(line, 10, "pad")
    assert (out[:, :, 0] == 9).sum(axis=0).tolist() == [1] * 10
    assert (out[4] == 9).all() and (np.delete(out, 4, axis=0) == 255).all()
    column = np.full((40, 1, 3), 9, np.uint8)
    out = resize_square(column, 10, "pad")
    assert (out[:, 4] == 9).all() and (np.delete(out, 4, axis=1) == 255).all()


@pytest.mark.parametrize("size", [16, 17])
def test_resize_square_always_returns_the_square(size):
    for shape in ((40, 23), (23, 40), (size, size)):
        for mode in ("center_crop", "pad"):
            assert resize_square(np.zeros((*shape, 3), np.uint8), size, mode).shape == (size, size, 3)


# ---------------------------------------------------------------- the resize rule


def row_bands(height: int, width: int) -> np.ndarray:
    """RGB whose row i is grey level (i // 2) * 10: every 2 x 2 block is flat, so halving it
    with area averaging is exact and the expected pixels can be written down by hand."""
    levels = (np.arange(height) // 2 * 10).astype(np.uint8)
    return np.repeat(np.repeat(levels[:, None, None], width, axis=1), 3, axis=2)


def test_center_crop_scales_the_shorter_side_then_cuts_the_middle():
    tall = row_bands(40, 20)  # 40 rows x 20 columns -> scale 1/2 -> 20 x 10 -> rows 5..14 kept
    out = resize_square(tall, 10, "center_crop")
    assert out.shape == (10, 10, 3)
    expected_rows = np.arange(5, 15) * 10  # row r of the halved image is grey r * 10
    np.testing.assert_array_equal(out[:, :, 0], np.repeat(expected_rows[:, None], 10, axis=1))

    # A stretch (40 x 20 squeezed to 10 x 10) would give rows 5, 25, ..., 185: not a crop.


def test_center_crop_of_a_wide_picture_keeps_its_middle_columns():
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :10] = 255  # a white band on the left quarter only
    out = resize_square(wide, 10, "center_crop")  # scale 1/2 -> 10 x 20, columns 5..14 kept
    assert out.shape == (10, 10, 3)
    np.testing.assert_array_equal(out, np.zeros((10, 10, 3), np.uint8))  # the band was cut away


def test_pad_scales_the_longer_side_and_pads_with_white_evenly():
    wide = np.full((20, 40, 3), 50, np.uint8)  # scale 1/4 -> 5 rows x 10 columns, 5 rows of paper
    out = resize_square(wide, 10, "pad")
    assert out.shape == (10, 10, 3)
    assert (out[:2] == 255).all() and (out[2:7] == 50).all() and (out[7:] == 255).all()


def test_a_training_pair_is_the_cropped_picture_and_its_lines(params_dict):
    from colorization.config import LineartParams

    params = LineartParams.model_validate(
        {**params_dict["lineart"], "image_size": 16, "resize": "center_crop"}
    )
    color, lines = prepare_pair(row_bands(64, 32), params)  # halved to 32 x 16: rows 8..23 kept
    expected_rows = np.arange(8, 24) * 10
    np.testing.assert_array_equal(color[:, :, 1], np.repeat(expected_rows[:, None], 16, axis=1))
    assert lines.shape == (16, 16) and lines.dtype == np.uint8
