"""The Hydra entry point behaves like any Hydra app; bad input is one clear line."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.cli import run_cli


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnas_nni", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_cfg_job_prints_the_composed_default():
    result = cli("--cfg", "job")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    # the demo's controller: ppo_rnn_short updating every 5 trials, so the 20-trial default shows 4 updates
    assert config["strategy"]["_target_"] == "strategies.ppo_rnn.PpoRnn" and config["search"]["max_trials"] == 20
    assert (config["strategy"]["batch_size"], config["strategy"]["advantage"]) == (5, "rank")
    assert config["data"]["_target_"] == "evaluators.data.DigitsDataModule"
    assert config["device"]["_target_"] == "evaluators.latency.LocalDevice"
    assert config["tracking"]["_target_"] == "mnas_nni.tracking.MlflowTracker"
    assert len(config["search_space"]["base_blocks"]) == 7


def test_imagenet_experiment_is_the_papers_setting():
    result = cli("+experiment=mnas_imagenet", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["data"]["_target_"] == "evaluators.data.ImageNetDataModule"
    assert config["data"]["resolution"] == 224 and config["search_space"]["num_classes"] is None
    assert config["reward"] == {"_target_": "evaluators.reward.MnasReward", "target_ms": 75.0, "alpha": -0.07,
                                "beta": -0.07}
    assert config["train"]["epochs"] == 5 and config["search"]["max_trials"] == 8000
    assert (config["strategy"]["batch_size"], config["strategy"]["learning_rate"]) == (20, 0.00035)  # the paper's


def test_overrides_and_help():
    result = cli("strategy=evolution", "reward=hard", "search.max_trials=7", "--cfg", "job")
    config = yaml.safe_load(result.stdout)
    assert config["strategy"]["_target_"] == "nni.nas.strategy.RegularizedEvolution"
    assert (config["reward"]["alpha"], config["reward"]["beta"]) == (0.0, -1.0)
    assert config["search"]["max_trials"] == 7
    assert "strategy: " in cli("--help").stdout


def test_unknown_key_and_group_word_are_hydras_errors():
    for args in (["search.bogus=1"], ["strategy=nope"]):
        result = cli(*args, "--cfg", "job")
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert "bogus" in result.stderr or "nope" in result.stderr


def test_bad_input_is_one_line_before_training(tmp_path):
    cases = {
        ("data=cifar10", f"data.root={tmp_path / 'missing'}"): "data.root",
        ("reward.target_ms=0",): "target_ms",
        ("reward.beta=0.5",): "beta",
        ("search_space.base_blocks=[]",): "base_blocks",
        ("search_space.base_blocks=[r1_k3_x11_e1_i32_o16]",): "x11",
    }
    for overrides, word in cases.items():
        result = run_cli(tmp_path, *overrides, timeout=120)
        assert result.returncode == 2, (overrides, result.stderr[-2000:])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and word in lines[0], (overrides, result.stderr[-2000:])
        assert not (tmp_path / "run" / "trials.jsonl").exists()
