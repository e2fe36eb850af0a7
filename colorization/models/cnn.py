"""The paper's baseline, trained with an L2 loss: an encoder-decoder of 3x3 conv + ReLU without skip
connections (stride-2 down, nearest upsampling back), each stage FiLM-modulated by the hint."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from colorization.models.film import FiLM, HintEncoder, guided_input, input_channels, with_hint_colour


def conv_relu(inp: int, out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, 3, stride, 1), nn.ReLU(inplace=True))


class ColorCNN(nn.Module):
    def __init__(
        self,
        base_channels: int = 32,
        depth: int = 3,
        hint_dim: int = 64,
        hint_planes: bool = False,
        local_hints: bool = False,
    ):
        super().__init__()
        chans = [base_channels * 2**i for i in range(depth + 1)]
        self.hint = HintEncoder(hint_dim)
        self.hint_planes = hint_planes  # the hint's mean colour as 3 extra input planes
        self.local_hints = local_hints  # local colour hints [N, 4, S, S] as 8 more (local_hints.py)
        self.stem = conv_relu(input_channels(hint_planes, local_hints), chans[0])
        self.down = nn.ModuleList(
            nn.Sequential(conv_relu(chans[i], chans[i + 1], stride=2), conv_relu(chans[i + 1], chans[i + 1]))
            for i in range(depth)
        )
        self.up = nn.ModuleList(
            nn.Sequential(conv_relu(chans[i + 1], chans[i]), conv_relu(chans[i], chans[i]))
            for i in reversed(range(depth))
        )
        self.films = nn.ModuleList(FiLM(hint_dim, c) for c in chans[1:] + chans[:-1][::-1])
        self.head = nn.Conv2d(chans[0], 3, 3, 1, 1)

    def forward(
        self, lineart: torch.Tensor, hint: torch.Tensor, local: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.hint(hint)
        x, base = guided_input(self, lineart, hint, local)
        x = self.stem(x)
        films = iter(self.films)
        for block in self.down:
            x = next(films)(block(x), h)
        for block in self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = next(films)(block(x), h)
        return with_hint_colour(self.head(x), base)
