"""The auto colour hint: a small strided CNN, average pooling and a linear layer guess the 512-bin histogram
from the line art; with `trust` < 1 shrunk towards the train split's mean hint (`prior`, docs/training.md)."""

from __future__ import annotations

import torch
from torch import nn

from colorization.histogram import HIST_BINS
from colorization.models.cgan import stage_channels


class HintNet(nn.Module):
    def __init__(self, base_channels: int = 32, depth: int = 4, trust: float = 1.0):
        super().__init__()
        if not 0.0 <= trust <= 1.0:
            raise ValueError(f"trust must be in [0, 1], got {trust}")
        self.trust = float(trust)
        if self.trust < 1.0:  # a model of trust 1 has no prior: models saved before it load as they were
            self.register_buffer("prior", torch.full((HIST_BINS,), 1.0 / HIST_BINS))
        chans = [1, *stage_channels(base_channels, depth)]
        layers: list[nn.Module] = []
        for inp, out in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(inp, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], HIST_BINS)

    def forward(self, lineart: torch.Tensor) -> torch.Tensor:
        """Logits [N, 512]; their softmax is the guess (`automatic` makes the hint colouring uses)."""
        return self.head(self.features(lineart).mean(dim=(2, 3)))

    def automatic(self, guess: torch.Tensor) -> torch.Tensor:
        """The hint colouring uses, [N, 512]: the guess (softmax of the logits) shrunk towards `prior`."""
        if self.trust == 1.0:  # no prior
            return guess
        return self.trust * guess + (1.0 - self.trust) * self.prior.to(guess)
