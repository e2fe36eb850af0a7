"""The auto colour hint: predict the 512-bin histogram from the line art alone.

A small strided CNN, global average pooling, and a linear layer to 512 logits; trained
with KL(target || softmax(logits)). Its softmax output replaces the user's hint, which is
the poster's "c-GAN with auto color hint".
"""

from __future__ import annotations

import torch
from torch import nn

from colorization.histogram import HIST_BINS


class HintNet(nn.Module):
    def __init__(self, base_channels: int = 32, depth: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        ch = 1
        for i in range(depth):
            out = base_channels * min(2**i, 8)
            layers += [nn.Conv2d(ch, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, HIST_BINS)

    def forward(self, lineart: torch.Tensor) -> torch.Tensor:
        """Logits [N, 512]; softmax gives the predicted histogram."""
        x = self.features(lineart).mean(dim=(2, 3))
        return self.head(x)
