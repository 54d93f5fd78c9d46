"""conf/ reaches Hydra from a regular (non-editable) install, run from another working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_regular_install_ships_the_configs(tmp_path):
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w",
                            str(wheels), str(ROOT)], check=True, capture_output=True, text=True, cwd=tmp_path)
    log = built.stdout + built.stderr
    assert "Deprecat" not in log and "is absent from the `packages`" not in log, log[-3000:]  # setuptools is content
    (wheel,) = wheels.glob("mnas_nni-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", "import mnas_nni, sys; print(mnas_nni.__file__)"],
                            capture_output=True, text=True, env=env, cwd=elsewhere, check=True)
    assert result.stdout.strip().startswith(str(site))  # the installed copy, not the checkout
    result = subprocess.run([sys.executable, "-m", "mnas_nni", "+experiment=mnas_imagenet", "--cfg", "job"],
                            capture_output=True, text=True, env=env, cwd=elsewhere, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["reward"]["target_ms"] == 75.0
    assert (site / "mnas_nni" / "conf" / "strategy" / "ppo_rnn.yaml").is_file()
    assert (site / "evaluators" / "tables" / "hw_nas_bench" / "latency_pixel3.csv").is_file()  # evaluator=table
