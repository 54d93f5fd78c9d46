"""Trial throughput through NNI's local training service at several concurrencies, on sleep-bound trials.

    python -m bench.concurrency                          # 16 trials of 2 s at concurrency 1, 2, 4, 8
    python -m bench.concurrency --trials 8 --levels 1,2  # quicker

Each level is one NNI experiment built by our adapter (`nni_adapter.experiment_config('local', ...)` and
`make_experiment`, the path `search.execution=local` takes) on a tiny model space whose FunctionalEvaluator
sleeps a fixed time and reports. The sleep stands for a trial that waits on something else (a remote board,
a GPU); what is left is the training service's own cost per trial: a fresh Python process that imports NNI
and torch, the manager's scheduling and the metric round trip. Run from the repository root (the trial
processes import this module from the working directory).

Columns: wall = `experiment.run()` from call to return (manager start and stop included); trials/min =
trials / wall; speed-up = wall at concurrency 1 / wall; vs linear = speed-up / concurrency; slot s = wall x
concurrency / trials, the time one trial held a slot (the sleep plus the per-trial overhead); 1st result s =
from the call to the first reported metric (manager start, first trial process, one sleep).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tempfile
import threading
import time
import warnings
from pathlib import Path

import mnas_nni  # noqa: F401 - first: it mutes NNI's import-time warnings about torch 2.13

# isort: split
import nni
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def sleep_trial(model: nn.Module, seconds: float) -> None:
    """The trial: sleep a fixed time, then report."""
    time.sleep(seconds)
    nni.report_final_result({"default": 1.0, "slept": seconds})


class TinySpace(ModelSpace):
    """Two choices, 4 x 8 = 32 models: enough distinct samples for the deduplicating Random strategy."""

    def __init__(self) -> None:
        super().__init__()
        self.act = LayerChoice([nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.Identity()], label="act")
        self.fc = LayerChoice([nn.Linear(4, 4) for _ in range(8)], label="fc")

    def forward(self, x):
        return self.act(self.fc(x))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_level(concurrency: int, trials: int, seconds: float, workdir: Path) -> dict:
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.strategy import Random

    # Under `python -m`, this file runs as `__main__`; trial processes must find the function and the space by an
    # importable path, so take them from the module imported under its own name.
    from bench import concurrency as this
    from mnas_nni import nni_adapter

    finished: list[float] = []
    lock = threading.Lock()

    def on_final_metric(event) -> None:
        with lock:
            finished.append(time.perf_counter())

    config = nni_adapter.experiment_config("local", max_trials=trials, concurrency=concurrency,
                                           working_dir=str(workdir))
    evaluator = FunctionalEvaluator(this.sleep_trial, seconds=seconds)
    experiment = nni_adapter.make_experiment(this.TinySpace(), evaluator, Random(seed=concurrency), config,
                                             on_final_metric, lambda event: None)
    nni_adapter.quiet_nni_console()
    nni_adapter.load_json_without_comment_stripping()
    started = time.perf_counter()
    experiment.run(port=_free_port(), wait_completion=True, debug=False)
    wall = time.perf_counter() - started
    experiment.stop()
    if len(finished) != trials:
        raise RuntimeError(f"concurrency {concurrency}: {len(finished)} of {trials} trials reported")
    return {"concurrency": concurrency, "trials": trials, "wall": wall, "first": min(finished) - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16, help="trials per level")
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds each trial sleeps")
    parser.add_argument("--levels", default="1,2,4,8", help="concurrencies, comma-separated; the first is the base")
    args = parser.parse_args()
    os.chdir(ROOT)  # NNI's local service runs trials in the working directory (the trial code directory)
    warnings.filterwarnings("ignore")
    logging.getLogger("nni").setLevel(logging.WARNING)
    from mnas_nni import nni_adapter

    nni_adapter.import_strategies_quietly()

    rows = []
    for level in (int(x) for x in args.levels.split(",")):
        with tempfile.TemporaryDirectory(prefix="mnas-concurrency-") as tmp:
            row = run_level(level, args.trials, args.sleep, Path(tmp))
        rows.append(row)
        print(f"concurrency {level}: {row['wall']:.1f}s", flush=True)

    from rich.console import Console
    from rich.table import Table

    load = os.getloadavg()[0]
    table = Table(title=f"NNI local training service, {args.trials} trials x {args.sleep:g} s sleep per level, "
                        f"{os.cpu_count()} CPUs, load {load:.1f}")
    for column in ("concurrency", "wall s", "trials/min", "speed-up", "vs linear", "slot s", "1st result s"):
        table.add_column(column, justify="right")
    base = rows[0]
    for row in rows:
        speedup = base["wall"] / row["wall"]
        linear = row["concurrency"] / base["concurrency"]
        table.add_row(str(row["concurrency"]), f"{row['wall']:.1f}", f"{row['trials'] / row['wall'] * 60:.1f}",
                      f"{speedup:.2f}x", f"{speedup / linear:.0%}",
                      f"{row['wall'] * row['concurrency'] / row['trials']:.1f}", f"{row['first']:.1f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
