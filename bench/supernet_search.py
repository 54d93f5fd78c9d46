"""Cost and result of a weight-sharing search against a multi-trial one, side by side, on the demo (digits, 32 px).

    taskset -c 1 python -m bench.supernet_search                      # 3 seeds: 100 proxy trials vs supernet search
    taskset -c 1 python -m bench.supernet_search --seeds 0 --samples 200 --trials 20     # a shorter look

Per seed, two searches run as a user runs them (`python -m mnas_nni`, one after the other on the same cores):
- multi-trial: `strategy=ppo_rnn_short`, `--trials` trials, each trained with the proxy and measured on the device;
- supernet: `evaluator=supernet strategy=ppo_rnn_short`, the supernet trained in the run (conf/evaluator/
  supernet.yaml), `--samples` samples scored by it with latency predicted from a layer table
  (`latency.mode=predict`), then the top `--confirm` trained stand-alone and measured (`search.confirm_top_k`).
The layer table is built once before (`python -m mnas_nni.latency_table build`, a one-time cost per device,
printed apart). Printed per seed: wall-clock of each search and their ratio (goal: the supernet search in at most
a fifth), training-image passes of each, the multi-trial's best reward and the supernet search's best confirmed
reward, and both winners re-trained stand-alone on 2 fresh seeds and re-measured (bench/pareto.py's evaluation:
the search's own figure of its winner is a maximum over noisy trials), with their seed-to-seed spread. Every
search and evaluation is cached under --out, so a killed bench continues with the runs it has not finished.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from bench.supernet import ROOT, append, cached, image_passes

DIGITS_TRAIN_IMAGES = 1347  # DigitsDataModule's training split (1,797 x 0.75)


def run_search(name: str, out: Path, overrides: list[str], runs_path: Path) -> dict[str, Any]:
    """`python -m mnas_nni` with `overrides` in `out/name`, timed; a run without a record is started again."""
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


def build_table(out: Path) -> float:
    """The local device's layer table (one-time); returns the seconds its build took (cached)."""
    record = out / "table_build.json"
    if record.exists():
        return json.loads(record.read_text())["seconds"]
    started = time.perf_counter()
    command = [sys.executable, "-m", "mnas_nni.latency_table", "build", f"latency.table={out / 'table.json'}",
               f"latency.lock_dir={out / 'locks'}"]
    subprocess.run(command, cwd=ROOT, check=True)
    seconds = time.perf_counter() - started
    record.write_text(json.dumps({"seconds": seconds}))
    return seconds


def records(run_dir: Path) -> list[Any]:
    from mnas_nni.run.records import load_records

    return [r for r in load_records(run_dir / "trials.jsonl") if r.reward is not None]


def passes(run_dir: Path, *, supernet: bool, proxy_epochs: int, scoring_images: int) -> float:
    """Training-image passes of one search, counted as bench/supernet.py counts them."""
    trials = records(run_dir)
    if not supernet:
        return len(trials) * proxy_epochs * DIGITS_TRAIN_IMAGES
    import torch

    info = torch.load(run_dir / "supernet" / "supernet.pt", map_location="cpu", weights_only=True)
    confirmed = sum(r.confirmed_reward is not None for r in trials)
    return (info["images_seen"] + len(trials) * scoring_images / 3
            + confirmed * proxy_epochs * DIGITS_TRAIN_IMAGES)


def winner(run_dir: Path, *, confirmed: bool) -> Any:
    trials = records(run_dir)
    if confirmed:
        trials = [r for r in trials if r.confirmed_reward is not None]
        return max(trials, key=lambda r: r.confirmed_reward)
    return max(trials, key=lambda r: r.reward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=100, help="trials of the multi-trial search")
    parser.add_argument("--samples", type=int, default=1000, help="samples of the supernet search")
    parser.add_argument("--confirm", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_supernet_search")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)

    from omegaconf import OmegaConf

    from bench.pareto import evaluate
    from evaluators.reward import MnasReward
    from search_spaces.arch import ArchSpec

    reward_cfg = OmegaConf.load(ROOT / "conf" / "reward" / "soft.yaml")
    reward = MnasReward(target_ms=reward_cfg.target_ms, alpha=reward_cfg.alpha, beta=reward_cfg.beta)
    proxy_epochs = OmegaConf.load(ROOT / "conf" / "train" / "default.yaml").epochs
    supernet_cfg = OmegaConf.load(ROOT / "conf" / "evaluator" / "supernet.yaml").supernet
    scoring_images = supernet_cfg.calibration_batches * 64 + (1797 - DIGITS_TRAIN_IMAGES)

    print(f"layer table of the local device: built in {build_table(args.out):.0f} s (one-time, per device)")
    runs_path = args.out / "runs.jsonl"
    rows = []
    for seed in args.seeds:
        multi = run_search(f"multi-s{seed}", args.out, [
            "strategy=ppo_rnn_short", f"search.max_trials={args.trials}", f"seed={seed}"], runs_path)
        shared = run_search(f"supernet-s{seed}", args.out, [
            "evaluator=supernet", "strategy=ppo_rnn_short", f"search.max_trials={args.samples}",
            f"search.confirm_top_k={args.confirm}", f"seed={seed}", "latency.mode=predict",
            f"latency.table={args.out / 'table.json'}", f"supernet.dir={args.out / f'supernet-s{seed}' / 'supernet'}"],
            runs_path)
        best_multi = winner(args.out / f"multi-s{seed}", confirmed=False)
        best_shared = winner(args.out / f"supernet-s{seed}", confirmed=True)
        evaluated = evaluate([("multi", f"multi s{seed} trial {best_multi.trial}", ArchSpec.from_dict(best_multi.arch)),
                              ("supernet", f"supernet s{seed} trial {best_shared.trial}",
                               ArchSpec.from_dict(best_shared.arch))], args.out / "reevaluated", 2)
        again = {r["group"]: r for r in evaluated}
        row = {"seed": seed, "multi_seconds": multi["seconds"], "supernet_seconds": shared["seconds"],
               "multi_passes": passes(args.out / f"multi-s{seed}", supernet=False, proxy_epochs=proxy_epochs,
                                      scoring_images=scoring_images),
               "supernet_passes": passes(args.out / f"supernet-s{seed}", supernet=True, proxy_epochs=proxy_epochs,
                                         scoring_images=scoring_images),
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
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if k != "seed"}
    print(f"\nmean over seeds {args.seeds}: wall-clock {mean['multi_seconds']:.0f} s vs {mean['supernet_seconds']:.0f} s "
          f"({mean['multi_seconds'] / mean['supernet_seconds']:.1f}x); re-trained winners' reward "
          f"{mean['multi_again']:.4f} vs {mean['supernet_again']:.4f} (difference {mean['supernet_again'] - mean['multi_again']:+.4f}"
          f", mean seed spread {statistics.fmean([mean['multi_again_spread'], mean['supernet_again_spread']]):.4f})")
    imagenet = image_passes(1_231_167, proxy_epochs=5, trials=8000, supernet_epochs=30, paths_per_step=1,
                            samples=8000, scoring_images=5 * 128 + 50_000, confirm=5)
    print(f"imagenet preset, same formula: 8,000 x 5 proxy epochs {imagenet['multi_trial']:.3g} image passes vs "
          f"supernet search {imagenet['supernet_search']:.3g}: {imagenet['ratio']:.0f}x fewer (goal 100x)")


if __name__ == "__main__":
    main()
