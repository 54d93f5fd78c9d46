"""The MnasNet factorized hierarchical search space as an NNI 3.0 `ModelSpace`.

The network is a fixed skeleton of blocks (MobileNetV2's by default). Each block makes six decisions
once, shared by all of its layers: conv op, kernel, SE ratio, skip op, output filters (a multiple of the
skeleton's width) and layers (skeleton depth plus a delta). Decisions are plain `nni.choice`s with
readable labels (`block3/kernel`); a sample decodes to an `ArchSpec`, and every model — sampled or
preset — is built by the one decoder in `builder.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nni
from nni.mutable import ensure_frozen, label_scope
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from mnas_core.errors import ConfigError
from search_spaces.arch import ArchSpec, BlockSpec
from search_spaces.block_string import decode_block
from search_spaces.builder import MnasNet, build_model
from search_spaces.presets import PRESET_BLOCKS

# conv-op word -> (op, expand ratio)
CONV_OP_WORDS: dict[str, tuple[str, int]] = {
    "conv": ("conv", 1),
    "dsconv": ("dsconv", 1),
    "mbconv3": ("mbconv", 3),
    "mbconv6": ("mbconv", 6),
}
DECISIONS = ("conv_op", "kernel", "se_ratio", "skip", "filters", "layers")


def round_filters(filters: float, divisor: int = 8) -> int:
    """Round to a multiple of `divisor`, never down by more than 10% (the official rule)."""
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * filters:
        rounded += divisor
    return int(rounded)


@dataclass(frozen=True)
class SpaceConfig:
    """Everything that defines the space; all of it is Hydra config (`conf/search_space/mnas.yaml`)."""

    base_blocks: tuple[str, ...] = tuple(PRESET_BLOCKS["mobilenet_v2"]["blocks"])
    conv_ops: tuple[str, ...] = ("conv", "dsconv", "mbconv3", "mbconv6")
    kernels: tuple[int, ...] = (3, 5)
    se_ratios: tuple[float, ...] = (0.0, 0.25)
    skip_ops: tuple[str, ...] = ("pool", "identity", "none")
    filter_multipliers: tuple[float, ...] = (0.75, 1.0, 1.25)
    layer_deltas: tuple[int, ...] = (-1, 0, 1)
    width_mult: float = 1.0
    stem_filters: int = 32
    head_filters: int = 1280
    dropout: float = 0.2
    num_classes: int = 1000
    resolution: int = 224
    skeleton: tuple[BlockSpec, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("base_blocks", "conv_ops", "kernels", "se_ratios", "skip_ops", "filter_multipliers", "layer_deltas"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.base_blocks:
            raise ConfigError("search_space.base_blocks is empty; give at least one block string")
        for name in ("conv_ops", "kernels", "se_ratios", "skip_ops", "filter_multipliers", "layer_deltas"):
            if not getattr(self, name):
                raise ConfigError(f"search_space.{name} is empty; give at least one choice")
        unknown = [w for w in self.conv_ops if w not in CONV_OP_WORDS]
        if unknown:
            raise ConfigError(f"search_space.conv_ops has unknown word(s) {unknown}; use {list(CONV_OP_WORDS)}")
        if self.width_mult <= 0 or self.num_classes < 1 or self.resolution < 8:
            raise ConfigError("search_space needs width_mult > 0, num_classes >= 1 and resolution >= 8")
        object.__setattr__(self, "skeleton", tuple(decode_block(b) for b in self.base_blocks))

    def scaled(self, filters: float) -> int:
        return round_filters(filters * self.width_mult)

    def choices(self, index: int) -> dict[str, list[Any]]:
        """The candidate values of block `index` (0-based), deduplicated after rounding and clamping."""
        base = self.skeleton[index]
        filters = sorted({self.scaled(base.out_filters * m) for m in self.filter_multipliers})
        layers = sorted({max(1, base.repeats + d) for d in self.layer_deltas})
        return {
            "conv_op": list(self.conv_ops),
            "kernel": list(self.kernels),
            "se_ratio": list(self.se_ratios),
            "skip": list(self.skip_ops),
            "filters": filters,
            "layers": layers,
        }

    def arch_from_sample(self, sample: dict[str, Any]) -> ArchSpec:
        """Decode a sample {`block{i}/{decision}`: value} into an architecture."""
        blocks, in_filters = [], self.scaled(self.stem_filters)
        for index, base in enumerate(self.skeleton):
            label = f"block{index + 1}"
            op, expand = CONV_OP_WORDS[sample[f"{label}/conv_op"]]
            block = BlockSpec(
                op=op,  # type: ignore[arg-type]
                repeats=int(sample[f"{label}/layers"]),
                kernel=int(sample[f"{label}/kernel"]),
                stride=base.stride,
                expand=expand,
                in_filters=in_filters,
                out_filters=int(sample[f"{label}/filters"]),
                se_ratio=float(sample[f"{label}/se_ratio"]),
                skip=sample[f"{label}/skip"],
            )
            blocks.append(block)
            in_filters = block.out_filters
        return ArchSpec(
            blocks=tuple(blocks),
            stem_filters=self.scaled(self.stem_filters),
            head_filters=max(self.head_filters, self.scaled(self.head_filters)),  # MobileNetV2: the head never narrows
            dropout=self.dropout,
        )

    def build(self, sample: dict[str, Any]) -> MnasNet:
        return build_model(self.arch_from_sample(sample), num_classes=self.num_classes)


class MnasSpace(ModelSpace):
    """NNI model space over `SpaceConfig`; `freeze(sample)` returns a plain `MnasNet` module."""

    def __init__(self, **config: Any):
        super().__init__()
        self.config = SpaceConfig(**config)
        sample = {}
        for index in range(len(self.config.skeleton)):
            with label_scope(f"block{index + 1}"):  # NNI forbids '/' in a label; scopes join with it
                for decision, values in self.config.choices(index).items():
                    choice = self.add_mutable(nni.choice(decision, values))
                    sample[choice.label] = ensure_frozen(choice)
        # A dry-run network, so the space is also a working module (the default sample).
        self.network = self.config.build(sample)

    def forward(self, x):
        return self.network(x)

    @classmethod
    def create_fixed_module(cls, sample: dict, **config: Any) -> nn.Module:
        # NNI builds the executable model by re-running __init__ under a model context; we build the plain
        # module directly from the sample instead.
        return SpaceConfig(**config).build(sample)

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        return self.config.build(sample)

    def arch_from_sample(self, sample: dict[str, Any]) -> ArchSpec:
        return self.config.arch_from_sample(sample)
