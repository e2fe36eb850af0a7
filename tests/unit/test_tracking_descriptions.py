"""What the registry page shows: model descriptions and tags, version descriptions with the decision.

Against real sqlite registries in temporary folders, through the stage's own code paths.
"""

from __future__ import annotations

import json

import mlflow
import pytest

from colorization.config import StageInputs, load_params
from colorization.register import run_register
from colorization.tracking import registry
from colorization.tracking.descriptions import changes
from tests.registry_fixtures import log_toy_model


@pytest.fixture
def empty_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def params_json(steps: int) -> str:
    return json.dumps({"seed": 0, "train": {"cgan": {"steps": steps, "lr": 0.001}}})


def register(root, seed: int, psnr: float, steps: int):
    models = root / f"models-{seed}"
    log_toy_model(models, "cgan", seed=seed)
    evaluation = {"cgan": {"psnr": psnr, "ssim": 0.5}, "split_fingerprint": "abc", "split": "test"}
    tags = {"git_commit": "1234567890abcdef", "data_md5": "d" * 32, "data_source": "safebooru"}
    tags["params"] = params_json(steps)
    return registry.register_model(
        "cgan", "lineart-cgan", "cgan.psnr", "max", models / "cgan", evaluation, tags
    )


def test_model_and_versions_say_what_they_are_and_why_promoted_or_not(empty_registry):
    first = register(empty_registry, seed=0, psnr=20.0, steps=1000)
    second = register(empty_registry, seed=1, psnr=18.5, steps=2000)
    assert (first.promoted, second.promoted) == (True, False)
    c = registry.client()

    model = c.get_registered_model("lineart-cgan")
    assert "conditional GAN" in model.description
    for needed in ("Input: a 32 x 32 line art", "Output: an RGB picture, 32 x 32", "Hint:", "palette"):
        assert needed in model.description, needed
    assert model.tags["task"] == "line-art colorization"
    assert model.tags["image_size"] == "32"
    assert model.tags["data_source"] == "safebooru"

    v1 = c.get_model_version("lineart-cgan", first.version).description
    assert "first version" in v1 and "Promoted to champion" in v1 and "first champion" in v1

    v2 = c.get_model_version("lineart-cgan", second.version).description
    assert "Not promoted (stays challenger)" in v2
    assert "cgan.psnr 18.5 does not beat 20 of champion v1" in v2
    assert "against champion v1" in v2 and "train.cgan.steps 1000 -> 2000" in v2
    assert "cgan.psnr 18.5" in v2 and "code:" not in v2  # same commit: no code change claimed


def test_changes_name_code_data_params_and_architecture():
    old = {"git_commit": "a" * 40, "data_md5": "1" * 32, "params": params_json(1000)}
    old["config"] = '{"arch":{"depth":6}}'
    assert changes(old, old) == []
    new = old | {"git_commit": "b" * 40, "data_md5": "2" * 32, "config": '{"arch":{"depth":7}}'}
    found = changes(new, old)
    assert found[0].startswith("code: commit aaaaaaaaaaaa -> bbbbbbbbbbbb")
    assert found[1].startswith("data: md5 111111111111 -> 222222222222")
    assert found[2] == "architecture: arch.depth 6 -> 7"


def test_the_register_stage_describes_all_three_models(sqlite_store):
    params = load_params(sqlite_store)
    run_register(params, StageInputs.of(params))
    c = registry.client()
    tasks = {}
    for name in ("lineart-cnn", "lineart-cgan", "lineart-hint"):
        model = c.get_registered_model(name)
        assert model.tags["data_source"] == params.acquire.source == "synthetic"
        assert model.tags["image_size"] == str(params.lineart.image_size)
        tasks[name] = model.tags["task"]
        assert c.get_model_version(name, "1").description.startswith(name.removeprefix("lineart-"))
    assert tasks == {
        "lineart-cnn": "line-art colorization",
        "lineart-cgan": "line-art colorization",
        "lineart-hint": "colour-hint prediction",
    }
    assert "Takes no hint" in c.get_registered_model("lineart-hint").description
