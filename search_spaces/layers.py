"""The layers of the MnasNet search space, each with one job.

Semantics follow the official TensorFlow MnasNet code: a 1x1 expansion only when expand != 1, a k x k
depthwise conv carrying the stride, squeeze-and-excitation on the expanded tensor, a linear 1x1
projection, ReLU activations, BN eps 1e-3 and momentum 0.99 in TF's convention (0.01 in PyTorch's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvBnAct(nn.Sequential):
    """Conv -> BN -> optional ReLU, with 'same' padding for odd kernels."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            batch_norm(out_ch),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel attention: global pool -> reduce -> ReLU -> expand -> sigmoid gate."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean((2, 3), keepdim=True)
        gate = self.expand(F.relu(self.reduce(gate)))
        return x * torch.sigmoid(gate)


def se_channels(in_ch: int, se_ratio: float) -> int:
    """SE width as in the official code: a fraction of the layer's *input* filters, at least 1."""
    return max(1, int(in_ch * se_ratio))


class PoolShortcut(nn.Module):
    """Parameter-free shortcut: 3x3 average pool (carrying the stride), channels zero-padded or cut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.pool = nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        if self.out_ch > self.in_ch:
            return F.pad(x, (0, 0, 0, 0, 0, self.out_ch - self.in_ch))
        return x[:, : self.out_ch]

    def extra_repr(self) -> str:
        return f"{self.in_ch} -> {self.out_ch}"


class SearchLayer(nn.Module):
    """One layer of a block: a body plus the block's skip op.

    identity: residual only when the stride is 1 and the shapes match; pool: always, through
    `PoolShortcut`; none: no shortcut.
    """

    def __init__(self, body: nn.Module, in_ch: int, out_ch: int, stride: int, skip: str):
        super().__init__()
        self.body = body
        self.skip = skip
        self.residual = skip == "identity" and stride == 1 and in_ch == out_ch
        self.shortcut = PoolShortcut(in_ch, out_ch, stride) if skip == "pool" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.shortcut is not None:
            return out + self.shortcut(x)
        if self.residual:
            return out + x
        return out

    def extra_repr(self) -> str:
        return f"skip={self.skip}, residual={self.residual}"


def mbconv_body(in_ch: int, out_ch: int, kernel: int, stride: int, expand: int, se_ratio: float) -> nn.Sequential:
    """Inverted bottleneck (expand 1 is the depthwise-separable conv): [1x1 expand] -> dw kxk -> [SE] -> 1x1 linear."""
    mid = in_ch * expand
    layers: list[nn.Module] = []
    if expand != 1:
        layers.append(ConvBnAct(in_ch, mid, 1))
    layers.append(ConvBnAct(mid, mid, kernel, stride, groups=mid))
    if se_ratio > 0:
        layers.append(SqueezeExcite(mid, se_channels(in_ch, se_ratio)))
    layers.append(ConvBnAct(mid, out_ch, 1, act=False))
    return nn.Sequential(*layers)


def conv_body(in_ch: int, out_ch: int, kernel: int, stride: int, se_ratio: float) -> nn.Sequential:
    """Regular convolution: kxk conv -> BN -> ReLU -> [SE]."""
    layers: list[nn.Module] = [ConvBnAct(in_ch, out_ch, kernel, stride)]
    if se_ratio > 0:
        layers.append(SqueezeExcite(out_ch, se_channels(in_ch, se_ratio)))
    return nn.Sequential(*layers)
