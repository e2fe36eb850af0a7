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
        torch.testing.assert_close(
            disc(lines, colour, torch.rand(1, 4, 64, 64))[0, 0], base
        )  # no hint planes
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


def test_a_discriminator_of_a_local_hint_generator_reads_the_dots_where_they_are():
    """So a colouring that ignores a dot can be told from the real picture that the dot came from."""
    torch.manual_seed(0)
    disc = PatchDiscriminator(base_channels=4, layers=2, local_hints=True).eval()
    lines, colour = torch.rand(1, 1, 64, 64), torch.rand(1, 3, 64, 64)
    dot = torch.zeros(1, 4, 64, 64)
    dot[:, :, 2:5, 2:5] = torch.tensor([1.0, -1.0, -1.0, 1.0])[:, None, None]  # a red dot, top-left
    with torch.no_grad():
        without = disc(lines, colour)[0, 0]  # no local hints: the same as all-zero planes
        torch.testing.assert_close(disc(lines, colour, torch.zeros(1, 4, 64, 64))[0, 0], without)
        dotted = disc(lines, colour, dot)[0, 0]
    p = without.shape[-1]
    assert (dotted[:2, :2] - without[:2, :2]).abs().max() > 1e-4
    torch.testing.assert_close(dotted[p // 2 :, p // 2 :], without[p // 2 :, p // 2 :])
