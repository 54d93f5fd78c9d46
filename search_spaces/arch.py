"""Architectures as data: a network is a stem, a list of block specs and a head.

`BlockSpec` is one block of identical layers (all share op, kernel, SE and skip; only the first strides); it is
defined in `block_string.py` with the official MnasNet block-string format it is written in.
`ArchSpec` is a whole network; it round-trips through JSON, with each block written as a block string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mnas_core.errors import ArchitectureError
from search_spaces.block_string import CONV_OPS, SKIP_OPS, BlockSpec, ConvOp, SkipOp, decode_block

# BlockSpec and its op names live with the block-string format; they stay importable from here.
__all__ = ["ARCH_FORMAT", "CONV_OPS", "SKIP_OPS", "ArchSpec", "BlockSpec", "ConvOp", "SkipOp"]

ARCH_FORMAT = "mnas-nni/arch-v1"


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: stem conv, blocks, 1x1 head conv, pool, dropout, classifier."""

    blocks: tuple[BlockSpec, ...]
    stem_filters: int = 32
    head_filters: int = 1280
    dropout: float = 0.2
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if not self.blocks:
            raise ArchitectureError("an architecture needs at least one block")
        for name in ("stem_filters", "head_filters"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ArchitectureError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ArchitectureError(f"dropout must lie in [0, 1), got {self.dropout}")

    @property
    def block_strings(self) -> list[str]:
        return [block.to_string() for block in self.blocks]

    @property
    def key(self) -> str:
        """A stable identity for caching: equal architectures give equal keys, whatever their name."""
        return "|".join([f"stem{self.stem_filters}", *self.block_strings, f"head{self.head_filters}"])

    def with_name(self, name: str | None) -> ArchSpec:
        return replace(self, name=name)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": ARCH_FORMAT}
        if self.name:
            data["name"] = self.name
        data.update(
            stem_filters=self.stem_filters,
            head_filters=self.head_filters,
            dropout=self.dropout,
            blocks=self.block_strings,
        )
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ArchSpec:
        if not isinstance(data, dict):
            raise ArchitectureError(f"an architecture must be a JSON object, got {type(data).__name__}")
        allowed = {"format", "name", "stem_filters", "head_filters", "dropout", "blocks"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ArchitectureError(f"unknown architecture key(s) {unknown}; allowed: {sorted(allowed)}")
        if data.get("format", ARCH_FORMAT) != ARCH_FORMAT:
            raise ArchitectureError(f"unsupported architecture format {data['format']!r}; expected {ARCH_FORMAT!r}")
        blocks = data.get("blocks")
        if not isinstance(blocks, list) or not all(isinstance(b, str) for b in blocks):
            raise ArchitectureError("architecture 'blocks' must be a list of block strings like 'r2_k3_s22_e6_i16_o24'")
        kwargs = {k: data[k] for k in ("stem_filters", "head_filters", "dropout", "name") if k in data}
        if "dropout" in kwargs and not isinstance(kwargs["dropout"], (int, float)):
            raise ArchitectureError(f"dropout must be a number, got {kwargs['dropout']!r}")
        return cls(blocks=tuple(decode_block(b) for b in blocks), **kwargs)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ArchitectureError(f"architecture JSON is malformed: {err.msg} at line {err.lineno} column {err.colno}") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ArchSpec:
        path = Path(path)
        if not path.is_file():
            raise ArchitectureError(f"architecture file {path} not found; give a preset name or an existing JSON file")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ArchitectureError(f"architecture file {path} is not JSON text; give a file written by ArchSpec.save "
                                    "or `python -m mnas_nni.export`") from None
        return cls.from_json(text)
