"""The paper's headline measured its way: at MobileNetV2's own latency, is a searched model more accurate?

    taskset -c 1 python -m bench.matched_latency --rewards hard       # four widths, the paper's reward (50 min)
    taskset -c 1 python -m bench.matched_latency                      # then soft too (the hard rows are cached)
    taskset -c 1 python -m bench.matched_latency --remeasure          # the final latencies again, on a quiet machine
    taskset -c 1 python -m bench.matched_latency --quick --out /tmp/ml   # one width, tiny budgets (a minute)

For each MobileNetV2 width w (0.35, 0.5, 0.75, 1.0) at the demo's scale (the space's width 0.5 times w):
  1. MobileNetV2-w is measured on this CPU the way a search measures (conf/device/local.yaml: onnxruntime, one
     thread, the core the command is pinned to) and T is set to that latency;
  2. a multi-trial search (`+experiment=fashion`, `--strategy`, the space at width 0.5 x w, which holds MobileNetV2-w
     itself) runs with `reward=hard` and then `reward=soft` at that T; its answer is the most accurate trial whose
     latency meets T (`SearchResult.answer`). Multi-trial, not the supernet search: on the supernet bench the
     supernet's re-trained winners were less accurate at the same cost (docs/benchmarks.md);
  3. the answers, MobileNetV2-w and MnasNet-A1 at the same width are trained with the ground-truth table's recipe
     (bench/ground_truth.py, `+experiment=fashion`'s data and training: rows the table already holds are reused)
     on `--seeds` seeds, and all of one width are measured again in one run of this command: 7 interleaved rounds
     of 200 runs each, a model's latency the fastest round's median;
  4. the results go to `<results>/results.json` and an accuracy-latency PNG (and to MLflow with `--mlflow URI`).
Every step is cached under `--out` (state.json, rows.jsonl, the searches' run folders): a killed run continues
where it stopped, a search through `search.resume`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench._engine import log_bench_run
from bench.ground_truth import ROOT, append_row, read_rows, recipe, recipe_hash, shipped_rows, train_one
from bench.pareto import DEMO_WIDTH

RESULTS = ROOT / "bench" / "results" / "matched_latency"
WIDTHS = (0.35, 0.5, 0.75, 1.0)
REWARDS = ("hard", "soft")
TABLE_ROWS = ROOT / "outputs" / "ground_truth"  # bench.ground_truth's rows, reused where the recipe is the same
PAPER = "MnasNet-A1 75.2% at 78 ms vs MobileNetV2 72.0% at 75 ms (Pixel 1): +3.2 points at about its latency"


def mobilenet_v2(width: float) -> Any:
    from bench.pareto import scale_width
    from search_spaces.presets import load_preset

    return scale_width(load_preset("mobilenet_v2"), DEMO_WIDTH * width)


def mnasnet_a1(width: float) -> Any:
    from bench.pareto import scale_width
    from search_spaces.presets import load_preset

    return scale_width(load_preset("mnasnet_a1"), DEMO_WIDTH * width)


def search_device(runs: int | None = None) -> Any:
    """The device a search composes from conf/device/local.yaml (`runs` more for the final comparison)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    device = OmegaConf.load(ROOT / "conf" / "device" / "local.yaml")
    if runs is not None:
        device.runs = runs
    return instantiate(device)


TARGET_ROUNDS = 5  # measurements of MobileNetV2-w behind T


def latency_of(arch: Any, evaluator: Any, resolution: int) -> float:
    from search_spaces.builder import build_model

    model = build_model(arch, num_classes=10).eval()
    return evaluator.measure(model, arch.key, (1, 3, resolution, resolution)).median_ms


def target_ms(width: float, out: Path, resolution: int, scale: float = 1.0, rounds: int = TARGET_ROUNDS) -> float:
    """T for `width`: MobileNetV2-w's latency (times `scale`), the lowest median of `rounds` measurements, written
    into the cache the search reads, so the search sees MobileNetV2-w at exactly its latency. One measurement is
    not enough: on this VM a busy spell now and then slows a whole measurement (x1.0 once read 0.150 ms, 0.105 in
    the next two), and a T read high lets the search's answer be slower than MobileNetV2-w."""
    from evaluators.latency import LatencyEvaluator
    from evaluators.latency.cache import LatencyCache
    from search_spaces.builder import build_model

    arch, shape = mobilenet_v2(width), (1, 3, resolution, resolution)
    evaluator = LatencyEvaluator(search_device(), cache_path=None)
    model = build_model(arch, num_classes=10).eval()
    best = min((evaluator.measure(model, arch.key, shape) for _ in range(rounds)), key=lambda r: r.median_ms)
    device = evaluator.device
    LatencyCache(out / "latency.sqlite").put(arch.key, device.name, device.runtime_id(), shape, best)
    return best.median_ms * scale


def search_overrides(width: float, reward: str, target: float, args: argparse.Namespace, run_dir: Path,
                     trials: int) -> list[str]:
    overrides = ["+experiment=fashion", f"strategy={args.strategy}", f"search.max_trials={trials}",
                 f"search_space.width_mult={DEMO_WIDTH * width:g}", f"reward={reward}", f"reward.target_ms={target}",
                 f"data.train_subset={args.search_subset}", f"train.epochs={args.search_epochs}",
                 f"latency.cache_path={args.out / 'latency.sqlite'}", f"latency.lock_dir={args.out / 'locks'}",
                 f"seed={args.seed}", "tracking=none", *args.override]
    if (run_dir / "trials.jsonl").is_file():  # a killed search continues (or grows), with its own config
        return [f"search.resume={run_dir}", f"search.max_trials={trials}", "tracking=none"]
    return [*overrides, f"hydra.run.dir={run_dir}"]


def run_search(width: float, reward: str, target: float, args: argparse.Namespace, trials: int) -> dict[str, Any]:
    """One search of `trials` at T; its answer (the most accurate trial meeting T), or `arch: None` when none does."""
    import mnas_nni

    run_dir = args.out / f"search_w{width:g}_{reward}"
    overrides = search_overrides(width, reward, target, args, run_dir, trials)
    print(f"  $ python -m mnas_nni {' '.join(overrides)}", flush=True)
    started = time.perf_counter()
    result = mnas_nni.search(overrides)
    answer = result.answer
    found = {"run_dir": str(result.run_dir), "trials": len(result.trials), "seconds": time.perf_counter() - started,
             "arch": None}
    if answer is not None:
        found.update(arch=answer.arch, trial=answer.trial, search_accuracy=answer.final_accuracy,
                     search_latency_ms=answer.final_latency_ms)
    return found


def trained_accuracies(arch: Any, settings: dict[str, Any], seeds: int, rows_path: Path, datamodule: Any) -> list[float]:
    """The recipe's test accuracy of `arch` per seed: from the table's rows (its build cache, else the shipped
    CSV) or ours, else trained now."""
    recipe_key = recipe_hash(settings)
    table_rows = {**shipped_rows(recipe_key), **read_rows(TABLE_ROWS / recipe_key / "rows.jsonl")}
    accuracies = []
    for seed in range(seeds):
        key = f"{arch.key}#seed{seed}"
        row = read_rows(rows_path).get(key) or table_rows.get(key)
        if row is None:
            started = time.perf_counter()
            row = {"arch": arch.key, "seed": seed, **train_one({"arch": arch}, seed, settings, datamodule())}
            append_row(rows_path, row)
            print(f"    trained seed {seed}: {row['accuracy']:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
        accuracies.append(row["accuracy"])
    return accuracies


def remeasure(archs: dict[str, Any], resolution: int, rounds: int = 7) -> dict[str, list[float]]:
    """Every model of one width measured afresh in this run (no cache), `rounds` times in turn, each round starting
    with the next model (none always first): each round's median, per model."""
    from evaluators.latency import LatencyEvaluator

    evaluator = LatencyEvaluator(search_device(runs=200), cache_path=None)
    names = list(archs)
    seen: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            seen[name].append(latency_of(archs[name], evaluator, resolution))
    return seen


def settled(rounds: list[float]) -> float:
    """A model's latency from its rounds: the fastest round's median. On this shared VM a whole round now and then
    runs 1.5-2x slow (seen with nothing else running); the fastest round is the model's own speed."""
    return min(rounds)


def load_state(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_state(path: Path, state: dict[str, Any]) -> None:
    from mnas_nni.run.disk_space import write_file_atomically

    write_file_atomically(path, json.dumps(state, indent=1, sort_keys=True).encode())


def entry(arch: Any, accuracies: list[float], latency: float, **extra: Any) -> dict[str, Any]:
    return {"arch": " ".join(arch.block_strings), "accuracy": accuracies, "latency_ms": latency, **extra}


def measure_width(width: float, args: argparse.Namespace, state: dict[str, Any], settings: dict[str, Any],
                  datamodule: Any) -> dict[str, Any]:
    from search_spaces.arch import ArchSpec

    resolution = settings["data"]["resolution"]
    key, state_path = f"{width:g}", args.out / "state.json"
    slot = state.setdefault("widths", {}).setdefault(key, {})
    if "target_ms" not in slot:
        slot["target_ms"] = target_ms(width, args.out, resolution, args.target_scale)
        save_state(state_path, state)
    target = slot["target_ms"]
    print(f"\nwidth {key}: T = {args.target_scale:g} x MobileNetV2 x{key}'s latency, {target:.4f} ms", flush=True)
    for reward in args.rewards:
        extend = [args.extend_to] if args.extend_to and args.extend_to > args.trials else []
        for budget in [args.trials, *extend]:  # a search that found nothing meeting T goes on to --extend-to
            earlier = slot.setdefault("searches", {}).get(reward)
            if earlier is not None and (earlier["trials"] >= budget or (earlier["arch"] and budget > args.trials)):
                continue
            found = run_search(width, reward, target, args, budget)
            found["seconds"] += earlier["seconds"] if earlier else 0.0
            slot["searches"][reward] = found
            save_state(state_path, state)
        found = slot["searches"][reward]
        print(f"  search reward={reward}: {found['trials']} trials in {found['seconds']:.0f} s; answer "
              + (f"trial {found['trial']} ({found['search_latency_ms']:.4f} ms)" if found["arch"] else "none meets T"),
              flush=True)
    models = {"mobilenet_v2": mobilenet_v2(width), "mnasnet_a1": mnasnet_a1(width)}
    models.update({f"searched_{reward}": ArchSpec.from_dict(found["arch"])
                   for reward, found in slot["searches"].items() if reward in args.rewards and found["arch"]})
    rows_path = args.out / recipe_hash(settings) / "rows.jsonl"
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    accuracies = {}
    for name, arch in models.items():
        started = time.perf_counter()
        accuracies[name] = trained_accuracies(arch, settings, args.seeds, rows_path, datamodule)
        print(f"  {name:14s} accuracy {statistics.fmean(accuracies[name]):.4f} (seeds "
              f"{', '.join(f'{a:.4f}' for a in accuracies[name])}; {time.perf_counter() - started:.0f} s)", flush=True)
    measured, keys = slot.get("latency_rounds_ms", {}), {name: arch.key for name, arch in models.items()}
    if slot.get("latency_keys") != keys or args.remeasure:  # a grown search may have a new answer to measure
        started = time.perf_counter()
        measured = slot["latency_rounds_ms"] = remeasure(models, resolution)
        slot["latency_keys"] = keys
        slot.pop("latency_ms", None)  # a state written before the rounds were kept
        save_state(state_path, state)
        print(f"  measured {len(models)} models afresh, interleaved ({time.perf_counter() - started:.0f} s)")
    result = {"target_ms": target}
    for name, arch in models.items():
        extra = {}
        if name.startswith("searched_"):
            found = slot["searches"][name.removeprefix("searched_")]
            extra = {"search_seconds": found["seconds"], "trials": found["trials"], "run_dir": found["run_dir"]}
        result[name] = entry(arch, accuracies[name], settled(measured[name]), latency_rounds_ms=measured[name], **extra)
    if "searched_hard" in result:
        result["searched"] = result["searched_hard"]  # the paper's constraint: the headline row
    return result


def margins(width: dict[str, Any], name: str) -> str:
    base, other = width["mobilenet_v2"], width.get(name)
    if other is None:
        return f"{name}: no answer met T"
    gain = statistics.fmean(other["accuracy"]) - statistics.fmean(base["accuracy"])
    spread = max(max(a["accuracy"]) - min(a["accuracy"]) for a in (base, other))
    ratio = other["latency_ms"] / base["latency_ms"]
    verdict = "more accurate at no more latency" if gain > spread and ratio <= 1.03 else "goal NOT met"
    return (f"{name}: {gain * 100:+.2f} points (largest seed spread {spread * 100:.2f}), latency x{ratio:.3f} "
            f"of MobileNetV2's: {verdict}")


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    widths = sorted(results["widths"].items(), key=lambda kv: float(kv[0]))
    styles = {"mobilenet_v2": ("-D", "black", "MobileNetV2 x0.35..x1.0"), "mnasnet_a1": ("--*", "tab:orange",
              "MnasNet-A1 (transferred)"), "searched_hard": ("-o", "tab:blue", "searched, reward=hard at T"),
              "searched_soft": (":s", "tab:green", "searched, reward=soft at T")}
    for name, (style, colour, label) in styles.items():
        points = [(w[name]["latency_ms"], statistics.fmean(w[name]["accuracy"]),
                   (max(w[name]["accuracy"]) - min(w[name]["accuracy"])) / 2) for _, w in widths if name in w]
        if points:
            xs, ys, errs = zip(*points)
            ax.errorbar(xs, ys, yerr=errs, fmt=style, color=colour, label=label, capsize=3)
    for key, width in widths:
        ax.annotate(f"x{key}", (width["mobilenet_v2"]["latency_ms"], statistics.fmean(width["mobilenet_v2"]["accuracy"])),
                    textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("latency on this CPU, ms (onnxruntime, 1 thread, batch 1, 28 px; measured in one run)")
    ax.set_ylabel("Fashion-MNIST test accuracy (seed mean, range)")
    ax.set_title(f"At MobileNetV2's latency (T = its latency at each width). Paper: {PAPER}", fontsize=7, wrap=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=float, nargs="+", default=list(WIDTHS))
    parser.add_argument("--rewards", nargs="+", default=list(REWARDS), choices=REWARDS)
    parser.add_argument("--strategy", default="ppo_rnn_short")
    parser.add_argument("--trials", type=int, default=50, help="trials per search")
    parser.add_argument("--extend-to", type=int, default=100, metavar="N",
                        help="a search with no trial meeting T goes on to N trials in all (0: stop at --trials)")
    parser.add_argument("--search-subset", type=int, default=5000, help="training images of a search's trial")
    parser.add_argument("--search-epochs", type=int, default=1, help="epochs of a search's trial")
    parser.add_argument("--seeds", type=int, default=2, help="seeds of each final training")
    parser.add_argument("--seed", type=int, default=0, help="the searches' seed")
    parser.add_argument("--target-scale", type=float, default=1.0,
                        help="T = this x MobileNetV2-w's latency (1: the paper's comparison)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a search override (data.root=... also reaches the final training)")
    parser.add_argument("--remeasure", action="store_true",
                        help="measure every width's final models again (on a quiet machine), keeping the rest")
    parser.add_argument("--quick", action="store_true",
                        help="width 0.35, 2 trials (3 if none meets T), 300-image trainings: a check")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "matched_latency")
    parser.add_argument("--results", type=Path, default=None, help="default: bench/results/matched_latency, "
                        "or <out>/results with --quick")
    parser.add_argument("--mlflow", default=None, metavar="URI", help="also log the PNG and JSON to this MLflow")
    args = parser.parse_args(argv)
    if args.quick:
        args.widths, args.trials, args.extend_to, args.search_subset = [0.35], 2, min(args.extend_to, 3), 300
    args.results = args.results or (args.out / "results" if args.quick else RESULTS)
    args.out = args.out.resolve()
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import logging
    import warnings

    from evaluators.fashion_mnist import FashionMnistDataModule

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data_overrides = [o for o in args.override if o.startswith("data.root=")]
    settings = recipe(data_overrides + (["data.train_subset=300", "train.epochs=1"] if args.quick else []))
    loaded: list[Any] = []

    def datamodule() -> Any:  # built on first use: a fully cached run reads no images
        if not loaded:
            loaded.append(FashionMnistDataModule(**settings["data"]))
        return loaded[0]

    state = load_state(args.out / "state.json")
    print(f"final training: recipe {recipe_hash(settings)} {json.dumps(settings['train'])}, {args.seeds} seeds; "
          f"searches: {args.strategy}, {args.trials} trials of {args.search_subset} images x {args.search_epochs} "
          f"epochs", flush=True)
    results: dict[str, Any] = {"recipe": recipe_hash(settings), "widths": {}, "command": "python -m bench.matched_latency"
                               + (" --quick" if args.quick else ""), "search": {
                                   "strategy": args.strategy, "trials": args.trials, "train_subset": args.search_subset,
                                   "epochs": args.search_epochs, "seed": args.seed,
                                   "target_scale": args.target_scale, "extend_to": args.extend_to}, "paper": PAPER}
    for width in args.widths:
        started = time.perf_counter()
        results["widths"][f"{width:g}"] = measure_width(width, args, state, settings, datamodule)
        print(f"  width {width:g} done in {time.perf_counter() - started:.0f} s (cached steps take none)", flush=True)
    print("\nagainst MobileNetV2 at its own latency:")
    for key, width in results["widths"].items():
        for name in ("searched_hard", "searched_soft", "mnasnet_a1"):
            if name in width or name.removeprefix("searched_") in args.rewards:
                print(f"  x{key} {margins(width, name)}")
    args.results.mkdir(parents=True, exist_ok=True)
    results_path = args.results / "results.json"
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    png = plot(results, args.results / "matched_latency.png")
    if args.mlflow:
        log_bench_run(args.mlflow, "bench-matched-latency", "matched-latency", [png, results_path])
    print(f"wrote {results_path} and {png}")
    return results


if __name__ == "__main__":
    main()
