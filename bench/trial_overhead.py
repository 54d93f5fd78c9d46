"""Overhead of the search machinery: wall time of the demo search vs the time its trials spent training and
measuring. Runs the same demo through the in-process engine (ours, the default) and NNI's local training
service (the peer path) in one process and prints both.

    python bench/trial_overhead.py [--trials 6] [--tracking none|mlflow]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from rich.console import Console
from rich.table import Table

from mnas_nni.__main__ import config_dir
from mnas_nni.run.search import run_search


def run(execution: str, trials: int, tracking: str, workdir: Path) -> dict:
    overrides = [f"search.max_trials={trials}", "strategy=random", f"tracking={tracking}", f"search.execution={execution}",
                 f"latency.cache_path={workdir / 'latency.sqlite'}", f"latency.lock_dir={workdir / 'locks'}"]
    if tracking == "mlflow":
        overrides.append(f"tracking.tracking_uri=sqlite:///{workdir / 'mlflow.db'}")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    started = time.perf_counter()
    records = run_search(cfg, run_dir=workdir / "run")
    wall = time.perf_counter() - started
    work = sum(r.train_seconds + r.measure_seconds for r in records)
    return {"execution": execution, "trials": len(records), "wall": wall, "work": work,
            "overhead": (wall - work) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--tracking", default="none", choices=["none", "mlflow"])
    parser.add_argument("--executions", default="sequential,local")
    args = parser.parse_args()
    rows = []
    for execution in args.executions.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run(execution, args.trials, args.tracking, Path(tmp)))
    table = Table(title=f"Search overhead, demo search, {args.trials} trials, tracking={args.tracking}")
    for column in ("execution", "trials", "wall s", "train+measure s", "overhead", "wall vs sequential"):
        table.add_column(column, justify="right")
    base = rows[0]["wall"]
    for row in rows:
        table.add_row(row["execution"], str(row["trials"]), f"{row['wall']:.1f}", f"{row['work']:.1f}",
                      f"{row['overhead']:.1%}", f"{row['wall'] / base:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
