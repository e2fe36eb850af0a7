"""colorization.config: params.yaml loading, overrides and one-line errors, the built-in recipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from colorization.config import ParamsError, load_params
from tests.unit.test_colorize import PARAMS


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_repository_params_are_valid():
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    assert params.acquire.source == "synthetic"
    assert params.lineart.canny.low < params.lineart.canny.high


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "seed: 0\nacquire:\n  out: x\n   min_size: 3\n",
            "line 4, column 12: mapping values are not allowed here",
        ),
        (
            "seed: [0, 1\nlineart: {}\n",
            "line 2, column 8: expected ',' or ']', but got ':' (while parsing a flow sequence)",
        ),
        ('seed: "0\n', "line 2, column 1: found unexpected end of stream (while scanning a quoted scalar)"),
    ],
)
def test_yaml_syntax_errors_name_line_and_column(tmp_path, text, expected):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    message = str(err.value)
    assert message == f"{path}: not valid YAML at {expected}"
    assert "\n" not in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["lineart"].update(image_size=-8), "lineart.image_size: Input should be greater than"),
        (lambda p: p["acquire"].update(source="flickr"), "acquire.source: Input should be 'synthetic'"),
        (lambda p: p["lineart"]["canny"].update(low=200, high=100), "lineart.canny: low (200) must be less"),
        (lambda p: p["lineart"].pop("image_size"), "lineart.image_size: missing key"),
        (lambda p: p["lineart"].update(image_sise=64), "lineart.image_sise: unknown key"),
        (
            lambda p: p["lineart"]["split"].update(val=0.5, test=0.5),
            "lineart.split: val + test must be below 1",
        ),
    ],
)
def test_bad_values_name_the_key_in_one_line(tmp_path, params_dict, mutate, expected):
    mutate(params_dict)
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, params_dict))
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_overrides_use_dotted_keys(tmp_path, params_dict):
    params = load_params(write(tmp_path, params_dict), {"lineart.image_size": 48, "acquire.source": None})
    assert params.lineart.image_size == 48
    assert params.acquire.source == "synthetic"  # None means "not given"
    with pytest.raises(ParamsError, match="override lineart.nope: unknown key"):
        load_params(write(tmp_path, params_dict), {"lineart.nope": 1})


def test_a_bad_override_is_named_as_an_override(tmp_path, params_dict):
    path = write(tmp_path, params_dict)
    with pytest.raises(ParamsError) as err:
        load_params(path, {"train.cnn.steps": 2, "lineart.image_size": 3})
    assert str(err.value) == (
        "override lineart.image_size=3: Input should be greater than or equal to 16 (got 3)"
    )
    with pytest.raises(ParamsError, match=r"^override lineart.canny.low=500 \(lineart.canny\): low \(500\)"):
        load_params(path, {"lineart.canny.low": 500})  # a section-level check the override broke
    params_dict["lineart"]["image_size"] = 3  # the file itself is wrong: it is named, not the override
    with pytest.raises(ParamsError, match=rf"^{re.escape(str(path))}: lineart.image_size: "):
        load_params(write(tmp_path, params_dict), {"train.cnn.steps": 2})


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["real-cpu.yaml", "real-gpu.yaml"])
def test_override_profiles_apply_over_the_repository_params(name):
    from colorization.config import profile_overrides

    overrides = profile_overrides(REPO / "profiles" / name)
    params = load_params(REPO / "params.yaml", overrides)
    assert params.acquire.source == "folder"
    assert params.lineart.image_size == overrides["lineart.image_size"] != 0
    assert params.train.hint.loss == "chi2"
    # Only what differs: everything the profile does not name keeps params.yaml's value.
    assert params.train.augment == load_params(REPO / "params.yaml").train.augment


def test_profile_command_prints_dvc_set_arguments_and_refuses_unknown_keys(tmp_path):
    from typer.testing import CliRunner

    from colorization.cli import app

    good = write(tmp_path, {"lineart": {"image_size": 32, "canny": {"low": 50}}, "train": {"compile": True}})
    out = CliRunner().invoke(app, ["profile", str(good), "--params", str(REPO / "params.yaml")])
    assert out.exit_code == 0, out.output
    words = out.output.split()
    assert words[::2] == ["-S"] * 3
    assert set(words[1::2]) == {"lineart.image_size=32", "lineart.canny.low=50", "train.compile=true"}
    bad = write(tmp_path, {"lineart": {"image_sise": 32}})
    out = CliRunner().invoke(app, ["profile", str(bad), "--params", str(REPO / "params.yaml")])
    assert out.exit_code != 0 and "lineart.image_sise" in out.output and "unknown key" in out.output


def test_paper_profile_is_only_what_differs_from_params():
    from colorization.config import profile_overrides

    overrides = profile_overrides(REPO / "profiles" / "paper.yaml")
    base = load_params(REPO / "params.yaml")
    params = load_params(REPO / "params.yaml", overrides)
    picked = (params.acquire.source, params.lineart.image_size, params.train.cgan.depth)
    assert picked == ("safebooru", 512, 8)
    for key, value in overrides.items():  # every key it names changes something
        node = base
        for part in key.split("."):
            node = getattr(node, part)
        assert node != value, f"{key} is the same as in params.yaml"


def test_the_built_in_recipe_for_older_models_is_the_demo_profiles():
    from colorization.config import DEFAULT_RECIPE

    assert load_params(PARAMS).lineart.recipe() == DEFAULT_RECIPE
