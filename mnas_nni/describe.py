"""Describe an architecture: `python -m mnas_nni.describe mnasnet_a1 [--resolution 224] [--num-classes 1000] [--json]`."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from mnas_core.errors import MnasNniError
from search_spaces import build_model, load_arch, profile_model
from search_spaces.presets import PRESETS


def describe(arch_ref: str, resolution: int = 224, num_classes: int = 1000) -> dict:
    arch = load_arch(arch_ref)
    model = build_model(arch, num_classes=num_classes)
    profile = profile_model(model, resolution)
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
    parser.add_argument("arch", help=f"a preset ({', '.join(PRESETS)}) or an architecture JSON file")
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
