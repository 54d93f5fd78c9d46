"""Cost and result of a weight-sharing search against a multi-trial one, side by side, on digits or Fashion-MNIST.

    taskset -c 1 python -m bench.supernet_search                      # digits: 3 seeds, 100 proxy trials vs supernet
    taskset -c 1 python -m bench.supernet_search --seeds 0 --samples 200 --trials 20     # a shorter look
    taskset -c 1 python -m bench.supernet_search --data fashion_mnist --trials 60 --samples 300 \
        --supernet supernet.epochs=8 supernet.val_batches=10          # on the ground-truth table's recipe
    (the same with `--arms multi` on core 0 and `--arms supernet` on core 1 runs the two searches side by side;
    then the same command with both arms prints the comparison from the cached searches)

Per seed, two searches run as a user runs them (`python -m mnas_nni`, one after the other on the same cores):
- multi-trial: `strategy=ppo_rnn_short`, `--trials` trials, each trained with the proxy and measured on the device;
- supernet: `evaluator=supernet strategy=ppo_rnn_short`, the supernet trained in the run (conf/evaluator/
  supernet.yaml, changed by `--supernet` overrides), `--samples` samples scored by it with latency predicted from
  a layer table (`latency.mode=predict`), then the top `--confirm` trained stand-alone and measured
  (`search.confirm_top_k`).
With `--data fashion_mnist` both searches run `+experiment=fashion` (the ground-truth table's data and proxy
training) and the winners are re-trained with the table's recipe (rows the table holds are reused).
The layer table is built once before (`python -m mnas_nni.latency_table build`, a one-time cost per device,
printed apart). Printed per seed: wall-clock of each search and their ratio (goal: the supernet search in at most
a fifth), training-image passes of each, the multi-trial's best reward and the supernet search's best confirmed
reward, and both winners re-trained stand-alone on 2 fresh seeds and re-measured (bench/pareto.py's evaluation:
the search's own figure of its winner is a maximum over noisy trials), with their seed-to-seed spread. Every
search and evaluation is cached under --out, so a killed bench continues with the runs it has not finished.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.supernet import ROOT, append, cached, imagenet_preset_passes

DIGITS_TRAIN_IMAGES = 1347  # DigitsDataModule's training split (1,797 x 0.75)
DIGITS_VAL_IMAGES = 450
FASHION_VAL_IMAGES = 10_000  # the official test images
ARMS = ("multi", "supernet")  # the two searches compared


@dataclass(frozen=True)
class Ground:
    """What the data fixes for both searches: their extra overrides and the sizes the cost is counted in."""

    overrides: tuple[str, ...]
    train_images: int
    proxy_epochs: int
    scoring_images: int  # images one supernet score passes: BN recalibration + validation


def ground(data: str, supernet_overrides: list[str]) -> Ground:
    from omegaconf import OmegaConf

    supernet = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "evaluator" / "supernet.yaml"),
                               OmegaConf.from_dotlist(supernet_overrides)).supernet
    if data == "fashion_mnist":
        from bench.ground_truth import recipe

        settings = recipe()
        batch, val = settings["data"]["batch_size"], FASHION_VAL_IMAGES
        overrides, train_images = ("+experiment=fashion",), settings["data"]["train_subset"]
        epochs = settings["train"]["epochs"]
    else:
        batch, val, overrides, train_images = 64, DIGITS_VAL_IMAGES, (), DIGITS_TRAIN_IMAGES
        epochs = OmegaConf.load(ROOT / "conf" / "train" / "default.yaml").epochs
    scoring = supernet.calibration_batches * batch + (min(val, supernet.val_batches * batch)
                                                      if supernet.val_batches else val)
    return Ground(overrides, train_images, epochs, scoring)


def job_lock(out: Path, name: str) -> AbstractContextManager[None]:
    """Held while this process runs job `name`: another bench process asking for it waits, then finds its record,
    instead of taking the running job's folder for a killed one's and starting it again. The kernel drops the
    lock when its holder dies, so a killed job is still run again."""
    from evaluators.latency.lock import waiting_lock

    return waiting_lock(out / "locks" / f"bench-{name}.lock", f"  {name}: another bench process is running it; "
                        "waiting for it", functools.partial(print, flush=True))


def run_search(name: str, out: Path, overrides: list[str], runs_path: Path) -> dict[str, Any]:
    """`python -m mnas_nni` with `overrides` in `out/name`, timed; a run without a record is started again
    (unless another bench process is running it: then its record is waited for)."""
    with job_lock(out, name):
        return _run_search(name, out, overrides, runs_path)


def _run_search(name: str, out: Path, overrides: list[str], runs_path: Path) -> dict[str, Any]:
    done = cached(runs_path)
    if name in done:
        return done[name]
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)  # a killed run: its time would not count whole, so run it again
    command = [sys.executable, "-m", "mnas_nni", "tracking=none", f"hydra.run.dir={run_dir}",
               f"latency.cache_path={run_dir / 'latency.sqlite'}", f"latency.lock_dir={out / 'locks'}", *overrides]
    print(f"  {name}: {' '.join(command[3:])}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    (out / f"{name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed (exit {result.returncode}); see {out / f'{name}.log'}")
    append(runs_path, {"id": name, "seconds": seconds})
    return {"id": name, "seconds": seconds}


def build_table(out: Path, overrides: tuple[str, ...] = ()) -> float:
    """The local device's layer table (one-time); returns the seconds its build took (cached)."""
    with job_lock(out, "layer-table"):
        return _build_table(out, overrides)


def _build_table(out: Path, overrides: tuple[str, ...]) -> float:
    record = out / "table_build.json"
    if record.exists():
        return json.loads(record.read_text())["seconds"]
    started = time.perf_counter()
    command = [sys.executable, "-m", "mnas_nni.latency_table", "build", f"latency.table={out / 'table.json'}",
               f"latency.lock_dir={out / 'locks'}", *overrides]
    subprocess.run(command, cwd=ROOT, check=True)
    seconds = time.perf_counter() - started
    record.write_text(json.dumps({"seconds": seconds}))
    return seconds


def records(run_dir: Path) -> list[Any]:
    from mnas_nni.run.records import load_records

    return [r for r in load_records(run_dir / "trials.jsonl") if r.reward is not None]


def passes(run_dir: Path, *, supernet: bool, proxy_epochs: int, scoring_images: int,
           train_images: int = DIGITS_TRAIN_IMAGES) -> float:
    """Training-image passes of one search, counted as bench/supernet.py counts them (a few-shot split's
    sub-supernets, under supernet/split/, count with the supernet)."""
    trials = records(run_dir)
    if not supernet:
        return len(trials) * proxy_epochs * train_images
    import torch

    checkpoints = [run_dir / "supernet" / "supernet.pt", *sorted((run_dir / "supernet" / "split").glob("*/*/supernet.pt"))]
    trained = sum(torch.load(path, map_location="cpu", weights_only=True)["images_seen"] for path in checkpoints)
    confirmed = sum(r.confirmed_reward is not None for r in trials)
    return trained + len(trials) * scoring_images / 3 + confirmed * proxy_epochs * train_images


def winner(run_dir: Path, *, confirmed: bool) -> Any:
    trials = records(run_dir)
    if confirmed:
        trials = [r for r in trials if r.confirmed_reward is not None]
        return max(trials, key=lambda r: r.confirmed_reward)
    return max(trials, key=lambda r: r.reward)


def reevaluate_fashion(models: list[tuple[str, str, Any]], out: Path, seeds: int) -> list[dict[str, Any]]:
    """bench/pareto.py's `evaluate` on the ground-truth table's recipe: accuracy over `seeds` (the table's rows
    reused, others trained and cached) and the measured median latency at the table's resolution."""
    from functools import cache

    from bench.ground_truth import recipe
    from bench.matched_latency import search_device, trained_accuracies
    from bench.pareto import measured_rows
    from evaluators.fashion_mnist import FashionMnistDataModule
    from evaluators.latency import LatencyEvaluator

    settings = recipe()
    out.mkdir(parents=True, exist_ok=True)
    datamodule = cache(lambda: FashionMnistDataModule(**settings["data"]))
    latency = LatencyEvaluator(search_device(runs=300), cache_path=out / "latency.sqlite", lock_dir=out / "locks")
    return measured_rows(models, lambda arch: trained_accuracies(arch, settings, seeds, out / "rows.jsonl", datamodule),
                         latency, resolution=settings["data"]["resolution"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("digits", "fashion_mnist"), default="digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=100, help="trials of the multi-trial search")
    parser.add_argument("--samples", type=int, default=1000, help="samples of the supernet search")
    parser.add_argument("--confirm", type=int, default=5)
    parser.add_argument("--supernet", nargs="*", default=[], metavar="supernet.KEY=VALUE",
                        help="overrides of the supernet search's supernet.* settings")
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/bench_supernet_search[_<data>]")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                        help="run only these searches, e.g. `--arms multi` pinned to one core and `--arms supernet` "
                             "to the other; the comparison is printed by a run with both, from the cached searches")
    args = parser.parse_args(argv)
    if any(not o.startswith("supernet.") or "=" not in o for o in args.supernet):
        parser.error("--supernet takes supernet.KEY=VALUE overrides, e.g. supernet.epochs=8")
    args.out = args.out or ROOT / "outputs" / ("bench_supernet_search" + ("" if args.data == "digits" else f"_{args.data}"))
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)

    from omegaconf import OmegaConf

    from bench.pareto import evaluate
    from evaluators.reward import MnasReward
    from search_spaces.arch import ArchSpec

    reward_cfg = OmegaConf.load(ROOT / "conf" / "reward" / "soft.yaml")
    reward = MnasReward(target_ms=reward_cfg.target_ms, alpha=reward_cfg.alpha, beta=reward_cfg.beta)
    data = ground(args.data, args.supernet)
    reevaluate = reevaluate_fashion if args.data == "fashion_mnist" else evaluate

    if "supernet" in args.arms:  # the multi-trial search measures every trial and needs no table
        print(f"layer table of the local device: built in {build_table(args.out, data.overrides):.0f} s "
              "(one-time, per device)")
    runs_path = args.out / "runs.jsonl"
    rows = []
    for seed in args.seeds:
        if "multi" in args.arms:
            multi = run_search(f"multi-s{seed}", args.out, [
                *data.overrides, "strategy=ppo_rnn_short", f"search.max_trials={args.trials}", f"seed={seed}"],
                runs_path)
        if "supernet" in args.arms:
            shared = run_search(f"supernet-s{seed}", args.out, [
                *data.overrides, "evaluator=supernet", "strategy=ppo_rnn_short", f"search.max_trials={args.samples}",
                f"search.confirm_top_k={args.confirm}", f"seed={seed}", "latency.mode=predict",
                f"latency.table={args.out / 'table.json'}",
                f"supernet.dir={args.out / f'supernet-s{seed}' / 'supernet'}", *args.supernet], runs_path)
        if set(args.arms) != set(ARMS):
            print(f"seed {seed}: the {' and '.join(args.arms)} search is done; run with both arms for the comparison",
                  flush=True)
            continue
        best_multi = winner(args.out / f"multi-s{seed}", confirmed=False)
        best_shared = winner(args.out / f"supernet-s{seed}", confirmed=True)
        evaluated = reevaluate([("multi", f"multi s{seed} trial {best_multi.trial}", ArchSpec.from_dict(best_multi.arch)),
                                ("supernet", f"supernet s{seed} trial {best_shared.trial}",
                                 ArchSpec.from_dict(best_shared.arch))], args.out / "reevaluated", 2)
        again = {r["group"]: r for r in evaluated}
        counts = {"proxy_epochs": data.proxy_epochs, "scoring_images": data.scoring_images,
                  "train_images": data.train_images}
        row = {"seed": seed, "multi_seconds": multi["seconds"], "supernet_seconds": shared["seconds"],
               "multi_passes": passes(args.out / f"multi-s{seed}", supernet=False, **counts),
               "supernet_passes": passes(args.out / f"supernet-s{seed}", supernet=True, **counts),
               "multi_best": best_multi.reward, "supernet_best_confirmed": best_shared.confirmed_reward}
        for group, result in again.items():
            row[f"{group}_again"] = reward(result["accuracy"], result["latency_ms"])
            row[f"{group}_again_spread"] = (reward(result["accuracy"] + result["spread"] / 2, result["latency_ms"])
                                            - reward(result["accuracy"] - result["spread"] / 2, result["latency_ms"]))
        rows.append(row)
        print(f"seed {seed}: wall-clock multi-trial {row['multi_seconds']:.0f} s, supernet search "
              f"{row['supernet_seconds']:.0f} s (multi-trial / supernet {row['multi_seconds'] / row['supernet_seconds']:.2f}"
              "; goal >= 5)"
              f"; image passes {row['multi_passes']:.3g} vs {row['supernet_passes']:.3g} "
              f"(multi-trial / supernet {row['multi_passes'] / row['supernet_passes']:.2f})", flush=True)
        print(f"  best reward: multi-trial {row['multi_best']:.4f} (as searched), supernet search "
              f"{row['supernet_best_confirmed']:.4f} (confirmed); both winners re-trained on 2 fresh seeds: "
              f"{row['multi_again']:.4f} (seed spread {row['multi_again_spread']:.4f}) vs {row['supernet_again']:.4f} "
              f"(seed spread {row['supernet_again_spread']:.4f})", flush=True)
    if not rows:
        return
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if k != "seed"}
    print(f"\nmean over seeds {args.seeds}: wall-clock {mean['multi_seconds']:.0f} s vs {mean['supernet_seconds']:.0f} s "
          f"({mean['multi_seconds'] / mean['supernet_seconds']:.1f}x); re-trained winners' reward "
          f"{mean['multi_again']:.4f} vs {mean['supernet_again']:.4f} (difference {mean['supernet_again'] - mean['multi_again']:+.4f}"
          f", mean seed spread {statistics.fmean([mean['multi_again_spread'], mean['supernet_again_spread']]):.4f})")
    imagenet = imagenet_preset_passes(1)
    print(f"imagenet preset, same formula: 8,000 x 5 proxy epochs {imagenet['multi_trial']:.3g} image passes vs "
          f"supernet search {imagenet['supernet_search']:.3g}: {imagenet['ratio']:.0f}x fewer (goal 100x)")


if __name__ == "__main__":
    main()
