"""`colorization colorize`: palettes, input detection and sizing, output layout, refusals."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from colorization.cli import app
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
    collect_inputs,
    colorize_files,
    colorize_images,
    encode_for,
    fit_input,
    hints_for,
    is_lineart,
    layer_paths,
    line_layer,
    load_model,
    over,
    paint_out_lines,
    parse_palette,
    restore_size,
    run_colorize,
)
from colorization.config import LineartParams, load_params
from colorization.images import encode_png
from colorization.lineart import extract_lineart, resize_square
from colorization.models import build_model, model_config
from colorization.stamp import STAMP, bears_stamp, stamp_image
from tests.unit.test_evaluate import IMAGE_SIZE, save_model_dir
from tests.unit.test_models import ARCH, S

REPO = Path(__file__).resolve().parents[2]


PARAMS = REPO / "params.yaml"


def drawing(height: int, width: int) -> np.ndarray:
    """Black outlines on white paper, RGB."""
    image = np.full((height, width, 3), 255, np.uint8)
    cv2.rectangle(image, (width // 5, height // 5), (4 * width // 5, 4 * height // 5), (0, 0, 0), 2)
    cv2.circle(image, (width // 2, height // 2), min(height, width) // 6, (0, 0, 0), 2)
    return image


def painting(height: int, width: int) -> np.ndarray:
    """A coloured picture: shapes on a coloured background."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = (40, 120, 200)
    cv2.circle(image, (width // 2, height // 2), min(height, width) // 3, (230, 60, 50), -1)
    cv2.rectangle(image, (5, 5), (width // 3, height // 3), (250, 220, 30), -1)
    return image


def save(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for kind in ("cgan", "hint"):
        save_model_dir(root / kind, kind)
    return root


def run(*args: str):
    return CliRunner().invoke(app, ["colorize", *args, "--params", str(PARAMS), "--device", "cpu"])


# ---------------------------------------------------------------- pieces


def test_palette_builds_a_normalised_512_bin_hint():
    hint = parse_palette("#ff0000:3, #0000ff:1,00ff00")
    assert hint.shape == (512,) and hint.dtype == np.float32
    assert hint.sum() == pytest.approx(1.0)
    red, blue, green = 7 * 64, 7, 7 * 8  # bin = (r>>5)*64 + (g>>5)*8 + (b>>5)
    assert hint[[red, blue, green]] == pytest.approx([0.6, 0.2, 0.2])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("#ff00", "is not #rrggbb"),
        ("#gg0000:1", "is not #rrggbb"),
        ("#ff0000:heavy", "is not a number"),
        ("#ff0000:-1", "positive"),
        ("#ff0000:nan", "positive"),
        ("", "is not #rrggbb"),
    ],
)
def test_palette_refuses_what_does_not_parse(spec, message):
    with pytest.raises(ColorizeError, match=message):
        parse_palette(spec)


def test_lineart_detection():
    assert is_lineart(drawing(120, 90))
    assert not is_lineart(painting(120, 90))
    assert not is_lineart(np.full((50, 50, 3), 60, np.uint8))  # grey, but not paper


@pytest.mark.parametrize("shape", [(300, 200), (45, 170), (20, 20)])
def test_fit_and_restore_keep_the_picture_and_the_size(shape):
    params = load_params(PARAMS).lineart
    for image in (drawing(*shape), painting(*shape)):
        fitted = fit_input(image, IMAGE_SIZE, params)
        assert fitted.lineart.shape == (IMAGE_SIZE, IMAGE_SIZE) and fitted.lineart.dtype == np.uint8
        assert (fitted.lineart == 0).any(), "the lines survived the resize"
        top, left, h, w = fitted.box
        assert max(h, w) == IMAGE_SIZE
        assert (fitted.lineart[:top] == 255).all() and (
            fitted.lineart[top + h :] == 255
        ).all()  # paper padding
        colored = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        colored[top : top + h, left : left + w] = 200
        restored = restore_size(colored, fitted)
        assert restored.shape == (*shape, 3)
        assert (restored == 200).all(), "only the picture, not the padding, is scaled back"


def test_inputs_map_to_outputs(tmp_path):
    one = save(tmp_path / "in/a.jpg", painting(30, 30))
    save(tmp_path / "in/sub/b.png", drawing(30, 30))
    assert collect_inputs([one], tmp_path / "x.png") == [(one, tmp_path / "x.png")]
    assert collect_inputs([one], tmp_path / "out") == [(one, tmp_path / "out/a.png")]
    pairs = collect_inputs([tmp_path / "in"], tmp_path / "out")
    assert [dst.relative_to(tmp_path / "out").as_posix() for _, dst in pairs] == ["a.png", "sub/b.png"]
    with pytest.raises(ColorizeError, match="no such file"):
        collect_inputs([tmp_path / "missing.png"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ColorizeError, match="no images"):
        collect_inputs([tmp_path / "empty"], tmp_path / "out")


# ---------------------------------------------------------------- the command


def test_colour_image_of_any_size_with_a_palette(models, tmp_path):
    source = save(tmp_path / "photo.png", painting(77, 131))
    out = tmp_path / "result.png"
    result = run(
        str(source), "-o", str(out), "--model", str(models / "cgan"), "--palette", "#ff8800:2,#3366ff"
    )
    assert result.exit_code == 0, result.output
    written = cv2.imread(str(out))
    assert written.shape == (77, 131, 3)


def test_folder_with_automatic_hint_and_reference(models, tmp_path):
    save(tmp_path / "in/one.png", drawing(64, 48))
    save(tmp_path / "in/deep/two.jpg", painting(40, 90))
    reference = save(tmp_path / "ref.png", painting(50, 50))
    auto = run(str(tmp_path / "in"), "-o", str(tmp_path / "auto"), "--model", str(models / "cgan"),
               "--hint-model", str(models / "hint"))  # fmt: skip
    assert auto.exit_code == 0, auto.output
    assert cv2.imread(str(tmp_path / "auto/one.png")).shape == (64, 48, 3)
    assert cv2.imread(str(tmp_path / "auto/deep/two.png")).shape == (40, 90, 3)
    ref = run(str(tmp_path / "in"), "-o", str(tmp_path / "ref"), "--model", str(models / "cgan"),
              "--reference", str(reference))  # fmt: skip
    assert ref.exit_code == 0, ref.output
    assert (tmp_path / "ref/deep/two.png").exists()


def one_line_error(result, fragment: str) -> None:
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output


def test_refusals(models, tmp_path, monkeypatch):
    good = save(tmp_path / "good.png", drawing(40, 40))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    cgan = str(models / "cgan")
    out = tmp_path / "out"

    one_line_error(run(str(good), "-o", str(out), "--model", cgan, "--palette", "#12345"), "palette entry")
    one_line_error(run(str(tmp_path / "nope.png"), "-o", str(out), "--model", cgan), "no such file")
    one_line_error(
        run(str(corrupt), "-o", str(out), "--model", cgan, "--palette", "#ff0000"), "unreadable image"
    )
    assert not out.exists(), "nothing is written when the one input is unreadable"
    one_line_error(run(str(good), "-o", str(out), "--model", str(tmp_path / "none")), "model not found")
    one_line_error(
        run(str(good), "-o", str(out), "--model", str(models / "hint"), "--palette", "#ff0000"), "hint"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no-registry.db'}")
    one_line_error(run(str(good), "-o", str(out), "--palette", "#ff0000"), "no MLflow registry")


def test_a_bad_file_in_a_batch_is_reported_and_the_rest_coloured(models, tmp_path):
    save(tmp_path / "in/a.png", drawing(40, 40))
    (tmp_path / "in/b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    save(tmp_path / "in/c.jpg", painting(30, 50))
    save(tmp_path / "in/d.bmp", painting(30, 50))  # a real BMP: named, not silently skipped
    out = tmp_path / "out"
    result = run(
        str(tmp_path / "in"), "-o", str(out), "--model", str(models / "cgan"), "--palette", "#ff0000"
    )
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, result.output
    assert "b.png: unreadable image (corrupt png" in errors[0]
    assert "d.bmp: unreadable image (BMP image: not supported" in errors[1]
    assert "coloured 2 of 4 images" in result.output and "2 failed" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]


@pytest.mark.parametrize(
    ("name", "magic"), [("y.jpg", b"\xff\xd8\xff"), ("y.webp", b"RIFF"), ("y.png", b"\x89PNG")]
)
def test_the_output_suffix_is_the_format_written_and_printed(models, tmp_path, name, magic):
    source = save(tmp_path / "in.png", drawing(40, 60))
    out = tmp_path / name
    result = run(str(source), "-o", str(out), "--model", str(models / "cgan"), "--palette", "#ff0000")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"-> {out}")
    assert out.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("y.")] == [name]
    assert cv2.imread(str(out)).shape == (40, 60, 3)


def test_several_inputs_need_an_output_folder(models, tmp_path):
    a, b = save(tmp_path / "a.png", drawing(30, 30)), save(tmp_path / "b.png", drawing(30, 30))
    cgan = str(models / "cgan")
    one_line_error(
        run(str(a), str(b), "-o", str(tmp_path / "y.png"), "--model", cgan), "need an output folder"
    )
    save(tmp_path / "dir/c.png", drawing(30, 30))
    one_line_error(
        run(str(tmp_path / "dir"), "-o", str(tmp_path / "y.jpg"), "--model", cgan), "give -o a folder"
    )
    one_line_error(run(str(a), "-o", str(tmp_path / "y.gif"), "--model", cgan), "cannot write .gif")
    assert not list(tmp_path.glob("y.*"))


@pytest.mark.parametrize("out_name", ["out", "y.png", "y.jpg", "y.webp"])
def test_colorize_replaces_its_own_outputs_never_a_users_file(models, tmp_path, out_name):
    save(tmp_path / "in/a.png", drawing(40, 40))
    single = out_name != "out"
    source = tmp_path / "in" / "a.png" if single else tmp_path / "in"
    out = tmp_path / out_name
    target = out if single else out / "a.png"
    args = [str(source), "-o", str(out), "--model", str(models / "cgan"), "--palette", "#ff0000"]
    assert run(*args).exit_code == 0 and bears_stamp(target)
    first = target.read_bytes()
    target.write_bytes(stamp_image(encode_png(drawing(8, 8))))  # another output of the project's
    assert run(*args).exit_code == 0  # its own output: replaced
    assert target.read_bytes() == first
    target.write_bytes(first.replace(STAMP, b"x" * len(STAMP)))  # now the user's picture of that name
    users = target.read_bytes()
    one_line_error(run(*args), f"{target}); nothing was written")
    assert target.read_bytes() == users


def test_colorize_needs_no_params_file(models, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    source = save(elsewhere / "in.png", painting(30, 40))
    monkeypatch.chdir(elsewhere)  # no params.yaml here
    args = ["colorize", "in.png", "-o", "out.png", "--model", str(models / "cgan"), "--palette", "#00ff00"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (elsewhere / "out.png").exists() and source.exists()
    missing = CliRunner().invoke(app, [*args, "--params", "nope.yaml"])  # named, it must be there
    assert missing.exit_code != 0 and "nope.yaml: file not found" in missing.output


# ---------------------------------------------------------------- full size, layers


def read_any(path: Path) -> np.ndarray:
    """RGB or RGBA as written."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    code = cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)


def test_a_large_line_art_keeps_its_size_and_its_own_lines(models, tmp_path):
    from colorization.colorize import LINE_LEVEL

    # 600 x 420: wider than tall, and large against the model's 32 px (the same code paths as a
    # 2000 x 1400 scan, at a tenth of the time a mutation run spends on every mutant here).
    image = np.full((420, 600, 3), 255, np.uint8)
    cv2.rectangle(image, (90, 60), (510, 360), (30, 30, 30), 3, cv2.LINE_AA)  # dark grey, anti-aliased
    cv2.circle(image, (300, 210), 105, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.line(image, (30, 390), (570, 30), (90, 90, 90), 1, cv2.LINE_AA)
    source = save(tmp_path / "big.png", image)
    out = tmp_path / "big-coloured.png"
    result = run(
        str(source), "-o", str(out), "--model", str(models / "cgan"), "--palette", "#ff8800", "--layers"
    )
    assert result.exit_code == 0, result.output
    composite, colour = read_any(out), read_any(tmp_path / "big-coloured.colour.png")
    lines = read_any(tmp_path / "big-coloured.lines.png")
    assert composite.shape == colour.shape == (420, 600, 3) and lines.shape == (420, 600, 4)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    line = gray <= LINE_LEVEL
    assert line.sum() > 3_000
    assert (composite[line] == image[line]).all(), "the line pixels are the input's own"
    assert (lines[..., 3][line] == 255).all() and (lines[..., :3][line] == image[line]).all()
    paper = gray == 255
    assert (lines[..., 3][paper] == 0).all(), "paper is transparent in the line layer"
    assert (composite[paper] == colour[paper]).all(), "on paper the composite is the colour layer"
    soft = ~line & ~paper  # anti-aliasing: partly opaque
    assert soft.any() and (lines[..., 3][soft] > 0).all() and (lines[..., 3][soft] < 255).all()


def test_a_colour_picture_gets_its_lines_extracted_at_full_size(models, tmp_path):
    from colorization.lineart import extract_lineart

    image = painting(480, 640)
    source = save(tmp_path / "photo.png", image)
    out = tmp_path / "out.png"
    result = run(
        str(source), "-o", str(out), "--model", str(models / "cgan"), "--palette", "#3366ff", "--layers"
    )
    assert result.exit_code == 0, result.output
    lines = read_any(tmp_path / "out.lines.png")
    expected = extract_lineart(image, load_params(PARAMS).lineart)  # at 640 x 480, not the model's size
    assert lines.shape == (480, 640, 4)
    assert (lines[..., 3] == 255 - expected).all()
    composite = read_any(out)
    assert composite.shape == (480, 640, 3) and (composite[expected == 0] == 0).all()


def test_layers_are_written_beside_each_composite_and_never_over_another_output(models, tmp_path):
    save(tmp_path / "in/a.png", drawing(40, 40))
    save(tmp_path / "in/b.jpg", painting(30, 50))
    out = tmp_path / "out"
    cgan = str(models / "cgan")
    result = run(str(tmp_path / "in"), "-o", str(out), "--model", cgan, "--palette", "#ff0000", "--layers")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "a.colour.png", "a.lines.png", "a.png", "b.colour.png", "b.lines.png", "b.png"
    ]  # fmt: skip
    save(tmp_path / "clash/a.png", drawing(40, 40))
    save(tmp_path / "clash/a.lines.png", drawing(40, 40))
    with pytest.raises(ColorizeError, match="both be written to"):
        collect_inputs([tmp_path / "clash"], tmp_path / "out2", layers=True)
    assert collect_inputs([tmp_path / "clash"], tmp_path / "out2")  # without layers, no clash


def test_a_picture_opencv_cannot_process_is_reported_and_its_batch_still_coloured(
    models, tmp_path, monkeypatch
):
    import colorization.colorize as colorize_module

    real = colorize_module.fit_input

    def fit_or_fail(rgb, size, params):
        if rgb.shape[1] == 31:
            raise cv2.error("simulated OpenCV failure")
        return real(rgb, size, params)

    monkeypatch.setattr(colorize_module, "fit_input", fit_or_fail)
    save(tmp_path / "in/a.png", drawing(40, 40))
    save(tmp_path / "in/b.png", drawing(40, 31))
    save(tmp_path / "in/c.png", painting(30, 50))
    result = run(str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(models / "cgan"),
                 "--palette", "#ff0000", "--batch-size", "8")  # fmt: skip
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "b.png: cannot be processed (simulated OpenCV failure" in errors[0], (
        result.output
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]


# ---------------------------------------------------------------- the line-art recipe travels with the model


@pytest.fixture(scope="module")
def xdog_model(tmp_path_factory) -> Path:
    """A CNN trained (two steps) on a store whose line art is XDoG, with a sigma not params.yaml's."""
    import yaml

    from colorization.acquire import run_acquire
    from colorization.preprocess import build_preprocess
    from tests.conftest import TINY, run_folder, synthetic_data_params, train_model

    root = tmp_path_factory.mktemp("xdog-store")
    data = synthetic_data_params(root, count=16, image_size=32)
    data["lineart"]["extractor"] = "xdog"
    data["lineart"]["xdog"]["sigma"] = 1.4
    (root / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    params = load_params(root / "params.yaml", TINY)
    run_acquire(params.acquire)
    build_preprocess(params.acquire.out, params.lineart, params.histograms)
    return train_model(params, "cnn", steps=2, **run_folder(root, "cnn"))


def network_inputs(monkeypatch) -> list[np.ndarray]:
    """Records the line art `colorize` feeds the generator (uint8 [N, S, S] per call)."""
    import colorization.inference as inference

    real, fed = inference.colorize, []

    def recording(generator, lineart, hint, **kwargs):
        fed.append(lineart.copy())
        return real(generator, lineart, hint, **kwargs)

    monkeypatch.setattr(inference, "colorize", recording)
    return fed


def colour_elsewhere(tmp_path, monkeypatch, model: Path, params_yaml: dict | None, *options: str):
    """`colorize` of a colour picture run in a fresh folder holding `params_yaml` (None: no params
    file): (the picture, the line art the network got, the line layer's alpha, the CLI result)."""
    import yaml

    folder = tmp_path / "elsewhere"
    picture = painting(96, 128)
    save(folder / "in.png", picture)
    if params_yaml is not None:
        (folder / "params.yaml").write_text(yaml.safe_dump(params_yaml, sort_keys=False))
    monkeypatch.chdir(folder)
    fed = network_inputs(monkeypatch)
    args = ["colorize", "in.png", "-o", "out.png", "--model", str(model), "--palette", "#00ff00", "--layers"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", *options])
    assert result.exit_code == 0, result.output
    assert len(fed) == 1
    return picture, fed[0][0], read_any(folder / "out.lines.png")[..., 3], result


def repo_params_with(**lineart) -> dict:
    import yaml

    data = yaml.safe_load(PARAMS.read_text())
    data["lineart"].update(lineart)
    return data


@pytest.mark.parametrize("cwd_params", ["none", "canny"])
def test_a_model_trained_on_xdog_lines_colours_with_its_xdog_lines_from_any_folder(
    xdog_model, tmp_path, monkeypatch, cwd_params
):
    import json

    from colorization.config import LineartRecipe
    from colorization.lineart import extract_lineart

    recorded = json.loads((xdog_model / "config.json").read_text())["lineart"]
    recipe = LineartRecipe.model_validate(recorded)
    assert recipe.extractor == "xdog" and recipe.xdog.sigma == 1.4  # the store's, not params.yaml's
    here = repo_params_with(extractor="canny") if cwd_params == "canny" else None
    picture, fed, lines, _ = colour_elsewhere(tmp_path, monkeypatch, xdog_model, here)
    np.testing.assert_array_equal(fed, fit_input(picture, 32, recipe).lineart)
    np.testing.assert_array_equal(lines, 255 - extract_lineart(picture, recipe))  # at full size too
    # Not the lines the folder's params.yaml, or XDoG with params.yaml's settings, would give.
    canny = load_params(PARAMS).lineart
    assert not np.array_equal(fed, fit_input(picture, 32, canny).lineart)
    assert not np.array_equal(
        fed, fit_input(picture, 32, canny.model_copy(update={"extractor": "xdog"})).lineart
    )


def test_lineart_option_overrides_the_models_extractor_and_a_bad_one_is_one_line(
    xdog_model, tmp_path, monkeypatch
):
    import json

    from colorization.config import LineartRecipe

    recipe = LineartRecipe.model_validate(json.loads((xdog_model / "config.json").read_text())["lineart"])
    picture, fed, _, _ = colour_elsewhere(tmp_path, monkeypatch, xdog_model, None, "--lineart", "canny")
    np.testing.assert_array_equal(
        fed, fit_input(picture, 32, recipe.model_copy(update={"extractor": "canny"})).lineart
    )
    bad = CliRunner().invoke(app, ["colorize", "in.png", "-o", "bad.png", "--model", str(xdog_model),
                                   "--palette", "#00ff00", "--lineart", "sobel"])  # fmt: skip
    assert bad.exit_code == 1 and "--lineart must be one of canny, xdog, got 'sobel'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "elsewhere/bad.png").exists()


@pytest.mark.parametrize(
    ("cwd_params", "expected", "warning"),
    [("none", "canny", "the built-in canny lines"), ("xdog", "xdog", "the params file's xdog lines")],
)
def test_a_model_saved_without_a_recipe_gets_the_folders_params_else_the_built_in_one(
    models, tmp_path, monkeypatch, caplog, cwd_params, expected, warning
):
    from colorization.config import DEFAULT_RECIPE

    here = repo_params_with(extractor="xdog") if cwd_params == "xdog" else None
    picture, fed, _, _ = colour_elsewhere(tmp_path, monkeypatch, models / "cgan", here)
    recipe = DEFAULT_RECIPE.model_copy(update={"extractor": expected})
    np.testing.assert_array_equal(fed, fit_input(picture, IMAGE_SIZE, recipe).lineart)
    assert f"records no line-art recipe (an older model): using {warning}" in caplog.text


def lineart_params(params_dict, **changes) -> LineartParams:
    return LineartParams.model_validate({**params_dict["lineart"], **changes})


def thin_drawing(height: int = 40, width: int = 40) -> np.ndarray:
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
    good = save(tmp_path / "in/b.png", thin_drawing())
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
    source = save(tmp_path / "in.png", thin_drawing())
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
    source = save(tmp_path / "in.png", thin_drawing())
    result = colorize_files(
        [(source, tmp_path / "out.png")], generator, RED, lineart_params(params_dict), "cpu"
    )
    assert result.failed == [f"{source}: cannot be processed ({'x' * 200})"]


def test_the_params_files_limits_apply_to_inputs_and_references(generator, params_dict, tmp_path):
    small = lineart_params(params_dict, max_pixels=1000)
    source = save(tmp_path / "in.png", thin_drawing(40, 40))  # 1600 pixels
    result = colorize_files([(source, tmp_path / "out.png")], generator, RED, small, "cpu")
    assert result.written == [] and "max_pixels" in result.failed[0]
    model = str(Path(generator.source))
    tiny = save(tmp_path / "tiny.png", thin_drawing(20, 20))
    with pytest.raises(ColorizeError, match="max_pixels"):
        run_colorize([tiny], tmp_path / "o.png", small, model=model, reference=source, device="cpu")


def test_run_colorize_defaults_to_the_automatic_device_and_no_layers(generator, params_dict, tmp_path):
    source = save(tmp_path / "in.png", thin_drawing())
    result = run_colorize([source], tmp_path / "o.png", lineart_params(params_dict),
                          model=generator.source, palette="#ff0000")  # fmt: skip
    assert result.written == [tmp_path / "o.png"] and not result.failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "o.png"]


def test_run_colorize_refuses_layers_that_would_overwrite_an_output(generator, params_dict, tmp_path):
    save(tmp_path / "in/a.png", thin_drawing())
    save(tmp_path / "in/a.lines.png", thin_drawing())
    with pytest.raises(ColorizeError, match="both be written to"):
        run_colorize([tmp_path / "in"], tmp_path / "out", lineart_params(params_dict),
                     model=generator.source, palette="#ff0000", device="cpu", layers=True)  # fmt: skip
    assert not (tmp_path / "out").exists()
    assert layer_paths(tmp_path / "out/a.png")[1] == tmp_path / "out/a.lines.png"


# ---------------------------------------------------------------- inputs, messages, limits


def test_a_folder_gives_its_images_only_and_a_file_beside_it_is_kept(tmp_path):
    from colorization.colorize import collect_inputs

    save(tmp_path / "in/a.png", thin_drawing())
    (tmp_path / "in/notes.txt").write_text("not a picture")
    (tmp_path / "in/empty.png").mkdir()  # a folder with an image's name is not an image
    single = save(tmp_path / "b.jpg", thin_drawing())
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
    a = save(tmp_path / "a.png", thin_drawing())
    gif = tmp_path / "y.gif"
    with pytest.raises(
        ColorizeError, match=rf"^-o {re.escape(str(gif))}: cannot write \.gif; use \.png, \.jpg or \.webp$"
    ):
        collect_inputs([a], gif)
    save(tmp_path / "dir/c.png", thin_drawing())
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

    save(tmp_path / "in/a.png", thin_drawing())
    save(tmp_path / "in/b.jpg", thin_drawing())  # b.jpg and b.png would both become b.png
    save(tmp_path / "in/b.png", thin_drawing())
    with pytest.raises(ColorizeError) as err:
        collect_inputs([tmp_path / "in"], tmp_path / "out")
    assert (
        str(err.value)
        == f"two inputs would both be written to {tmp_path / 'out/b.png'}; colour them separately"
    )


def test_the_file_size_limit_of_the_params_applies(params_dict, tmp_path):
    from colorization.colorize import read_image

    source = save(tmp_path / "in.png", thin_drawing())
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
    from colorization.colorize import ColorizeError, given_hint

    path = tmp_path / "big.png"
    cv2.imwrite(str(path), np.zeros((40, 40, 3), np.uint8))
    limits = lineart_params(params_dict, max_pixels=1000)
    with pytest.raises(ColorizeError, match="max_pixels"):
        given_hint(path, None, limits)
    assert given_hint(path, None).shape == (512,)


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


def test_a_model_of_another_hint_format_is_refused_in_one_line(tmp_path):
    from colorization.colorize import ColorizeError, load_model

    net = build_model("cgan", ARCH["cgan"])
    torch.save(net.state_dict(), tmp_path / "model.pt")
    config = model_config("cgan", ARCH["cgan"], S)
    assert config["hint_format"] == "rgb-histogram-8x8x8"
    (tmp_path / "config.json").write_text(json.dumps({**config, "hint_format": "lab-histogram-16x16"}))
    with pytest.raises(
        ColorizeError, match=r"hint format is lab-histogram-16x16, this version uses rgb-"
    ) as err:
        load_model(str(tmp_path), "cpu", ("cgan",))
    assert "\n" not in str(err.value)
    old = {k: v for k, v in config.items() if k != "hint_format"}  # saved before the format was recorded
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert load_model(str(tmp_path), "cpu", ("cgan",)).kind == "cgan"


LOCAL_ARCH = {"base_channels": 4, "depth": 3, "hint_dim": 8, "hint_planes": True, "local_hints": True}


def save_local_model(folder: Path, seed: int = 0):
    """A models/cgan folder whose untrained generator takes local hints."""
    torch.manual_seed(seed)
    net = build_model("cgan", LOCAL_ARCH).eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(json.dumps(model_config("cgan", LOCAL_ARCH, IMAGE_SIZE)))
    return net


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


def test_a_dot_in_a_closed_region_leaves_the_rest_of_the_picture_as_without_dots(local_models):
    """The model spreads a dot at its own 64 px, past lines that close the dot's region at full
    size; outside that region the picture comes out exactly as it does without the dot."""
    art = np.full((256, 256, 3), 255, np.uint8)
    cv2.rectangle(art, (40, 40), (120, 120), (0, 0, 0), 2)
    layer = np.zeros((256, 256, 4), np.uint8)
    cv2.circle(layer, (80, 80), 6, (220, 30, 30, 255), -1)
    model = load_model(str(local_models / "cgan"), "cpu", GENERATOR_KINDS)
    blue = HintSource(fixed=parse_palette("#2030e0"))
    (dotted,), _ = colorize_images([art], model, blue, "cpu", hint_layers=[layer])
    (plain,), _ = colorize_images([art], model, blue, "cpu")
    outside = np.ones((256, 256), bool)
    outside[36:125, 36:125] = False  # the square, its line and a margin for the line's width
    assert np.array_equal(dotted.colour[outside], plain.colour[outside])
    inside = dotted.colour[60:100, 60:100].reshape(-1, 3).mean(axis=0)
    assert inside[0] > inside[2] + 100, inside


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


def test_a_dot_on_open_paper_moves_the_models_colours_in_its_own_picture_only(local_models):
    """Where no closed line frames the dot (so no region fill), what shows is the model's use of
    the local hints: red near the dot of the picture that has one, and the picture without a
    layer in the same batch coloured as if alone."""
    art = np.full((200, 200, 3), 255, np.uint8)
    cv2.line(art, (20, 40), (60, 40), (0, 0, 0), 3)  # a short open stroke: paper stays one region
    layer = np.zeros((200, 200, 4), np.uint8)
    layer[90:110, 90:110] = (220, 30, 30, 255)
    model = load_model(str(local_models / "cgan"), "cpu", GENERATOR_KINDS)
    blue = HintSource(fixed=parse_palette("#2030e0"))
    (dotted, plain), _ = colorize_images([art, art], model, blue, "cpu", hint_layers=[layer, None])
    (alone,), _ = colorize_images([art], model, blue, "cpu")
    near = dotted.colour[95:105, 95:105].reshape(-1, 3).mean(axis=0).astype(int)
    far = dotted.colour[170:195, 170:195].reshape(-1, 3).mean(axis=0).astype(int)
    assert near[0] > near[2] + 60, near
    assert far[2] > far[0], far  # the dot's reach fades: the blue global hint decides far away
    assert np.abs(plain.colour.astype(int) - alone.colour.astype(int)).max() <= 1
    assert not np.array_equal(plain.colour, dotted.colour)


def test_hints_are_for_one_picture_and_a_missing_file_is_named(local_models, tmp_path):
    first, second = save(tmp_path / "a.png", drawing(60, 80)), save(tmp_path / "b.png", drawing(60, 80))
    points = tmp_path / "p.json"
    points.write_text('[{"x": 1, "y": 1, "color": "#ff0000"}]')
    model = str(local_models / "cgan")
    two = run(
        str(first),
        str(second),
        "-o",
        str(tmp_path / "out"),
        "--model",
        model,
        "--palette",
        "#808080",
        "--hints",
        str(points),
    )
    assert two.exit_code != 0 and "--hints gives one picture's hints, but there are 2 inputs" in two.output
    assert not (tmp_path / "out").exists()
    missing = run(
        str(first), "-o", str(tmp_path / "o.png"), "--model", model, "--hints", str(tmp_path / "x.json")
    )
    assert missing.exit_code != 0 and f"--hints {tmp_path / 'x.json'}: no such file" in missing.output


# ---------------------------------------------------------------- messages that name what they are about


def test_refusing_a_users_file_names_the_output_folder_and_the_file(tmp_path):
    save(tmp_path / "in/a.png", drawing(20, 20))
    out = tmp_path / "out"
    users = save(out / "a.png", drawing(8, 8))  # not written by colorize: no stamp
    with pytest.raises(ColorizeError) as err:
        collect_inputs([tmp_path / "in"], out)
    assert str(err.value).startswith(
        f"-o {out}: 1 existing file(s) there were not written by colorize (first: {users});"
    )


def test_a_hint_layer_is_read_within_the_params_limits_and_its_refusal_names_it(params_dict, tmp_path):
    from colorization.colorize import read_hints

    src = save(tmp_path / "in.png", drawing(60, 80))
    pairs = [(src, tmp_path / "out.png")]
    rng = np.random.default_rng(0)
    layer = tmp_path / "layer.png"  # noise: a file far larger than the drawing's
    layer.write_bytes(encode_png(rng.integers(0, 256, size=(60, 80, 4), dtype=np.uint8)))
    assert read_hints(layer, pairs, None).shape == (60, 80, 4)
    between = lineart_params(params_dict, max_file_bytes=src.stat().st_size + 100)
    assert src.stat().st_size + 100 < layer.stat().st_size
    with pytest.raises(ColorizeError, match=rf"^--hints {re.escape(str(layer))}: .*max_file_bytes"):
        read_hints(layer, pairs, between)
    few_pixels = lineart_params(params_dict, max_pixels=60 * 80 - 1)  # the picture itself is over it
    with pytest.raises(ColorizeError, match=rf"^{re.escape(str(src))}: unreadable image .*max_pixels"):
        read_hints(layer, pairs, few_pixels)
    wrong = tmp_path / "wrong.png"
    wrong.write_bytes(encode_png(np.zeros((60, 81, 4), np.uint8)))
    with pytest.raises(ColorizeError, match=rf"^--hints {re.escape(str(wrong))}: the hint layer is 81x60"):
        read_hints(wrong, pairs, None)


def test_a_models_bad_or_missing_recipe_is_reported_under_the_name_it_was_given(tmp_path, caplog):
    bad = tmp_path / "bad"
    save_model_dir(bad, "cgan")
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "lineart": {"extractor": "sobel"}}))
    with pytest.raises(ColorizeError, match=rf"^{re.escape(str(bad))}: config.json's lineart\.extractor"):
        load_model(str(bad), "cpu", GENERATOR_KINDS)
    old = tmp_path / "old"
    save_model_dir(old, "cgan")  # saved before models recorded their recipe
    with caplog.at_level(logging.WARNING, logger="colorization.colorize"):
        load_model(str(old), "cpu", GENERATOR_KINDS)
    assert [r.getMessage() for r in caplog.records] == [
        f"{old} records no line-art recipe (an older model): using the built-in canny lines"
    ]


def test_local_hints_for_a_model_without_them_are_refused_naming_the_model(generator):
    """The studio calls colorize_images directly: its refusal is one line naming the model."""
    layer = np.zeros((40, 40, 4), np.uint8)
    layer[10:14, 10:14] = (220, 30, 30, 255)
    with pytest.raises(
        ColorizeError, match=rf"^{re.escape(generator.source)}: this model was trained without"
    ):
        colorize_images([drawing(40, 40)], generator, RED, "cpu", hint_layers=[layer])
