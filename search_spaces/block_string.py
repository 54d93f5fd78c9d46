"""One block of a network (`BlockSpec`) and the official MnasNet block-string format it is written in.

    [conv_]r{repeats}_k{kernel}_s{s}{s}_e{expand}_i{in}_o{out}[_se{ratio}][_noskip|_poolskip]

`r3_k5_s22_e3_i24_o40_se0.25` is three MBConv3 5x5 layers, the first with stride 2, 24 -> 40 filters,
squeeze-and-excitation 0.25. `e1` means a depthwise-separable block. Two tokens extend the official
format for the rest of the search space: a `conv_` prefix marks a regular-convolution block and
`_poolskip` a pooling shortcut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mnas_core.errors import ArchitectureError

ConvOp = Literal["conv", "dsconv", "mbconv"]
SkipOp = Literal["identity", "pool", "none"]
CONV_OPS: tuple[str, ...] = ("conv", "dsconv", "mbconv")
SKIP_OPS: tuple[str, ...] = ("identity", "pool", "none")


@dataclass(frozen=True)
class BlockSpec:
    """One block: `repeats` layers of the same op; the first has `stride` and maps in -> out filters."""

    op: ConvOp
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_filters: int
    out_filters: int
    se_ratio: float = 0.0
    skip: SkipOp = "identity"

    def __post_init__(self) -> None:
        if self.op not in CONV_OPS:
            raise ArchitectureError(f"unknown conv op {self.op!r}; expected one of {', '.join(CONV_OPS)}")
        if self.skip not in SKIP_OPS:
            raise ArchitectureError(f"unknown skip op {self.skip!r}; expected one of {', '.join(SKIP_OPS)}")
        for name in ("repeats", "kernel", "stride", "expand", "in_filters", "out_filters"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ArchitectureError(f"block {name} must be a positive integer, got {value!r}")
        if self.kernel % 2 == 0:
            raise ArchitectureError(f"block kernel must be odd, got {self.kernel}")
        if self.stride not in (1, 2):
            raise ArchitectureError(f"block stride must be 1 or 2, got {self.stride}")
        if not 0.0 <= self.se_ratio <= 1.0:
            raise ArchitectureError(f"block se_ratio must lie in [0, 1], got {self.se_ratio}")
        if self.op == "mbconv" and self.expand < 2:
            raise ArchitectureError("an mbconv block needs expand >= 2 (expand 1 is a dsconv block)")
        if self.op != "mbconv" and self.expand != 1:
            raise ArchitectureError(f"a {self.op} block has no expansion; use e1, got e{self.expand}")

    def to_string(self) -> str:
        return encode_block(self)


_TOKEN = re.compile(r"^(?:(r|k|e|i|o)(\d+)|s(\d)(\d)|se(\d*\.?\d+)|(noskip|poolskip))$")
_EXPECTED = "r<N>, k<N>, s<NN>, e<N>, i<N>, o<N>, se<F>, noskip, poolskip"


def decode_block(text: str) -> BlockSpec:
    """Parse one block string; a malformed one raises ArchitectureError naming the bad token."""
    if not isinstance(text, str) or not text.strip():
        raise ArchitectureError(f"empty block string {text!r}; expected e.g. 'r2_k3_s22_e6_i16_o24'")
    tokens = text.strip().split("_")
    op = "conv" if tokens[0] == "conv" else None
    if op:
        tokens = tokens[1:]
    fields: dict[str, object] = {}
    for token in tokens:
        match = _TOKEN.match(token)
        if match is None:
            raise ArchitectureError(f"malformed block string {text!r}: unknown token {token!r} (expected {_EXPECTED})")
        letter, number, s1, s2, se, skip = match.groups()
        if letter:
            key = letter
            value: object = int(number)
        elif s1:
            if s1 != s2:
                raise ArchitectureError(f"malformed block string {text!r}: token {token!r} must repeat the stride (s11 or s22)")
            key, value = "s", int(s1)
        elif se:
            key, value = "se", float(se)
        else:
            key, value = "skip", {"noskip": "none", "poolskip": "pool"}[skip]
        if key in fields:
            raise ArchitectureError(f"malformed block string {text!r}: token {token!r} repeats {key!r}")
        fields[key] = value
    missing = [k for k in ("r", "k", "s", "i", "o") if k not in fields]
    if missing:
        raise ArchitectureError(f"malformed block string {text!r}: missing token(s) {', '.join(missing)}")
    expand = int(fields.get("e", 1))
    op = op or ("dsconv" if expand == 1 else "mbconv")
    return BlockSpec(
        op=op,  # type: ignore[arg-type]
        repeats=int(fields["r"]),
        kernel=int(fields["k"]),
        stride=int(fields["s"]),
        expand=expand,
        in_filters=int(fields["i"]),
        out_filters=int(fields["o"]),
        se_ratio=float(fields.get("se", 0.0)),
        skip=str(fields.get("skip", "identity")),  # type: ignore[arg-type]
    )


def encode_block(block: BlockSpec) -> str:
    parts = ["conv"] if block.op == "conv" else []
    parts += [
        f"r{block.repeats}",
        f"k{block.kernel}",
        f"s{block.stride}{block.stride}",
        f"e{block.expand}",
        f"i{block.in_filters}",
        f"o{block.out_filters}",
    ]
    if block.se_ratio > 0:
        parts.append(f"se{block.se_ratio:g}")
    if block.skip != "identity":
        parts.append("noskip" if block.skip == "none" else "poolskip")
    return "_".join(parts)
