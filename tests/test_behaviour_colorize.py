"""What `colorize` promises beyond the CLI tests, on small pictures and a tiny untrained model:
line-art detection at its documented limits, fitting a colour picture exactly as the training
data was prepared, scaling back with the documented interpolation, the line layer giving the
input back over white, the colour layer painted out only under the lines, the hint model
seeing thin lines, outputs in the format their suffix names, and a batch that goes on after
an input or an output fails, with the limits of the params file applied."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from colorization.colorize import (
    GENERATOR_KINDS,
    GREY_SPREAD,
    LINE_LEVEL,
    MAX_COLOURED_FRACTION,
    MIN_PAPER_FRACTION,
    PAPER_LEVEL,
    ColorizeError,
    Fitted,
    HintSource,
    LoadedModel,
    colorize_files,
    encode_for,
    fit_input,
    hints_for,
    is_lineart,
    layer_paths,
    line_layer,
    load_model,
    over,
    paint_out_lines,
    restore_size,
    run_colorize,
)
from colorization.config import LineartParams
from colorization.lineart import extract_lineart, resize_square
from tests.test_colorize import save
from tests.test_evaluate import IMAGE_SIZE, save_model_dir


def lineart_params(params_dict, **changes) -> LineartParams:
    return LineartParams.model_validate({**params_dict["lineart"], **changes})


def drawing(height: int = 40, width: int = 40) -> np.ndarray:
    image = np.full((height, width, 3), 255, np.uint8)
    cv2.rectangle(image, (width // 5, height // 5), (4 * width // 5, 4 * height // 5), (0, 0, 0), 1)
    return image


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> LoadedModel:
    folder = tmp_path_factory.mktemp("models") / "cgan"
    save_model_dir(folder, "cgan")
    return load_model(str(folder), "cpu", GENERATOR_KINDS)


RED = HintSource(fixed=np.eye(512, dtype=np.float32)[7 * 64])


# ---------------------------------------------------------------- line-art detection at its limits


def grey_picture(paper_share: float, coloured_share: float = 0.0, n: int = 10_000) -> np.ndarray:
    """A 100 x 100 picture: `paper_share` white, the rest dark grey, `coloured_share` of it red."""
    flat = np.full((n, 3), 60, np.uint8)
    flat[: round(paper_share * n)] = 255
    flat[n - round(coloured_share * n) :] = (200, 40, 40)
    return flat.reshape(100, 100, 3)


def test_line_art_is_at_most_two_percent_coloured_and_at_least_half_paper():
    assert MAX_COLOURED_FRACTION == 0.02 and MIN_PAPER_FRACTION == 0.5
    assert is_lineart(grey_picture(0.5))  # exactly half paper: line art
    assert not is_lineart(grey_picture(0.49))
    assert is_lineart(grey_picture(0.9, coloured_share=0.02))  # exactly 2 % coloured: line art
    assert not is_lineart(grey_picture(0.9, coloured_share=0.021))


def test_a_channel_spread_of_the_limit_is_still_grey_and_paper_must_be_lighter_than_its_level():
    tinted = np.full((10, 10, 3), (230, 230, 230 - GREY_SPREAD), np.uint8)  # spread exactly 24
    assert is_lineart(tinted)
    assert not is_lineart(np.full((10, 10, 3), (230, 230, 230 - GREY_SPREAD - 1), np.uint8))
    at_level = grey_picture(0.49)
    at_level.reshape(-1, 3)[4900:5000] = PAPER_LEVEL  # 1 % exactly at the level: not paper
    assert not is_lineart(at_level)
    at_level.reshape(-1, 3)[4900:5000] = PAPER_LEVEL + 1
    assert is_lineart(at_level)


# ---------------------------------------------------------------- fitting and scaling back


@pytest.mark.parametrize("side", [96, 20])  # shrunk to 32 (area) and enlarged to 32 (bicubic)
def test_a_square_colour_picture_is_fitted_as_the_training_data_was_prepared(params_dict, side):
    params = lineart_params(params_dict)
    rng = np.random.default_rng(side)
    rgb = np.full((side, side, 3), (40, 120, 200), np.uint8)
    cv2.circle(rgb, (side // 2, side // 2), side // 3, (250, 240, 30), -1)
    rgb = cv2.add(rgb, rng.integers(0, 30, rgb.shape, dtype=np.uint8))  # some texture
    assert not is_lineart(rgb)
    fitted = fit_input(rgb, IMAGE_SIZE, params)
    expected = extract_lineart(resize_square(rgb, IMAGE_SIZE, "pad"), params)
    np.testing.assert_array_equal(fitted.lineart, expected)
    assert (expected == 0).any()


def test_a_finely_hatched_colour_picture_shrinks_to_flat_colour_without_false_lines(params_dict):
    rgb = np.zeros((96, 96, 3), np.uint8)
    rgb[:, 0::2] = (200, 60, 60)
    rgb[:, 1::2] = (60, 60, 200)  # two colours in alternate columns: purple from afar
    fitted = fit_input(rgb, IMAGE_SIZE, lineart_params(params_dict))
    assert (fitted.lineart == 255).all(), "averaged to one colour, not aliased into stripes"


def test_a_quarter_size_fit_keeps_a_one_pixel_grey_line(params_dict):
    rgb = np.full((128, 128, 3), 255, np.uint8)
    rgb[:, 41] = 100  # grey, one pixel wide, at 4x the model's size
    fitted = fit_input(rgb, IMAGE_SIZE, lineart_params(params_dict))
    assert (fitted.lineart[:, 10] == 0).all() and (fitted.lineart[:, [8, 12]] == 255).all()


def test_the_colour_is_scaled_back_bicubic_when_enlarging_and_by_area_when_shrinking():
    rng = np.random.default_rng(0)
    colored = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for size in [(80, 80), (20, 20)]:
        fitted = Fitted(
            np.full((IMAGE_SIZE, IMAGE_SIZE), 255, np.uint8), (0, 0, IMAGE_SIZE, IMAGE_SIZE), size
        )
        interp = cv2.INTER_CUBIC if size[0] > IMAGE_SIZE else cv2.INTER_AREA
        want = cv2.resize(colored, size[::-1], interpolation=interp)
        np.testing.assert_array_equal(restore_size(colored, fitted), want)


# ---------------------------------------------------------------- layers


def test_the_line_layer_over_white_gives_every_grey_level_back(params_dict):
    levels = np.arange(256, dtype=np.uint8)
    rgb = np.repeat(np.full((40, 256), 255, np.uint8)[..., None], 3, axis=2)
    rgb[:4] = np.repeat(levels[None, :, None], 3, axis=2)  # every level; mostly paper: line art
    assert is_lineart(rgb)
    back = over(line_layer(rgb, lineart_params(params_dict)), np.full_like(rgb, 255))
    assert np.abs(back.astype(int) - rgb).max() <= 2
    layer = line_layer(rgb, lineart_params(params_dict))
    assert (layer[:4, : LINE_LEVEL + 1, 3] == 255).all() and (layer[:4, 255, 3] == 0).all()


def test_the_colour_layer_is_painted_out_under_the_lines_only():
    colored = np.zeros((32, 32, 3), np.uint8)
    colored[:] = (200, 100, 50)
    colored[:, 15:18] = (20, 20, 20)  # the model's own dark stroke
    colored[:, 20:] = (50, 100, 200)  # and another colour right of it
    lineart = np.full((32, 32), 255, np.uint8)
    lineart[:, 16] = 0
    painted = paint_out_lines(colored, lineart)
    changed = (painted != colored).any(axis=2)
    assert changed[:, 15:18].all(), "the stroke under the line and one pixel around it are filled"
    assert not changed[:, :15].any() and not changed[:, 18:].any(), "nothing beyond one pixel changes"
    assert (np.abs(painted[:, 16].astype(int) - (200, 100, 50)) < 40).all(), "filled from the sides"
    np.testing.assert_array_equal(paint_out_lines(colored, np.full((32, 32), 255, np.uint8)), colored)


# ---------------------------------------------------------------- the hint model's view


def test_the_hint_model_still_sees_a_thin_line_at_a_quarter_of_the_size():
    import torch

    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            seen.append(x.detach().clone())
            return torch.zeros(len(x), 512) + self.w

    lineart = np.full((1, 32, 32), 255, np.uint8)
    lineart[0, :, 12] = 0  # one pixel wide, the first column of an area 4 pixels wide
    hints_for(HintSource(model=LoadedModel(Recorder(), "hint", 8, "recorder")), lineart, "cpu")
    (x,) = seen
    levels = ((x[0, 0] + 1) * 127.5).numpy()
    np.testing.assert_allclose(levels[:, 3], 255 * 3 / 4, atol=1)  # the line averaged in, not dropped
    np.testing.assert_allclose(levels[:, 2], 255, atol=1e-3)


# ---------------------------------------------------------------- models and files


def test_a_model_folder_without_its_config_is_not_a_model(tmp_path):
    folder = tmp_path / "cgan"
    save_model_dir(folder, "cgan")
    (folder / "config.json").unlink()
    with pytest.raises(ColorizeError, match="model not found"):
        load_model(str(folder), "cpu", GENERATOR_KINDS)
    save_model_dir(tmp_path / "hint", "hint")
    with pytest.raises(ColorizeError, match=r"hint is a hint model; expected cnn or cgan$"):
        load_model(str(tmp_path / "hint"), "cpu", GENERATOR_KINDS)


@pytest.mark.parametrize("name", ["x.jpeg", "x.JPG", "x.webp", "x.png"])
def test_outputs_are_encoded_as_their_suffix_says_with_the_colours_in_place(name):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (230, 20, 20)
    rgb[:, 8:] = (20, 20, 230)
    data = encode_for(Path(name), rgb)
    magic = {".jpeg": b"\xff\xd8\xff", ".jpg": b"\xff\xd8\xff", ".webp": b"RIFF", ".png": b"\x89PNG"}
    assert data.startswith(magic[Path(name).suffix.lower()])
    back = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    inner = np.r_[0:5, 11:16]  # away from the red-blue edge that JPEG's chroma blurs
    assert np.abs(back[:, inner].astype(int) - rgb[:, inner]).max() < 40  # red stays red, blue blue


def test_a_batch_goes_on_after_an_unreadable_input_and_logs_what_it_wrote(
    generator, params_dict, tmp_path, caplog
):
    bad = tmp_path / "in/a.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    good = save(tmp_path / "in/b.png", drawing())
    pairs = [(bad, tmp_path / "out/a.png"), (good, tmp_path / "out/b.png")]
    with caplog.at_level(logging.INFO, logger="colorization.colorize"):
        result = colorize_files(pairs, generator, RED, lineart_params(params_dict), "cpu", batch_size=1)
    assert result.written == [tmp_path / "out/b.png"] and len(result.failed) == 1
    assert "a.png: unreadable image" in result.failed[0]
    assert [r.getMessage() for r in caplog.records] == [f"wrote {tmp_path / 'out/b.png'}"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.png"], "no layers unless asked"


def test_an_output_that_cannot_be_written_is_named_and_the_others_are_written(
    generator, params_dict, tmp_path
):
    source = save(tmp_path / "in.png", drawing())
    (tmp_path / "blocked").write_text("a file where a folder should be")
    pairs = [(source, tmp_path / "blocked/a.png"), (source, tmp_path / "out/b.png")]
    result = colorize_files(pairs, generator, RED, lineart_params(params_dict), "cpu")
    assert result.written == [tmp_path / "out/b.png"]
    assert result.failed == [f"{tmp_path / 'blocked/a.png'}: cannot be written (File exists)"]


def test_an_opencv_failure_message_is_cut_at_200_characters(generator, params_dict, tmp_path, monkeypatch):
    import colorization.colorize as colorize_module

    def fail(rgb, size, params):
        raise cv2.error("x" * 300)

    monkeypatch.setattr(colorize_module, "fit_input", fail)
    source = save(tmp_path / "in.png", drawing())
    result = colorize_files(
        [(source, tmp_path / "out.png")], generator, RED, lineart_params(params_dict), "cpu"
    )
    assert result.failed == [f"{source}: cannot be processed ({'x' * 200})"]


def test_the_params_files_limits_apply_to_inputs_and_references(generator, params_dict, tmp_path):
    small = lineart_params(params_dict, max_pixels=1000)
    source = save(tmp_path / "in.png", drawing(40, 40))  # 1600 pixels
    result = colorize_files([(source, tmp_path / "out.png")], generator, RED, small, "cpu")
    assert result.written == [] and "max_pixels" in result.failed[0]
    model = str(Path(generator.source))
    tiny = save(tmp_path / "tiny.png", drawing(20, 20))
    with pytest.raises(ColorizeError, match="max_pixels"):
        run_colorize([tiny], tmp_path / "o.png", small, model=model, reference=source, device="cpu")


def test_run_colorize_defaults_to_the_automatic_device_and_no_layers(generator, params_dict, tmp_path):
    source = save(tmp_path / "in.png", drawing())
    result = run_colorize([source], tmp_path / "o.png", lineart_params(params_dict),
                          model=generator.source, palette="#ff0000")  # fmt: skip
    assert result.written == [tmp_path / "o.png"] and not result.failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "o.png"]


def test_run_colorize_refuses_layers_that_would_overwrite_an_output(generator, params_dict, tmp_path):
    save(tmp_path / "in/a.png", drawing())
    save(tmp_path / "in/a.lines.png", drawing())
    with pytest.raises(ColorizeError, match="both be written to"):
        run_colorize([tmp_path / "in"], tmp_path / "out", lineart_params(params_dict),
                     model=generator.source, palette="#ff0000", device="cpu", layers=True)  # fmt: skip
    assert not (tmp_path / "out").exists()
    assert layer_paths(tmp_path / "out/a.png")[1] == tmp_path / "out/a.lines.png"


# ---------------------------------------------------------------- inputs, messages, limits


def test_a_folder_gives_its_images_only_and_a_file_beside_it_is_kept(tmp_path):
    from colorization.colorize import collect_inputs

    save(tmp_path / "in/a.png", drawing())
    (tmp_path / "in/notes.txt").write_text("not a picture")
    (tmp_path / "in/empty.png").mkdir()  # a folder with an image's name is not an image
    single = save(tmp_path / "b.jpg", drawing())
    pairs = collect_inputs([single, tmp_path / "in"], tmp_path / "out")  # the folder's come after
    assert pairs == [(single, tmp_path / "out/b.png"), (tmp_path / "in/a.png", tmp_path / "out/a.png")]


def test_refusals_name_the_path_they_are_about(tmp_path):
    from colorization.colorize import collect_inputs, given_hint, read_image

    missing = tmp_path / "missing.png"
    with pytest.raises(ColorizeError, match=rf"^{re.escape(str(missing))}: no such file or folder$"):
        collect_inputs([missing], tmp_path / "out")
    with pytest.raises(ColorizeError, match=rf"^{re.escape(str(missing))}: no such file$"):
        read_image(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ColorizeError) as err:
        collect_inputs([tmp_path / "empty"], tmp_path / "out")
    assert str(err.value) == f"{tmp_path / 'empty'}: no images (.jpg, .jpeg, .png, .webp) in this folder"
    a = save(tmp_path / "a.png", drawing())
    gif = tmp_path / "y.gif"
    with pytest.raises(
        ColorizeError, match=rf"^-o {re.escape(str(gif))}: cannot write \.gif; use \.png, \.jpg or \.webp$"
    ):
        collect_inputs([a], gif)
    save(tmp_path / "dir/c.png", drawing())
    with pytest.raises(ColorizeError) as err:
        collect_inputs([tmp_path / "dir", a], tmp_path / "y.png")
    assert str(err.value) == (
        f"2 input images need an output folder, but -o {tmp_path / 'y.png'} names one image file; "
        "give -o a folder"
    )
    with pytest.raises(ColorizeError, match=r"^give --reference or --palette, not both$"):
        given_hint(a, "#ff0000")


def test_the_clash_message_names_the_output_written_twice(tmp_path):
    from colorization.colorize import collect_inputs

    save(tmp_path / "in/a.png", drawing())
    save(tmp_path / "in/b.jpg", drawing())  # b.jpg and b.png would both become b.png
    save(tmp_path / "in/b.png", drawing())
    with pytest.raises(ColorizeError) as err:
        collect_inputs([tmp_path / "in"], tmp_path / "out")
    assert (
        str(err.value)
        == f"two inputs would both be written to {tmp_path / 'out/b.png'}; colour them separately"
    )


def test_the_file_size_limit_of_the_params_applies(params_dict, tmp_path):
    from colorization.colorize import read_image

    source = save(tmp_path / "in.png", drawing())
    small = lineart_params(params_dict, max_file_bytes=50)
    with pytest.raises(ColorizeError, match=r"max_file_bytes 50"):
        read_image(source, small)
    assert read_image(source).shape == (40, 40, 3)


def test_a_line_is_darker_than_the_line_level_not_equal_to_it(params_dict):
    rgb = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 255, np.uint8)
    rgb[:, 10] = LINE_LEVEL - 1
    rgb[:, 20] = LINE_LEVEL
    lines = fit_input(rgb, IMAGE_SIZE, lineart_params(params_dict)).lineart  # same size: no resampling
    assert (lines[:, 10] == 0).all() and (lines[:, 20] == 255).all()


def test_over_composites_every_row_of_a_tall_picture():
    rng = np.random.default_rng(1)
    top = rng.integers(0, 256, (1100, 2, 4), dtype=np.uint8)  # taller than two strips of 512 rows
    bottom = rng.integers(0, 256, (1100, 2, 3), dtype=np.uint8)
    a = top[..., 3:4].astype(int)
    want = (top[..., :3] * a + bottom * (255 - a) + 127) // 255
    np.testing.assert_array_equal(over(top, bottom), want)


def test_painting_out_a_dot_changes_its_three_by_three_neighbourhood_only():
    rng = np.random.default_rng(2)
    colored = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    lineart = np.full((16, 16), 255, np.uint8)
    lineart[8, 8] = 0
    changed = (paint_out_lines(colored, lineart) != colored).any(axis=2)
    assert changed[7:10, 7:10].sum() >= 7
    changed[7:10, 7:10] = False
    assert not changed.any()


def test_a_generator_without_weights_runs_on_the_cpu():
    import torch

    from colorization.inference import colorize

    class Flat(torch.nn.Module):  # no parameters: the device cannot come from the weights
        def forward(self, x, h):
            return torch.zeros(len(x), 3, *x.shape[2:])

    out = colorize(Flat(), np.full((2, 8, 8), 255, np.uint8), np.full((2, 512), 1 / 512, np.float32))
    assert out.shape == (2, 8, 8, 3) and (np.abs(out.astype(int) - 128) <= 1).all()
