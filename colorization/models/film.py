"""How the colour hint steers a network: encode the histogram once, then FiLM (scale and shift each
feature channel) every stage, so the hint reaches every resolution instead of one ignorable input."""

from __future__ import annotations

import torch
from torch import nn

from colorization.histogram import HIST_BINS, mean_colour
from colorization.local_hints import LOCAL_PLANES, guide_planes, no_hints
from colorization.models.tensors import rgb_to_target


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
    def __init__(self, hint_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(hint_dim, 2 * channels)
        # Start as the identity so an untrained hint path does not scramble the features.
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(embedding).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


def with_hint_colour(logits: torch.Tensor, planes: torch.Tensor | None) -> torch.Tensor:
    """tanh(logits + atanh(planes)): the picture as a deviation from the hint's colours (zero logits give
    exactly them); with no planes, plain tanh."""
    if planes is None:
        return torch.tanh(logits)
    return torch.tanh(logits.float() + torch.atanh(planes.float().clamp(-0.99, 0.99))).to(logits.dtype)


def input_channels(hint_planes: bool, local_hints: bool) -> int:
    """The generators' input planes: line art, the hint's mean colour, the local hints and their guess."""
    return 1 + 3 * hint_planes + 2 * LOCAL_PLANES * local_hints


def guided_input(
    net: nn.Module, lineart: torch.Tensor, hint: torch.Tensor, local: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Generator `net`'s input planes, and the colour its output deviates from (None: plain tanh): the
    global hint's mean; with local hints, their dense guess where it is sure."""
    size, dtype = lineart.shape[2:], lineart.dtype
    parts, base = [lineart], None
    if net.hint_planes:  # the mean colour as 3 planes: right for a one-colour palette, unlike the embedding
        base = rgb_to_target(mean_colour(hint))[:, :, None, None].expand(-1, -1, *size).to(dtype)
        parts.append(base)
    if net.local_hints:
        local = no_hints(len(lineart), size[0], lineart.device) if local is None else local
        planes, base = guide_planes(local, lineart, base)
        parts.append(planes.to(dtype))
    return torch.cat(parts, dim=1), base
