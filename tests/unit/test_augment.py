"""What the on-device augmentation promises, measured on its outputs with a seeded generator:
crops stay inside the picture and move colour and line art together, every random choice has
the configured probability and range and is drawn independently of the others, recolouring
keeps the brightness and turns the hue over the whole circle, the blur and XDoG on the device
are OpenCV's, and a sampled batch keeps each picture with its own line art and hint."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from colorization import augment as aug
from colorization.augment import (
    DeviceData,
    augment,
    colour_matrices,
    gaussian_blur,
    histograms,
    recolour_batch,
    sample_batch,
    xdog_lines,
)
from colorization.config import AugmentParams, XDoGParams
from colorization.histogram import color_histogram
from colorization.store import Split
from tests.unit.test_evaluate import IMAGE_SIZE

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


XDOG = XDoGParams(sigma=0.8, k=1.6, tau=0.98, epsilon=0.0, phi=200.0)


YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def cfg(**changes) -> AugmentParams:
    off = {"flip": False, "crop_min": 1.0, "thicken_p": 0.0, "line_intensity_min": 1.0}
    off |= {"recolour_p": 0.0, "saturation": 0.0, "hint_blend_p": 0.0, "xdog_p": 0.0}
    off |= {"local_points_max": 0, "local_none_p": 0.0}
    return AugmentParams(**(off | changes))


def corr(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.corrcoef(a, b)[0, 1])


def assert_independent(named: dict[str, np.ndarray], limit: float = 0.12) -> None:
    names = list(named)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            c = corr(named[a], named[b])
            assert abs(c) < limit, f"{a} and {b} are drawn together (correlation {c:.2f})"


# ---------------------------------------------------------------- crop, flip, XDoG choice


S = 32


def coordinate_pictures(n: int) -> torch.Tensor:
    """Red = 8 * column, green = 8 * row: a pixel's colour says where it came from."""
    ramp = torch.arange(S, dtype=torch.uint8) * 8
    color = torch.full((n, 3, S, S), 128, dtype=torch.uint8)
    color[:, 0] = ramp[None, None, :]
    color[:, 1] = ramp[None, :, None]
    return color


def source_coordinate(values: torch.Tensor) -> torch.Tensor:
    """Normalised source coordinate (align_corners=False) from a sampled ramp value in [-1, 1]."""
    pixel = (values + 1) * 127.5 / 8
    return (2 * pixel + 1) / S - 1


def affine_of(out_color: torch.Tensor) -> dict[str, np.ndarray]:
    """Each picture's crop scale (signed by the flip) and shift, read from the two middle pixels."""
    m0, m1 = S // 2 - 1, S // 2
    step = 2 / S  # normalised distance between neighbouring output pixels
    x0, x1 = source_coordinate(out_color[:, 0, m0, m0]), source_coordinate(out_color[:, 0, m0, m1])
    y0, y1 = source_coordinate(out_color[:, 1, m0, m0]), source_coordinate(out_color[:, 1, m1, m0])
    return {
        "scale_x": ((x1 - x0) / step).numpy(),
        "scale_y": ((y1 - y0) / step).numpy(),
        "shift_x": ((x0 + x1) / 2).numpy(),
        "shift_y": ((y0 + y1) / 2).numpy(),
    }


def test_crops_stay_inside_the_picture_and_every_choice_is_drawn_on_its_own(monkeypatch):
    n, crop_min, xdog_p = 1200, 0.4, 0.3
    sigmas: list[torch.Tensor] = []

    def every_pixel_a_line(color, sigma, k, tau, epsilon, phi):
        sigmas.append(sigma.clone())
        return torch.zeros(color.shape[0], 1, *color.shape[2:])

    monkeypatch.setattr(aug, "xdog_lines", every_pixel_a_line)
    color = coordinate_pictures(n)
    paper = torch.full((n, 1, S, S), 255, dtype=torch.uint8)  # the stored line art: no lines
    settings = cfg(flip=True, crop_min=crop_min, line_intensity_min=0.5, xdog_p=xdog_p)
    out_c, out_l = augment(color, paper, torch.Generator().manual_seed(0), settings, XDOG)

    a = affine_of(out_c)
    flip = a["scale_x"] < 0
    scale = np.abs(a["scale_x"])
    np.testing.assert_allclose(scale, a["scale_y"], atol=1e-3)  # same zoom both ways, never mirrored upright
    assert scale.min() >= crop_min - 1e-3 and scale.max() <= 1 + 1e-3
    assert scale.min() < crop_min + 0.02 and scale.max() > 0.98, "crops over the whole allowed range"
    room = 1 - scale
    for axis in ("shift_x", "shift_y"):
        assert (np.abs(a[axis]) <= room + 1e-3).all(), f"{axis}: the crop leaves the picture"
        used = a[axis][room > 0.1] / room[room > 0.1]
        assert used.min() < -0.95 and used.max() > 0.95, f"{axis}: crops reach both edges"
    assert 0.45 < flip.mean() < 0.55

    # XDoG lines (here: the stand-in's all-line picture) replace the stored paper for a share xdog_p.
    middle = out_l[:, 0, S // 2, S // 2].numpy()
    redrawn = middle < 0.5
    assert 0.26 < redrawn.mean() < 0.34
    darkness = (1 - middle[redrawn]) / 2  # a line of darkness d reads 1 - 2d
    assert darkness.min() >= 0.5 - 1e-4 and darkness.max() <= 1 + 1e-4
    assert darkness.min() < 0.52 and darkness.max() > 0.98
    (sigma,) = sigmas
    ratio = (sigma / XDOG.sigma).numpy()
    assert ratio.min() >= 0.75 - 1e-6 and ratio.max() <= 1.5 + 1e-6, "XDoG at 0.75x to 1.5x the sigma"
    assert ratio.min() < 0.78 and ratio.max() > 1.47

    assert_independent(
        {
            "flip": flip,
            "scale": scale,
            "shift_x / room": np.where(room > 0, a["shift_x"] / np.maximum(room, 1e-6), 0),
            "shift_y / room": np.where(room > 0, a["shift_y"] / np.maximum(room, 1e-6), 0),
            "xdog chosen": redrawn,
            "xdog sigma": ratio,
        }
    )
    chosen = {"scale": scale[redrawn], "darkness": darkness, "sigma": ratio[redrawn]}
    assert_independent(chosen, limit=0.2)


def test_colour_and_line_art_go_through_the_same_crop_and_flip():
    n = 64
    color = coordinate_pictures(n)
    lineart = color[:, :1].clone()  # line art that is the red ramp: it must land where red lands
    out_c, out_l = augment(color, lineart, torch.Generator().manual_seed(5), cfg(flip=True, crop_min=0.5))
    torch.testing.assert_close(out_l[:, 0], out_c[:, 0], atol=1e-5, rtol=0)


def test_a_cropped_flat_picture_stays_flat_to_its_edges():
    n = 64  # the crop samples up to the outer half pixel: it must repeat the border, not fade to grey
    color = torch.full((n, 3, S, S), 200, dtype=torch.uint8)
    paper = torch.full((n, 1, S, S), 255, dtype=torch.uint8)
    out_c, out_l = augment(color, paper, torch.Generator().manual_seed(6), cfg(flip=True, crop_min=0.3))
    torch.testing.assert_close(out_c, torch.full_like(out_c, 200 / 127.5 - 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out_l, torch.ones_like(out_l), atol=1e-5, rtol=0)


def test_thicker_and_fainter_lines_are_chosen_independently():
    n, size = 1000, 16
    lineart = torch.full((n, 1, size, size), 255, dtype=torch.uint8)
    lineart[:, :, 8, 8] = 0  # one dot
    color = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    settings = cfg(thicken_p=0.3, line_intensity_min=0.2)
    _, out = augment(color, lineart, torch.Generator().manual_seed(7), settings)
    thick = (out[:, 0, 7, 8] < 0.99).numpy()
    darkness = ((1 - out[:, 0, 8, 8]) / 2).numpy()
    assert 0.25 < thick.mean() < 0.35
    assert darkness.min() >= 0.2 - 1e-5 and darkness.min() < 0.22 and darkness.max() > 0.98
    assert_independent({"thick": thick, "darkness": darkness})


def test_without_xdog_settings_the_stored_lines_are_kept():
    color = coordinate_pictures(8)
    paper = torch.full((8, 1, S, S), 255, dtype=torch.uint8)
    _, line = augment(color, paper, torch.Generator().manual_seed(0), cfg(xdog_p=1.0), None)
    assert (line == 1).all()


# ---------------------------------------------------------------- recolouring and hint blending


def yiq(rgb01: np.ndarray) -> np.ndarray:
    return rgb01 @ YIQ.T


def test_the_colour_matrix_turns_the_chroma_plane_and_scales_it_keeping_luma():
    angles = torch.tensor([0.0, np.pi / 2, 2.0, -1.0])
    saturation = torch.tensor([0.5, 1.0, 1.3, 0.8])
    matrices = colour_matrices(angles, saturation).numpy().astype(np.float64)
    rgb = np.array([0.6, 0.45, 0.4])
    y, i, q = yiq(rgb)
    for m, angle, s in zip(matrices, angles.numpy(), saturation.numpy(), strict=True):
        got = yiq(m @ rgb)
        c, s_ = np.cos(angle), np.sin(angle)
        want = [y, s * (c * i - s_ * q), s * (s_ * i + c * q)]  # I turned toward Q by the angle
        np.testing.assert_allclose(got, want, atol=1e-5)


def recolour_measure(n: int, settings: AugmentParams, seed: int):
    rgb = np.array([0.6, 0.45, 0.4])  # chroma small enough that no turn or scale clips
    color = torch.from_numpy(np.broadcast_to(rgb[None, :, None, None], (n, 3, 2, 2)).copy()).float() * 2 - 1
    no_hint = torch.zeros(n, 512)
    out, hint, certainty = recolour_batch(
        color, no_hint, torch.Generator().manual_seed(seed), settings, no_hint[0]
    )
    before = yiq(rgb)
    after = yiq(((out[:, :, 0, 0].double() + 1) / 2).numpy())
    return out, hint, certainty, before, after


def test_recolouring_turns_the_hue_anywhere_on_the_circle_and_scales_saturation_within_range():
    n, p, sat = 2000, 0.6, 0.4
    out, hint, certainty, before, after = recolour_measure(n, cfg(recolour_p=p, saturation=sat), seed=0)
    recoloured = (hint.sum(dim=1) > 0.5).numpy()  # a recoloured picture's hint is its new histogram
    assert 0.56 < recoloured.mean() < 0.64
    np.testing.assert_allclose(after[:, 0], before[0], atol=1e-4)  # luma kept: the lines' shading
    assert (certainty == 1).all()  # blending is off
    ratio = np.hypot(after[:, 1], after[:, 2]) / np.hypot(before[1], before[2])
    turn = np.angle(np.exp(1j * (np.arctan2(after[:, 2], after[:, 1]) - np.arctan2(before[2], before[1]))))
    np.testing.assert_allclose(ratio[~recoloured], 1.0, atol=1e-4)
    np.testing.assert_allclose(turn[~recoloured], 0.0, atol=1e-3)
    ratio, turn = ratio[recoloured], turn[recoloured]
    assert ratio.min() >= 1 - sat - 1e-3 and ratio.max() <= 1 + sat + 1e-3
    assert ratio.min() < 1 - 0.9 * sat and ratio.max() > 1 + 0.9 * sat
    assert 0.45 < (turn < 0).mean() < 0.55
    quarters = np.histogram(turn, bins=4, range=(-np.pi, np.pi))[0] / len(turn)
    assert (quarters > 0.2).all() and (quarters < 0.3).all(), quarters
    assert_independent({"cos turn": np.cos(turn), "sin turn": np.sin(turn), "saturation": ratio})
    # the hint is the histogram of the new colours
    torch.testing.assert_close(
        hint[torch.from_numpy(recoloured)], histograms(out[torch.from_numpy(recoloured)])
    )


def test_blending_hits_its_share_of_the_pictures_that_kept_their_colours():
    n = 2000
    out, hint, certainty, before, after = recolour_measure(n, cfg(recolour_p=0.5, hint_blend_p=0.4), seed=1)
    recoloured = (hint.sum(dim=1) > 0.5).numpy()
    blended = (certainty < 1).numpy()
    assert not (blended & recoloured).any()
    assert 0.35 < blended[~recoloured].mean() < 0.45
    amount = certainty[torch.from_numpy(blended)].numpy()
    assert amount.min() < 0.05 and amount.max() > 0.95


def test_recolouring_draws_every_random_number_from_the_generator_it_is_given():
    settings = cfg(recolour_p=0.5, saturation=0.3, hint_blend_p=0.5)

    inputs = torch.Generator().manual_seed(0)
    color = torch.rand(64, 3, 4, 4, generator=inputs) * 2 - 1
    hint = torch.softmax(torch.rand(64, 512, generator=inputs), dim=1)

    def run(seed: int):
        torch.manual_seed(seed)  # the global generator differs: it must not matter
        return recolour_batch(color, hint, torch.Generator().manual_seed(3), settings, hint.mean(0))

    for a, b in zip(run(0), run(1), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- OpenCV's blur and XDoG on the device


def test_the_device_blur_is_opencvs_gaussian_with_its_kernel_size_and_borders():
    rng = np.random.default_rng(0)
    pictures = rng.random((3, 20, 20)).astype(np.float32)
    pictures[2] = 0
    pictures[2, 10, 9] = 1.0  # an impulse in the widest blur: its support is the kernel's
    sigmas = [0.5, 1.0, 2.0]
    got = gaussian_blur(torch.from_numpy(pictures)[:, None], torch.tensor(sigmas))
    assert got.shape == (3, 1, 20, 20)
    for picture, sigma, mine in zip(pictures, sigmas, got[:, 0].numpy(), strict=True):
        want = cv2.GaussianBlur(picture, (0, 0), sigma)  # BORDER_REFLECT_101, 4-sigma kernel for float
        np.testing.assert_allclose(mine, want, atol=1e-5)
    want = cv2.GaussianBlur(pictures[2], (0, 0), 2.0)
    np.testing.assert_array_equal(got[2, 0].numpy() == 0, want == 0)  # truncated where OpenCV truncates
    narrow = np.zeros((1, 1, 9, 9), np.float32)
    narrow[0, 0, 4, 4] = 1.0
    got = gaussian_blur(torch.from_numpy(narrow), torch.tensor([0.25]))[0, 0].numpy()
    want = cv2.GaussianBlur(narrow[0, 0], (0, 0), 0.25)
    np.testing.assert_array_equal(got != 0, want != 0)  # a 3x3 kernel, as OpenCV's
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("rgb", [(0.6, 0.6, 0.6), (0.2, 0.8, 0.4)])
def test_xdog_on_a_flat_picture_follows_the_formula(rgb):
    tau, epsilon, phi = 0.9, 0.1, 10.0
    color = torch.tensor(rgb, dtype=torch.float32)[None, :, None, None].expand(2, 3, 24, 24) * 2 - 1
    out = xdog_lines(color, torch.tensor([0.8, 1.5]), k=1.6, tau=tau, epsilon=epsilon, phi=phi)
    grey = float(np.dot([0.299, 0.587, 0.114], rgb))
    d = grey - tau * grey  # the blur of a flat picture is the picture
    want = 1.0 if d >= epsilon else 1.0 + np.tanh(phi * (d - epsilon))
    assert 0.2 < want < 0.9  # a grey line: neither clipped nor paper
    torch.testing.assert_close(out, torch.full_like(out, want), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- the split on the device and its batches


def little_split(n: int = 6, size: int = 8) -> Split:
    rng = np.random.default_rng(9)
    color = np.empty((n, size, size, 3), np.uint8)
    lineart = np.full((n, size, size), 255, np.uint8)
    for i in range(n):
        color[i] = rng.integers(0, 256, 3, dtype=np.uint8)  # one flat colour each
        lineart[i, i, :] = 0  # picture i has its line on row i
    hint = np.stack([color_histogram(c) for c in color])
    return Split(ids=[f"p{i}" for i in range(n)], color=color, lineart=lineart, hint=hint)


def test_the_split_on_the_device_is_the_split():
    split = little_split()
    data = DeviceData.from_split(split, torch.device("cpu"))
    assert len(data) == 6
    np.testing.assert_array_equal(data.color.permute(0, 2, 3, 1).numpy(), split.color)
    np.testing.assert_array_equal(data.lineart[:, 0].numpy(), split.lineart)
    np.testing.assert_array_equal(data.hint.numpy(), split.hint)
    np.testing.assert_allclose(data.mean_hint().numpy(), split.hint.mean(axis=0), atol=1e-7)


def which_picture(split: Split, batch_color: torch.Tensor) -> np.ndarray:
    levels = ((batch_color[:, :, 0, 0] + 1) * 127.5).round().numpy()
    own = split.color[:, 0, 0].astype(np.float64)
    return np.abs(levels[:, None, :] - own[None]).sum(axis=2).argmin(axis=1)


def test_a_batch_keeps_each_picture_with_its_own_line_art_and_hint():
    split = little_split()
    data = DeviceData.from_split(split, torch.device("cpu"))
    batch = sample_batch(data, 120, torch.Generator().manual_seed(0), cfg(), torch.channels_last)
    picks = which_picture(split, batch.color)
    assert set(picks) == set(range(6)), "every picture can be drawn"
    assert np.bincount(picks).min() >= 10
    for k, i in enumerate(picks):
        np.testing.assert_allclose(
            (batch.color[k].permute(1, 2, 0).numpy() + 1) * 127.5, split.color[i], atol=1e-3
        )
        np.testing.assert_allclose((batch.lineart[k, 0].numpy() + 1) * 127.5, split.lineart[i], atol=1e-3)
        np.testing.assert_allclose(batch.hint[k].numpy(), split.hint[i])
    assert batch.certainty is None
    assert batch.color.is_contiguous(memory_format=torch.channels_last)
    assert batch.lineart.is_contiguous(memory_format=torch.channels_last)
    again = sample_batch(data, 120, torch.Generator().manual_seed(0), cfg(), torch.channels_last)
    assert torch.equal(again.color, batch.color) and torch.equal(again.hint, batch.hint)


def test_a_generator_batch_recolours_and_blends_toward_the_average_hint():
    split = little_split()
    data = DeviceData.from_split(split, torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    batch = sample_batch(data, 60, gen, cfg(recolour_p=1.0, saturation=0.3), recolour=True)
    torch.testing.assert_close(batch.hint, histograms(batch.color))  # hints of the new colours
    assert (batch.certainty == 1).all()
    plain = sample_batch(data, 60, torch.Generator().manual_seed(1), cfg(recolour_p=1.0, saturation=0.3))
    assert not torch.allclose(plain.color, batch.color, atol=0.05), "only generator batches are recoloured"

    blend = cfg(hint_blend_p=1.0)
    batch = sample_batch(data, 60, torch.Generator().manual_seed(2), blend, recolour=True)
    own = torch.from_numpy(split.hint[which_picture(split, batch.color)])
    sure = batch.certainty[:, None]
    torch.testing.assert_close(batch.hint, sure * own + (1 - sure) * data.mean_hint()[None])
    flat = torch.full((512,), 1 / 512)
    batch = sample_batch(data, 60, torch.Generator().manual_seed(2), blend, recolour=True, mean_hint=flat)
    sure = batch.certainty[:, None]
    torch.testing.assert_close(batch.hint, sure * own + (1 - sure) * flat[None])


def test_a_batch_draws_xdog_lines_when_given_the_settings():
    split = little_split(size=16)
    split.color[:] = 230
    split.color[:, 4:12, 4:12] = 20  # a dark square on light paper: edges for XDoG
    split.lineart[:] = 255  # stored line art: blank paper
    data = DeviceData.from_split(split, torch.device("cpu"))
    stored = sample_batch(data, 12, torch.Generator().manual_seed(4), cfg(xdog_p=1.0))
    redrawn = sample_batch(data, 12, torch.Generator().manual_seed(4), cfg(xdog_p=1.0), xdog=XDOG)
    torch.testing.assert_close(redrawn.color, stored.color)
    assert (stored.lineart == 1).all()
    assert ((redrawn.lineart < 0).flatten(1).any(dim=1)).all(), "lines drawn anew by XDoG"


NO_RECOLOUR = {
    "recolour_p": 0.0,
    "saturation": 0.0,
    "hint_blend_p": 0.0,
    "xdog_p": 0.0,
    "local_points_max": 0,
    "local_none_p": 0.0,
}


AUG = AugmentParams(flip=True, crop_min=0.8, thicken_p=0.5, line_intensity_min=0.5, **NO_RECOLOUR)


NO_AUG = AugmentParams(flip=False, crop_min=1.0, thicken_p=0.0, line_intensity_min=1.0, **NO_RECOLOUR)


def test_augmentation_is_seeded_batched_and_in_range():
    rng = np.random.default_rng(0)
    color = torch.from_numpy(rng.integers(0, 256, (8, 3, S, S), dtype=np.uint8))
    lineart = torch.from_numpy(np.where(rng.random((8, 1, S, S)) < 0.1, 0, 255).astype(np.uint8))
    a = augment(color, lineart, torch.Generator().manual_seed(3), AUG)
    b = augment(color, lineart, torch.Generator().manual_seed(3), AUG)
    c = augment(color, lineart, torch.Generator().manual_seed(4), AUG)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    for t in a:
        assert t.min() >= -1 and t.max() <= 1
    assert a[1].shape == (8, 1, S, S) and a[0].shape == (8, 3, S, S)


def test_augmentation_off_is_the_plain_conversion():
    rng = np.random.default_rng(1)
    color = torch.from_numpy(rng.integers(0, 256, (4, 3, S, S), dtype=np.uint8))
    lineart = torch.from_numpy(np.where(rng.random((4, 1, S, S)) < 0.1, 0, 255).astype(np.uint8))
    out_color, out_line = augment(color, lineart, torch.Generator().manual_seed(0), NO_AUG)
    torch.testing.assert_close(out_color, color.float() / 127.5 - 1, atol=1e-4, rtol=0)
    torch.testing.assert_close(out_line, lineart.float() / 127.5 - 1, atol=1e-4, rtol=0)


def test_thicker_lines_cover_more_pixels():
    lineart = torch.full((1, 1, S, S), 255, dtype=torch.uint8)
    lineart[..., S // 2, :] = 0  # one horizontal line
    cfg = AugmentParams(flip=False, crop_min=1.0, thicken_p=1.0, line_intensity_min=1.0, **NO_RECOLOUR)
    _, line = augment(
        torch.zeros(1, 3, S, S, dtype=torch.uint8), lineart, torch.Generator().manual_seed(0), cfg
    )
    assert int((line < 0).sum()) == 3 * S


def test_recoloured_hints_are_the_histograms_of_the_recoloured_pictures():
    from colorization.augment import histograms, recolour_batch
    from colorization.histogram import batch_histograms

    rng = np.random.default_rng(2)
    color = torch.from_numpy(rng.integers(0, 256, (6, 3, S, S), dtype=np.uint8)).float() / 127.5 - 1
    stored = torch.from_numpy(
        batch_histograms(((color + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    )
    torch.testing.assert_close(histograms(color), stored.float())  # the stored-hint rule, on tensors
    cfg = AugmentParams(**{**NO_AUG.model_dump(), "recolour_p": 1.0, "saturation": 0.3})
    out, hint, sure = recolour_batch(
        color, stored.float(), torch.Generator().manual_seed(0), cfg, stored.mean(0)
    )
    assert (sure == 1).all()  # recoloured hints are the pictures' own
    assert not torch.allclose(out, color, atol=0.05)  # the colours changed...
    uint8 = ((out + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    torch.testing.assert_close(hint, torch.from_numpy(batch_histograms(uint8)).float())  # ...and the hint too
    luma = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]
    unclipped = (out > -1) & (out < 1)
    diff = ((out - color) * luma).sum(dim=1, keepdim=True).expand_as(out)
    assert diff[unclipped].abs().median() < 0.02  # a hue turn keeps the brightness the lines imply


def test_blended_hints_lie_between_the_true_and_the_average_hint():
    from colorization.augment import recolour_batch

    true = torch.zeros(64, 512)
    true[:, 448] = 1.0  # every picture pure red
    mean = torch.full((512,), 1 / 512)
    color = torch.zeros(64, 3, S, S)
    cfg = AugmentParams(**{**NO_AUG.model_dump(), "hint_blend_p": 0.5})
    out, hint, sure = recolour_batch(color, true, torch.Generator().manual_seed(1), cfg, mean)
    torch.testing.assert_close(out, color)  # blending never touches the picture
    red_weight = hint[:, 448]
    blended = red_weight < 1.0
    assert 16 < int(blended.sum()) < 48  # about half of them
    torch.testing.assert_close(hint.sum(dim=1), torch.ones(64))
    # A blend is amount * true + (1 - amount) * mean: every other bin holds (1 - amount) / 512.
    amount = (red_weight - 1 / 512) / (1 - 1 / 512)
    torch.testing.assert_close(hint[:, 0], (1 - amount) / 512)
    torch.testing.assert_close(sure, amount)  # the certainty is the share of the own hint


def test_on_device_xdog_draws_the_lines_of_the_opencv_extractor():
    from colorization.augment import xdog_lines
    from colorization.lineart import xdog

    rng = np.random.default_rng(3)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), (0, 0), 2.0)
    cv2.circle(rgb, (24, 24), 12, (250, 40, 30), 2)
    want = xdog(rgb, sigma=0.8, k=1.6, tau=0.98, epsilon=0.0, phi=200.0).astype(np.float32) / 255
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
    got = xdog_lines(tensor, torch.tensor([0.8]), k=1.6, tau=0.98, epsilon=0.0, phi=200.0)[0, 0].numpy()
    assert np.abs(got - want).mean() < 0.02  # same lines up to rounding of the blur
    assert ((got < 0.5) == (want < 0.5)).mean() > 0.98
    assert (want < 0.5).mean() > 0.02  # and there are lines to compare


def test_augmentation_mixes_in_xdog_lines():
    from colorization.config import XDoGParams

    rng = np.random.default_rng(4)
    color = torch.from_numpy(rng.integers(0, 256, (16, 3, S, S), dtype=np.uint8))
    canny_like = torch.full((16, 1, S, S), 255, dtype=torch.uint8)  # stored line art: blank paper
    cfg = AugmentParams(**{**NO_AUG.model_dump(), "xdog_p": 0.5})
    settings = XDoGParams(sigma=0.8, k=1.6, tau=0.98, epsilon=0.0, phi=200.0)
    _, line = augment(color, canny_like, torch.Generator().manual_seed(0), cfg, settings)
    redrawn = (line < 0.9).flatten(1).any(dim=1)
    assert 3 <= int(redrawn.sum()) <= 13  # about half got XDoG lines drawn from their colours
    _, line = augment(color, canny_like, torch.Generator().manual_seed(0), NO_AUG, settings)
    assert not (line < 0.9).any()  # xdog_p 0: the stored lines only


def test_recolouring_moves_the_local_hints_colours_with_the_picture():
    """Flat pictures recoloured: each hint must show the new colour, not the stored one."""
    n = 8
    base = np.array([[200, 40, 40], [40, 200, 40]] * (n // 2), np.uint8)
    color = np.ascontiguousarray(np.broadcast_to(base[:, None, None], (n, IMAGE_SIZE, IMAGE_SIZE, 3)))
    lineart = np.full((n, IMAGE_SIZE, IMAGE_SIZE), 255, np.uint8)
    data = DeviceData(
        color=torch.from_numpy(color).permute(0, 3, 1, 2).contiguous(),
        lineart=torch.from_numpy(lineart)[:, None],
        hint=torch.full((n, 512), 1 / 512),
    )
    cfg = AUG.model_copy(
        update={"recolour_p": 1.0, "saturation": 0.0, "local_points_max": 8, "local_none_p": 0.0}
    )
    batch = sample_batch(data, n, torch.Generator().manual_seed(3), cfg, recolour=True, local_hints=True)
    mask = batch.local[:, 3] > 0
    assert mask.any(dim=(1, 2)).all()
    given = batch.local[:, :3].permute(0, 2, 3, 1)[mask]
    actual = batch.color.permute(0, 2, 3, 1)[mask]
    assert (given - actual).abs().max() < 2 / 127.5  # the recoloured picture's colour
    stored = data.color.permute(0, 2, 3, 1)[torch.nonzero(mask)[:, 0]].float()[:, 0, 0] / 127.5 - 1
    assert (given - stored).abs().max() > 0.3  # ... not the colour it was stored with


def test_a_batch_without_local_hints_has_none():
    data = DeviceData(
        color=torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8),
        lineart=torch.full((2, 1, IMAGE_SIZE, IMAGE_SIZE), 255, dtype=torch.uint8),
        hint=torch.full((2, 512), 1 / 512),
    )
    cfg = AUG.model_copy(update={**NO_RECOLOUR, "local_points_max": 8})
    assert sample_batch(data, 2, torch.Generator().manual_seed(0), cfg).local is None
