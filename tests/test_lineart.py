import cv2
import numpy as np
import pytest

from colorization.lineart import canny, resize_square, thicken, xdog


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
