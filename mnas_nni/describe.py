"""Describe an architecture: `python -m mnas_nni.describe ARCH [--resolution 224] [--num-classes 1000] [--json]`.

ARCH is a preset name, an architecture JSON file, or block strings (`"r1_k3_s11_e1_i32_o16 r2_k3_s22_e6_i16_o24"`,
space- or comma-separated; stem and head as the builder's defaults)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mnas_core.errors import ArchitectureError, ConfigError, MnasNniError, one_line
from search_spaces import ArchSpec, build_model, load_arch, profile_model
from search_spaces.presets import PRESETS

BLOCK_STRING = re.compile(r"^((conv|dsconv|mbconv)_)?r\d+_")


def resolve_arch(arch_ref: str) -> ArchSpec:
    words = arch_ref.replace(",", " ").split()
    if arch_ref not in PRESETS and not Path(arch_ref).exists() and words and all(BLOCK_STRING.match(w) for w in words):
        return ArchSpec.from_dict({"blocks": words})  # a malformed block string is an ArchitectureError naming it
    if arch_ref not in PRESETS and not Path(arch_ref).exists():
        raise ArchitectureError(f"{arch_ref!r} is neither a preset ({', '.join(PRESETS)}), nor an architecture JSON "
                                "file, nor block strings like r2_k3_s22_e6_i16_o24")
    return load_arch(arch_ref)


def describe(arch_ref: str, resolution: int = 224, num_classes: int = 1000) -> dict:
    if resolution < 8:
        raise ConfigError(f"--resolution must be at least 8 px, got {resolution}")
    if num_classes < 1:
        raise ConfigError(f"--num-classes must be at least 1, got {num_classes}")
    arch = resolve_arch(arch_ref)
    model = build_model(arch, num_classes=num_classes)
    try:
        profile = profile_model(model, resolution)
    except RuntimeError as err:
        raise ConfigError(f"{resolution} px is too small for this architecture ({one_line(err)}); "
                          "raise --resolution") from None
    return {
        "name": arch.name or arch_ref,
        "resolution": resolution,
        "num_classes": num_classes,
        "params": profile.params,
        "macs": profile.macs,
        "arch": arch.to_dict(),
    }


def print_table(info: dict, console: Console) -> None:
    table = Table(title=f"{info['name']} @ {info['resolution']} px, {info['num_classes']} classes")
    for column in ("#", "block string"):
        table.add_column(column)
    table.add_row("stem", f"conv3x3 s2 -> {info['arch']['stem_filters']}")
    for index, block in enumerate(info["arch"]["blocks"], start=1):
        table.add_row(str(index), block)
    table.add_row("head", f"conv1x1 -> {info['arch']['head_filters']}, pool, dropout {info['arch']['dropout']}, linear")
    console.print(table)
    console.print(f"params {info['params'] / 1e6:.3f}M   multiply-adds {info['macs'] / 1e6:.1f}M")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mnas_nni.describe", description=__doc__)
    parser.add_argument("arch", help=f"a preset ({', '.join(PRESETS)}), an architecture JSON file or block strings")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        info = describe(args.arch, args.resolution, args.num_classes)
    except MnasNniError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info))
    else:
        print_table(info, Console())
    return 0


if __name__ == "__main__":
    sys.exit(main())
