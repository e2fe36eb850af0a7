"""The running weight average a c-GAN publishes (colorization/models/averaging.py)."""

from __future__ import annotations

import torch
from torch import nn

from colorization.models.averaging import averaged_copy, update_average


def net_with(value: float) -> nn.Module:
    """A conv + BatchNorm whose every float weight and statistic is `value`."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with torch.no_grad():
        for tensor in [*net.parameters(), *net.buffers()]:
            if tensor.is_floating_point():
                tensor.fill_(value)
    return net


def floats(net: nn.Module) -> torch.Tensor:
    return torch.cat([t.flatten() for t in [*net.parameters(), *net.buffers()] if t.is_floating_point()])


def test_the_average_smooths_out_weights_that_oscillate_step_to_step():
    live = net_with(0.0)
    average = averaged_copy(live)
    for step in range(1, 401):
        with torch.no_grad():
            for tensor in [*live.parameters(), *live.buffers()]:
                if tensor.is_floating_point():
                    tensor.fill_(1.0 if step % 2 else -1.0)  # a generator see-sawing with its D
        update_average(average, live, step, decay=0.99)
    assert floats(live).abs().min() == 1.0
    # Weights and BatchNorm statistics alike settle near the middle, 0 (about 0.005 off).
    assert floats(average).abs().max() < 0.05


def test_a_short_run_averages_its_trained_weights_not_its_random_start():
    live = net_with(1.0)
    average = averaged_copy(net_with(0.0))  # where the run started
    for step in range(1, 21):
        update_average(average, live, step, decay=0.999)
    # A plain 0.999 average of 20 steps would still be 98 % the start (0.02 here); the
    # corrected one weighs the 20 trained steps only.
    assert torch.allclose(floats(average), torch.ones(1))


def test_batchnorm_step_counter_is_copied_and_the_average_needs_no_gradient():
    live = net_with(1.0)
    average = averaged_copy(live)
    live[1].num_batches_tracked.fill_(7)
    update_average(average, live, 1, decay=0.9)
    assert average[1].num_batches_tracked.item() == 7
    assert not any(p.requires_grad for p in average.parameters())
    assert all(p.requires_grad for p in live.parameters())  # the live network still trains
