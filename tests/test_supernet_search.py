"""evaluator=supernet through the CLI, supernet training resume, and bad supernet checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.cli import read_trials, run_cli

ROOT = Path(__file__).resolve().parent.parent
TINY_BLOCKS = "[r1_k3_s11_e1_i32_o16,r2_k3_s22_e6_i16_o24,r2_k3_s22_e6_i24_o32]"
TINY = [f"search_space.base_blocks={TINY_BLOCKS}", "search_space.head_filters=64", "data.resolution=16"]
FAST_SUPERNET = ["evaluator=supernet", "supernet.epochs=1", "supernet.limit_train_batches=2",
                 "supernet.limit_val_batches=1", "supernet.calibration_batches=1", "supernet.val_batches=2",
                 "search.max_trials=4"]
ENV = {"PYTHONPATH": str(ROOT)}


def tiny_config(**changes):
    from search_spaces.space import SpaceConfig

    fields = {"base_blocks": tuple(TINY_BLOCKS.strip("[]").split(",")), "width_mult": 0.5, "head_filters": 64,
              "num_classes": 10, "resolution": 16}
    return SpaceConfig(**{**fields, **changes})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from search_spaces.supernet import Supernet

    torch.manual_seed(0)
    return Supernet(tiny_config()).save(tmp_path_factory.mktemp("supernet") / "supernet.pt")


@pytest.mark.slow
def test_supernet_search_trains_scores_and_confirms_the_top_one(tmp_path):
    result = run_cli(tmp_path, *TINY, *FAST_SUPERNET, "strategy=random", f"supernet.dir={tmp_path / 'sn'}",
                     "search.confirm_top_k=1", env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert len(trials) == 4 and all(t["status"] == "succeeded" and t["evaluator"] == "supernet" for t in trials)
    assert all(0.0 <= t["accuracy"] <= 1.0 and t["latency_ms"] > 0 for t in trials)
    confirmed = [t for t in trials if t["confirmed_reward"] is not None]
    assert len(confirmed) == 1
    assert confirmed[0]["reward"] == max(t["reward"] for t in trials)  # the search's best is the one confirmed
    assert (tmp_path / "sn" / "supernet.pt").is_file()
    output = result.stdout + result.stderr  # two batches leave it at chance: its scores are noise, and it says so
    assert output.count("its scores will not rank architectures") == 1, output[-3000:]


@pytest.mark.slow
def test_supernet_search_with_ppo_rnn_from_a_checkpoint(tmp_path, checkpoint):
    result = run_cli(tmp_path, *TINY, *FAST_SUPERNET, "strategy=ppo_rnn_short", f"supernet.checkpoint={checkpoint}",
                     "search.confirm_top_k=0", env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert len(trials) == 4 and all(t["evaluator"] == "supernet" for t in trials)
    assert all(t["confirmed_reward"] is None for t in trials)
    assert not (tmp_path / "outputs" / "supernets").exists()  # loaded, not trained


@pytest.mark.slow
def test_four_trial_supernet_search_on_a_fashion_mnist_subset_with_the_default_settings(tmp_path):
    from omegaconf import OmegaConf

    from bench.supernet import paths_per_step

    defaults = OmegaConf.load(ROOT / "conf" / "evaluator" / "supernet.yaml").supernet
    result = run_cli(tmp_path, "+experiment=fashion", "data.train_subset=200", *FAST_SUPERNET, "strategy=ppo_rnn_short",
                     f"supernet.dir={tmp_path / 'sn'}", "search.confirm_top_k=1", "train.epochs=1",
                     "train.limit_train_batches=2", "train.limit_val_batches=2", env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert len(trials) == 4 and all(t["status"] == "succeeded" and t["evaluator"] == "supernet" for t in trials)
    assert sum(t["confirmed_reward"] is not None for t in trials) == 1
    resolved = OmegaConf.load(tmp_path / "run" / "config.resolved.yaml")
    assert "FashionMnistDataModule" in resolved.data._target_ and resolved.data.resolution == 28
    assert (resolved.supernet.distill, resolved.supernet.split, resolved.supernet.score) == (
        defaults.distill, defaults.split, defaults.score)
    trained = torch.load(tmp_path / "sn" / "supernet.pt", map_location="cpu", weights_only=True)
    # 2 batches of 64, each through as many paths as the default sampling and distillation run a step
    assert trained["images_seen"] == 2 * 64 * paths_per_step(defaults.sampling, defaults.distill)
    if defaults.split:  # every sub-supernet of the default split was trained beside the supernet
        assert len(list((tmp_path / "sn" / "split").glob("*/*/supernet.pt"))) >= 2


def test_a_path_scored_by_likelihood_gets_exp_of_minus_its_mean_validation_loss(checkpoint):
    import math
    import random

    import torch.nn.functional as F

    from evaluators.data import DigitsDataModule
    from evaluators.supernet_train import score_path
    from mnas_core.errors import ConfigError
    from search_spaces.supernet import Supernet

    supernet, data = Supernet.load(checkpoint, tiny_config()).eval(), DigitsDataModule(resolution=16)
    arch = supernet.sample(random.Random(0))
    model, likelihood = score_path(supernet, arch, data, calibration_batches=1, val_batches=2, score="likelihood")
    _, accuracy = score_path(supernet, arch, data, calibration_batches=1, val_batches=2)
    batches = [batch for _, batch in zip(range(2), data.val_dataloader())]
    images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    with torch.no_grad():
        loss = float(F.cross_entropy(model.eval()(images), labels))
    assert likelihood == pytest.approx(math.exp(-loss), rel=1e-5)
    assert accuracy == pytest.approx(float((model(images).argmax(1) == labels).float().mean()))
    assert likelihood != pytest.approx(accuracy)
    with pytest.raises(ConfigError, match="supernet.score must be one of"):
        score_path(supernet, arch, data, calibration_batches=1, score="best")


def test_the_untrained_warning_is_given_near_a_uniform_guess_loss_only():
    from evaluators.supernet import untrained_warning

    assert "a uniform guess's is 2.303" in untrained_warning(2.28, 10)
    assert untrained_warning(2.5, 10) is not None and untrained_warning(0.693, 2) is not None
    assert untrained_warning(2.0, 10) is None and untrained_warning(0.5, 2) is None


@pytest.mark.slow
def test_a_bad_supernet_checkpoint_is_one_line_before_any_trial(tmp_path):
    from search_spaces.supernet import Supernet

    other = Supernet(tiny_config(kernels=(3,))).save(tmp_path / "other.pt")
    cases = {tmp_path / "missing.pt": "not found", other: "another search space"}
    for path, words in cases.items():
        result = run_cli(tmp_path, *TINY, *FAST_SUPERNET, f"supernet.checkpoint={path}", env=ENV, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and words in lines[0] and "supernet.checkpoint" in lines[0], result.stderr[-2000:]
        assert not (tmp_path / "run" / "trials.jsonl").exists()


@pytest.mark.slow
def test_bad_supernet_training_settings_are_one_line_before_any_trial(tmp_path):
    cases = {"supernet.warmup=2": "supernet.warmup must be a fraction", "supernet.sampling=greedy": "supernet.sampling",
             "supernet.epochs=0": "supernet.epochs must be a positive integer",
             "supernet.distill=maybe": "supernet.distill must be true or false",
             "supernet.score=best": "supernet.score must be one of accuracy, likelihood"}
    for setting, words in cases.items():
        result = run_cli(tmp_path, *TINY, *FAST_SUPERNET, setting, env=ENV, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and words in lines[0], result.stderr[-2000:]
        assert not (tmp_path / "run" / "trials.jsonl").exists()


TRAIN_SCRIPT = """
import sys, time
from pytorch_lightning.callbacks import Callback
from evaluators.data import DigitsDataModule
from evaluators.supernet_train import train_supernet
from tests.test_supernet_search import tiny_config

class SlowAfterFirstEpoch(Callback):  # gives the test time to kill the run once epoch 0 is checkpointed
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch >= 1 and sys.argv[2] == "slow":
            time.sleep(60)

train_supernet(tiny_config(), DigitsDataModule(resolution=16), sys.argv[1], epochs=3, limit_train_batches=2,
               limit_val_batches=1, callbacks=[SlowAfterFirstEpoch()])
"""


@pytest.mark.slow
def test_a_killed_supernet_training_resumes_where_it_stopped(tmp_path):
    directory = tmp_path / "sn"
    env = {**os.environ, **ENV, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(directory), "slow"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (directory / "last.ckpt").is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the checkpoint file is renamed into place; let the save finish
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (directory / "last.ckpt").is_file() and not (directory / "supernet.pt").exists()
    finished = torch.load(directory / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] + 1
    assert finished < 3
    done = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(directory), "fast"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    final = torch.load(directory / "supernet.pt", map_location="cpu", weights_only=True)
    assert [row["epoch"] for row in final["history"]] == list(range(finished, 3))  # only the epochs left ran
    assert final["images_seen"] == 3 * 2 * 64  # counted across the kill


def test_imagenet_supernet_experiment_composes():
    import yaml

    result = subprocess.run([sys.executable, "-m", "mnas_nni", "+experiment=mnas_imagenet_supernet", "--cfg", "job"],
                            capture_output=True, text=True, timeout=120, check=False, cwd=ROOT, env={**os.environ, **ENV})
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["evaluator"]["_target_"] == "evaluators.supernet.SupernetEvaluator"
    # 224 px; the class count comes from the ImageNet folder (any subset), not a fixed 1000
    assert config["data"]["resolution"] == 224 and config["search_space"]["num_classes"] is None
    assert config["supernet"]["epochs"] == 30 and config["search"]["confirm_top_k"] == 5
    assert config["strategy"]["batch_size"] == 10  # ppo_rnn_short


def test_confirm_count_defaults_by_evaluator_and_refuses_bad_values():
    from mnas_core.errors import ConfigError
    from mnas_nni.run.confirm import confirm_count

    assert confirm_count({"confirm_top_k": None}, "supernet") == 5
    assert confirm_count({"confirm_top_k": None}, "proxy") == 0
    assert confirm_count({"confirm_top_k": 2}, "proxy") == 2
    with pytest.raises(ConfigError, match="confirm_top_k"):
        confirm_count({"confirm_top_k": -1}, "supernet")


def test_top_k_ranks_by_the_confirmed_reward_once_there_is_one():
    from mnas_nni.run.records import TrialRecord, top_k

    records = [TrialRecord(trial=1, status="succeeded", reward=0.9, confirmed_reward=0.5),
               TrialRecord(trial=2, status="succeeded", reward=0.8, confirmed_reward=0.7),
               TrialRecord(trial=3, status="succeeded", reward=0.95)]
    assert [r.trial for r in top_k(records, 3)] == [2, 1]
    assert [r.trial for r in top_k(records, 3, key="reward")] == [3, 1, 2]
