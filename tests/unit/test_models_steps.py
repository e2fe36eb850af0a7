"""colorization.models.steps: what the c-GAN step's loss terms make the generator do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from colorization.config import load_params

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("l2_weight", [0.0, 200.0])
def test_an_uncertain_hint_asks_the_cgan_for_the_mean_colour(l2_weight: float):
    """Three pictures share one line art and one hint that says nothing (certainty 0): two are
    black, one white. L1 alone wants their median, black; the uncertain-hint L2 pulls the
    output towards their mean, a dark grey (PSNR's best guess when the colours are unknown)."""
    from colorization.models.cgan import PatchDiscriminator, UNetGenerator
    from colorization.models.steps import Batch, Nets, cgan_step

    torch.manual_seed(0)
    section = load_params(REPO / "params.yaml").train.cgan.model_copy(
        update={"uncertain_l2_weight": l2_weight, "lr": 0.01}
    )
    gen = UNetGenerator(base_channels=4, depth=3, hint_dim=8, hint_planes=True)
    disc = PatchDiscriminator(base_channels=4, layers=2)
    modules = {"model": gen, "discriminator": disc}
    optimizers = {
        k: torch.optim.Adam(v.parameters(), lr=section.lr, betas=(0.5, 0.999)) for k, v in modules.items()
    }
    nets = Nets(modules, dict(modules), optimizers)
    lineart = torch.where(torch.rand(1, 1, 16, 16) < 0.2, -1.0, 1.0).expand(3, 1, 16, 16)
    color = torch.tensor([-1.0, -1.0, 1.0])[:, None, None, None].expand(3, 3, 16, 16)
    hint = torch.full((3, 512), 1 / 512)
    batch = Batch(lineart=lineart, color=color, hint=hint, certainty=torch.zeros(3))
    for _ in range(150):
        cgan_step(nets, batch, section, torch.device("cpu"))
    with torch.no_grad():
        level = gen(lineart, hint).mean().item()
    if l2_weight:
        assert -0.7 < level < -0.1, level  # near the mean, -1/3
    else:
        assert level < -0.8, level  # the median, black


@pytest.mark.parametrize("local_weight", [0.0, 50.0])
def test_the_local_l1_term_makes_the_cgan_obey_its_dots(local_weight: float):
    """Red dots on pictures that are white there: L1 alone paints the dots white (the target);
    the local term (`local_l1_weight`) asks for the colour the dots give."""
    from colorization.models.cgan import PatchDiscriminator, UNetGenerator
    from colorization.models.steps import Batch, Nets, cgan_step

    torch.manual_seed(0)
    section = load_params(REPO / "params.yaml").train.cgan.model_copy(
        update={"local_l1_weight": local_weight, "uncertain_l2_weight": 0.0, "lr": 0.01}
    )
    gen = UNetGenerator(base_channels=4, depth=3, hint_dim=8, hint_planes=True, local_hints=True)
    disc = PatchDiscriminator(base_channels=4, layers=2)
    modules = {"model": gen, "discriminator": disc}
    optimizers = {
        k: torch.optim.Adam(v.parameters(), lr=section.lr, betas=(0.5, 0.999)) for k, v in modules.items()
    }
    nets = Nets(modules, dict(modules), optimizers)
    lineart = torch.ones(2, 1, 16, 16)
    color = torch.ones(2, 3, 16, 16)  # white
    local = torch.zeros(2, 4, 16, 16)
    local[:, :, 4, 4] = local[:, :, 11, 9] = torch.tensor([1.0, -1.0, -1.0, 1.0])  # red dots
    batch = Batch(lineart=lineart, color=color, hint=torch.full((2, 512), 1 / 512), local=local)
    for _ in range(150):
        cgan_step(nets, batch, section, torch.device("cpu"))
    with torch.no_grad():
        green_at_dots = gen(lineart, batch.hint, local)[:, 1][local[:, 3] > 0].mean().item()
    if local_weight:
        assert green_at_dots < -0.5, green_at_dots  # red: the dots' colour
    else:
        assert green_at_dots > 0.5, green_at_dots  # white: the target's
