"""Faults a long search meets; none of them loses a finished trial."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluators.latency import read_intervals
from tests.cli import FAST, read_trials, run_cli


def blocks(trials: list[dict]) -> list[list[str]]:
    return [t["arch"]["blocks"] for t in trials]


def final_strategy_state(run_dir: Path) -> dict:
    """The strategy's state in the search's last NNI checkpoint."""
    import torch

    (checkpoint,) = run_dir.glob("nni/*/checkpoint/state.ckpt*")
    return torch.load(checkpoint, weights_only=False)["strategy"]


def controller_history(word: str, state: dict) -> tuple:
    if word.startswith("ppo_rnn"):
        return [tuple(k) for k, _ in state["history"]], [r for _, r in state["history"]], len(state["update_stats"])
    return [(dict(i.x), i.y) for i in state["population"]], state["individual_counter"]


def answer_of(stdout: str) -> str:
    (line,) = [line for line in stdout.splitlines() if line.startswith("answer for T")]
    return line


STRATEGIES = {"ppo_rnn": ["strategy=ppo_rnn", "strategy.seed=0", "strategy.batch_size=2"],
              "ppo_rnn_short": ["strategy=ppo_rnn_short", "strategy.seed=0", "strategy.batch_size=2",
                                "strategy.mutation_share=0.5"],
              "evolution": ["strategy=evolution", "strategy.seed=0", "strategy.population_size=2",
                            "strategy.sample_size=1"]}
TRIALS = 4


@pytest.mark.slow
@pytest.mark.parametrize(("word", "kill_after"), [("ppo_rnn", 1), ("ppo_rnn", 3), ("ppo_rnn_short", 3),
                                                 ("evolution", 2)])
def test_killed_search_resumes_with_exactly_the_controller_history_of_an_unkilled_one(tmp_path, word, kill_after):
    """kill -9 after trial k, resume: the same trials, and the controller ends with the same history and
    update count as a search that was never killed (latencies shared through one cache)."""
    strategy = [*STRATEGIES[word], f"search.max_trials={TRIALS}", f"latency.cache_path={tmp_path / 'shared.sqlite'}"]
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference_dir.mkdir(), killed_dir.mkdir()
    result = run_cli(reference_dir, *strategy)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = read_trials(reference_dir)
    reference_answer = answer_of(result.stdout)

    db = killed_dir / "mlflow.db"
    tracking = ["tracking=mlflow", f"tracking.tracking_uri=sqlite:///{db}"]
    run_dir = killed_dir / "run"
    args = [sys.executable, "-m", "mnas_nni", *FAST, *tracking, f"latency.lock_dir={killed_dir / 'locks'}",
            f"hydra.run.dir={run_dir}", *strategy]
    search = subprocess.Popen(args, cwd=killed_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 300
    while len(read_trials(killed_dir)) < kill_after and time.monotonic() < deadline and search.poll() is None:
        time.sleep(0.05)
    os.killpg(search.pid, signal.SIGKILL)
    search.wait()
    finished_before_kill = read_trials(killed_dir)
    assert kill_after <= len(finished_before_kill) < TRIALS

    result = run_cli(killed_dir, *tracking, f"search.resume={run_dir}", *strategy)
    assert result.returncode == 0, result.stderr[-3000:]
    assert answer_of(result.stdout) == reference_answer  # the search's answer for T is the same
    trials = read_trials(killed_dir)
    assert [t["trial"] for t in trials] == list(range(1, TRIALS + 1))  # nothing lost, nothing run twice
    assert trials[: len(finished_before_kill)] == finished_before_kill
    assert blocks(trials) == blocks(reference)
    assert controller_history(word, final_strategy_state(run_dir)) == \
        controller_history(word, final_strategy_state(reference_dir / "run"))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("mnas-nni").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == TRIALS
    assert parents[0].data.tags.get("answer_trial") == reference_answer.split("trial ")[1].split(",")[0]
    if word.startswith("ppo_rnn"):  # no controller update was logged twice
        steps = [m.step for m in client.get_metric_history(parents[0].info.run_id, "controller/policy_loss")]
        assert steps and sorted(steps) == list(range(TRIALS // 2))


def test_resume_without_a_checkpoint_is_one_line(tmp_path):
    result = run_cli(tmp_path, f"search.resume={tmp_path / 'nowhere'}", timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "search.resume" in lines[0]


def test_a_trial_past_its_timeout_is_stopped_and_recorded(tmp_path):
    result = run_cli(tmp_path, "strategy=random", "search.max_trials=2", "search.trial_timeout_s=2",
                     "train.epochs=500", "train.limit_train_batches=null")
    assert result.returncode == 2, result.stderr[-3000:]  # every trial failed
    trials = read_trials(tmp_path)
    assert len(trials) == 2
    for trial in trials:
        assert trial["status"] == "failed" and "trial_timeout_s" in trial["error"]
        assert trial["duration_seconds"] < 30


def test_device_timeout_is_retried_then_the_trial_fails_with_the_reason(tmp_path):
    result = run_cli(tmp_path, "strategy=random", "search.max_trials=1", "device.timeout_s=0.5", "device.runs=1000000",
                     "latency.retries=1")
    assert result.returncode == 2, result.stderr[-3000:]  # its only trial failed
    (trial,) = read_trials(tmp_path)
    assert trial["status"] == "failed"
    assert "gave up after 2 attempts" in trial["error"] and "DeviceTimeoutError" in trial["error"]


@pytest.mark.slow
def test_two_searches_sharing_one_device_never_measure_at_once(tmp_path):
    intervals = tmp_path / "intervals.log"
    searches = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        args = [sys.executable, "-m", "mnas_nni", *FAST, "strategy=random", "search.max_trials=3",
                f"latency.cache_path={folder / 'latency.sqlite'}", f"latency.lock_dir={tmp_path / 'locks'}",
                f"latency.interval_log={intervals}", f"hydra.run.dir={folder / 'run'}"]
        searches.append(subprocess.Popen(args, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         text=True))
    for search in searches:
        _, err = search.communicate(timeout=600)
        assert search.returncode == 0, err[-3000:]
    held = sorted((start, end, pid) for _, start, end, pid in read_intervals(intervals))
    assert len(held) >= 6 and len({pid for *_, pid in held}) >= 2
    for (_, end, _), (start, _, _) in itertools.pairwise(held):
        assert end <= start, "two searches measured on one device at once"


def test_finished_trials_survive_a_crash_mid_line(tmp_path):
    from mnas_nni.run.records import TrialLog, TrialRecord

    log = TrialLog(tmp_path / "trials.jsonl")
    log.append(TrialRecord(trial=1, status="succeeded", reward=0.5))
    with open(log.path, "a") as f:
        f.write('{"trial": 2, "status": "succ')  # the process died while writing
    assert [r.trial for r in log.read()] == [1]


def test_unreachable_ssh_device_and_absent_phone_fail_before_training(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    for overrides in (["device=ssh", "device.host=127.0.0.1", f"device.port={closed_port}", "device.retries=0",
                       "device.connect_timeout_s=2"],
                      ["device=adb"]):
        started = time.monotonic()
        result = run_cli(tmp_path, *overrides, timeout=120, env={"ANDROID_ADB_SERVER_PORT": str(closed_port)})
        assert result.returncode == 2, (overrides, result.stderr[-2000:])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert not Path(tmp_path / "run" / "trials.jsonl").exists()
        assert time.monotonic() - started < 60
    from evaluators.latency.adb import AdbutilsTransport

    adb = AdbutilsTransport()._adbutils.adb_path()  # stop the adb server the probe started on its private port
    subprocess.run([adb, "-P", str(closed_port), "kill-server"], capture_output=True, timeout=30, check=False)


def test_nni_strategy_checkpoints_with_numpy_state_load_back(tmp_path):
    import numpy as np
    from nni.nas.strategy import RegularizedEvolution
    from nni.nas.utils.serializer import get_default_serializer

    from mnas_nni import nni_adapter

    nni_adapter.load_own_checkpoints_fully()
    strategy = RegularizedEvolution(population_size=4, sample_size=2, seed=0)
    state = {"strategy": strategy.state_dict(), "numpy": np.arange(3)}
    get_default_serializer().save(state, tmp_path / "state.ckpt")
    loaded = get_default_serializer().load(tmp_path / "state.ckpt")
    assert list(loaded["numpy"]) == [0, 1, 2]
    RegularizedEvolution(population_size=4, sample_size=2).load_state_dict(loaded["strategy"])
