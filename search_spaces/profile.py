"""Parameters and multiply-adds of any architecture, counted by torch's own FlopCounterMode."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Profile:
    params: int
    macs: int

    def to_dict(self) -> dict[str, int]:
        return {"params": self.params, "macs": self.macs}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, resolution: int, in_channels: int = 3) -> int:
    """Multiply-adds of one forward pass at batch 1 (FlopCounterMode counts 2 FLOPs per MAC)."""
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, resolution, resolution))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def profile_model(model: nn.Module, resolution: int, in_channels: int = 3) -> Profile:
    return Profile(params=count_params(model), macs=count_macs(model, resolution, in_channels))
