"""The one place that maps stored uint8 pixels to network tensors and back (pix2pix: [-1, 1]), so
training, inference and serving cannot drift apart."""

from __future__ import annotations

import torch


def lineart_to_input(lineart: torch.Tensor) -> torch.Tensor:
    """uint8 [N, S, S] or [N, 1, S, S] (0 = line) -> float [N, 1, S, S] in [-1, 1]."""
    if lineart.dim() == 3:
        lineart = lineart[:, None]
    return lineart.float() / 127.5 - 1.0


def rgb_to_target(color: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, S, S] -> float [N, 3, S, S] in [-1, 1]."""
    return color.float() / 127.5 - 1.0


def output_to_levels(output: torch.Tensor) -> torch.Tensor:
    """float [N, 3, S, S] in [-1, 1] -> uint8 [N, 3, S, S], rounded as a stored picture."""
    return ((output.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def output_to_rgb(output: torch.Tensor) -> torch.Tensor:
    """float [N, 3, S, S] in [-1, 1] -> uint8 [N, S, S, 3] (channels last, as images are stored)."""
    return output_to_levels(output).permute(0, 2, 3, 1)
