"""Local colour hints: simulated in training, fitted from a person's layer, obeyed, and kept
inside the regions the lines close (issue 25)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from colorization.augment import DeviceData, sample_batch
from colorization.colorize import fit_input
from colorization.config import DEFAULT_RECIPE
from colorization.hint_layer import HintLayerError, hint_layer
from colorization.images import encode_png
from colorization.inference import colorize
from colorization.local_eval import POINT_COUNTS, local_obedience, simulated_points
from colorization.local_hints import fill_regions, layer_to_square, point_counts, reveal
from colorization.models import build_model, model_config
from tests.test_colorize import drawing, run, save
from tests.test_evaluate import IMAGE_SIZE, save_model_dir
from tests.test_models import AUG, NO_RECOLOUR

LOCAL_ARCH = {"base_channels": 4, "depth": 3, "hint_dim": 8, "hint_planes": True, "local_hints": True}
RED, BLUE = (220, 30, 30), (30, 40, 220)
FLAT_HINT = np.full((1, 512), 1 / 512, np.float32)


def save_local_model(folder: Path, seed: int = 0):
    """A models/cgan folder whose untrained generator takes local hints."""
    torch.manual_seed(seed)
    net = build_model("cgan", LOCAL_ARCH).eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(json.dumps(model_config("cgan", LOCAL_ARCH, IMAGE_SIZE)))
    return net


def dot(colour, y: int, x: int, size: int = IMAGE_SIZE) -> np.ndarray:
    local = np.zeros((1, 4, size, size), np.float32)
    local[0, :3, y, x] = np.asarray(colour) / 127.5 - 1
    local[0, 3, y, x] = 1
    return local


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


# ---------------------------------------------------------------- in the model


def test_a_dot_colours_the_output_where_it_is_even_untrained(tmp_path):
    net = save_local_model(tmp_path / "cgan")
    lineart = np.full((1, IMAGE_SIZE, IMAGE_SIZE), 255, np.uint8)
    red = colorize(net, lineart, FLAT_HINT, local=dot(RED, 8, 20)).astype(int)
    blue = colorize(net, lineart, FLAT_HINT, local=dot(BLUE, 8, 20)).astype(int)
    none = colorize(net, lineart, FLAT_HINT).astype(int)
    at = (0, 8, 20)
    assert red[at][0] - red[at][2] > 100 and blue[at][2] - blue[at][0] > 100
    assert np.abs(red - none)[0, 8, 20].max() > 50  # a dot changes what no dot gives
    far = (0, IMAGE_SIZE - 2, 2)
    assert np.abs(red[far] - blue[far]).max() < np.abs(red[at] - blue[at]).max()  # local, not global


def test_a_model_trained_before_local_hints_colours_without_them_and_refuses_them(tmp_path):
    net = save_model_dir(tmp_path / "cgan", "cgan")  # an older arch: no local_hints
    lineart = np.full((1, IMAGE_SIZE, IMAGE_SIZE), 255, np.uint8)
    assert colorize(net, lineart, FLAT_HINT).shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
    with pytest.raises(ValueError, match="trained without local hints"):
        colorize(net, lineart, FLAT_HINT, local=dot(RED, 3, 3))


def test_local_obedience_measures_distance_at_the_given_points(tmp_path):
    net = save_local_model(tmp_path / "cgan")
    lineart = np.full((4, IMAGE_SIZE, IMAGE_SIZE), 255, np.uint8)
    scores = local_obedience(
        net, lineart, np.repeat(FLAT_HINT, 4, axis=0), seed=0, device="cpu", batch_size=4
    )
    assert len(scores["distance"]) >= 4 * 8  # ~10 points per picture (a few may coincide)
    assert 0 <= scores["distance"].mean() <= 255 and set(np.unique(scores["within_30"])) <= {0.0, 1.0}
    assert POINT_COUNTS == (0, 1, 2, 5, 10, 20)


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


def test_a_one_pixel_diagonal_line_closes_a_region():
    size = 40
    lines = np.zeros((size, size), bool)
    for i in range(size):  # a diagonal stroke, corner to corner: pixels touch only at corners
        lines[i, size - 1 - i] = True
    layer = np.zeros((size, size, 4), np.uint8)
    layer[2, 2] = (*RED, 255)
    filled = fill_regions(np.full((size, size, 3), 128, np.uint8), lines, layer, max_share=0.6)
    assert tuple(filled[3, 3]) == RED and tuple(filled[size - 3, size - 3]) == (128, 128, 128)


@pytest.fixture(scope="module")
def local_models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("local-models")
    save_local_model(root / "cgan")
    save_model_dir(root / "old", "cgan")
    return root


def test_colorize_with_a_dot_colours_the_dotted_region_at_full_size(local_models, tmp_path):
    """A dot in one corner of a closed square (a fifth of the picture): the whole square takes its
    colour, even the far corner the model's own fading guess hardly reaches, and nothing outside."""
    art = np.full((400, 400, 3), 255, np.uint8)
    cv2.rectangle(art, (20, 20), (200, 200), (0, 0, 0), 3)
    src = save(tmp_path / "in.png", art)
    hints = tmp_path / "hints.json"
    hints.write_text(json.dumps([{"x": 32, "y": 32, "color": "#dc1e1e", "radius": 5}]))
    out = tmp_path / "out.png"
    model = str(local_models / "cgan")
    result = run(str(src), "-o", str(out), "--model", model, "--palette", "#2030e0", "--hints", str(hints))
    assert result.exit_code == 0, result.output
    rgb = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB).astype(int)
    far_corner = rgb[170:195, 170:195].reshape(-1, 3).mean(axis=0)
    outside = rgb[300:380, 300:380].reshape(-1, 3).mean(axis=0)
    assert far_corner[0] > far_corner[2] + 120, far_corner
    assert outside[2] > outside[0] + 60, outside  # the red stays inside the square's line


def test_colorize_refuses_bad_hints_before_writing(local_models, tmp_path):
    src = save(tmp_path / "in.png", drawing(60, 80))
    wrong = tmp_path / "wrong.png"
    wrong.write_bytes(encode_png(np.zeros((60, 81, 4), np.uint8)))
    points = tmp_path / "p.json"
    points.write_text('[{"x": 1, "y": 1, "color": "#ff0000"}]')
    cases = [
        ((str(local_models / "cgan"), str(wrong)), "the hint layer is 81x60, the picture 80x60"),
        ((str(local_models / "cgan"), str(tmp_path / "none.json")), "no such file"),
        ((str(local_models / "old"), str(points)), "trained without local hints"),
    ]
    for (model, hints), message in cases:
        out = tmp_path / "out.png"
        result = run(str(src), "-o", str(out), "--model", model, "--palette", "#808080", "--hints", hints)
        assert result.exit_code != 0 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not out.exists()
