"""Run `python -m mnas_nni.train` as a user would, small enough for CI; or, as a script, a run that sends
itself a signal after a given optimizer step (SIGKILL: a killed job; SIGINT: a Ctrl-C), for the resume tests:

    python tests/retrain_run.py STEP[:SIGNAL] RUN_DIR override ...
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

# digits at 16 px, batch 32, MnasNet-small: a step takes a few hundredths of a second on 2 cores
TINY = ["+experiment=retrain", "data=digits", "retrain.arch=mnasnet_small", "retrain.resolution=16",
        "retrain.scale=0.0078125", "retrain.epochs=1", "retrain.limit_train_batches=4",
        "retrain.limit_val_batches=2", "retrain.trainer.accelerator=cpu", "retrain.trainer.devices=1",
        "tracking=none"]


def run_train(tmp_path: Path, *overrides: str, timeout: float = 300, env: dict | None = None,
              run_dir: Path | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "mnas_nni.train", *TINY, f"hydra.run.dir={run_dir or tmp_path / 'run'}", *overrides]
    environment = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=environment,
                          check=False)


def run_and_kill(tmp_path: Path, kill_at_step: int, run_dir: Path, *overrides: str,
                 signal_name: str = "SIGKILL") -> subprocess.CompletedProcess:
    args = [sys.executable, __file__, f"{kill_at_step}:{signal_name}", str(run_dir), *TINY, *overrides]
    environment = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=environment,
                          check=False)


def _killed_run(kill_at_step: int, run_dir: Path, overrides: list[str], signum: int = signal.SIGKILL) -> None:
    from hydra import compose, initialize_config_dir
    from pytorch_lightning.callbacks import Callback

    from mnas_nni.__main__ import config_dir
    from mnas_nni.train import train_from_cli

    class KillAfterStep(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == kill_at_step:
                os.kill(os.getpid(), signum)

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    train_from_cli(cfg, overrides, run_dir=run_dir, callbacks=[KillAfterStep()])


if __name__ == "__main__":
    step, _, name = sys.argv[1].partition(":")
    _killed_run(int(step), Path(sys.argv[2]), sys.argv[3:], getattr(signal, name or "SIGKILL"))
