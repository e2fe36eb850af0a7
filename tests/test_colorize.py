"""`colorization colorize`: palettes, input detection and sizing, output layout, refusals."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from colorization.cli import app
from colorization.colorize import (
    ColorizeError,
    collect_inputs,
    fit_input,
    is_lineart,
    parse_palette,
    restore_size,
)
from colorization.config import load_params
from colorization.images import encode_png
from colorization.stamp import STAMP, bears_stamp, stamp_image
from tests.test_evaluate import IMAGE_SIZE, save_model_dir

REPO = Path(__file__).resolve().parents[1]
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


def test_the_built_in_recipe_for_older_models_is_the_demo_profiles():
    from colorization.config import DEFAULT_RECIPE

    assert load_params(PARAMS).lineart.recipe() == DEFAULT_RECIPE


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
