"""Palettes as files: .gpl and .json, an image's palette, and the hint they give `colorize`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from colorization.cli import app
from colorization.colorize import ColorizeError, given_hint
from colorization.histogram import color_histogram
from colorization.models import build_model, model_config
from colorization.palette import PaletteError, image_palette, parse_palette_bytes
from tests.unit.test_colorize import PARAMS, drawing, painting, read_any, save
from tests.unit.test_evaluate import IMAGE_SIZE

GPL = """GIMP Palette
Name: Heroine
Columns: 4
# skin, hair, eyes
244 194 161\tSkin
 58  95 205\tweight 3
255 255 255\t0.5
"""


def test_gpl_names_are_weights_when_they_are_numbers():
    entries = parse_palette_bytes(GPL.encode(), ".gpl")
    assert entries == [((244, 194, 161), 1.0), ((58, 95, 205), 3.0), ((255, 255, 255), 0.5)]


def test_json_palette():
    data = json.dumps({"#ff0000": 3, "00ff00": 1.5}).encode()
    assert parse_palette_bytes(data, ".JSON") == [((255, 0, 0), 3.0), ((0, 255, 0), 1.5)]


@pytest.mark.parametrize(
    ("data", "suffix", "message"),
    [
        (b"255 0 0 red\n", ".gpl", "not a GIMP palette"),
        (b"GIMP Palette\nName: x\n", ".gpl", "no colours"),
        (b"GIMP Palette\n255 0\n", ".gpl", "line 2"),
        (b"GIMP Palette\n300 0 0 red\n", ".gpl", "0..255"),
        (b"GIMP Palette\n255 0 0 weight -2\n", ".gpl", "line 2"),
        (b"{", ".json", "not JSON"),
        (b"[]", ".json", "JSON object"),
        (b'{"#ff00": 1}', ".json", "is not #rrggbb"),
        (b'{"#ff0000": "heavy"}', ".json", "not a number"),
        (b'{"#ff0000": 0}', ".json", "positive"),
        (b'{"#ff0000": 1' + b"0" * 400 + b"}", ".json", "positive"),  # beyond a float's range
        (b"\xff\xfe", ".json", "UTF-8"),
        (b"{}", ".txt", ".gpl or .json"),
    ],
)
def test_palettes_that_do_not_parse_are_refused_in_one_line(data, suffix, message):
    with pytest.raises(PaletteError, match=message) as err:
        parse_palette_bytes(data, suffix)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("suffix", [".gpl", ".json"])
def test_image_to_palette_file_to_hint_round_trip(tmp_path, suffix):
    image = painting(90, 120)  # three colours: its palette is its whole histogram
    source = save(tmp_path / "char.png", image)
    out = tmp_path / f"char{suffix}"
    result = CliRunner().invoke(app, ["palette", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 colours (100.0% of the pixels)" in result.output
    hint = given_hint(None, str(out))
    assert hint == pytest.approx(color_histogram(image), abs=1e-6)
    # With more colours than kept: the heaviest bins, renormalised.
    noisy = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    save(tmp_path / "noisy.png", noisy)
    result = CliRunner().invoke(
        app, ["palette", str(tmp_path / "noisy.png"), "-o", str(out), "--colours", "5"]
    )
    assert result.exit_code == 0, result.output
    full = color_histogram(noisy)
    top = np.argsort(-full, kind="stable")[:5]
    expected = np.zeros_like(full)
    expected[top] = full[top] / full[top].sum()
    assert given_hint(None, str(out)) == pytest.approx(expected, abs=1e-5)


def test_image_palette_colours_are_the_mean_colour_of_their_bin():
    image = np.zeros((10, 10, 3), np.uint8)
    image[:, :5] = (200, 10, 10)
    image[:, 5:] = (210, 20, 20)  # same bin as the left half
    assert image_palette(image) == [((205, 15, 15), 1.0)]


def test_bad_palette_file_and_suffix_are_one_line_refusals(tmp_path):
    with pytest.raises(ColorizeError, match="no such palette file"):
        given_hint(None, str(tmp_path / "missing.gpl"))
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ColorizeError, match="not JSON"):
        given_hint(None, str(tmp_path / "bad.json"))
    save(tmp_path / "a.png", painting(20, 20))
    result = CliRunner().invoke(app, ["palette", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.txt")])
    assert result.exit_code != 0 and ".gpl or .json" in result.output


@pytest.fixture(scope="module")
def hint_following_cgan(tmp_path_factory) -> Path:
    """A tiny c-GAN whose output is a deviation from the hint's mean colour (hint_planes), untrained."""
    folder = tmp_path_factory.mktemp("models") / "cgan"
    folder.mkdir()
    arch = {"base_channels": 4, "depth": 3, "hint_dim": 8, "hint_planes": True}
    torch.manual_seed(0)
    torch.save(build_model("cgan", arch).state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(json.dumps(model_config("cgan", arch, IMAGE_SIZE)))
    return folder


def test_a_red_palette_file_colours_redder_than_a_blue_one(hint_following_cgan, tmp_path):
    source = save(tmp_path / "drawing.png", drawing(96, 128))
    (tmp_path / "red.gpl").write_text("GIMP Palette\n230 40 30\tweight 3\n250 200 190\tweight 1\n")
    (tmp_path / "blue.json").write_text(json.dumps({"#2040e0": 3, "#c0d0f8": 1}))
    redness = {}
    for name in ("red.gpl", "blue.json"):
        out = tmp_path / f"{name}.png"
        args = [
            str(source),
            "-o",
            str(out),
            "--model",
            str(hint_following_cgan),
            "--palette",
            str(tmp_path / name),
        ]
        result = CliRunner().invoke(app, ["colorize", *args, "--params", str(PARAMS), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        rgb = read_any(out).astype(np.float64)
        redness[name] = float((rgb[..., 0] - rgb[..., 2]).mean())
    assert redness["red.gpl"] > redness["blue.json"] + 50, redness
