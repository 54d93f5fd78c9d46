"""A weight-sharing supernet over a `SpaceConfig`: one module that runs every architecture of the space.

Per block and layer position the weights are sized for the largest choice (see `supernet_layers.py`); an
architecture is a path through them: the first `layers` positions of each block, each running the block's
conv-op family at its kernel, expand ratio, SE ratio, width and skip. `extract(arch)` returns the plain
`MnasNet` of that path with the inherited weights, so a supernet-scored architecture exports and measures
like any trial model. Checkpoints carry the space config, and loading one into another space is refused.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mnas_core.errors import ArchitectureError, ConfigError
from search_spaces.arch import ArchSpec
from search_spaces.builder import MnasNet, build_model
from search_spaces.layers import ConvBnAct, se_channels
from search_spaces.space import CONV_OP_WORDS, DECISIONS, SpaceConfig
from search_spaces.supernet_layers import LayerSlot, SharedConvBn

CHECKPOINT_FORMAT = "mnas-nni/supernet-v1"
# Fields that do not change a weight's shape or meaning; a checkpoint may be used with other values.
SHAPE_FREE_FIELDS = ("resolution", "dropout")
# Sandwich-rule extremes: the conv op with the most and with the least compute, in that order of preference.
LARGEST_OPS = ("mbconv6", "mbconv3", "conv", "dsconv")
SAMPLE_RULES = ("uniform", "fair", "largest", "smallest")


@dataclass(frozen=True)
class TrainingPath:
    """A path as training runs it: an architecture, and per block (0-based) the other conv-op families its layers
    blend into their own (`LayerSlot.forward`); a block not listed runs its own family alone."""

    arch: ArchSpec
    blends: tuple[tuple[int, tuple[str, ...]], ...] = ()


def space_fields(config: SpaceConfig) -> dict[str, Any]:
    """The config's own (init) fields as plain JSON-able values."""
    return {f.name: (list(v) if isinstance(v := getattr(config, f.name), tuple) else v)
            for f in dataclasses.fields(config) if f.init}


class Supernet(nn.Module):
    """Every architecture of `config` with shared weights; `forward(x, arch)` runs one path (`self.active`
    when `arch` is None)."""

    def __init__(self, config: SpaceConfig):
        super().__init__()
        self.config = config
        self.training_info: dict[str, Any] = {}  # what save()/load() carry besides weights: epochs, history, ...
        self.num_classes = config.num_classes
        self.choices = [config.choices(i) for i in range(len(config.skeleton))]
        self.active: ArchSpec = self.sample(random.Random(0), "largest")
        stem = config.scaled(config.stem_filters)
        self.stem = ConvBnAct(3, stem, 3, 2)
        ops: dict[str, int] = {}
        for word in config.conv_ops:
            op, expand = CONV_OP_WORDS[word]
            ops[op] = max(ops.get(op, 1), expand)
        self.families = tuple(sorted(ops))  # the conv-op weight families of every layer slot
        max_kernel, max_ratio = max(config.kernels), max(config.se_ratios)
        blocks, max_in = [], stem
        for base, choices in zip(config.skeleton, self.choices):
            max_out = max(choices["filters"])
            slots = []
            for position in range(max(choices["layers"])):
                slot_in = max_in if position == 0 else max_out
                max_se = se_channels(slot_in, max_ratio) if max_ratio > 0 else 0
                slots.append(LayerSlot(ops, slot_in, max_out, max_kernel, max_se, base.stride if position == 0 else 1))
            blocks.append(nn.ModuleList(slots))
            max_in = max_out
        self.blocks = nn.ModuleList(blocks)
        self.head_filters = self.active.head_filters
        self.head = SharedConvBn(max_in, self.head_filters, 1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(self.head_filters, config.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The stand-alone model's initialisation, on the full-size shared tensors."""
        MnasNet.reset_parameters(self)  # type: ignore[arg-type]
        for module in self.modules():
            if isinstance(module, SharedConvBn):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    # -- paths -------------------------------------------------------------------------------------------
    def sample(self, rng: random.Random, rule: str = "uniform", fixed: Mapping[str, Any] | None = None) -> ArchSpec:
        """A path: uniform over every decision; `fair`, the same but with the conv op drawn per weight family first
        (conv, dsconv, mbconv: mbconv3 and mbconv6 share one, which uniform words would train twice as often);
        or the space's largest / smallest (the sandwich rule's ends). `fixed` pins decisions (`blockN/name`)."""
        return self.training_path(rng, rule, fixed=fixed).arch

    def training_path(self, rng: random.Random, rule: str = "uniform", warm: float = 0.0,
                      fixed: Mapping[str, Any] | None = None) -> TrainingPath:
        """A path as a training step runs it: `rule`'s sample, warmed up with probability `warm`: each other conv-op
        family is blended into each block's own with that probability, and each block's kernel, SE ratio, filters
        and skip take, with that probability, the largest value (the pooling skip: a residual around every layer);
        a decision in `fixed` (a few-shot sub-supernet's) takes its pinned value whatever the rule and warm-up.
        This is TuNAS's op and filter warm-up carried to every decision, with random family subsets (path dropout)
        so that the fade to single families is gradual; without it this space's supernet trains no better than
        chance (each block's conv-op family re-draws the features every layer downstream has to read)."""
        if rule not in SAMPLE_RULES:
            raise ConfigError(f"supernet sample rule {rule!r} is unknown; use one of {', '.join(SAMPLE_RULES)}")
        sample: dict[str, Any] = {}
        blends = []
        for index, choices in enumerate(self.choices):
            for decision, values in choices.items():
                warmed = decision not in ("conv_op", "layers") and warm > 0 and rng.random() < warm
                value = self._warm_value(decision, values) if warmed else self._rule_value(rng, rule, decision, values)
                key = f"block{index + 1}/{decision}"
                sample[key] = fixed[key] if fixed and key in fixed else value
            if warm > 0:
                own = CONV_OP_WORDS[sample[f"block{index + 1}/conv_op"]][0]
                others = tuple(op for op in self.families if op != own and rng.random() < warm)
                if others:
                    blends.append((index, others))
        return TrainingPath(self.config.arch_from_sample(sample), tuple(blends))

    @staticmethod
    def _rule_value(rng: random.Random, rule: str, decision: str, values: list[Any]) -> Any:
        if decision == "conv_op" and rule in ("largest", "smallest"):
            order = [w for w in LARGEST_OPS if w in values]
            return order[0] if rule == "largest" else order[-1]
        if decision == "conv_op" and rule == "fair":
            family = rng.choice(sorted({CONV_OP_WORDS[w][0] for w in values}))
            return rng.choice([w for w in values if CONV_OP_WORDS[w][0] == family])
        if rule in ("uniform", "fair"):
            return rng.choice(values)
        if decision == "skip":
            return values[0]
        return max(values) if rule == "largest" else min(values)

    @staticmethod
    def _warm_value(decision: str, values: list[Any]) -> Any:
        if decision == "skip":
            return next((w for w in ("pool", "identity") if w in values), values[0])
        return max(values)

    def check_arch(self, arch: ArchSpec) -> None:
        """Refuse an architecture that is not a path of this supernet's space."""
        if len(arch.blocks) != len(self.choices):
            raise ArchitectureError(f"architecture has {len(arch.blocks)} blocks; this supernet's space has "
                                    f"{len(self.choices)}")
        expected = self.config.scaled(self.config.stem_filters)
        if arch.stem_filters != expected or arch.head_filters != self.head_filters:
            raise ArchitectureError(f"architecture stem/head {arch.stem_filters}/{arch.head_filters} differ from "
                                    f"the supernet's {expected}/{self.head_filters}")
        sample = self.decisions_of(arch)
        for index, choices in enumerate(self.choices):
            for decision in DECISIONS:
                key = f"block{index + 1}/{decision}"
                if sample[key] not in choices[decision]:
                    raise ArchitectureError(f"{key} = {sample[key]!r} is not a choice of the supernet's space "
                                            f"({choices[decision]})")

    def decisions_of(self, arch: ArchSpec) -> dict[str, Any]:
        """`arch` as the space's decisions (`blockN/name`: value; a conv op outside the space is None)."""
        words = {CONV_OP_WORDS[w]: w for w in self.config.conv_ops}
        sample = {}
        for index, block in enumerate(arch.blocks):
            values = {"conv_op": words.get((block.op, block.expand)), "kernel": block.kernel,
                      "se_ratio": block.se_ratio, "skip": block.skip, "filters": block.out_filters,
                      "layers": block.repeats}
            sample.update({f"block{index + 1}/{decision}": values[decision] for decision in DECISIONS})
        return sample

    # -- forward and extraction ----------------------------------------------------------------------------
    def forward(self, x: Tensor, arch: ArchSpec | None = None,
                blends: Collection[tuple[int, Collection[str]]] = ()) -> Tensor:
        """The path of `arch`; `blends` (a `TrainingPath`'s) blends other conv-op families into some blocks."""
        arch = arch or self.active
        extra = dict(blends)
        x = self.stem(x)
        for index, (slots, block) in enumerate(zip(self.blocks, arch.blocks)):
            for position in range(block.repeats):
                x = slots[position](x, block, extra.get(index, ()))
        x = self.head(x, self.head_filters, 1).mean((2, 3))
        return self.classifier(self.dropout(x))

    @torch.no_grad()
    def extract(self, arch: ArchSpec) -> MnasNet:
        """The stand-alone `MnasNet` of `arch`, carrying this supernet's weights for that path."""
        self.check_arch(arch)
        model = build_model(arch, num_classes=self.num_classes)
        model.stem.load_state_dict(self.stem.state_dict())
        for slots, block, layers in zip(self.blocks, arch.blocks, model.blocks):
            for position, layer in enumerate(layers):
                slots[position].copy_to(layer, block)
        self.head.copy_to(model.head)
        model.classifier.load_state_dict(self.classifier.state_dict())
        return model.train(self.training)

    # -- checkpoints --------------------------------------------------------------------------------------
    def save(self, path: str | Path, **extra: Any) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(path.suffix + ".partial")
        torch.save({"format": CHECKPOINT_FORMAT, "space": space_fields(self.config),
                    "state_dict": self.state_dict(), **extra}, partial)
        partial.replace(path)  # a killed save never leaves a half-written checkpoint under the real name
        self.training_info = dict(extra)
        return path

    @classmethod
    def load(cls, path: str | Path, config: SpaceConfig) -> Supernet:
        """The supernet saved at `path`, which must have been trained for `config`'s space."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"supernet.checkpoint {path} not found; give a file written by a supernet training "
                              "or leave supernet.checkpoint null to train one")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
            raise ConfigError(f"supernet.checkpoint {path} is not a supernet checkpoint "
                              f"({type(err).__name__}); give a file written by a supernet training") from None
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"supernet.checkpoint {path} is not a {CHECKPOINT_FORMAT} file; give a file written "
                              "by a supernet training")
        mine, theirs = space_fields(config), data.get("space", {})
        differing = [k for k in mine if k not in SHAPE_FREE_FIELDS and mine[k] != theirs.get(k)]
        if differing:
            raise ConfigError(f"supernet.checkpoint {path} was trained for another search space (differs in "
                              f"{', '.join(differing)}); train a supernet for this space or pick the matching config")
        supernet = cls(config)
        supernet.load_state_dict(data["state_dict"])
        supernet.training_info = {k: v for k, v in data.items() if k not in ("format", "space", "state_dict")}
        return supernet
