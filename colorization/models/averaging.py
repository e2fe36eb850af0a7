"""A running average of a network's weights: what a c-GAN publishes instead of its last step
(it colours better: docs/training.md)."""

from __future__ import annotations

import copy
from itertools import chain

import torch
from torch import nn


def averaged_copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def update_average(averaged: nn.Module, live: nn.Module, step: int, decay: float) -> None:
    """Move `averaged` towards `live` after step `step` (1, 2, ...): weights, BatchNorm stats; int buffers
    are copied. Bias-corrected as Adam's moments: step 1 replaces the copy, so only trained steps count
    (by decay**age); a resumed run averages the same."""
    means, values = [], []
    for mean, value in zip(*(chain(m.parameters(), m.buffers()) for m in (averaged, live)), strict=True):
        if mean.is_floating_point():
            means.append(mean)
            values.append(value)
        else:
            mean.copy_(value)
    # One fused update (one kernel launch on a GPU, not one per tensor): this runs after every step.
    torch._foreach_lerp_(means, values, (1.0 - decay) / (1.0 - decay**step))
