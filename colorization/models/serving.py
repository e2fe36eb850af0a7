"""Single-tensor wrappers for serving (MLflow's PyTorch flavour passes one array to forward).

The colorizer takes a packed row per image: S*S line-art pixels (0..255, 0 = line)
followed by the 512-bin hint; it returns RGB in 0..255 as float [N, S, S, 3]. The hint
wrapper takes the S*S pixels and returns the automatic hint [N, 512]. Normalisation is inside,
so a served model needs nothing from this package but the classes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from colorization.histogram import HIST_BINS


class PackedColorizer(nn.Module):
    def __init__(self, generator: nn.Module, image_size: int):
        super().__init__()
        self.generator = generator
        self.image_size = image_size

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        lineart = packed[:, : s * s].float().view(-1, 1, s, s) / 127.5 - 1.0
        rgb = self.generator(lineart, packed[:, s * s :].float())
        return ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1)


class PackedHint(nn.Module):
    def __init__(self, hint_net: nn.Module, image_size: int):
        super().__init__()
        self.hint_net = hint_net
        self.image_size = image_size

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        lineart = packed[:, : s * s].float().view(-1, 1, s, s) / 127.5 - 1.0
        return self.hint_net.automatic(torch.softmax(self.hint_net(lineart).float(), dim=1))


def pack(lineart: np.ndarray, hint: np.ndarray | None = None) -> np.ndarray:
    """uint8 [N, S, S] (+ float32 [N, 512]) -> float32 [N, S*S (+512)], the served input."""
    flat = lineart.reshape(len(lineart), -1).astype(np.float32)
    if hint is None:
        return flat
    return np.concatenate([flat, np.asarray(hint, np.float32).reshape(-1, HIST_BINS)], axis=1)
