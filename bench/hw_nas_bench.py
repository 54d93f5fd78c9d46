"""Every strategy of the zoo on a public hardware-aware benchmark: NAS-Bench-201 accuracies x HW-NAS-Bench latencies.

    python -m bench.hw_nas_bench --latency-table pixel3 --dataset cifar10 --target-ms 5.338 --reward hard \\
        --budget 1000 --seeds 10 --json out.json

Each strategy word of conf/strategy/ (and NNI's RegularizedEvolution with its own defaults, row
`regularized_evolution`) searches the NAS-Bench-201 cell space (search_spaces/nb201.py, the labels and values of
`search_space=nb201`) through NNI's sequential engine (bench/_engine.py, as bench/strategies.py does), seeds
0..K-1, the same budget. A trial is scored as `evaluator=table` scores it: accuracy and latency looked up in the
shipped tables (evaluators/tables/hw_nas_bench/), the reward composed by Hydra from `reward=<word>` with
`reward.target_ms=T`. A "sample" is one trial submitted to the engine.

Per strategy: the regret (the oracle - the best accuracy among the architectures meeting T, over all 15,625 -
minus the best accuracy among the samples so far that meet T; a search that found none counts as accuracy 0)
after 50/100/300/1000 samples, median and quartiles over seeds; samples until the oracle itself was found; the
share of searches whose best-reward architecture meets T, and that architecture's latency / T. Then ppo_rnn_short
under every reward of --compare-rewards (the share meeting T per reward) and the paper's Fig. 3 on real data:
the latencies sampled under the soft and the hard reward.

NNI's PolicyBasedRL spends ~0.6 s per sample on its own updates, so it runs --rl-budget samples (default 100).
ppo_rnn stops by itself once its controller has converged; such a search counts with its final best at later
checkpoints. Finished searches are appended to --runs (default: next to --json); a killed run resumes from it.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._engine import FrozenSample, compose, drive, make_strategy, quiet
from bench._hw_plots import plot_fig3, plot_regret

WORDS = ["ppo_rnn_short", "ppo_rnn", "random", "evolution", "regularized_evolution", "tpe", "policy_rl",
         "optuna_nsga2"]
NNI_DEFAULT = "regularized_evolution"  # not a config word: nni.nas.strategy.RegularizedEvolution() as shipped
CONTROLLER = "ppo_rnn_short"  # the row compared across rewards and drawn in Fig. 3
CHECKPOINTS = [50, 100, 300, 1000]
REWARDS = ("soft", "hard", "abs")

_WORKER: dict[str, Any] = {}


# ----------------------------------------------------------------------------------------------- searches

def make_reward(word: str, target_ms: float) -> Any:
    from hydra.utils import instantiate

    return instantiate(compose([f"reward={word}", f"reward.target_ms={target_ms}"]).reward)


def _init_worker(latency_table: str, dataset: str, target_ms: float, rewards: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    from evaluators.table import load_nb201_table

    table = load_nb201_table(latency_table, dataset)
    _WORKER.update(table=table, rewards={w: make_reward(w, target_ms) for w in rewards}, target_ms=target_ms)
    quiet()


def sample_space():
    from search_spaces.nb201 import Nb201Space

    class SampleSpace(Nb201Space):
        """The nb201 space (same labels, values, order) whose frozen model is only its sample."""

        @classmethod
        def create_fixed_module(cls, sample: dict, **config: Any) -> FrozenSample:
            return FrozenSample(sample)

    return SampleSpace()


def build_strategy(word: str, seed: int, context: tuple[str, ...] = ()) -> Any:
    """`context`: the search's reward and T (`reward=hard`, `reward.target_ms=5.338`), as the CLI gives them."""
    if word == NNI_DEFAULT:
        from nni.nas.strategy import RegularizedEvolution

        return RegularizedEvolution(seed=seed)
    return make_strategy(word, seed, {}, context)


def run_one(word: str, seed: int, budget: int, reward_word: str) -> dict:
    """One search in this worker: accuracy (%), latency and reward of every sample in order, and the time split."""
    from search_spaces.nb201 import LABELS

    table, reward = _WORKER["table"], _WORKER["rewards"][reward_word]
    accs: list[float] = []
    lats: list[float] = []
    rewards: list[float] = []
    keys: set[str] = set()

    def evaluate(model: FrozenSample) -> dict:
        from search_spaces.nb201 import Nb201Arch

        key = Nb201Arch(tuple(model.sample[label] for label in LABELS)).key
        acc, lat = table.lookup(key)
        keys.add(key)
        value = reward(acc / 100.0, lat)
        accs.append(acc)
        lats.append(lat)
        rewards.append(value)
        return {"default": value, "accuracy": acc / 100.0, "latency_ms": lat}

    strategy = build_strategy(word, seed, (f"reward={reward_word}", f"reward.target_ms={_WORKER['target_ms']}"))
    quiet()
    run = drive(strategy, sample_space(), evaluate, budget)
    return {"word": word, "seed": seed, "budget": budget, "reward": reward_word, "accuracy": accs,
            "latency_ms": lats, "rewards": rewards, "unique": len(keys), **run}


def installed(word: str) -> bool:
    """False, with one line naming what to install, when a strategy's optional extra is missing (`policy_rl`
    without `[rl]`): the bench runs the others."""
    from mnas_core.errors import ConfigError, one_line

    try:
        build_strategy(word, 0)
    except Exception as err:  # Hydra wraps the strategy's own error
        cause = err.__cause__ or err
        if not isinstance(cause, (ImportError, ConfigError)):
            raise
        print(f"skipping {word}: {one_line(cause)}")
        return False
    return True


def _job(args: tuple) -> dict:
    return run_one(*args)


# ----------------------------------------------------------------------------------------------- arithmetic

def regret_curve(accuracy: list[float], latency_ms: list[float], target_ms: float, oracle: float) -> np.ndarray:
    """Regret after each sample: oracle - best accuracy so far among samples meeting T (none yet: accuracy 0)."""
    meets = np.asarray(latency_ms) <= target_ms
    best = np.maximum.accumulate(np.where(meets, np.asarray(accuracy, dtype=float), 0.0))
    return oracle - best


def regret_at(curve: np.ndarray, n: int, budget: int) -> float | None:
    """Regret after ``n`` samples. A search that stopped by itself before ``n`` (converged) keeps its final
    regret; one whose budget was below ``n`` has none."""
    if len(curve) >= n:
        return float(curve[n - 1])
    return float(curve[-1]) if len(curve) and budget >= n else None


def samples_to_oracle(curve: np.ndarray) -> float:
    hits = np.flatnonzero(curve <= 1e-9)
    return float(hits[0] + 1) if hits.size else math.inf


def best_reward_latency(rewards: list[float], latency_ms: list[float]) -> float:
    """Latency of the architecture with the best reward (the first one found, on ties)."""
    return float(latency_ms[int(np.argmax(rewards))])


def quartiles(values: list[float]) -> tuple[float, float, float] | None:
    if not values:
        return None
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return float(q1), float(q2), float(q3)


def summarize_runs(runs: list[dict], oracle: float, target_ms: float, budget: int) -> dict[str, Any]:
    """One strategy's row over its seeds (all runs of one reward)."""
    curves = [regret_curve(r["accuracy"], r["latency_ms"], target_ms, oracle) for r in runs]
    row: dict[str, Any] = {"regret_median": {}, "regret_q25": {}, "regret_q75": {}}
    for c in (c for c in CHECKPOINTS if c <= budget):
        values = [v for curve, r in zip(curves, runs) if (v := regret_at(curve, c, r["budget"])) is not None]
        q = quartiles(values)
        if q is not None:
            row["regret_q25"][str(c)], row["regret_median"][str(c)], row["regret_q75"][str(c)] = q
    reach = [samples_to_oracle(c) for c in curves]
    rel = [best_reward_latency(r["rewards"], r["latency_ms"]) / target_ms for r in runs]
    samples = sum(len(r["rewards"]) for r in runs)
    row.update(
        seeds=len(runs),
        budget=max(r["budget"] for r in runs),
        samples_run=[len(r["rewards"]) for r in sorted(runs, key=lambda r: r["seed"])],
        unique=float(np.median([r["unique"] / max(1, len(r["rewards"])) for r in runs])),
        samples_to_oracle_median=float(np.median(reach)),
        reached_oracle=sum(math.isfinite(v) for v in reach),
        meets_target_share=float(np.mean([v <= 1.0 for v in rel])),
        # the search's answer for T: its most accurate sample meeting T (none: the search has no answer)
        answer_meets_target_share=float(np.mean([any(lat <= target_ms for lat in r["latency_ms"]) for r in runs])),
        best_reward_latency_over_target=quartiles(rel),
        ms_per_sample=1e3 * sum(r["wall_s"] - r["eval_s"] for r in runs) / max(1, samples),
        search_seconds=sum(r["wall_s"] for r in runs),
    )
    return row


# ----------------------------------------------------------------------------------------------- output

def print_table(rows: dict[str, dict], title: str, budget: int) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    cps = [str(c) for c in CHECKPOINTS if c <= budget]
    table = Table(title=title)
    table.add_column("strategy")
    for c in cps:
        table.add_column(escape(f"regret@{c} med [q25,q75]"), justify="right")
    for col in ("samples to oracle (found)", "samples run", "answer meets T", "best-reward meets T",
                "its LAT/T [q25,q75]", "ms/sample"):
        table.add_column(escape(col), justify="right")
    lowest = {c: min((r["regret_median"][c] for r in rows.values() if c in r["regret_median"]), default=None)
              for c in cps}
    for word, r in rows.items():
        cells = [word]
        for c in cps:
            if c not in r["regret_median"]:
                cells.append("–")
                continue
            text = escape(f"{r['regret_median'][c]:.2f} [{r['regret_q25'][c]:.2f}, {r['regret_q75'][c]:.2f}]")
            cells.append(f"[bold]{text}[/bold]" if r["regret_median"][c] == lowest[c] else text)
        reach = r["samples_to_oracle_median"]
        cells.append(f"{'> ' + str(r['budget']) if reach == math.inf else f'{reach:.0f}'} "
                     f"({r['reached_oracle']}/{r['seeds']})")
        runs = r["samples_run"]
        cells.append(str(runs[0]) if len(set(runs)) == 1 else f"{min(runs)}-{max(runs)}")
        rel = r["best_reward_latency_over_target"]
        cells += [f"{r['answer_meets_target_share']:.0%}", f"{r['meets_target_share']:.0%}",
                  escape(f"{rel[1]:.3f} [{rel[0]:.3f}, {rel[2]:.3f}]"),
                  f"{r['ms_per_sample']:.2f}"]
        table.add_row(*cells)
    Console(width=280).print(table)


# ----------------------------------------------------------------------------------------------- main

def load_runs(path: Path, key: dict) -> list[dict]:
    """Searches a killed run of the same settings already finished."""
    if not path.is_file():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in runs if r.get("settings") == key]


def finite(value: Any) -> Any:
    """JSON without Infinity/NaN: a never-reached count or a missing value is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency-table", default="pixel3", help="pixel3 | eyeriss (shipped) | a CSV index,latency_ms")
    p.add_argument("--dataset", default="cifar10", help="a column of the accuracy table")
    p.add_argument("--target-ms", type=float, default=5.338, help="latency target T")
    p.add_argument("--reward", default="hard", choices=REWARDS)
    p.add_argument("--budget", type=int, default=1000, help="samples per search")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--strategies", default=",".join(WORDS))
    p.add_argument("--rl-budget", type=int, default=100, help="samples per policy_rl search (it is slow)")
    p.add_argument("--compare-rewards", default=",".join(REWARDS),
                   help=f"rewards {CONTROLLER} also runs under (share meeting T per reward; Fig. 3 needs soft,hard)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--runs", help="finished searches, appended as they finish (default: <json>.runs.jsonl)")
    p.add_argument("--png-prefix", help="figures: <prefix>_regret.png, <prefix>_fig3.png (default: from --json)")
    args = p.parse_args(argv)
    start = time.perf_counter()

    from evaluators.reward import check_target
    from evaluators.table import load_nb201_table

    check_target(args.target_ms)
    words = [w.strip() for w in args.strategies.split(",") if w.strip()]
    compare = [w.strip() for w in args.compare_rewards.split(",") if w.strip()]
    unknown = [w for w in compare if w not in REWARDS] + [w for w in words if w not in WORDS]
    if unknown:
        raise SystemExit(f"unknown word(s) {unknown}; strategies: {', '.join(WORDS)}; rewards: {', '.join(REWARDS)}")
    words = [w for w in words if installed(w)]
    table = load_nb201_table(args.latency_table, args.dataset)
    oracle = table.oracle(args.target_ms)
    rewards = sorted({args.reward, *compare})
    make_reward(args.reward, args.target_ms)  # a bad reward setting fails here
    budgets = {w: (min(args.rl_budget, args.budget) if w == "policy_rl" else args.budget) for w in words}
    print(f"NAS-Bench-201 x {args.latency_table}, {args.dataset}, T = {args.target_ms:g} ms: oracle {oracle:.2f} "
          f"(best of {sum(lat <= args.target_ms for lat in table.latency_ms)} architectures meeting T, of "
          f"{len(table.arch_strs)}); reward={args.reward}; seeds 0..{args.seeds - 1}; budget {args.budget} "
          f"(policy_rl {budgets.get('policy_rl', '-')}); {CONTROLLER} also under {compare}")

    jobs = [(w, s, budgets[w], args.reward) for s in range(args.seeds) for w in words]
    if CONTROLLER in words:
        jobs += [(CONTROLLER, s, args.budget, r) for r in compare if r != args.reward for s in range(args.seeds)]
    jobs.sort(key=lambda j: {"policy_rl": 0, "tpe": 1}.get(j[0], 2))  # slowest first
    settings = {"latency_table": args.latency_table, "dataset": args.dataset, "target_ms": args.target_ms}
    out_json = Path(args.json) if args.json else None
    runs_path = Path(args.runs) if args.runs else (out_json.with_suffix(".runs.jsonl") if out_json else None)
    if runs_path:
        runs_path.parent.mkdir(parents=True, exist_ok=True)
    results = load_runs(runs_path, settings) if runs_path else []
    done = {(r["word"], r["seed"], r["budget"], r["reward"]) for r in results}
    results = [r for r in results if (r["word"], r["seed"], r["budget"], r["reward"]) in set(jobs)]
    todo = [j for j in jobs if j not in done]
    resumed = len(results)
    if resumed:
        print(f"resuming: {resumed} searches already finished in {runs_path}")
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs, initializer=_init_worker,
                  initargs=(args.latency_table, args.dataset, args.target_ms, rewards)) as pool:
        for r in pool.imap_unordered(_job, todo):
            results.append(r)
            if runs_path:
                with open(runs_path, "a") as f:
                    f.write(json.dumps({**r, "settings": settings}) + "\n")
            print(f"  done {r['word']:>21} seed {r['seed']} ({r['reward']}): {r['wall_s']:.0f} s "
                  f"({len(results)}/{len(jobs)}, {time.perf_counter() - start:.0f} s)", flush=True)

    main_runs = [r for r in results if r["reward"] == args.reward]
    rows = {w: summarize_runs([r for r in main_runs if r["word"] == w], oracle, args.target_ms, budgets[w])
            for w in words}
    title = (f"NAS-Bench-201 x {args.latency_table}, {args.dataset}, T = {args.target_ms:g} ms, reward={args.reward}:"
             f" regret (oracle {oracle:.2f} - best accuracy meeting T), {args.seeds} seeds")
    print_table(rows, title, args.budget)
    by_reward: dict[str, dict] = {}
    if CONTROLLER in words:
        for r_word in rewards:
            runs = [r for r in results if r["word"] == CONTROLLER and r["reward"] == r_word]
            if runs:
                by_reward[r_word] = summarize_runs(runs, oracle, args.target_ms, args.budget)
        for r_word, row in by_reward.items():
            rel = row["best_reward_latency_over_target"]
            print(f"{CONTROLLER} under reward={r_word}: {row['meets_target_share']:.0%} of searches end with a "
                  f"best-reward architecture meeting T (its LAT/T median {rel[1]:.3f} [{rel[0]:.3f}, {rel[2]:.3f}]); "
                  f"samples to oracle {row['samples_to_oracle_median']:.0f} ({row['reached_oracle']}/{row['seeds']}); "
                  + ", ".join(f"regret@{c} median {v:.2f}" for c, v in row["regret_median"].items()))
    total = time.perf_counter() - start
    print("time per sample (strategy + engine, ms): "
          + ", ".join(f"{w} {rows[w]['ms_per_sample']:.2f}" for w in words) + f"; bench total {total:.0f} s"
          + (f" ({resumed} searches resumed from {runs_path})" if resumed else ""))

    prefix = args.png_prefix or (str(out_json.with_suffix("")) if out_json else None)
    if prefix:
        curves = {w: [regret_curve(r["accuracy"], r["latency_ms"], args.target_ms, oracle) for r in main_runs
                      if r["word"] == w] for w in words}
        plot_regret(curves, CONTROLLER, title.split(":")[0], Path(f"{prefix}_regret.png"))
        print(f"figure: {prefix}_regret.png")
        lat = {w: [x for r in results if r["word"] == CONTROLLER and r["reward"] == w for x in r["latency_ms"]]
               for w in ("soft", "hard")}
        if all(lat.values()):
            plot_fig3(lat, args.target_ms, f"{CONTROLLER} on NAS-Bench-201 x {args.latency_table}: sampled latencies "
                      f"({args.seeds} seeds, budget {args.budget})", Path(f"{prefix}_fig3.png"))
            print(f"figure: {prefix}_fig3.png")
    if out_json:
        out_json.write_text(json.dumps(finite({
            "oracle": oracle, "target_ms": args.target_ms, "latency_table": args.latency_table,
            "dataset": args.dataset, "reward": args.reward, "budget": args.budget, "seeds": args.seeds,
            "controller": CONTROLLER,
            "strategies": rows, "controller_by_reward": by_reward, "total_s": total, "resumed_searches": resumed,
            "args": vars(args)}),
            indent=1))
        print(f"summary: {out_json}")


if __name__ == "__main__":
    main()
