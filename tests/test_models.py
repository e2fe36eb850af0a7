"""Model behaviour without training: shapes, ranges, the on-disk format, the inference
contract, and the on-device augmentation."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from colorization.augment import augment
from colorization.config import AugmentParams
from colorization.inference import colorize, palette, predict_hint
from colorization.models import build_model, load_trained, model_config
from colorization.models.cgan import PatchDiscriminator

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


def test_discriminator_judges_each_patch_on_its_own_and_reads_the_line_art():
    torch.manual_seed(0)
    disc = PatchDiscriminator(base_channels=4, layers=2).eval()  # eval: no batch statistics
    lines, colour = torch.rand(1, 1, 64, 64), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        base = disc(lines, colour)[0, 0]
        recoloured = colour.clone()
        recoloured[..., :8, :8] = 1.0 - recoloured[..., :8, :8]  # a colour change in one corner
        moved = disc(lines, recoloured)[0, 0]
        redrawn = lines.clone()
        redrawn[..., :8, :8] = 1.0 - redrawn[..., :8, :8]  # the same colours, other lines there
        relined = disc(redrawn, colour)[0, 0]
    p = base.shape[-1]
    assert p >= 8  # a grid of patch scores, not one score for the picture
    for changed in (moved, relined):
        assert (changed[:2, :2] - base[:2, :2]).abs().max() > 1e-4  # the patches that see the corner
        torch.testing.assert_close(
            changed[p // 2 :, p // 2 :], base[p // 2 :, p // 2 :]
        )  # far ones: untouched


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


def test_palette_draws_the_dominant_colours_by_weight():
    hint = np.zeros(512, np.float32)
    hint[[0, 511]] = [0.75, 0.25]  # black-ish bin, white-ish bin
    image = palette(hint, 8)
    assert (image[:6] == 16).all() and (image[6:] == 240).all()


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


def test_learning_rate_is_constant_then_falls_linearly_to_nearly_zero():
    from colorization.train import learning_rate

    steps = 100
    lrs = [learning_rate(1e-3, step, steps, decay=0.5) for step in range(1, steps + 1)]
    assert lrs[:50] == [1e-3] * 50  # the first half untouched
    assert all(a > b for a, b in zip(lrs[50:], lrs[51:], strict=False))  # then strictly falling
    assert lrs[-1] == pytest.approx(1e-3 / 51)  # the last step still moves, a little
    assert [learning_rate(1e-3, s, steps, decay=0.0) for s in (1, 99, 100)] == [1e-3] * 3


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


def test_a_hint_model_saved_before_trust_existed_loads_and_gives_its_guess(tmp_path):
    lineart, _ = random_inputs(3)
    torch.manual_seed(0)
    old = build_model("hint", ARCH["hint"]).eval()  # config.json without "trust", no prior in model.pt
    assert "prior" not in old.state_dict()
    torch.save(old.state_dict(), tmp_path / "model.pt")
    (tmp_path / "config.json").write_text(json.dumps(model_config("hint", ARCH["hint"], S)))
    loaded = load_trained(tmp_path)
    np.testing.assert_allclose(predict_hint(loaded, lineart), predict_hint(old, lineart, raw=True), atol=1e-6)


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
