"""The ground-truth table: the demo space's architectures trained stand-alone on Fashion-MNIST with one recipe.

    taskset -c 1 python -m bench.ground_truth                       # train what is missing, then the report
    taskset -c 0 python -m bench.ground_truth --train-only &        # a second worker on the other core
    taskset -c 1 python -m bench.ground_truth --report-only         # latency, CSV, tau and PNG from what is there

The recipe is `+experiment=fashion` (conf/experiment/fashion.yaml over conf/data/fashion_mnist.yaml and
conf/train/default.yaml): the search preset and the table train alike. The architectures: `--random` uniform
samples of the demo space (width 0.5, 28 px), `--spread` samples spread evenly over the latency range of a pool of
2,000 (by the layer table's prediction), MobileNetV2 x0.35..x1.4 and MnasNet-A1/B1/small at the demo's scale
(bench/pareto.py's scaling). Each is trained on `--seeds` seeds; every finished (architecture, seed) is appended
to `<out>/<recipe hash>/rows.jsonl` under a file lock; a worker holds a flock on each job while it trains it (the
kernel drops a dead worker's), so workers on several cores share one table and a killed build continues.
The report measures each architecture's latency on this CPU (onnxruntime, one thread, the core the command is
pinned to; cached), adds the layer table's prediction, parameters and multiply-adds, writes
`bench/results/ground_truth/fashion_mnist.csv` and an accuracy-latency PNG, and prints the seed-to-seed Kendall tau
(goal >= 0.75), the accuracy range and the core-hours.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import json
import logging
import random
import statistics
import time
import warnings
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "ground_truth"
CSV_COLUMNS = ("arch", "family", "seed", "accuracy", "train_loss", "latency_ms", "predicted_latency_ms", "params",
               "macs", "seconds", "recipe", "block_strings", "sample")
REFERENCE_FAMILIES = ("mobilenet_v2_x0.35", "mobilenet_v2_x0.5", "mobilenet_v2_x0.75", "mobilenet_v2_x1.0",
                      "mobilenet_v2_x1.4", "mnasnet_a1", "mnasnet_b1", "mnasnet_small")


def recipe(overrides: list[str] | None = None) -> dict[str, Any]:
    """`data` and `train` of `+experiment=fashion`, as the search preset resolves them, with `overrides`
    (`train.epochs=5`: another recipe to try; it gets its own hash and cache)."""
    from omegaconf import OmegaConf

    conf = ROOT / "conf"
    preset = OmegaConf.load(conf / "experiment" / "fashion.yaml")
    data = OmegaConf.merge(OmegaConf.load(conf / "data" / "fashion_mnist.yaml"), preset.get("data", {}))
    train = OmegaConf.merge(OmegaConf.load(conf / "train" / "default.yaml"), preset.get("train", {}))
    extra = OmegaConf.from_dotlist(list(overrides or []))
    data, train = OmegaConf.merge(data, extra.get("data", {})), OmegaConf.merge(train, extra.get("train", {}))
    data = {k: v for k, v in OmegaConf.to_container(data).items() if k != "_target_"}
    return {"data": data, "train": OmegaConf.to_container(train)}


def recipe_hash(settings: dict[str, Any]) -> str:
    """What decides an accuracy (the data's root and loader workers do not)."""
    data = {k: v for k, v in settings["data"].items() if k not in ("root", "num_workers")}
    text = json.dumps({"data": data, "train": settings["train"]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def space_config(resolution: int) -> Any:
    from search_spaces.space import SpaceConfig

    return SpaceConfig(width_mult=0.5, num_classes=10, resolution=resolution)  # conf/search_space/mnas.yaml


def random_sample(config: Any, rng: random.Random) -> dict[str, Any]:
    """A uniform sample of the space, labelled as NNI labels it (`block3/kernel`)."""
    return {f"block{index + 1}/{decision}": values[rng.randrange(len(values))]
            for index in range(len(config.skeleton)) for decision, values in config.choices(index).items()}


def predictor(config: Any) -> Any:
    from bench._objective import DEFAULT_CACHE, bench_predictor

    return bench_predictor(DEFAULT_CACHE, config, calibration_models=40)


def architectures(config: Any, n_random: int, n_spread: int) -> list[dict[str, Any]]:
    """Every (family, arch, sample) of the table, the same on every run and every worker."""
    from bench.pareto import DEMO_WIDTH, MOBILENET_MULTIPLIERS, scale_width
    from search_spaces.presets import load_preset

    rng = random.Random(0)
    entries = [{"family": "random", "sample": s, "arch": config.arch_from_sample(s)}
               for s in (random_sample(config, rng) for _ in range(n_random))]
    if n_spread:
        pool_rng, table = random.Random(1), predictor(config)
        pool = [random_sample(config, pool_rng) for _ in range(2000)]
        latency = [table.predict(config.arch_from_sample(s)) for s in pool]
        low, high = min(latency), max(latency)
        chosen: list[int] = []
        for step in range(n_spread):  # the nearest unused pool member to each of n evenly spaced latencies
            target = low + (high - low) * step / max(1, n_spread - 1)
            chosen.append(min((i for i in range(len(pool)) if i not in chosen),
                              key=lambda i: abs(latency[i] - target)))
        entries += [{"family": "latency_spread", "sample": pool[i], "arch": config.arch_from_sample(pool[i])}
                    for i in chosen]
    entries += [{"family": f"mobilenet_v2_x{m}", "sample": None,
                 "arch": scale_width(load_preset("mobilenet_v2"), DEMO_WIDTH * m)} for m in MOBILENET_MULTIPLIERS]
    entries += [{"family": name, "sample": None, "arch": scale_width(load_preset(name), DEMO_WIDTH)}
                for name in ("mnasnet_a1", "mnasnet_b1", "mnasnet_small")]
    return entries


def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """Finished rows by `arch#seed`; a torn last line (a kill mid-write) is ignored."""
    rows: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[f"{row['arch']}#seed{row['seed']}"] = row
    return rows


def shipped_rows(recipe_key: str) -> dict[str, dict[str, Any]]:
    """The shipped tables' rows (`bench/results/ground_truth/*.csv`) of one recipe hash, by `arch#seed`: what a
    fresh clone has of the table without its build cache."""
    rows: dict[str, dict[str, Any]] = {}
    for table in sorted(RESULTS.glob("*.csv")):
        with table.open(newline="") as f:
            for row in csv.DictReader(f):
                if row.get("recipe") == recipe_key:
                    rows[f"{row['arch']}#seed{row['seed']}"] = {"arch": row["arch"], "seed": int(row["seed"]),
                                                                "accuracy": float(row["accuracy"])}
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One whole line under an exclusive lock: workers on other cores append to the same file."""
    with path.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        if f.tell() and (f.seek(f.tell() - 1), f.read(1))[1] != "\n":
            f.write("\n")  # a torn last line (a kill mid-write) stays alone on its line, ignored when read
        f.write(json.dumps(row) + "\n")
        f.flush()


def train_one(entry: dict[str, Any], seed: int, settings: dict[str, Any], datamodule: Any) -> dict[str, Any]:
    import torch

    from evaluators.accuracy import train_proxy
    from search_spaces.builder import build_model

    torch.manual_seed(seed)
    result = train_proxy(build_model(entry["arch"], num_classes=10), datamodule, seed=seed, **settings["train"])
    return {"accuracy": result.accuracy, "train_loss": result.history[-1]["train_loss"], "seconds": result.seconds}


def claim(claims: Path, key: str) -> IO[str] | None:
    """An exclusive flock on `key`'s claim file, for the worker to hold while it trains that job; None when a live
    worker holds it. The kernel drops the lock when its worker dies, so a killed worker's job is free again."""
    claims.mkdir(parents=True, exist_ok=True)
    handle = (claims / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".lock")).open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def train_missing(entries: list[dict[str, Any]], seeds: int, settings: dict[str, Any], out: Path) -> None:
    """Train every (architecture, seed) no row and no live worker has; any number of workers may run at once."""
    from evaluators.fashion_mnist import FashionMnistDataModule

    rows_path, datamodule = out / "rows.jsonl", None
    jobs = [(e, s) for e in entries for s in range(seeds)]  # an architecture's seeds next to each other
    for number, (entry, seed) in enumerate(jobs, 1):
        key = f"{entry['arch'].key}#seed{seed}"
        if key in read_rows(rows_path):
            continue
        held = claim(out / "claims", key)
        if held is None:  # another worker trains it
            continue
        with held:
            if key in read_rows(rows_path):  # finished by another worker between the two looks
                continue
            if datamodule is None:
                datamodule = FashionMnistDataModule(**settings["data"])
            result = train_one(entry, seed, settings, datamodule)
            append_row(rows_path, {"arch": entry["arch"].key, "family": entry["family"], "seed": seed, **result})
        print(f"  {number}/{len(jobs)} {entry['family']:20s} seed {seed}: {result['accuracy']:.4f} "
              f"({result['seconds']:.0f} s)", flush=True)


def seed_tau(rows: dict[str, dict[str, Any]], keys: list[str]) -> tuple[float, int]:
    from scipy.stats import kendalltau

    pairs = [(rows[f"{k}#seed0"]["accuracy"], rows[f"{k}#seed1"]["accuracy"]) for k in keys
             if f"{k}#seed0" in rows and f"{k}#seed1" in rows]
    if len(pairs) < 3:
        return float("nan"), len(pairs)
    return float(kendalltau(*zip(*pairs)).statistic), len(pairs)


def measure_latency(entries: list[dict[str, Any]], config: Any, cache: Path) -> dict[str, dict[str, float]]:
    """Measured (onnxruntime, one thread, this core) and predicted latency, parameters and MACs per arch."""
    from bench._objective import bench_device
    from evaluators.latency import LatencyEvaluator
    from search_spaces.builder import build_model
    from search_spaces.profile import profile_model

    table, device = predictor(config), bench_device()
    evaluator = LatencyEvaluator(device, cache_path=cache / "latency.sqlite", lock_dir=cache / "locks")
    out = {}
    for entry in entries:
        arch = entry["arch"]
        model = build_model(arch, num_classes=10).eval()
        measured = evaluator.measure(model, arch.key, (1, 3, config.resolution, config.resolution))
        profile = profile_model(model, config.resolution)
        out[arch.key] = {"latency_ms": measured.median_ms, "predicted_latency_ms": predicted_ms(table, arch, device),
                         "params": profile.params, "macs": profile.macs}
    return out


def predicted_ms(table: Any, arch: Any, device: Any) -> float:
    """The layer table's prediction; a reference model's layers outside the space are measured and added first,
    as `latency.mode=predict_verify` adds them."""
    from evaluators.latency.predictor import Meter, MissingLayerError, add_measured_layers

    try:
        return table.predict(arch)
    except MissingLayerError as err:
        add_measured_layers(table.table, err.signatures, Meter(device, repeats=table.table.repeats or 1))
        return table.predict(arch)


def write_csv(entries: list[dict[str, Any]], rows: dict[str, dict[str, Any]], facts: dict[str, dict[str, float]],
              seeds: int, recipe_id: str, path: Path) -> list[dict[str, Any]]:
    table = []
    for entry in entries:
        arch = entry["arch"]
        for seed in range(seeds):
            row = rows.get(f"{arch.key}#seed{seed}")
            if row is None:
                continue
            table.append({**{k: row[k] for k in ("arch", "family", "seed", "accuracy", "train_loss", "seconds")},
                          **facts[arch.key], "recipe": recipe_id, "block_strings": " ".join(arch.block_strings),
                          "sample": json.dumps(entry["sample"], sort_keys=True) if entry["sample"] else ""})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    return table


def plot(table: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean: dict[str, dict[str, Any]] = {}
    for row in table:
        slot = mean.setdefault(row["arch"], {"family": row["family"], "latency": row["latency_ms"], "acc": []})
        slot["acc"].append(row["accuracy"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family, style in (("random", "o"), ("latency_spread", "s")):
        pts = [(v["latency"], statistics.fmean(v["acc"])) for v in mean.values() if v["family"] == family]
        if pts:
            ax.scatter(*zip(*pts), marker=style, alpha=0.5, label=family.replace("_", " "))
    mbv2 = sorted((v["latency"], statistics.fmean(v["acc"])) for v in mean.values()
                  if v["family"].startswith("mobilenet_v2"))
    if mbv2:
        ax.plot(*zip(*mbv2), "-D", color="black", label="MobileNetV2 x0.35..x1.4")
    for family, marker in (("mnasnet_a1", "*"), ("mnasnet_b1", "P"), ("mnasnet_small", "X")):
        pts = [(v["latency"], statistics.fmean(v["acc"])) for v in mean.values() if v["family"] == family]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, s=160, label=family.replace("mnasnet_", "MnasNet-").upper()
                       .replace("MNASNET", "MnasNet").replace("SMALL", "small"))
    ax.set_xlabel("latency on this CPU, ms (onnxruntime, 1 thread, batch 1, 28 px)")
    ax.set_ylabel("Fashion-MNIST test accuracy (mean of seeds)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(entries: list[dict[str, Any]], rows: dict[str, dict[str, Any]], settings: dict[str, Any], seeds: int,
           recipe_id: str, cache: Path, csv_path: Path) -> None:
    config = space_config(settings["data"]["resolution"])
    facts = measure_latency(entries, config, cache)
    table = write_csv(entries, rows, facts, seeds, recipe_id, csv_path)
    keys = [e["arch"].key for e in entries]
    tau, pairs = seed_tau(rows, keys)
    sampled = [e["arch"].key for e in entries if e["family"] in ("random", "latency_spread")]
    tau_sampled, _ = seed_tau(rows, sampled)
    if not table:
        raise SystemExit(f"no finished rows in {cache / 'rows.jsonl'}: train first (python -m bench.ground_truth)")
    accuracies = [row["accuracy"] for row in table]
    hours = sum(row["seconds"] for row in rows.values() if row["arch"] in set(keys)) / 3600
    print(f"\nground truth (recipe {recipe_id}): {len(table)} rows, {len({r['arch'] for r in table})} architectures; "
          f"accuracy {min(accuracies):.4f}..{max(accuracies):.4f}; training {hours:.2f} core-hours")
    print(f"  seed-to-seed Kendall tau over {pairs} architectures: {tau:.3f} (sampled ones alone: {tau_sampled:.3f}); "
          f"goal >= 0.75: {'met' if tau >= 0.75 else 'NOT met'}")
    gaps = [abs(rows[f"{k}#seed0"]["accuracy"] - rows[f"{k}#seed1"]["accuracy"]) for k in keys
            if f"{k}#seed0" in rows and f"{k}#seed1" in rows]
    if gaps:
        print(f"  seed-to-seed gap: mean {statistics.fmean(gaps):.4f}, largest {max(gaps):.4f}")
    for entry in entries:
        if entry["family"] in REFERENCE_FAMILIES:
            accs = [rows[f"{entry['arch'].key}#seed{s}"]["accuracy"] for s in range(seeds)
                    if f"{entry['arch'].key}#seed{s}" in rows]
            rank = sum(statistics.fmean(accs) < statistics.fmean(r["accuracy"] for r in table if r["arch"] == k)
                       for k in {r["arch"] for r in table}) + 1 if accs else None
            facts_row = facts[entry["arch"].key]
            print(f"  {entry['family']:20s} accuracy {statistics.fmean(accs) if accs else float('nan'):.4f} "
                  f"(rank {rank}) latency {facts_row['latency_ms']:.3f} ms (table {facts_row['predicted_latency_ms']:.3f})")
    png = csv_path.with_suffix(".png")
    plot(table, png, f"demo space on Fashion-MNIST, recipe {recipe_id}: seed-to-seed tau {tau:.2f}")
    print(f"  wrote {csv_path} and {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random", type=int, default=40, help="uniform samples of the space")
    parser.add_argument("--spread", type=int, default=12, help="samples spread over the latency range")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="change the recipe (data.* / train.*), e.g. train.epochs=5: a try of another recipe")
    parser.add_argument("--first", type=int, default=None, help="only the first N architectures (a pilot)")
    parser.add_argument("--train-only", action="store_true", help="no latency and no report (a second worker)")
    parser.add_argument("--report-only", action="store_true", help="train nothing; report what is there")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "ground_truth")
    parser.add_argument("--csv", type=Path, default=RESULTS / "fashion_mnist.csv")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    settings = recipe(args.override)
    recipe_id = recipe_hash(settings)
    out = args.out / recipe_id
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(settings, indent=2, sort_keys=True))
    entries = architectures(space_config(settings["data"]["resolution"]), args.random, args.spread)
    entries = entries[:args.first] if args.first else entries
    rows_path = out / "rows.jsonl"
    print(f"recipe {recipe_id}: {json.dumps(settings)}\n{len(entries)} architectures x {args.seeds} seeds "
          f"-> {rows_path}", flush=True)
    if not args.report_only:
        started = time.perf_counter()
        train_missing(entries, args.seeds, settings, out)
        print(f"training done in {time.perf_counter() - started:.0f} s", flush=True)
    if not args.train_only:
        report(entries, read_rows(rows_path), settings, args.seeds, recipe_id, out, args.csv)


if __name__ == "__main__":
    main()
