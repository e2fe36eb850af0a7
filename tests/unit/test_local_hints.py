"""Local colour hints: simulated in training, fitted from a person's layer, obeyed, and kept
inside the regions the lines close (issue 25)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from colorization.colorize import fit_input
from colorization.config import DEFAULT_RECIPE
from colorization.local_eval import simulated_points
from colorization.local_hints import fill_regions, layer_to_square, point_counts, reveal
from tests.unit.test_colorize import drawing
from tests.unit.test_evaluate import IMAGE_SIZE

RED, BLUE = (220, 30, 30), (30, 40, 220)


# ---------------------------------------------------------------- simulated in training


def test_revealed_points_carry_the_pictures_colour_and_more_points_extend_fewer():
    rng = np.random.default_rng(0)
    color = rng.integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    five, twenty = simulated_points(color, 5, seed=7), simulated_points(color, 20, seed=7)
    assert (five[:, 3] > 0).any(axis=(1, 2)).all()
    assert ((five[:, 3] > 0) <= (twenty[:, 3] > 0)).all()  # the 5 are among the 20
    assert (twenty[:, 3].sum(axis=(1, 2)) > five[:, 3].sum(axis=(1, 2))).all()
    # One-pixel points: exactly the picture's colour there.
    target = torch.from_numpy(color).permute(0, 3, 1, 2).float() / 127.5 - 1
    gen = torch.Generator().manual_seed(1)
    local = reveal(target, torch.full((3,), 10), gen, 10, radii=(0,)).numpy()
    mask = local[:, 3] > 0
    np.testing.assert_allclose(
        local[:, :3].transpose(0, 2, 3, 1)[mask], target.permute(0, 2, 3, 1).numpy()[mask]
    )
    assert 0 < mask.sum() <= 30


def test_overlapping_patches_show_the_later_one_and_unshown_draws_leave_no_trace():
    """reveal is vectorised over the points: where two patches overlap, the later one's colour
    shows (as if painted in turn), and draws past a picture's count mark nothing."""
    gen_colour = torch.Generator().manual_seed(3)
    color = torch.rand(6, 3, 16, 16, generator=gen_colour) * 2 - 1
    counts = torch.tensor([0, 1, 3, 8, 8, 5])
    local = reveal(color, counts, torch.Generator().manual_seed(4), 8, radii=(3,))  # 7x7: overlaps
    u = torch.rand(6, 8, 3, generator=torch.Generator().manual_seed(4))
    ys, xs = (u[..., 0] * 16).long(), (u[..., 1] * 16).long()
    pooled = torch.nn.functional.avg_pool2d(color, 7, 1, 3, count_include_pad=False)
    expected = torch.zeros_like(local)
    for i, count in enumerate(counts.tolist()):
        for j in range(count):  # painted one after the other
            y, x = ys[i, j].item(), xs[i, j].item()
            expected[i, :3, max(y - 3, 0) : y + 4, max(x - 3, 0) : x + 4] = pooled[i, :, y, x, None, None]
            expected[i, 3, max(y - 3, 0) : y + 4, max(x - 3, 0) : x + 4] = 1
    torch.testing.assert_close(local, expected, rtol=0, atol=0)


def test_point_counts_include_none_and_stay_within_the_maximum():
    counts = point_counts(4000, torch.Generator().manual_seed(0), 32, 0.25)
    assert 0.2 < (counts == 0).float().mean() < 0.3
    assert counts.max() <= 32 and (counts == 1).sum() > (counts == 32).sum()


# ---------------------------------------------------------------- from a person's layer


@pytest.mark.parametrize("shape", [(200, 100), (100, 300)])
def test_a_dot_at_the_inputs_top_left_lands_at_the_models_top_left(shape):
    height, width = shape
    fitted = fit_input(drawing(height, width), IMAGE_SIZE, DEFAULT_RECIPE)
    layer = np.zeros((height, width, 4), np.uint8)
    layer[0, 0] = (*RED, 255)  # one pixel: far below one model pixel, still a hint
    layer[height - 1, width - 1] = (*BLUE, 255)
    local = layer_to_square(layer, fitted.box, IMAGE_SIZE)
    top, left, h, w = fitted.box
    assert np.argwhere(local[3] > 0).tolist() == [[top, left], [top + h - 1, left + w - 1]]
    red = (local[:3, top, left] + 1) * 127.5
    np.testing.assert_allclose(red, RED, atol=1)


# ---------------------------------------------------------------- at full size


def two_regions(size: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Lines: a closed square in the middle; the colour layer: grey everywhere."""
    lines = np.zeros((size, size), bool)
    lines[30, 30:91] = lines[90, 30:91] = lines[30:91, 30] = lines[30:91, 90] = True
    return lines, np.full((size, size, 3), 128, np.uint8)


def test_a_dot_colours_its_closed_region_and_nothing_across_the_line():
    lines, colour = two_regions()
    colour[40:80, 40:80, 0] += 20  # some shading inside, to be kept
    layer = np.zeros((*lines.shape, 4), np.uint8)
    cv2.circle(layer, (60, 60), 2, (*RED, 255), -1)
    filled = fill_regions(colour, lines, layer, max_share=0.5)
    inside, outside = filled[32:89, 32:89].reshape(-1, 3), filled[:28].reshape(-1, 3)
    np.testing.assert_allclose(inside.mean(axis=0), RED, atol=1.5)  # the region takes the dot's colour
    assert filled[60, 60, 0] > filled[35, 35, 0]  # its shading stays
    assert (outside == 128).all()  # nothing leaks across the closed line
    # A region larger than max_share (open paper) keeps the model's colour.
    cv2.circle(layer, (5, 5), 2, (*BLUE, 255), -1)
    assert (fill_regions(colour, lines, layer, max_share=0.5)[:28] == 128).all()


def test_regions_without_a_dot_keep_the_colouring_without_dots():
    """Given the model's colouring without local hints, every region no dot is in takes it, the
    large open one too: the model's own spread of a dot stops at the line that closes its region.
    A large region that holds a dot keeps the dotted colouring (no fill there)."""
    lines, dotted = two_regions()
    dotted[:] = (200, 40, 40)  # the model spread the red dot everywhere
    plain = np.full_like(dotted, 90)
    layer = np.zeros((*lines.shape, 4), np.uint8)
    cv2.circle(layer, (60, 60), 2, (*RED, 255), -1)
    filled = fill_regions(dotted, lines, layer, max_share=0.5, unhinted=plain)
    assert (filled[:28] == 90).all() and (filled[95:] == 90).all()  # outside: no dot, no red
    np.testing.assert_allclose(filled[32:89, 32:89].reshape(-1, 3).mean(axis=0), RED, atol=1.5)
    cv2.circle(layer, (5, 5), 2, (*BLUE, 255), -1)  # now the open region holds a dot too
    assert (fill_regions(dotted, lines, layer, max_share=0.5, unhinted=plain)[:28] == (200, 40, 40)).all()
    assert (fill_regions(dotted, lines, np.zeros_like(layer), unhinted=plain) == 90).all()


def test_a_gap_of_a_pixel_in_the_line_lets_no_colour_out():
    """Drawn lines (and Canny's) have small gaps: the dot's region stops at them all the same, and its
    colour reaches the line's edge inside (no halo of other colour between the fill and the line)."""
    lines = np.zeros((512, 512), bool)  # a pixel of gap is closed per 512 px of the picture's side
    lines[100, 100:401] = lines[400, 100:401] = lines[100:401, 100] = lines[100:401, 400] = True
    lines[100, 250] = False  # a one-pixel gap in the square's top side
    dotted, plain = np.full((512, 512, 3), (200, 40, 40), np.uint8), np.full((512, 512, 3), 90, np.uint8)
    layer = np.zeros((512, 512, 4), np.uint8)
    cv2.circle(layer, (250, 250), 2, (*RED, 255), -1)
    filled = fill_regions(dotted, lines, layer, max_share=0.5, unhinted=plain)
    assert (filled[:100] == 90).all() and (filled[401:] == 90).all()  # outside, up to the line: no red
    assert (filled[101:400, 101:400] == RED).all()
    assert (filled[100, 200] == 90).all() and (filled[100, 250] == 90).all()  # a line, the gap: no region's
    strip = np.zeros((128, 128), bool)  # at 128 px nothing is widened: a two-pixel strip is a region
    strip[20:101, 60] = strip[20:101, 63] = strip[20, 60:64] = strip[100, 60:64] = True
    dot = np.zeros((128, 128, 4), np.uint8)
    dot[50, 61] = (*RED, 255)
    small = fill_regions(dotted[:128, :128], strip, dot, unhinted=plain[:128, :128])
    assert (small[21:100, 61:63] == RED).all() and (small[:, :60] == 90).all()


def test_a_one_pixel_diagonal_line_closes_a_region():
    size = 40
    lines = np.zeros((size, size), bool)
    for i in range(size):  # a diagonal stroke, corner to corner: pixels touch only at corners
        lines[i, size - 1 - i] = True
    layer = np.zeros((size, size, 4), np.uint8)
    layer[2, 2] = (*RED, 255)
    filled = fill_regions(np.full((size, size, 3), 128, np.uint8), lines, layer, max_share=0.6)
    assert tuple(filled[3, 3]) == RED and tuple(filled[size - 3, size - 3]) == (128, 128, 128)
