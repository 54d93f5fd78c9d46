"""ONNX Runtime against ExecuTorch (XNNPACK) on one pinned core: do the two runtimes rank architectures alike?

    taskset -c 1 python -m bench.runtimes --core 1 [--extra 48] [--json out.json]

The architectures: the Fashion-MNIST ground-truth table's 40 uniform samples of the demo space and its 8 reference
models (MobileNetV2 x0.35-x1.4, MnasNet-A1/B1/small at the demo's width; their stand-alone accuracies come from the
shipped table), and `--extra` more uniform samples, at 28 px. Each is measured under both runtimes, one after the other, on `--core` (the
project's measurement: one thread, batch 1, median of `--runs`). Printed: each runtime's latency range, the
Kendall tau between the two rankings, how many of the 10 fastest under one are among the 10 fastest under the
other, and what a search's accuracy-latency Pareto front loses when it was measured under the other runtime (its
models re-measured under the runtime that ships them: how many stay on that runtime's front, and the share of
the front's hypervolume they lose). The load average is printed beside, since a busy machine bends timings.
Measurements are cached in `<out>/latency.sqlite`: a killed run continues.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
from pathlib import Path
from typing import Any

from bench.ground_truth import RESULTS as TABLE_DIR
from bench.ground_truth import architectures, random_sample, space_config

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("onnxruntime", "executorch")


def table_accuracy(csv_path: Path) -> dict[str, float]:
    """Mean stand-alone accuracy per architecture key in the shipped ground-truth table."""
    per_arch: dict[str, list[float]] = {}
    with csv_path.open() as f:
        for row in csv.DictReader(f):
            per_arch.setdefault(row["arch"], []).append(float(row["accuracy"]))
    return {key: statistics.fmean(values) for key, values in per_arch.items()}


def entries(extra: int, resolution: int) -> list[dict[str, Any]]:
    config = space_config(resolution)
    table = architectures(config, n_random=40, n_spread=0)
    rng = random.Random(7)
    table += [{"family": "extra", "sample": s, "arch": config.arch_from_sample(s)}
              for s in (random_sample(config, rng) for _ in range(extra))]
    return table


def measure(items: list[dict[str, Any]], core: int, runs: int, out: Path, resolution: int
            ) -> dict[str, dict[str, float]]:
    """Each architecture under each runtime in turn (so a slow spell of the machine hits both alike)."""
    from evaluators.latency import LatencyEvaluator, LocalDevice
    from search_spaces.builder import build_model

    evaluators = {r: LatencyEvaluator(LocalDevice(threads=1, cores=[core], warmup=5, runs=runs, runtime=r),
                                      cache_path=out / "latency.sqlite", lock_dir=out / "locks") for r in RUNTIMES}
    latency: dict[str, dict[str, float]] = {r: {} for r in RUNTIMES}
    for n, item in enumerate(items, 1):
        arch = item["arch"]
        model = build_model(arch, num_classes=10).eval()
        for runtime, evaluator in evaluators.items():
            latency[runtime][arch.key] = evaluator.measure(model, arch.key, (1, 3, resolution, resolution)).median_ms
        if n % 20 == 0:
            print(f"  {n}/{len(items)} measured; load {os.getloadavg()[0]:.2f}", flush=True)
    return latency


def pareto(points: dict[str, tuple[float, float]]) -> list[str]:
    """Keys of the (accuracy up, latency down) front."""
    return [k for k, (acc, lat) in points.items()
            if not any(a >= acc and t <= lat and (a, t) != (acc, lat) for a, t in points.values())]


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (accuracy, latency) points above accuracy ref[0] and below latency ref[1]."""
    area, best = 0.0, ref[0]
    for acc, lat in sorted(points, key=lambda p: p[1]):  # fastest first
        if acc > best and lat < ref[1]:
            area += (acc - best) * (ref[1] - lat)
            best = acc
    return area


def front_loss(accuracy: dict[str, float], chosen_by: dict[str, float], shipped_on: dict[str, float]
               ) -> dict[str, Any]:
    """A front picked with `chosen_by` latencies, judged with `shipped_on` latencies."""
    keys = [k for k in accuracy if k in chosen_by and k in shipped_on]
    picked = pareto({k: (accuracy[k], chosen_by[k]) for k in keys})
    true = pareto({k: (accuracy[k], shipped_on[k]) for k in keys})
    ref = (min(accuracy[k] for k in keys), max(shipped_on[k] for k in keys) * 1.05)
    best = hypervolume([(accuracy[k], shipped_on[k]) for k in true], ref)
    got = hypervolume([(accuracy[k], shipped_on[k]) for k in picked], ref)
    return {"front": len(picked), "still_on_front": len(set(picked) & set(true)), "true_front": len(true),
            "hypervolume_lost": 1 - got / best if best else 0.0}


def compare(items: list[dict[str, Any]], latency: dict[str, dict[str, float]], accuracy: dict[str, float]
            ) -> dict[str, Any]:
    from scipy.stats import kendalltau

    keys = [i["arch"].key for i in items]
    ort, et = ([latency[r][k] for k in keys] for r in RUNTIMES)
    fastest = {r: set(sorted(keys, key=lambda k: latency[r][k])[:10]) for r in RUNTIMES}
    families = {i["family"]: i["arch"].key for i in items if i["family"].startswith(("mobilenet", "mnasnet"))}
    return {
        "architectures": len(keys),
        "latency_ms": {r: [min(latency[r].values()), max(latency[r].values())] for r in RUNTIMES},
        "executorch_over_onnxruntime_median": statistics.median(e / o for e, o in zip(et, ort)),
        "kendall_tau": float(kendalltau(ort, et).statistic),
        "top10_fastest_shared": len(fastest["onnxruntime"] & fastest["executorch"]),
        "reference_models": {name: {r: latency[r][key] for r in RUNTIMES} for name, key in families.items()},
        "front_chosen_on_onnxruntime_shipped_on_executorch":
            front_loss(accuracy, latency["onnxruntime"], latency["executorch"]),
        "front_chosen_on_executorch_shipped_on_onnxruntime":
            front_loss(accuracy, latency["executorch"], latency["onnxruntime"]),
        "with_accuracy": sum(1 for k in keys if k in accuracy),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--core", type=int, default=1, help="the CPU both runtimes are pinned to")
    parser.add_argument("--extra", type=int, default=48, help="uniform samples beyond the table's architectures")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model (median kept)")
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_runtimes")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    items = entries(args.extra, args.resolution)
    print(f"{len(items)} architectures at {args.resolution} px on core {args.core}; load {os.getloadavg()}")
    latency = measure(items, args.core, args.runs, args.out, args.resolution)
    result = compare(items, latency, table_accuracy(TABLE_DIR / "fashion_mnist.csv"))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps({**result, "per_arch": {i["arch"].key: {
            "family": i["family"], **{r: latency[r][i["arch"].key] for r in RUNTIMES}} for i in items}}, indent=1))


if __name__ == "__main__":
    main()
