"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020) as an NNI 3.0 `ModelSpace`.

A cell is a DAG of 4 nodes; each of its 6 edges (node j -> node i, j < i) carries one of 5 ops, and node i sums
its incoming edges. One cell is searched and repeated: the benchmark's CIFAR network is a 3x3 stem conv, three
stages of 5 cells at 16/32/64 channels with a residual reduction block between stages, then BN-ReLU, global
pooling and a linear classifier. Decisions are plain `nni.choice`s labelled `edge_<i>_<j>`; an architecture is
the benchmark's own string, e.g. `|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|...|`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import nni
import torch
from nni.mutable import ensure_frozen
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from mnas_core.errors import ArchitectureError, ConfigError

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 4
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NODES) for j in range(i))  # (to, from)
LABELS: tuple[str, ...] = tuple(f"edge_{i}_{j}" for i, j in EDGES)
ARCH_FORMAT = "nb201/arch-v1"


@dataclass(frozen=True)
class Nb201Arch:
    """One cell: the op of each edge, in `EDGES` order. `key` is the benchmark's architecture string."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if len(self.ops) != len(EDGES):
            raise ArchitectureError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(self.ops)} ops")
        unknown = sorted({op for op in self.ops if op not in OPS})
        if unknown:
            raise ArchitectureError(f"unknown NAS-Bench-201 op(s) {unknown}; use {', '.join(OPS)}")

    def to_string(self) -> str:
        ops = iter(self.ops)
        nodes = ["|".join(f"{next(ops)}~{j}" for j in range(i)) for i in range(1, NODES)]
        return "|" + "|+|".join(nodes) + "|"

    @classmethod
    def from_string(cls, text: str) -> Nb201Arch:
        nodes = text.strip().strip("|").split("|+|") if isinstance(text, str) else []
        ops: list[str] = []
        for i, node in enumerate(nodes, start=1):
            edges = node.split("|")
            for j, edge in enumerate(edges):
                op, _, source = edge.partition("~")
                if source != str(j) or len(edges) != i:
                    ops = []
                    break
                ops.append(op)
        if len(nodes) != NODES - 1 or len(ops) != len(EDGES):
            raise ArchitectureError(f"{text!r} is not a NAS-Bench-201 architecture string; expected "
                                    "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'")
        return cls(tuple(ops))

    @property
    def key(self) -> str:
        return self.to_string()

    @property
    def sample(self) -> dict[str, str]:
        return dict(zip(LABELS, self.ops))

    def to_dict(self) -> dict[str, Any]:
        return {"format": ARCH_FORMAT, "arch_str": self.to_string(), **self.sample}

    @classmethod
    def from_sample(cls, sample: dict[str, Any]) -> Nb201Arch:
        missing = [label for label in LABELS if label not in sample]
        if missing:
            raise ArchitectureError(f"the sample lacks {', '.join(missing)}; it is not a NAS-Bench-201 sample")
        return cls(tuple(str(sample[label]) for label in LABELS))


def all_archs(ops: tuple[str, ...] = OPS) -> list[Nb201Arch]:
    """Every architecture of the space (5^6 = 15,625 with the benchmark's ops)."""
    return [Nb201Arch(combo) for combo in itertools.product(ops, repeat=len(EDGES))]


# ----------------------------------------------------------------------------------------------- layers

class ReluConvBn(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class Zero(nn.Module):
    """The `none` op: the edge carries nothing (its node still receives a tensor of the right shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


def make_op(op: str, channels: int) -> nn.Module:
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return ReluConvBn(channels, channels, 1 if op == "nor_conv_1x1" else 3)


class Cell(nn.Module):
    def __init__(self, arch: Nb201Arch, channels: int):
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, channels) for op in arch.ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes, edges = [x], iter(self.edges)
        for i in range(1, NODES):
            nodes.append(sum(next(edges)(nodes[j]) for j in range(i)))
        return nodes[-1]


class ReductionBlock(nn.Module):
    """A ResNet basic block with stride 2 (the benchmark's fixed block between stages)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(ReluConvBn(c_in, c_out, 3, 2), ReluConvBn(c_out, c_out, 3))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class Nb201Net(nn.Module):
    """The benchmark's CIFAR network of one cell."""

    def __init__(self, arch: Nb201Arch, num_classes: int = 10, channels: int = 16, cells_per_stage: int = 5):
        super().__init__()
        self.arch, self.num_classes = arch, num_classes
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)]
        width = channels
        for stage in range(3):
            if stage:
                layers.append(ReductionBlock(width, width * 2))
                width *= 2
            layers.extend(Cell(arch, width) for _ in range(cells_per_stage))
        layers += [nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# ----------------------------------------------------------------------------------------------- space

@dataclass(frozen=True)
class Nb201Config:
    """The space's settings (`conf/search_space/nb201.yaml`); `resolution` only sizes profiling inputs."""

    ops: tuple[str, ...] = OPS
    channels: int = 16
    cells_per_stage: int = 5
    num_classes: int = 10
    resolution: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        unknown = [op for op in self.ops if op not in OPS]
        if not self.ops or unknown:
            raise ConfigError(f"search_space.ops must be a non-empty subset of {list(OPS)}, got {list(self.ops)}")
        if self.channels < 1 or self.cells_per_stage < 1 or self.num_classes < 1 or self.resolution < 8:
            raise ConfigError("search_space needs channels, cells_per_stage, num_classes >= 1 and resolution >= 8")

    def build(self, sample: dict[str, Any]) -> Nb201Net:
        return Nb201Net(Nb201Arch.from_sample(sample), self.num_classes, self.channels, self.cells_per_stage)


class Nb201Space(ModelSpace):
    """NNI model space of the NAS-Bench-201 cell; `freeze(sample)` returns a plain `Nb201Net`."""

    def __init__(self, **config: Any):
        super().__init__()
        self.config = Nb201Config(**config)
        sample = {label: ensure_frozen(self.add_mutable(nni.choice(label, list(self.config.ops))))
                  for label in LABELS}
        self.network = self.config.build(sample)  # a working module of the default sample (dry run)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    @classmethod
    def create_fixed_module(cls, sample: dict, **config: Any) -> nn.Module:
        # NNI would re-run __init__ under a model context; the plain network is built from the sample instead.
        return Nb201Config(**config).build(sample)

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        return self.config.build(sample)

    def arch_from_sample(self, sample: dict[str, Any]) -> Nb201Arch:
        return Nb201Arch.from_sample(sample)
