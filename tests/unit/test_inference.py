"""colorization.inference: the generators' input contract, the predicted hint, the palette strip,
the sample grid, and local hints reaching the output.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from colorization.histogram import bin_centers
from colorization.inference import colorize, palette, predict_hint, sample_grid
from colorization.models import build_model, load_trained, model_config
from tests.unit.test_colorize import save_local_model
from tests.unit.test_evaluate import IMAGE_SIZE, save_model_dir
from tests.unit.test_local_hints import BLUE, RED
from tests.unit.test_models import ARCH, S, random_inputs


def test_a_generator_without_weights_runs_on_the_cpu():
    import torch

    from colorization.inference import colorize

    class Flat(torch.nn.Module):  # no parameters: the device cannot come from the weights
        def forward(self, x, h):
            return torch.zeros(len(x), 3, *x.shape[2:])

    out = colorize(Flat(), np.full((2, 8, 8), 255, np.uint8), np.full((2, 512), 1 / 512, np.float32))
    assert out.shape == (2, 8, 8, 3) and (np.abs(out.astype(int) - 128) <= 1).all()


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


def test_predict_hint_gives_each_drawing_its_own_distribution_whatever_the_batch():
    lineart, _ = random_inputs(5)
    net = build_model("hint", ARCH["hint"])
    hints = predict_hint(net, lineart, batch_size=5)
    assert hints.shape == (5, 512) and (hints >= 0).all()
    np.testing.assert_allclose(hints.sum(axis=1), 1.0, rtol=1e-5)
    one_by_one = np.concatenate([predict_hint(net, lineart[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(one_by_one, hints, atol=1e-6)  # no batch statistics leak between drawings
    assert np.abs(hints[0] - hints[1]).sum() > 1e-3  # other lines, another hint


def test_inference_rejects_wrong_inputs():
    net = build_model("cnn", ARCH["cnn"])
    lineart, hint = random_inputs()
    with pytest.raises(ValueError, match="uint8"):
        colorize(net, lineart.astype(np.float32), hint)
    with pytest.raises(ValueError, match="hint"):
        colorize(net, lineart, hint[:, :10])


def test_palette_draws_the_dominant_colours_by_weight():
    hint = np.zeros(512, np.float32)
    hint[[0, 511]] = [0.75, 0.25]  # black-ish bin, white-ish bin
    image = palette(hint, 8)
    assert (image[:6] == 16).all() and (image[6:] == 240).all()


def test_the_automatic_hint_leans_towards_the_average_by_the_models_trust(tmp_path):
    lineart, _ = random_inputs(4)
    torch.manual_seed(0)
    net = build_model("hint", {**ARCH["hint"], "trust": 0.25}).eval()
    average = torch.zeros(512)
    average[7] = 1.0  # a training set whose every picture is one colour
    net.prior.copy_(average)
    guess = predict_hint(net, lineart, raw=True)
    auto = predict_hint(net, lineart)
    np.testing.assert_allclose(auto, 0.25 * guess + 0.75 * average.numpy()[None], atol=1e-6)
    np.testing.assert_allclose(auto.sum(axis=1), 1.0, rtol=1e-5)
    # The prior and the trust travel with the model folder, which is also what MLflow serves.
    torch.save(net.state_dict(), tmp_path / "model.pt")
    arch = {**ARCH["hint"], "trust": 0.25}
    (tmp_path / "config.json").write_text(json.dumps(model_config("hint", arch, S)))
    np.testing.assert_allclose(predict_hint(load_trained(tmp_path), lineart), auto, atol=1e-6)


FLAT_HINT = np.full((1, 512), 1 / 512, np.float32)


def dot(colour, y: int, x: int, size: int = IMAGE_SIZE) -> np.ndarray:
    local = np.zeros((1, 4, size, size), np.float32)
    local[0, :3, y, x] = np.asarray(colour) / 127.5 - 1
    local[0, 3, y, x] = 1
    return local


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
