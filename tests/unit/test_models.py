"""colorization.models: the generators' shapes and use of the hint, the model folder format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from colorization.inference import colorize, predict_hint
from colorization.models import build_model, load_trained, model_config

ARCH = {
    "cnn": {"base_channels": 4, "depth": 2, "hint_dim": 8},
    "cgan": {"base_channels": 4, "depth": 4, "hint_dim": 8, "hint_planes": True},
    "hint": {"base_channels": 4, "depth": 2},
}


S = 32


def random_inputs(n: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    lineart = np.where(rng.random((n, S, S)) < 0.1, 0, 255).astype(np.uint8)
    hint = rng.random((n, 512)).astype(np.float32)
    return lineart, hint / hint.sum(axis=1, keepdims=True)


def perturb_films(net: torch.nn.Module) -> None:
    # FiLM starts as the identity; give it weights so the hint path is live.
    torch.manual_seed(1)
    for name, p in net.named_parameters():
        if "film" in name or "films" in name:
            p.data.normal_(0, 0.5)


@pytest.mark.parametrize("kind", ["cnn", "cgan"])
def test_generators_map_lineart_and_hint_to_rgb_and_use_the_hint(kind):
    net = build_model(kind, ARCH[kind]).eval()
    perturb_films(net)
    lineart, hint = random_inputs()
    out = colorize(net, lineart, hint)
    assert out.shape == (3, S, S, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, colorize(net, lineart, np.roll(hint, 1, axis=0)))


@pytest.mark.parametrize("kind", ["cnn", "cgan", "hint"])
def test_load_trained_round_trips_the_model_folder(kind, tmp_path):
    torch.manual_seed(0)
    net = build_model(kind, ARCH[kind]).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    (tmp_path / "config.json").write_text(json.dumps(model_config(kind, ARCH[kind], S)))
    loaded = load_trained(tmp_path)
    assert not loaded.training
    for key, value in net.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_a_hint_model_saved_before_trust_existed_loads_and_gives_its_guess(tmp_path):
    lineart, _ = random_inputs(3)
    torch.manual_seed(0)
    old = build_model("hint", ARCH["hint"]).eval()  # config.json without "trust", no prior in model.pt
    assert "prior" not in old.state_dict()
    torch.save(old.state_dict(), tmp_path / "model.pt")
    (tmp_path / "config.json").write_text(json.dumps(model_config("hint", ARCH["hint"], S)))
    loaded = load_trained(tmp_path)
    np.testing.assert_allclose(predict_hint(loaded, lineart), predict_hint(old, lineart, raw=True), atol=1e-6)
