"""The paper's claim at demo scale: accuracy against measured latency, searched models beside the hand-made ones,
every model trained stand-alone with the same proxy training and measured on the same device.

    taskset -c 1 python -m bench.pareto                                        # the reference models alone
    taskset -c 1 python -m bench.pareto --trials supernet=outputs/a/trials.jsonl --trials multi=outputs/b/trials.jsonl
    taskset -c 1 python -m bench.pareto --mlflow-uri sqlite:///mlflow.db     # the plot also as an MLflow artifact

References: MobileNetV2 at width multipliers 0.35, 0.5, 0.75, 1.0 and 1.4 of the demo's scale (the demo space is
width 0.5) and MnasNet-A1 at the demo's scale. Searched: each `--trials LABEL=PATH`'s confirmed records (or,
for a search that confirmed none, its top --top by reward). Every model is trained `--seeds` times on digits
at 32 px (conf/train/default.yaml) and measured once on the local device (one thread, the bench's core).
Printed: the table, MnasNet-A1's accuracy against MobileNetV2's interpolated at A1's latency (the paper: +3.2
points at about equal latency on ImageNet), and for each MobileNetV2 point the best searched accuracy at no
more latency. The PNG goes to --out. Results are cached there, so a killed run continues.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench._engine import log_bench_run
from bench.supernet import ROOT, append, cached, proxy_settings

DEMO_WIDTH = 0.5  # conf/search_space/mnas.yaml's width_mult
MOBILENET_MULTIPLIERS = (0.35, 0.5, 0.75, 1.0, 1.4)  # 1.4, the largest official one, reaches A1's latency


def scale_width(arch: Any, multiplier: float) -> Any:
    """`arch` with every width times `multiplier` (rounded as the space rounds); the head never narrows."""
    from search_spaces.space import round_filters

    stem = round_filters(arch.stem_filters * multiplier)
    blocks, in_filters = [], stem
    for block in arch.blocks:
        out = round_filters(block.out_filters * multiplier)
        blocks.append(replace(block, in_filters=in_filters, out_filters=out))
        in_filters = out
    head = max(arch.head_filters, round_filters(arch.head_filters * multiplier))
    return replace(arch, stem_filters=stem, blocks=tuple(blocks), head_filters=head)


def reference_models() -> list[tuple[str, str, Any]]:
    from search_spaces.presets import load_preset

    models = [("mobilenet_v2", f"MobileNetV2 x{m}", scale_width(load_preset("mobilenet_v2"), DEMO_WIDTH * m))
              for m in MOBILENET_MULTIPLIERS]
    return [*models, ("mnasnet_a1", "MnasNet-A1", scale_width(load_preset("mnasnet_a1"), DEMO_WIDTH))]


def searched_models(label: str, path: Path, top: int) -> list[tuple[str, str, Any]]:
    """The confirmed architectures of one search's trials.jsonl (its top `top` by reward if none is)."""
    from mnas_nni.run.records import load_records
    from search_spaces.arch import ArchSpec

    records = [r for r in load_records(path) if r.arch and r.reward is not None]
    if not records:
        raise SystemExit(f"{path}: no scored trial with an architecture; give a search's trials.jsonl")
    confirmed = [r for r in records if r.confirmed_reward is not None]
    chosen = confirmed or sorted(records, key=lambda r: r.reward, reverse=True)[:top]
    return [(label, f"{label} trial {r.trial}", ArchSpec.from_dict(r.arch)) for r in chosen]


def evaluate(models: list[tuple[str, str, Any]], out: Path, seeds: int) -> list[dict[str, Any]]:
    """Mean stand-alone accuracy over `seeds` (the digits proxy) and the measured median latency of every model
    (cached)."""
    import torch

    from evaluators.accuracy import train_proxy
    from evaluators.data import DigitsDataModule
    from evaluators.latency import LatencyEvaluator
    from evaluators.latency.local import LocalDevice
    from search_spaces.builder import build_model

    datamodule, train = DigitsDataModule(resolution=32), proxy_settings(None)
    device = LocalDevice(threads=1, warmup=50, runs=300)  # sub-millisecond models: many runs for a stable median
    latency = LatencyEvaluator(device, cache_path=out / "latency.sqlite", lock_dir=out / "locks")
    rows_path = out / "pareto.jsonl"
    done = cached(rows_path)

    def accuracies(arch: Any) -> list[float]:
        for seed in range(seeds):
            key = f"{arch.key}#seed{seed}"
            if key not in done:
                torch.manual_seed(seed)
                result = train_proxy(build_model(arch, num_classes=10), datamodule, seed=seed, **train)
                done[key] = {"id": key, "accuracy": result.accuracy}
                append(rows_path, done[key])
        return [done[f"{arch.key}#seed{seed}"]["accuracy"] for seed in range(seeds)]

    return measured_rows(models, accuracies, latency, resolution=32)


def measured_rows(models: list[tuple[str, str, Any]], accuracies: Callable[[Any], list[float]], latency: Any,
                  resolution: int) -> list[dict[str, Any]]:
    """Per (group, name, architecture): `accuracies(arch)` over seeds (mean and spread) and the median latency
    `latency` (a LatencyEvaluator) measures at `resolution`, printed as they come."""
    from search_spaces.builder import build_model

    rows = []
    for group, name, arch in models:
        accs = accuracies(arch)
        measured = latency.measure(build_model(arch, num_classes=10).eval(), arch.key, (1, 3, resolution, resolution))
        rows.append({"group": group, "name": name, "accuracy": statistics.fmean(accs),
                     "spread": max(accs) - min(accs), "latency_ms": measured.median_ms})
        print(f"  {name:28s} accuracy {rows[-1]['accuracy']:.4f} (seeds {', '.join(f'{a:.3f}' for a in accs)})"
              f"  latency {measured.median_ms:.3f} ms", flush=True)
    return rows


def interpolated(points: list[tuple[float, float]], latency: float) -> float | None:
    """Accuracy of the piecewise-linear curve through (latency, accuracy) `points` at `latency`; None outside."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= latency <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (latency - x0) / (x1 - x0)
    return None


def compare(rows: list[dict[str, Any]]) -> list[str]:
    mobilenet = [(r["latency_ms"], r["accuracy"]) for r in rows if r["group"] == "mobilenet_v2"]
    lines = []
    for a1 in (r for r in rows if r["group"] == "mnasnet_a1"):
        at = interpolated(mobilenet, a1["latency_ms"])
        lines.append(f"MnasNet-A1 {a1['accuracy']:.4f} at {a1['latency_ms']:.3f} ms; MobileNetV2 at that latency "
                     + ("is outside the family's range" if at is None else
                        f"{at:.4f}: {100 * (a1['accuracy'] - at):+.1f} points (paper, ImageNet: +3.2)"))
    for group in sorted({r["group"] for r in rows} - {"mobilenet_v2", "mnasnet_a1"}):
        searched = [r for r in rows if r["group"] == group]
        deltas = []
        for latency, accuracy in sorted(mobilenet):
            faster = [r["accuracy"] for r in searched if r["latency_ms"] <= latency]
            deltas.append(f"{latency:.3f} ms: " + (f"{100 * (max(faster) - accuracy):+.1f}" if faster else "none"))
        lines.append(f"{group}: best searched accuracy at no more latency than each MobileNetV2, in points: "
                     + "; ".join(deltas))
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    for group in dict.fromkeys(r["group"] for r in rows):
        points = sorted((r["latency_ms"], r["accuracy"]) for r in rows if r["group"] == group)
        style = "-o" if group == "mobilenet_v2" else "*" if group == "mnasnet_a1" else "s"
        axes.plot(*zip(*points), style, label=group, markersize=12 if group == "mnasnet_a1" else 7)
    axes.set_xlabel("latency, ms (local device, one thread)")
    axes.set_ylabel("stand-alone accuracy (digits, 32 px, proxy training)")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", action="append", default=[], metavar="LABEL=PATH",
                        help="a search's trials.jsonl; repeat for each search")
    parser.add_argument("--top", type=int, default=5, help="models of a search that confirmed none")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_pareto")
    parser.add_argument("--mlflow-uri", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)

    models = reference_models()
    for item in args.trials:
        label, sep, path = item.partition("=")
        if not sep or not label:
            raise SystemExit(f"--trials {item!r}: give LABEL=PATH, e.g. supernet=outputs/run/trials.jsonl")
        models += searched_models(label, Path(path), args.top)
    print(f"{len(models)} models, each trained {args.seeds}x stand-alone (digits, 32 px) and measured locally:")
    rows = evaluate(models, args.out, args.seeds)
    print()
    for line in compare(rows):
        print(line)
    png = plot(rows, args.out / "pareto.png")
    (args.out / "pareto.json").write_text(json.dumps(rows, indent=1))
    print(f"plot: {png}")
    if args.mlflow_uri:
        log_bench_run(args.mlflow_uri, "bench-pareto", "pareto", [png], {"pareto.json": {"models": rows}})
        print(f"logged to MLflow at {args.mlflow_uri} (experiment bench-pareto)")


if __name__ == "__main__":
    main()
