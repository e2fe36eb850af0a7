"""Small pieces pinned to hand-computed values (written to kill mutants that survived the
suite, bench/MUTATION.md): line-art extractors and thickening, resize interpolation, the
palette strip and the sample grid."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from colorization.config import LineartParams
from colorization.histogram import bin_centers
from colorization.inference import palette, sample_grid
from colorization.lineart import canny, extract_lineart, resize_square, thicken, xdog


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


# ---------------------------------------------------------------- palette strip, sample grid


def test_palette_strips_are_as_tall_as_their_weights():
    hint = np.zeros(512, np.float32)
    hint[[448, 7, 56]] = [0.5, 0.3, 0.2]  # red, blue, green bins
    image = palette(hint, 10)
    assert image.dtype == np.uint8 and image.shape == (10, 10, 3)
    centres = bin_centers()
    for rows, k in ((slice(0, 5), 448), (slice(5, 8), 7), (slice(8, 10), 56)):
        assert (image[rows] == centres[k]).all()


def test_palette_drops_the_last_two_percent_and_renormalises():
    hint = np.zeros(512, np.float32)
    hint[448], hint[7] = 0.99, 0.01  # 0.99 >= mass 0.98: one colour only, over the whole strip
    image = palette(hint, 100)
    assert (image == bin_centers()[448]).all()


def test_palette_keeps_at_most_sixteen_colours():
    hint = np.zeros(512, np.float32)
    hint[:20] = 0.05
    image = palette(hint, 32)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) == 16
    assert (image[::2] == image[1::2]).all()  # 16 strips of 2 rows each


def test_sample_grid_lays_columns_side_by_side_with_white_gaps():
    grey = np.stack([np.full((3, 3), 10, np.uint8), np.full((3, 3), 20, np.uint8)])  # [N=2, S=3, S]
    colour = np.stack([np.full((3, 3, 3), (1, 2, 3), np.uint8), np.full((3, 3, 3), (4, 5, 6), np.uint8)])
    grid = sample_grid([grey, colour])
    assert grid.shape == (8, 8, 3) and grid.dtype == np.uint8  # 2 x 3 + 1 gap of 2, both ways
    assert (grid[0:3, 0:3] == 10).all() and (grid[5:8, 0:3] == 20).all()
    assert (grid[0:3, 5:8] == (1, 2, 3)).all() and (grid[5:8, 5:8] == (4, 5, 6)).all()
    assert (grid[3:5] == 255).all() and (grid[:, 3:5] == 255).all()
    wide = sample_grid([colour], gap=4)
    assert wide.shape == (10, 3, 3) and (wide[3:7] == 255).all()


def test_a_grey_column_is_shown_pixel_for_pixel_in_all_three_channels():
    grey = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4) * 5  # every pixel its own level
    grid = sample_grid([grey])
    for i in range(2):
        cell = grid[i * 6 : i * 6 + 4]
        assert (cell == grey[i][..., None]).all()


@pytest.mark.parametrize("size", [16, 17])
def test_resize_square_always_returns_the_square(size):
    for shape in ((40, 23), (23, 40), (size, size)):
        for mode in ("center_crop", "pad"):
            assert resize_square(np.zeros((*shape, 3), np.uint8), size, mode).shape == (size, size, 3)


# ---------------------------------------------------------------- augmentation


def augment_cfg(**changes):
    from colorization.config import AugmentParams

    off = {"flip": False, "crop_min": 1.0, "thicken_p": 0.0, "line_intensity_min": 1.0}
    off |= {"recolour_p": 0.0, "saturation": 0.0, "hint_blend_p": 0.0, "xdog_p": 0.0}
    off |= {"local_points_max": 0, "local_none_p": 0.0}
    return AugmentParams(**(off | changes))


def strokes(n: int = 16, size: int = 16):
    import torch

    rng = np.random.default_rng(5)
    color = torch.from_numpy(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))
    lineart = torch.full((n, 1, size, size), 255, dtype=torch.uint8)
    lineart[:, :, 4, 2:7] = 0  # a short stroke left of the middle
    return color, lineart


def test_a_flip_mirrors_colour_and_line_art_together_about_half_the_time():
    import torch

    from colorization.augment import augment

    color, lineart = strokes()
    out_c, out_l = augment(color, lineart, torch.Generator().manual_seed(0), augment_cfg(flip=True))
    plain_c, plain_l = color.float() / 127.5 - 1, lineart.float() / 127.5 - 1
    flipped = []
    for i in range(len(color)):
        same = torch.allclose(out_c[i], plain_c[i], atol=1e-4) and torch.allclose(
            out_l[i], plain_l[i], atol=1e-4
        )
        mirrored = torch.allclose(out_c[i], plain_c[i].flip(-1), atol=1e-4) and torch.allclose(
            out_l[i], plain_l[i].flip(-1), atol=1e-4
        )
        assert same != mirrored, i
        flipped.append(mirrored)
    assert 0 < sum(flipped) < len(flipped)


def test_fainter_lines_are_grey_between_the_floor_and_black_and_paper_stays_white():
    import torch

    from colorization.augment import augment

    color, lineart = strokes()
    _, out = augment(color, lineart, torch.Generator().manual_seed(1), augment_cfg(line_intensity_min=0.4))
    line_values = out[:, 0, 4, 2:7]  # darkness d in [0.4, 1]: the line is 1 - d in [0, 0.6] -> [-1, 0.2]
    assert line_values.min() >= -1 - 1e-6 and line_values.max() <= 0.2 + 1e-6
    per_image = line_values[:, 0]
    assert per_image.max() - per_image.min() > 0.2, "the darkness varies from picture to picture"
    one_each = torch.allclose(line_values, per_image[:, None].expand_as(line_values), atol=1e-5)
    assert one_each, "one darkness per picture"
    paper = torch.ones_like(out, dtype=torch.bool)
    paper[:, :, 4, 2:7] = False
    assert (out[paper] - 1).abs().max() < 1e-5


def test_thickening_grows_strokes_by_exactly_one_pixel_all_round():
    import torch

    from colorization.augment import augment

    color, lineart = strokes(n=2)
    _, out = augment(color, lineart, torch.Generator().manual_seed(2), augment_cfg(thicken_p=1.0))
    expected = torch.ones(16, 16)
    expected[3:6, 1:8] = -1  # rows 4 +- 1, columns 2..6 +- 1
    for line in out[:, 0]:
        torch.testing.assert_close(line, expected, atol=1e-4, rtol=0)


def test_a_crop_zooms_colour_and_line_art_by_the_same_affine_map():
    import torch

    from colorization.augment import augment

    _, lineart = strokes(n=8)
    grey = lineart.expand(-1, 3, -1, -1).contiguous()  # a colour picture that is the line art itself
    out_c, out_l = augment(grey, lineart, torch.Generator().manual_seed(3), augment_cfg(crop_min=0.5))
    for c in range(3):
        torch.testing.assert_close(out_c[:, c], out_l[:, 0], atol=1e-5, rtol=0)
    plain = lineart.float() / 127.5 - 1
    assert all(not torch.allclose(out_l[i], plain[i], atol=1e-3) for i in range(len(out_l))), (
        "every one zoomed"
    )


# ---------------------------------------------------------------- colorize: fitting, layers, hints


def test_palette_colours_are_read_as_rr_gg_bb_and_a_zero_weight_is_refused():
    from colorization.colorize import ColorizeError, parse_palette

    hint = parse_palette("#204060")  # (0x20, 0x40, 0x60) = (32, 64, 96): bin 1*64 + 2*8 + 3 = 83
    assert hint[83] == pytest.approx(1.0)
    with pytest.raises(ColorizeError, match="positive"):
        parse_palette("#ff0000:0")


def test_a_one_pixel_high_drawing_fits_as_one_row(params_dict):
    from colorization.colorize import fit_input

    params = lineart_params(params_dict)
    row = np.full((1, 64, 3), 255, np.uint8)
    row[0, ::4] = 0
    assert fit_input(row, 32, params).box == (15, 0, 1, 32)
    column = np.ascontiguousarray(row.transpose(1, 0, 2))
    assert fit_input(column, 32, params).box == (0, 15, 32, 1)


def test_halving_a_drawing_keeps_its_thin_grey_lines_and_same_size_keeps_them_thin(params_dict):
    from colorization.colorize import fit_input

    params = lineart_params(params_dict)
    drawing = np.full((64, 64, 3), 255, np.uint8)
    drawing[::8, :] = 100  # 1 px grey lines: averaged with paper they would fade to 177
    halved = fit_input(drawing, 32, params).lineart
    assert (halved[::4] == 0).all() and (halved.min(axis=1) == 0).sum() == 8
    same = fit_input(drawing[:32, :32], 32, params).lineart
    np.testing.assert_array_equal(same == 0, (drawing[:32, :32, 0] == 100))  # not thickened


def test_the_line_layer_fades_light_pixels_and_keeps_dark_ones(params_dict):
    from colorization.colorize import LINE_LEVEL, line_layer

    image = np.full((4, 4, 3), 255, np.uint8)
    image[0, 0], image[0, 1], image[0, 2] = 0, LINE_LEVEL, LINE_LEVEL + 1
    layer = line_layer(image, lineart_params(params_dict))
    alpha = layer[0, :4, 3].tolist()
    assert alpha == [255, 255, (255 - LINE_LEVEL - 1) * 255 // (255 - LINE_LEVEL), 0]  # 252 for 129
    assert layer[0, 0, :3].tolist() == [0, 0, 0]


def test_over_rounds_to_the_nearest_level():
    from colorization.colorize import over

    top = np.zeros((2, 1, 4), np.uint8)
    top[..., :3], top[..., 3] = 127, 1  # 127 * 1/255 = 0.498 -> 0; with alpha 2: 0.996 -> 1
    top[1, 0, 3] = 2
    out = over(top, np.zeros((2, 1, 3), np.uint8))
    assert out[:, 0, 0].tolist() == [0, 1]


def test_a_reference_beyond_the_pixel_limit_is_refused(params_dict, tmp_path):
    from colorization.colorize import ColorizeError, reference_hint

    path = tmp_path / "big.png"
    cv2.imwrite(str(path), np.zeros((40, 40, 3), np.uint8))
    limits = lineart_params(params_dict, max_pixels=1000)
    with pytest.raises(ColorizeError, match="max_pixels"):
        reference_hint(path, limits)
    assert reference_hint(path).shape == (512,)


def test_the_hint_model_sees_line_art_at_its_own_size(params_dict):
    import torch

    from colorization.colorize import HintSource, LoadedModel, hints_for

    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            seen.append(tuple(x.shape))
            return torch.zeros(len(x), 512) + self.w

    model = LoadedModel(Recorder(), "hint", 16, "recorder")
    lineart = np.full((3, 32, 32), 255, np.uint8)
    hints = hints_for(HintSource(model=model), lineart, "cpu", batch_size=2)
    assert hints.shape == (3, 512) and seen == [(2, 1, 16, 16), (1, 1, 16, 16)]
    seen.clear()
    hints_for(HintSource(model=LoadedModel(Recorder(), "hint", 32, "same")), lineart, "cpu")
    assert seen == [(3, 1, 32, 32)]
