"""colorization.models.cgan: the patch discriminator."""

from __future__ import annotations

import torch

from colorization.models.cgan import PatchDiscriminator


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
