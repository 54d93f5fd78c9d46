"""Weight-shared layers of the supernet: each holds the weights of its largest choice and runs any smaller one.

Slicing rules (Once-for-All style, without the learned kernel transform): output and input channels are the
leading ones, a smaller kernel is the centre of the largest, BatchNorm is sliced with its channels. Every
module can also copy its active slice into the matching plain layer of `search_spaces/layers.py`, which is how
`Supernet.extract` hands a stand-alone `MnasNet` the exact weights of a path. In training, a layer slot can also
*blend* other conv-op families into its own (they run on the same input, their outputs averaged): TuNAS's op
warm-up with path dropout's random subsets, which gives the families' separate weights one common output to learn
before each has to stand alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_spaces.arch import BlockSpec
from search_spaces.layers import BN_EPS, BN_MOMENTUM, ConvBnAct, SearchLayer, SqueezeExcite, se_channels


class SlicedBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the leading `x.shape[1]` channels of its largest width; running statistics too."""

    def __init__(self, max_channels: int):
        super().__init__(max_channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        if channels == self.num_features:
            return super().forward(x)
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean[:channels], self.running_var[:channels], self.weight[:channels],
                            self.bias[:channels], use_batch, factor, self.eps)

    @torch.no_grad()
    def copy_to(self, target: nn.BatchNorm2d) -> None:
        channels = target.num_features
        target.weight.copy_(self.weight[:channels])
        target.bias.copy_(self.bias[:channels])
        target.running_mean.copy_(self.running_mean[:channels])
        target.running_var.copy_(self.running_var[:channels])
        target.num_batches_tracked.copy_(self.num_batches_tracked)


class SharedConvBn(nn.Module):
    """Conv -> sliced BN -> optional ReLU; regular (in -> out channels) or depthwise (channels = input)."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int, *, depthwise: bool = False, act: bool = True):
        super().__init__()
        self.depthwise, self.act, self.max_kernel = depthwise, act, max_kernel
        self.weight = nn.Parameter(torch.empty(max_out, 1 if depthwise else max_in, max_kernel, max_kernel))
        self.bn = SlicedBatchNorm(max_out)

    def sliced_weight(self, in_ch: int, out_ch: int, kernel: int) -> Tensor:
        start = (self.max_kernel - kernel) // 2
        window = slice(start, start + kernel)
        if self.depthwise:
            return self.weight[:in_ch, :, window, window]
        return self.weight[:out_ch, :in_ch, window, window]

    def forward(self, x: Tensor, out_ch: int, kernel: int, stride: int = 1) -> Tensor:
        in_ch = x.shape[1]
        weight = self.sliced_weight(in_ch, out_ch, kernel).contiguous()
        x = F.conv2d(x, weight, None, stride, kernel // 2, 1, in_ch if self.depthwise else 1)
        x = self.bn(x)
        return F.relu(x) if self.act else x

    @torch.no_grad()
    def copy_to(self, target: ConvBnAct) -> None:
        conv, bn = target[0], target[1]
        conv.weight.copy_(self.sliced_weight(conv.in_channels, conv.out_channels, conv.kernel_size[0]))
        self.bn.copy_to(bn)


class SharedSqueezeExcite(nn.Module):
    """SE over the leading channels, with the leading `reduced` units of its largest bottleneck."""

    def __init__(self, max_channels: int, max_reduced: int):
        super().__init__()
        self.reduce = nn.Conv2d(max_channels, max_reduced, 1)
        self.expand = nn.Conv2d(max_reduced, max_channels, 1)

    def forward(self, x: Tensor, reduced: int) -> Tensor:
        channels = x.shape[1]
        gate = x.mean((2, 3), keepdim=True)
        gate = F.relu(F.conv2d(gate, self.reduce.weight[:reduced, :channels], self.reduce.bias[:reduced]))
        gate = F.conv2d(gate, self.expand.weight[:channels, :reduced], self.expand.bias[:channels])
        return x * torch.sigmoid(gate)

    @torch.no_grad()
    def copy_to(self, target: SqueezeExcite) -> None:
        reduced, channels = target.reduce.out_channels, target.reduce.in_channels
        target.reduce.weight.copy_(self.reduce.weight[:reduced, :channels])
        target.reduce.bias.copy_(self.reduce.bias[:reduced])
        target.expand.weight.copy_(self.expand.weight[:channels, :reduced])
        target.expand.bias.copy_(self.expand.bias[:channels])


class ConvFamily(nn.Module):
    """Regular convolution: k x k conv -> BN -> ReLU -> [SE on the output]."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int, max_se: int):
        super().__init__()
        self.conv = SharedConvBn(max_in, max_out, max_kernel)
        self.se = SharedSqueezeExcite(max_out, max_se) if max_se else None

    def forward(self, x: Tensor, block: BlockSpec, stride: int) -> Tensor:
        in_ch = x.shape[1]
        x = self.conv(x, block.out_filters, block.kernel, stride)
        if block.se_ratio > 0:
            x = self.se(x, se_channels(in_ch, block.se_ratio))
        return x

    def copy_to(self, body: nn.Sequential, block: BlockSpec) -> None:
        self.conv.copy_to(body[0])
        if block.se_ratio > 0:
            self.se.copy_to(body[1])


class InvertedFamily(nn.Module):
    """[1x1 expand] -> depthwise k x k -> [SE] -> linear 1x1; `max_expand` 1 is the depthwise-separable conv."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int, max_se: int, max_expand: int):
        super().__init__()
        max_mid = max_in * max_expand
        self.expand = SharedConvBn(max_in, max_mid, 1) if max_expand > 1 else None
        self.depthwise = SharedConvBn(max_mid, max_mid, max_kernel, depthwise=True)
        self.se = SharedSqueezeExcite(max_mid, max_se) if max_se else None
        self.project = SharedConvBn(max_mid, max_out, 1, act=False)

    def forward(self, x: Tensor, block: BlockSpec, stride: int) -> Tensor:
        in_ch = x.shape[1]
        if block.expand != 1:
            x = self.expand(x, in_ch * block.expand, 1)
        x = self.depthwise(x, x.shape[1], block.kernel, stride)
        if block.se_ratio > 0:
            x = self.se(x, se_channels(in_ch, block.se_ratio))
        return self.project(x, block.out_filters, 1)

    def copy_to(self, body: nn.Sequential, block: BlockSpec) -> None:
        parts = list(body)  # the order of layers.mbconv_body
        if block.expand != 1:
            self.expand.copy_to(parts.pop(0))
        self.depthwise.copy_to(parts.pop(0))
        if block.se_ratio > 0:
            self.se.copy_to(parts.pop(0))
        self.project.copy_to(parts[0])


def pool_shortcut(x: Tensor, out_ch: int, stride: int) -> Tensor:
    """What `layers.PoolShortcut` computes: 3x3 average pool with the stride, channels zero-padded or cut."""
    x = F.avg_pool2d(x, 3, stride, padding=1, count_include_pad=False)
    if out_ch > x.shape[1]:
        return F.pad(x, (0, 0, 0, 0, 0, out_ch - x.shape[1]))
    return x[:, :out_ch]


class LayerSlot(nn.Module):
    """One layer position of a block: one weight family per conv-op shape (conv / dsconv / mbconv), shared by
    every kernel, expand ratio, SE ratio, width and skip choice. Skips have no weights."""

    def __init__(self, ops: dict[str, int], max_in: int, max_out: int, max_kernel: int, max_se: int, stride: int):
        super().__init__()
        self.stride = stride
        families: dict[str, nn.Module] = {}
        if "conv" in ops:
            families["conv"] = ConvFamily(max_in, max_out, max_kernel, max_se)
        if "dsconv" in ops:
            families["dsconv"] = InvertedFamily(max_in, max_out, max_kernel, max_se, 1)
        if "mbconv" in ops:
            families["mbconv"] = InvertedFamily(max_in, max_out, max_kernel, max_se, ops["mbconv"])
        self.families = nn.ModuleDict(families)
        self.expands = {op: ops[op] for op in families}  # each family blends at its largest expansion

    def forward(self, x: Tensor, block: BlockSpec, blend: Collection[str] = ()) -> Tensor:
        """The layer of `block`; with `blend`, its family's output averaged with those families' (each at its
        largest expansion and the block's other settings)."""
        out = self.families[block.op](x, block, self.stride)
        if blend:
            outs = [self.families[op](x, dataclasses.replace(block, op=op, expand=self.expands[op]), self.stride)
                    for op in blend]
            out = torch.stack([out, *outs]).mean(0)
        if block.skip == "pool":
            return out + pool_shortcut(x, block.out_filters, self.stride)
        if block.skip == "identity" and self.stride == 1 and x.shape[1] == block.out_filters:
            return out + x
        return out

    def copy_to(self, layer: SearchLayer, block: BlockSpec) -> None:
        self.families[block.op].copy_to(layer.body, block)
