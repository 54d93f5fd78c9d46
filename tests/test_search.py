"""End-to-end searches through the real CLI: NNI engine, proxy training on digits, measured latency, reward."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from evaluators.latency import read_intervals
from tests.cli import read_trials, run_cli

RECORD_KEYS = {"trial", "arch", "status", "accuracy", "latency_ms", "reward", "params", "macs", "train_seconds",
               "measure_seconds", "sample", "error"}


def assert_complete(trial: dict) -> None:
    assert trial["status"] == "succeeded", trial["error"]
    assert 0 < trial["accuracy"] <= 1
    assert trial["latency_ms"] > 0
    assert trial["params"] > 0 and trial["macs"] > 0
    assert trial["reward"] > 0
    assert trial["train_seconds"] > 0 and trial["measure_seconds"] > 0
    assert trial["arch"]["blocks"] and len(trial["sample"]) == 42


def test_random_search_records_every_trial_and_prints_top3(tmp_path):
    result = run_cli(tmp_path, "strategy=random", "search.max_trials=3")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert [t["trial"] for t in trials] == [1, 2, 3]
    for trial in trials:
        assert RECORD_KEYS <= set(trial)
        assert_complete(trial)
    assert "Top 3" in result.stdout
    frame = pd.read_json(tmp_path / "run" / "trials.jsonl", lines=True)
    assert len(frame) == 3 and frame["reward"].notna().all()


def test_evolution_runs(tmp_path):
    result = run_cli(tmp_path, "strategy=evolution", "search.max_trials=4")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert len(trials) == 4
    for trial in trials:
        assert_complete(trial)


def test_failing_trials_are_recorded_with_their_reason_and_the_search_goes_on(tmp_path):
    result = run_cli(tmp_path, "strategy=random", "search.max_trials=2", "train.optimizer=sgd", "train.lr=1e30",
                     "search.failure_reward=-1")
    assert result.returncode == 2, result.stderr[-3000:]  # a search whose every trial failed never exits 0
    assert "every trial failed" in result.stderr
    output = (result.stdout + result.stderr).strip().splitlines()
    assert len(output) < 20 and "Traceback" not in result.stdout + result.stderr, "\n".join(output)
    trials = read_trials(tmp_path)
    assert len(trials) == 2
    for trial in trials:
        assert trial["status"] == "failed"
        assert "non-finite loss" in trial["error"]
        assert trial["arch"]["blocks"]
    run_log = (tmp_path / "run" / "__main__.log").read_text()  # the tracebacks went to the run's own log file
    assert run_log.count("trial failed (TrialError") == 2 and "Traceback (most recent call last)" in run_log


@pytest.mark.slow
def test_local_training_service_runs_concurrent_trials_without_overlapping_measurements(tmp_path):
    intervals = tmp_path / "intervals.log"
    result = run_cli(tmp_path, "strategy=random", "search.max_trials=4", "search.execution=local",
                     "search.concurrency=2", f"search.port={_free_port()}", f"latency.interval_log={intervals}")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert len(trials) == 4
    for trial in trials:
        assert_complete(trial)
    held = sorted((start, end, pid) for _, start, end, pid in read_intervals(intervals))
    assert len(held) >= 4 and len({pid for *_, pid in held}) >= 2  # several trial processes measured
    for (_, end, _), (start, _, _) in itertools.pairwise(held):
        assert end <= start, "two measurements overlapped on one device"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
