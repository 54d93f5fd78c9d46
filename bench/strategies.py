"""Sample efficiency of the strategy zoo on the real MNAS search space, and the controllers' own overhead.

    python -m bench.strategies                 # 5 seeds x 1000 samples per strategy, overhead at 8,000 samples
    python -m bench.strategies --quick         # smoke check: 2 seeds x 100 samples

Every strategy is composed by Hydra from `conf/strategy/<word>.yaml` as `strategy=<word>` would be (the ppo_rnn
row from `ppo_rnn_short.yaml`, the controller set for short searches; `--ppo-word ppo_rnn` for the paper's
values), plus a seed, and driven through NNI's sequential engine with a FunctionalEvaluator: ours and NNI's on
the same footing. The objective (bench/_objective.py) is the MnasNet soft-constraint reward on the real space:
latency from a measured per-layer lookup table, accuracy from the NASWOT zero-cost proxy on real images. A
"sample" is one trial submitted to the engine (an architecture a strategy chose to evaluate; ppo_rnn's
duplicate look-ups are free). ppo_rnn stops by itself once its controller has converged; such a run counts with
its final best at the later checkpoints ("samples run" shows how many it used).

NNI's PolicyBasedRL spends ~0.5 s per sample on its own updates (25 passes of tianshou PPO over the buffer
every 20 samples), so it runs --rl-budget samples (default 100); --rl-budget 1000 is the full comparison
(~40 more minutes). Evaluations and the latency table are cached under --cache-dir: a second run is faster.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench._engine import drive, make_strategy, quiet

WORDS = ["ppo_rnn", "random", "evolution", "tpe", "policy_rl", "optuna_nsga2"]
CHECKPOINTS = [100, 250, 500, 1000]
# The ppo_rnn row is built from this config word: the paper's values (conf/strategy/ppo_rnn.yaml) are for an
# 8,000-sample search; conf/strategy/ppo_rnn_short.yaml (tuned here with seeds 10-15, the table reports seeds 0-4)
# is the same controller set for a few hundred to a few thousand samples. --ppo-word ppo_rnn runs the paper's.
PPO_WORD = "ppo_rnn_short"

_OBJECTIVE = None  # per worker process


# ----------------------------------------------------------------------------------------------- workers

def _init_worker(cache_dir: str, with_accuracy: bool = True) -> None:
    global _OBJECTIVE
    import torch

    torch.set_num_threads(1)
    from bench._objective import MnasObjective

    _OBJECTIVE = MnasObjective(Path(cache_dir), with_accuracy=with_accuracy, log=lambda _msg: None)
    quiet()


def run_search(word: str, seed: int, budget: int, overrides: dict[str, Any], reward: str = "mnas",
               config_word: str | None = None) -> dict:
    """One search in this process (the strategy of ``config_word``, default ``word``); returns the reward of every
    sample in order and the time split."""
    from bench._objective import SampleSpace

    obj = _OBJECTIVE
    rewards: list[float] = []
    keys: list[tuple] = []

    def evaluate(model) -> dict:
        if reward == "mnas":
            metric = obj(model.sample)
        else:  # cheap, still real: the latency half of the reward alone (overhead runs)
            lat = obj.predictor.predict(obj.space.arch_from_sample(model.sample))
            metric = {"default": -lat / obj.target_ms, "accuracy": 0.0, "latency_ms": lat}
        rewards.append(metric["default"])
        keys.append(tuple(model.sample.values()))
        return metric

    strategy = make_strategy(config_word or word, seed, overrides, (f"reward.target_ms={obj.target_ms}",))  # its T
    quiet()
    run = drive(strategy, SampleSpace(), evaluate, budget)
    out = {"word": word, "config": config_word or word, "seed": seed, "budget": budget, "rewards": rewards,
           "unique": len(set(keys)), **run, "new_scores": dict(getattr(obj, "new_scores", {}))}
    if reward == "mnas":
        obj.new_scores.clear()
    return out


def _job(args: tuple) -> dict:
    return run_search(*args)


# ----------------------------------------------------------------------------------------------- analysis

def best_so_far(rewards: list[float], n: int, budget: int | None = None) -> float | None:
    """Best reward among the first ``n`` samples. A run that stopped on its own before ``n`` (ppo_rnn stops once its
    controller has converged) counts with its final best; a run whose budget was below ``n`` has no value (None)."""
    if len(rewards) >= n:
        return max(rewards[:n])
    return max(rewards) if rewards and budget is not None and budget >= n else None


def samples_to_reach(rewards: list[float], target: float) -> float:
    for i, r in enumerate(rewards):
        if r >= target - 1e-12:
            return i + 1
    return math.inf


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(results: list[dict], words: list[str], budget: int) -> tuple[list[dict], float]:
    by_word = {w: [r for r in results if r["word"] == w] for w in words}
    ref = "random" if by_word.get("random") else words[0]
    target = median([best_so_far(r["rewards"], budget, r["budget"]) for r in by_word[ref]])
    rows = []
    for w in words:
        runs = by_word[w]
        n_samples = sum(len(r["rewards"]) for r in runs)
        bests = {c: [b for r in runs if (b := best_so_far(r["rewards"], c, r["budget"])) is not None]
                 for c in CHECKPOINTS}
        rows.append({
            "word": w,
            "budget": max(len(r["rewards"]) for r in runs),
            "samples_run": [len(r["rewards"]) for r in sorted(runs, key=lambda r: r["seed"])],
            "best": {c: (median(v) if v else None) for c, v in bests.items() if c <= budget},
            "reach": median([samples_to_reach(r["rewards"], target) for r in runs]),
            "reached": sum(samples_to_reach(r["rewards"], target) < math.inf for r in runs),
            "seeds": len(runs),
            "unique": median([r["unique"] / max(1, len(r["rewards"])) for r in runs]),
            "ms_per_sample": 1e3 * sum(r["wall_s"] - r["eval_s"] for r in runs) / max(1, n_samples),
            "controller_ms": (1e3 * sum(r["controller"]["sample_s"] + r["controller"]["update_s"] for r in runs)
                              / max(1, n_samples)) if all("controller" in r for r in runs) else None,
        })
    return rows, target


def print_table(rows: list[dict], target: float, budget: int, seeds: int) -> None:
    from rich.console import Console
    from rich.table import Table

    cps = [c for c in CHECKPOINTS if c <= budget]
    table = Table(title=f"MNAS soft reward, median over {seeds} seeds; target = random's median best-of-{budget} "
                        f"= {target:.4f}")
    table.add_column("strategy")
    for c in cps:
        table.add_column(f"best@{c}", justify="right")
    table.add_column("samples to target", justify="right")
    table.add_column("samples run", justify="right")
    table.add_column("unique", justify="right")
    table.add_column("strategy+engine ms/sample", justify="right")
    table.add_column("controller ms/sample", justify="right")
    best_at = {c: max(r["best"][c] for r in rows if r["best"][c] is not None) for c in cps}
    for r in rows:
        cells = [r["word"]]
        for c in cps:
            v = r["best"][c]
            cells.append("–" if v is None else f"[bold]{v:.4f}[/bold]" if v == best_at[c] else f"{v:.4f}")
        reach = f"> {r['budget']}" if r["reach"] == math.inf else f"{r['reach']:.0f}"
        cells.append(f"{reach} ({r['reached']}/{r['seeds']} seeds)")
        runs = r["samples_run"]
        cells.append(str(runs[0]) if len(set(runs)) == 1 else f"{min(runs)}-{max(runs)}")
        cells.append(f"{r['unique']:.0%}")
        cells.append(f"{r['ms_per_sample']:.2f}")
        cells.append("" if r["controller_ms"] is None else f"{r['controller_ms']:.3f}")
        table.add_row(*cells)
    Console(width=200).print(table)


# ----------------------------------------------------------------------------------------------- overhead

def overhead(cache_dir: str, word: str, samples: int, overrides: dict[str, Any],
             config_word: str | None = None) -> dict:
    """One fresh process per strategy, so its peak RSS is its own (no accuracy proxy loaded there)."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1, initializer=_init_worker, initargs=(cache_dir, False)) as pool:
        return pool.apply(run_search, (word, 0, samples, overrides, "latency", config_word))


def print_overhead(runs: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Controller overhead on the MNAS space (42 decisions); reward = LUT latency only (cheap)")
    for col in ("strategy", "samples", "wall s", "strategy+engine ms/sample", "controller ms/sample",
                "controller ms/draw", "RSS MB before -> after (peak)"):
        table.add_column(col, justify="right")
    for r in runs:
        n = len(r["rewards"])
        c = r.get("controller")
        table.add_row(
            r["config"], str(n), f"{r['wall_s']:.1f}", f"{1e3 * (r['wall_s'] - r['eval_s']) / n:.2f}",
            "" if c is None else f"{1e3 * (c['sample_s'] + c['update_s']) / n:.3f}",
            "" if c is None else f"{1e3 * (c['sample_s'] + c['update_s']) / max(1, c['sampled']):.3f}",
            f"{r['rss_before_mb']:.0f} -> {r['rss_after_mb']:.0f} ({r['rss_peak_mb']:.0f})")
    Console(width=200).print(table)


# ----------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--budget", type=int, default=1000, help="samples (trials) per search")
    p.add_argument("--strategies", default=",".join(WORDS))
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--quick", action="store_true", help="2 seeds x 100 samples, short overhead runs")
    p.add_argument("--ppo-word", default=PPO_WORD, help="config word of the ppo_rnn row (ppo_rnn: the paper's values)")
    p.add_argument("--ppo", default="{}", help="JSON overrides on top of --ppo-word")
    p.add_argument("--overhead-samples", type=int, default=8000, help="ppo_rnn samples for the overhead run")
    p.add_argument("--rl-budget", type=int, default=100,
                   help="samples per policy_rl search: NNI's PolicyBasedRL spends ~0.5 s per sample on updates")
    p.add_argument("--rl-overhead-samples", type=int, default=100, help="NNI PolicyBasedRL samples (it is slow)")
    p.add_argument("--no-overhead", action="store_true")
    p.add_argument("--cache-dir", default=os.environ.get("MNAS_BENCH_CACHE", "~/.cache/mnas-nni/bench"))
    p.add_argument("--json", help="write all results here")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.budget = min(args.seeds, 2), min(args.budget, 100)
        args.overhead_samples, args.rl_overhead_samples = min(args.overhead_samples, 500), 40
        args.rl_budget = min(args.rl_budget, args.budget)
    words = [w.strip() for w in args.strategies.split(",") if w.strip()]
    ppo = json.loads(args.ppo)
    cache_dir = str(Path(args.cache_dir).expanduser())
    overrides = {w: (ppo if w == "ppo_rnn" else {}) for w in words}
    configs = {w: (args.ppo_word if w == "ppo_rnn" else w) for w in words}

    import torch

    torch.set_num_threads(1)
    quiet()
    from bench._objective import MnasObjective, bench_device
    from evaluators.latency import LatencyEvaluator
    from search_spaces import build_model, load_preset

    start = time.perf_counter()
    obj = MnasObjective(Path(cache_dir))
    obj.save_scores()
    print(f"objective: reward = ACC * (LAT/T)^{obj.exponent}; T = {obj.target_ms:.3f} ms (LUT latency of "
          f"MobileNetV2 1.0 on this CPU, onnxruntime 1 thread); LUT: {len(obj.predictor.layers)} layers")
    measured = LatencyEvaluator(bench_device(), cache_path=None)
    for name in ("mobilenet_v2", "mnasnet_a1"):
        arch = load_preset(name)
        whole = measured.measure(build_model(arch), arch.key, (1, 3, 224, 224)).median_ms
        print(f"  {name}: LUT {obj.predictor.predict(arch):.3f} ms (sum {obj.predictor.uncalibrated(arch):.3f}) vs "
              f"whole-model onnxruntime {whole:.3f} ms; "
              f"NASWOT {obj.score(arch):.1f} -> ACC {obj.calibration.accuracy(obj.score(arch)):.3f}")
    print(f"  NASWOT on {obj.naswot.x.shape[0]} digits images at 32 px, half-width proxy net; ACC = logistic, "
          f"centre {obj.calibration.mean:.1f}, scale {obj.calibration.std:.1f} (64 random architectures)")
    budgets = {w: (min(args.rl_budget, args.budget) if w == "policy_rl" else args.budget) for w in words}
    print(f"strategies: {words}; seeds 0..{args.seeds - 1}; budget {args.budget} samples; "
          f"ppo_rnn row: strategy={args.ppo_word} {make_strategy(args.ppo_word, 0, ppo).extra_repr()}; "
          f"TPE's 1 s sleep per trial dropped; "
          f"policy_rl (NNI defaults) runs {budgets.get('policy_rl', 0)} samples per seed")

    jobs = [(w, s, budgets[w], overrides[w], "mnas", configs[w]) for s in range(args.seeds) for w in words]
    order = {"policy_rl": 0, "tpe": 1}
    jobs.sort(key=lambda j: order.get(j[0], 2))  # slowest first
    ctx = mp.get_context("spawn")
    results = []
    with ctx.Pool(args.jobs, initializer=_init_worker, initargs=(cache_dir,)) as pool:
        for r in pool.imap_unordered(_job, jobs):
            results.append(r)
            obj.save_scores(r.pop("new_scores"))
            print(f"  done {r['word']:>13} seed {r['seed']}: best {max(r['rewards']):.4f} "
                  f"in {r['wall_s']:.0f} s ({len(results)}/{len(jobs)}, {time.perf_counter() - start:.0f} s)",
                  flush=True)
    rows, target = summarize(results, words, args.budget)
    print_table(rows, target, args.budget, args.seeds)

    over = []
    if not args.no_overhead:
        for word, config, n in (("random", "random", args.overhead_samples),
                                ("ppo_rnn", "ppo_rnn", args.overhead_samples),  # the paper's 8,000-sample settings
                                ("ppo_rnn", args.ppo_word, args.overhead_samples),
                                ("policy_rl", "policy_rl", args.rl_overhead_samples)):
            if (word in words or word == "random") and config not in [r["config"] for r in over]:
                over.append(overhead(cache_dir, word, n, {}, config))
                over[-1].pop("new_scores", None)
        print_overhead(over)
        print("PolicyBasedRL runs --rl-overhead-samples "
              f"({args.rl_overhead_samples}) because it is much slower per sample; ppo_rnn stops early once its "
              "controller has converged (stall_limit duplicates in a row).")
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "target": target, "results": results,
                                               "overhead": over, "args": vars(args)}, default=str))


if __name__ == "__main__":
    main()
