"""Training data on the device: the whole split as uint8 tensors, batches sampled and
augmented with batched tensor ops (no per-sample Python), all randomness from one
seeded `torch.Generator` so a resumed run draws the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from colorization.config import AugmentParams
from colorization.models.tensors import lineart_to_input, rgb_to_target
from colorization.store import Split


@dataclass
class DeviceData:
    color: torch.Tensor  # uint8 [N, 3, S, S]
    lineart: torch.Tensor  # uint8 [N, 1, S, S], 0 = line
    hint: torch.Tensor  # float32 [N, 512]

    @classmethod
    def from_split(cls, split: Split, device: torch.device) -> DeviceData:
        # Moved once as uint8 (4x smaller than float); converted per batch on the device.
        color = torch.from_numpy(split.color).to(device).permute(0, 3, 1, 2).contiguous()
        lineart = torch.from_numpy(split.lineart).to(device)[:, None]
        return cls(color=color, lineart=lineart, hint=torch.from_numpy(split.hint).to(device))

    def __len__(self) -> int:
        return self.color.shape[0]


@dataclass
class Batch:
    lineart: torch.Tensor  # float [B, 1, S, S] in [-1, 1]
    color: torch.Tensor  # float [B, 3, S, S] in [-1, 1]
    hint: torch.Tensor  # float [B, 512]


def sample_batch(
    data: DeviceData,
    batch_size: int,
    gen: torch.Generator,
    cfg: AugmentParams,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Batch:
    idx = torch.randint(len(data), (batch_size,), generator=gen, device=gen.device)
    color, lineart = augment(data.color[idx], data.lineart[idx], gen, cfg)
    return Batch(
        lineart=lineart.contiguous(memory_format=memory_format),
        color=color.contiguous(memory_format=memory_format),
        hint=data.hint[idx],
    )


def augment(
    color: torch.Tensor, lineart: torch.Tensor, gen: torch.Generator, cfg: AugmentParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 colour [B,3,S,S] and line art [B,1,S,S] -> augmented floats in [-1, 1]."""
    b = color.shape[0]
    # One draw for every random number of the batch keeps the generator's stream simple.
    u = torch.rand(b, 6, generator=gen, device=gen.device)
    line = (lineart_to_input(lineart) + 1) / 2  # [0, 1], 0 = line
    # Thicker lines: a 3x3 min filter grows dark strokes by one pixel.
    thick = -F.max_pool2d(-line, 3, stride=1, padding=1)
    line = torch.where((u[:, 0] < cfg.thicken_p)[:, None, None, None], thick, line)
    # Fainter lines: pencil-grey instead of ink-black, as in scanned sketches.
    darkness = cfg.line_intensity_min + (1 - cfg.line_intensity_min) * u[:, 1]
    line = 1 - (1 - line) * darkness[:, None, None, None]
    # Crop and flip as one affine resampling, applied identically to colour and line art.
    scale = cfg.crop_min + (1 - cfg.crop_min) * u[:, 2]
    shift_x = (2 * u[:, 3] - 1) * (1 - scale)
    shift_y = (2 * u[:, 4] - 1) * (1 - scale)
    flip = torch.where((u[:, 5] < 0.5) & cfg.flip, -1.0, 1.0)
    zero = torch.zeros_like(scale)
    theta = torch.stack([scale * flip, zero, shift_x, zero, scale, shift_y], dim=1).view(b, 2, 3)
    both = torch.cat([rgb_to_target(color), line * 2 - 1], dim=1)
    grid = F.affine_grid(theta, list(both.shape), align_corners=False)
    both = F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return both[:, :3], both[:, 3:]
