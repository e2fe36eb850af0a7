"""The auto colour hint: predict the 512-bin histogram from the line art alone.

A small strided CNN, global average pooling, and a linear layer to 512 logits; trained
with KL(target || softmax(logits)) or chi-squared. Its guess replaces the user's hint, which is
the poster's "c-GAN with auto color hint".

Line art says little about colours, so the guess is only a little better than the training
set's average hint, yet it is as sharp as a real histogram, and the generators read a sharp
hint as a certain one. With `trust` < 1 the automatic hint is the guess shrunk towards that
average (`prior`, set from the training data): the generators were trained with hints
blended with the average for exactly this case (augment.py), and colour it with their most
likely colours instead of a confident wrong guess.
"""

from __future__ import annotations

import torch
from torch import nn

from colorization.histogram import HIST_BINS


class HintNet(nn.Module):
    def __init__(self, base_channels: int = 32, depth: int = 4, trust: float = 1.0):
        super().__init__()
        if not 0.0 <= trust <= 1.0:
            raise ValueError(f"trust must be in [0, 1], got {trust}")
        self.trust = float(trust)
        if self.trust < 1.0:  # a model of trust 1 has no prior: models saved before it load as they were
            self.register_buffer("prior", torch.full((HIST_BINS,), 1.0 / HIST_BINS))
        layers: list[nn.Module] = []
        ch = 1
        for i in range(depth):
            out = base_channels * min(2**i, 8)
            layers += [nn.Conv2d(ch, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, HIST_BINS)

    def forward(self, lineart: torch.Tensor) -> torch.Tensor:
        """Logits [N, 512]; their softmax is the guess (`automatic` makes the hint colouring uses)."""
        x = self.features(lineart).mean(dim=(2, 3))
        return self.head(x)

    def automatic(self, guess: torch.Tensor) -> torch.Tensor:
        """The hint colouring uses, [N, 512]: the guess (softmax of the logits) shrunk towards the
        training set's average hint."""
        return shrink(guess, self.trust, getattr(self, "prior", None))


def shrink(guess: torch.Tensor, trust: float, prior: torch.Tensor | None) -> torch.Tensor:
    """`trust` * guess + (1 - trust) * prior; the guess itself when there is no prior."""
    if prior is None or trust == 1.0:
        return guess
    return trust * guess + (1.0 - trust) * prior.to(guess)
