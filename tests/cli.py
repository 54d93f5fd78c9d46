"""Run `python -m mnas_nni` as a user would, with settings that keep a trial to a few seconds on 2 CPU cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FAST = [
    "tracking=none",
    "train.epochs=1",
    "train.limit_train_batches=3",
    "train.limit_val_batches=2",
    "device.runs=5",
    "device.warmup=2",
]


def cli_args(tmp_path: Path, *overrides: str, fast: bool = True, module: str = "mnas_nni") -> list[str]:
    """The command line of a search in `tmp_path / "run"`, its latency cache and locks beside it."""
    return [sys.executable, "-m", module, *(FAST if fast else []),
            f"latency.cache_path={tmp_path / 'latency.sqlite'}", f"latency.lock_dir={tmp_path / 'locks'}",
            f"hydra.run.dir={tmp_path / 'run'}", *overrides]


def cli_env(env: dict | None = None) -> dict:
    return {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}


def run_cli(tmp_path: Path, *overrides: str, fast: bool = True, timeout: float = 600, module: str = "mnas_nni",
            env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli_args(tmp_path, *overrides, fast=fast, module=module), capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=cli_env(env), check=False)


def read_trials(tmp_path: Path) -> list[dict]:
    path = tmp_path / "run" / "trials.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
