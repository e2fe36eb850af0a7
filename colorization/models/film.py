"""How the colour hint steers a network: encode the histogram once, then FiLM every stage.

FiLM (feature-wise linear modulation) scales and shifts each feature channel by amounts
computed from the hint, so the hint reaches every resolution of the network instead of
being one extra input channel the network may learn to ignore.
"""

from __future__ import annotations

import torch
from torch import nn

from colorization.histogram import HIST_BINS


class HintEncoder(nn.Module):
    """float[N, 512] histogram -> float[N, dim] embedding."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(HIST_BINS, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def forward(self, hint: torch.Tensor) -> torch.Tensor:
        hint = hint.float().clamp_min(0)
        hint = hint / hint.sum(dim=1, keepdim=True).clamp_min(1e-8)  # any scale in, a distribution used
        # sqrt (the Hellinger embedding): a colour covering 2% of the picture still moves the input.
        return torch.relu(self.net(hint.sqrt()))


class FiLM(nn.Module):
    """x * (1 + gamma(hint)) + beta(hint), per channel."""

    def __init__(self, hint_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(hint_dim, 2 * channels)
        # Start as the identity so an untrained hint path does not scramble the features.
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(embedding).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta
