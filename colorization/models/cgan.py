"""pix2pix-style conditional GAN: a U-Net generator whose every stage is FiLM-modulated by the hint,
and a PatchGAN discriminator scoring overlapping patches of (line art, colour) pairs."""

from __future__ import annotations

import torch
from torch import nn

from colorization.models.film import FiLM, HintEncoder, guided_input, input_channels, with_hint_colour


def stage_channels(base_channels: int, stages: int) -> list[int]:
    """Channels of `stages` stride-2 stages: doubling from `base_channels`, up to 8x (pix2pix)."""
    return [base_channels * min(2**i, 8) for i in range(stages)]


class UNetGenerator(nn.Module):
    def __init__(
        self,
        base_channels: int = 64,
        depth: int = 8,
        hint_dim: int = 128,
        hint_planes: bool = False,
        local_hints: bool = False,
    ):
        super().__init__()
        chans = stage_channels(base_channels, depth)
        self.hint = HintEncoder(hint_dim)
        self.hint_planes = hint_planes  # the hint's mean colour as 3 extra input planes
        self.local_hints = local_hints  # local colour hints [N, 4, S, S] as 8 more (local_hints.py)
        self.down, self.down_film = nn.ModuleList(), nn.ModuleList()
        for i, out in enumerate(chans):
            inp = input_channels(hint_planes, local_hints) if i == 0 else chans[i - 1]
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(inp, out, 4, 2, 1, bias=i == 0 or i == depth - 1))
            if 0 < i < depth - 1:  # pix2pix: no norm on the outermost and innermost layer
                layers.append(nn.BatchNorm2d(out))
            self.down.append(nn.Sequential(*layers))
            self.down_film.append(FiLM(hint_dim, out))
        self.up, self.up_film = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(1, depth)):  # decoder stage i goes from level i to level i-1
            inp, out = chans[i] if i == depth - 1 else 2 * chans[i], chans[i - 1]  # skips double the input
            layers = [nn.ReLU(), nn.ConvTranspose2d(inp, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out)]
            self.up.append(nn.Sequential(*layers))
            self.up_film.append(FiLM(hint_dim, out))
        self.out = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * chans[0], 3, 4, 2, 1), nn.Tanh())

    def forward(
        self, lineart: torch.Tensor, hint: torch.Tensor, local: torch.Tensor | None = None
    ) -> torch.Tensor:
        h, skips = self.hint(hint), []
        x, base = guided_input(self, lineart, hint, local)
        for block, film in zip(self.down, self.down_film, strict=True):
            x = film(block(x), h)
            skips.append(x)
        x = skips.pop()
        for block, film in zip(self.up, self.up_film, strict=True):
            x = film(block(x), h)
            x = torch.cat([x, skips.pop()], dim=1)
        if base is not None:  # the picture as a deviation from the hint's colours
            return with_hint_colour(self.out[:-1](x), base)
        return self.out(x)


class PatchDiscriminator(nn.Module):
    """Logits [N, 1, P, P], one per receptive-field patch of the (line art, colour) pair."""

    def __init__(self, base_channels: int = 64, layers: int = 3):
        super().__init__()
        chans = stage_channels(base_channels, layers + 1)
        mods: list[nn.Module] = [nn.Conv2d(4, base_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        for i, (inp, out) in enumerate(zip(chans[:-1], chans[1:], strict=True), start=1):
            stride = 2 if i < layers else 1  # the last feature layer keeps resolution (70x70 PatchGAN)
            mods += [nn.Conv2d(inp, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
        mods.append(nn.Conv2d(chans[-1], 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, lineart: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([lineart, color.to(lineart.dtype)], dim=1))
