"""One decoder from `ArchSpec` to a plain PyTorch module: every preset and every sample goes through it."""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.arch import ArchSpec, BlockSpec
from search_spaces.layers import ConvBnAct, SearchLayer, conv_body, mbconv_body


def build_layer(block: BlockSpec, in_ch: int, stride: int) -> SearchLayer:
    if block.op == "conv":
        body = conv_body(in_ch, block.out_filters, block.kernel, stride, block.se_ratio)
    else:
        body = mbconv_body(in_ch, block.out_filters, block.kernel, stride, block.expand, block.se_ratio)
    return SearchLayer(body, in_ch, block.out_filters, stride, block.skip)


def build_block(block: BlockSpec, in_ch: int) -> nn.Sequential:
    """`repeats` layers; only the first strides. Input channels follow the actual previous output."""
    layers = [build_layer(block, in_ch if i == 0 else block.out_filters, block.stride if i == 0 else 1)
              for i in range(block.repeats)]
    return nn.Sequential(*layers)


class MnasNet(nn.Module):
    """Stem 3x3/2 conv -> blocks -> 1x1 head conv -> global average pool -> dropout -> linear."""

    def __init__(self, arch: ArchSpec, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        self.stem = ConvBnAct(in_channels, arch.stem_filters, 3, 2)
        blocks, channels = [], arch.stem_filters
        for block in arch.blocks:
            blocks.append(build_block(block, channels))
            channels = block.out_filters
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBnAct(channels, arch.head_filters, 1)
        self.dropout = nn.Dropout(arch.dropout)
        self.classifier = nn.Linear(arch.head_filters, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / module.weight.shape[1] ** 0.5
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean((2, 3))
        return self.classifier(self.dropout(x))


def build_model(arch: ArchSpec, num_classes: int = 1000, in_channels: int = 3) -> MnasNet:
    return MnasNet(arch, num_classes=num_classes, in_channels=in_channels)
