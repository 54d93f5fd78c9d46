"""The distinct layers of a search space: what a layer-wise latency table measures once per device.

A network is cut into pieces whose latency is looked up and summed (ProxylessNAS / FBNet style): the stem,
each layer's body (the first, striding layer of a block and its repeats differ in stride and input
channels), each layer's shortcut (the pool shortcut, or the add of an identity residual) and the head
(1x1 conv, global pool, classifier). A piece is named by its *signature*, a string holding everything that
changes its latency (op, kernel, expansion, SE, channels, stride, input resolution), so one table serves every
space that shares a layer, and predicting needs nothing but string lookups.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from search_spaces.arch import ArchSpec, BlockSpec
from search_spaces.builder import build_layer
from search_spaces.layers import ConvBnAct, PoolShortcut
from search_spaces.space import CONV_OP_WORDS, SpaceConfig

# SpaceConfig fields that change which layers exist (dropout does not: it is gone in an eval-mode export).
SPACE_FIELDS = ("base_blocks", "conv_ops", "kernels", "se_ratios", "skip_ops", "filter_multipliers",
                "layer_deltas", "width_mult", "stem_filters", "head_filters", "num_classes", "resolution")


def out_resolution(resolution: int, stride: int) -> int:
    """'same' padding with odd kernels (conv and the 3x3 pool shortcut alike)."""
    return (resolution - 1) // stride + 1


@dataclass(frozen=True)
class Piece:
    """One measurable piece: its signature, how to build it, and the input it takes (batch 1)."""

    signature: str
    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]


class ResidualAdd(nn.Module):
    """What an identity residual costs: one elementwise add of two tensors of the layer's output shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


class Head(nn.Module):
    """1x1 conv -> global average pool -> linear, as MnasNet ends (dropout is a no-op at inference)."""

    def __init__(self, in_ch: int, head: int, classes: int):
        super().__init__()
        self.conv, self.fc = ConvBnAct(in_ch, head, 1), nn.Linear(head, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def _layer_signatures(block: BlockSpec, in_ch: int, stride: int, res: int) -> Iterator[str]:
    out = block.out_filters
    yield f"body|{block.op}|{block.kernel}|{block.expand}|{block.se_ratio}|{in_ch}|{out}|{stride}|{res}"
    if block.skip == "pool":
        yield f"pool|{in_ch}|{out}|{stride}|{res}"
    elif block.skip == "identity" and stride == 1 and in_ch == out:
        yield f"add|{out}|{res}"


def arch_signatures(arch: ArchSpec, resolution: int, num_classes: int) -> list[str]:
    """The signatures of every piece of ``arch`` at ``resolution`` (pure string work: this is what predicts)."""
    res = resolution
    signatures = [f"stem|{arch.stem_filters}|{res}"]
    res, ch = out_resolution(res, 2), arch.stem_filters
    for block in arch.blocks:
        for i in range(block.repeats):
            stride = block.stride if i == 0 else 1
            signatures.extend(_layer_signatures(block, ch, stride, res))
            ch, res = block.out_filters, out_resolution(res, stride)
    signatures.append(f"head|{ch}|{arch.head_filters}|{res}|{num_classes}")
    return signatures


def piece_kind(signature: str) -> str:
    """The calibration's grouping of a piece: stem, head, pool, add, or body-<op> (body-<op>-se with SE).

    Each kind pays its own runtime overhead per isolated measurement (an SE body has more graph nodes than a
    plain one), so the calibration fits one overhead per kind rather than one per piece."""
    kind = signature.split("|", 1)[0]
    if kind != "body":
        return kind
    fields = signature.split("|")
    return f"body-{fields[1]}" + ("-se" if float(fields[4]) > 0 else "")


def piece_of(signature: str) -> Piece:
    """Rebuild a piece from its signature alone (a missing layer is measured from what the table names)."""
    kind, *fields = signature.split("|")
    if kind == "stem":
        stem, res = map(int, fields)
        return Piece(signature, lambda: ConvBnAct(3, stem, 3, 2), (1, 3, res, res))
    if kind == "body":
        op, kernel, expand, se, in_ch, out, stride, res = fields
        block = BlockSpec(op, 1, int(kernel), int(stride), int(expand), int(in_ch), int(out), float(se), "none")  # type: ignore[arg-type]
        return Piece(signature, lambda: build_layer(block, int(in_ch), int(stride)), (1, int(in_ch), int(res), int(res)))
    if kind == "pool":
        in_ch, out, stride, res = map(int, fields)
        return Piece(signature, lambda: PoolShortcut(in_ch, out, stride), (1, in_ch, res, res))
    if kind == "add":
        out, res = map(int, fields)
        return Piece(signature, ResidualAdd, (1, out, res, res))
    if kind == "head":
        in_ch, head, res, classes = map(int, fields)
        return Piece(signature, lambda: Head(in_ch, head, classes), (1, in_ch, res, res))
    raise ValueError(f"unknown layer signature {signature!r}")


def piece_weights(signature: str) -> int:
    """The parameter count of a piece: in a whole network every layer's weights stream through the cache,
    measured alone they stay in it, so the calibration has a term for the weights an architecture carries."""
    if signature.startswith(("pool|", "add|")):
        return 0
    return sum(p.numel() for p in piece_of(signature).make().parameters())


def space_signatures(config: SpaceConfig, resolution: int, num_classes: int) -> list[str]:
    """Every distinct piece any architecture of the space can contain, in network order."""
    seen: dict[str, None] = {}
    stem = config.scaled(config.stem_filters)
    head = max(config.head_filters, config.scaled(config.head_filters))
    seen[f"stem|{stem}|{resolution}"] = None
    res, inputs = out_resolution(resolution, 2), [stem]
    for index, base in enumerate(config.skeleton):
        choices = config.choices(index)
        repeats = max(choices["layers"]) > 1
        out_res = out_resolution(res, base.stride)
        for in_ch in inputs:
            for out in choices["filters"]:
                for word in choices["conv_op"]:
                    op, expand = CONV_OP_WORDS[word]
                    for kernel in choices["kernel"]:
                        for se in choices["se_ratio"]:
                            for skip in choices["skip"]:
                                block = BlockSpec(op, 1, kernel, base.stride, expand, in_ch, out, float(se), skip)  # type: ignore[arg-type]
                                seen.update(dict.fromkeys(_layer_signatures(block, in_ch, base.stride, res)))
                                if repeats:
                                    seen.update(dict.fromkeys(_layer_signatures(block, out, 1, out_res)))
        res, inputs = out_res, choices["filters"]
    for in_ch in inputs:
        seen[f"head|{in_ch}|{head}|{res}|{num_classes}"] = None
    return list(seen)


def space_description(config: SpaceConfig) -> dict[str, Any]:
    return {name: (list(v) if isinstance(v := getattr(config, name), tuple) else v) for name in SPACE_FIELDS}


def space_hash(config: SpaceConfig) -> str:
    """A short hash of what makes the space's set of layers (see SPACE_FIELDS)."""
    text = json.dumps(space_description(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def random_arch(config: SpaceConfig, rng: Any) -> ArchSpec:
    """A uniformly random architecture of the space (``rng``: a random.Random)."""
    sample = {}
    for index in range(len(config.skeleton)):
        for decision, values in config.choices(index).items():
            sample[f"block{index + 1}/{decision}"] = values[rng.randrange(len(values))]
    return config.arch_from_sample(sample)


def with_resolution(config: SpaceConfig, resolution: int, num_classes: int) -> SpaceConfig:
    return dataclasses.replace(config, resolution=int(resolution), num_classes=int(num_classes))
