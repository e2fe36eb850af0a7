"""One optimisation step per model kind, and the networks and optimisers it updates. Each returns its
losses as detached 0-d tensors (no host sync here; the training loop syncs once)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from colorization.config import CganTrainParams, CnnTrainParams, HintTrainParams
from colorization.device import autocast

Losses = dict[str, torch.Tensor]


@dataclass
class Batch:
    """What a step trains on; colorization.augment samples it."""

    lineart: torch.Tensor  # float [B, 1, S, S] in [-1, 1]
    color: torch.Tensor  # float [B, 3, S, S] in [-1, 1]
    hint: torch.Tensor  # float [B, 512]
    certainty: torch.Tensor | None = None  # float [B]: 1 = the picture's own hint, less when blended
    local: torch.Tensor | None = None  # float [B, 4, S, S]: local hints (colorization.local_hints)


@dataclass
class Nets:
    modules: dict[str, nn.Module]  # what is saved: the plain modules
    forward: dict[str, nn.Module]  # what is called: the same, torch.compile'd when asked
    optimizers: dict[str, torch.optim.Optimizer]
    arch: dict[str, dict] = field(default_factory=dict)  # constructor kwargs per module
    # Running weight averages (models/averaging.py), updated after each step: published instead.
    averaged: dict[str, nn.Module] = field(default_factory=dict)

    def published(self, name: str = "model") -> nn.Module:
        """What is saved, previewed and served: the weights' average when one is kept."""
        return self.averaged.get(name, self.modules[name])


def _update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def cnn_step(nets: Nets, batch: Batch, section: CnnTrainParams, device: torch.device) -> Losses:
    with autocast(device):
        out = nets.forward["model"](batch.lineart, batch.hint, batch.local)
    loss = F.mse_loss(out.float(), batch.color)  # the paper's L2 baseline
    _update(nets.optimizers["model"], loss)
    return {"loss": loss.detach()}


def cgan_step(nets: Nets, batch: Batch, section: CganTrainParams, device: torch.device) -> Losses:
    gen, disc = nets.forward["model"], nets.forward["discriminator"]
    with autocast(device):
        fake = gen(batch.lineart, batch.hint, batch.local)
        # Discriminator: real (line art, colour) pairs -> 1, generated pairs -> 0.
        real_logits = disc(batch.lineart, batch.color).float()
        fake_logits = disc(batch.lineart, fake.detach()).float()
    bce = F.binary_cross_entropy_with_logits
    d_loss = 0.5 * (
        bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
    )
    _update(nets.optimizers["discriminator"], d_loss)
    # Generator: fool the (just updated) discriminator and stay close to the target.
    nets.modules["discriminator"].requires_grad_(False)  # no weight grads for D here: ~7% fewer FLOPs
    with autocast(device):
        fooled = disc(batch.lineart, fake).float()
    g_adv = bce(fooled, torch.ones_like(fooled), reduction="none").flatten(1).mean(dim=1)
    if batch.certainty is not None:
        # An uncertain (blended) hint asks for the likeliest colours, which L1 gives; a vivid
        # guess that fools D is only wanted when the hint says which colours to use.
        g_adv = g_adv * batch.certainty
    g_adv = g_adv.mean()
    fake32 = fake.float()  # one cast for both reconstruction terms (bf16 under autocast)
    g_l1 = F.l1_loss(fake32, batch.color)
    g_loss = g_adv + section.l1_weight * g_l1
    if section.uncertain_l2_weight and batch.certainty is not None:
        # Where the hint is blended with the average it says little: L2 asks for the mean colours.
        mse = (fake32 - batch.color).pow(2).flatten(1).mean(dim=1)
        g_loss = g_loss + section.uncertain_l2_weight * ((1.0 - batch.certainty) * mse).mean()
    if section.local_l1_weight and batch.local is not None:
        # The dots' own pixels: the output there should be the colour the dot says.
        mask = batch.local[:, 3:].float()
        off = ((fake32 - batch.local[:, :3].float()).abs() * mask).sum() / (3 * mask.sum()).clamp_min(1)
        g_loss = g_loss + section.local_l1_weight * off
    _update(nets.optimizers["model"], g_loss)
    nets.modules["discriminator"].requires_grad_(True)
    return {k: v.detach() for k, v in dict(d_loss=d_loss, g_loss=g_loss, g_adv=g_adv, g_l1=g_l1).items()}


def hint_step(nets: Nets, batch: Batch, section: HintTrainParams, device: torch.device) -> Losses:
    with autocast(device):
        logits = nets.forward["model"](batch.lineart)
    log_p = F.log_softmax(logits.float(), dim=1)
    # KL(target || predicted): the histogram the picture has vs the one guessed from lines alone.
    kl = F.kl_div(log_p, batch.hint, reduction="batchmean")
    # The evaluation's distance; minimising it favours sharper guesses than KL's cover-everything.
    p = log_p.exp()
    chi2 = 0.5 * ((p - batch.hint) ** 2 / (p + batch.hint).clamp_min(1e-8)).sum(dim=1).mean()
    loss = chi2 if section.loss == "chi2" else kl
    _update(nets.optimizers["model"], loss)
    return {"kl": kl.detach(), "chi2": chi2.detach()}
