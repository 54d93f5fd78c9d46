"""Stopping a search on purpose: the first SIGINT/SIGTERM stops it cleanly (exit 130/143, summary, MLflow parent
KILLED, checkpoint of the last finished trial), and a resume ends with exactly max_trials trials, none twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.cli import FAST, read_trials, run_cli
from tests.mlflow_server import free_port

ROOT = Path(__file__).resolve().parent.parent
MAX_TRIALS = 3


def start_search(tmp_path: Path, *overrides: str, own_session: bool = False) -> subprocess.Popen:
    args = [sys.executable, "-m", "mnas_nni", *FAST, "strategy=random", f"search.max_trials={MAX_TRIALS}",
            f"latency.cache_path={tmp_path / 'latency.sqlite'}", f"latency.lock_dir={tmp_path / 'locks'}",
            f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    return subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)},
                            start_new_session=own_session)  # a terminal's Ctrl-C reaches the whole group


def wait_for_trials(tmp_path: Path, count: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(read_trials(tmp_path)) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the search recorded too few trials in time"
        time.sleep(0.2)


def parent_status(store: Path) -> str:
    client = MlflowClient(f"sqlite:///{store}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "mnas-nni"]
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`mnas_nni.role` = 'search'")
    return parent.info.status


def assert_stopped_then_resumed(tmp_path: Path, process: subprocess.Popen, signum: int, store: Path,
                                *overrides: str) -> None:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, err[-3000:]
    assert f"search.resume={tmp_path / 'run'}" in err and "Traceback" not in err
    assert "trials," in out  # the summary was printed
    recorded = read_trials(tmp_path)
    assert 1 <= len(recorded) < MAX_TRIALS and all(r["status"] == "succeeded" for r in recorded)
    state = json.loads((tmp_path / "run" / "resume.json").read_text())
    assert state["checkpointed_trials"] <= len(recorded)
    assert parent_status(store) == "KILLED"
    resumed = run_cli(tmp_path, "strategy=random", f"search.max_trials={MAX_TRIALS}",
                      f"search.resume={tmp_path / 'run'}", "tracking=mlflow", f"tracking.tracking_uri=sqlite:///{store}",
                      *overrides)  # the run's own settings: a resume refuses others
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert [t["trial"] for t in trials] == list(range(1, MAX_TRIALS + 1))
    assert len({json.dumps(t["arch"], sort_keys=True) for t in trials}) == MAX_TRIALS, "an architecture ran twice"
    assert all(t["status"] == "succeeded" for t in trials)
    assert parent_status(store) == "FINISHED"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_training_stops_the_search_and_resume_finishes_it(tmp_path, signum):
    store = tmp_path / "mlflow.db"
    # Long enough trials that the signal lands inside the second one.
    longer = ("train.epochs=2", "train.limit_train_batches=null")
    process = start_search(tmp_path, "tracking=mlflow", f"tracking.tracking_uri=sqlite:///{store}", *longer)
    wait_for_trials(tmp_path, 1, process)
    time.sleep(2.0)
    process.send_signal(signum)
    assert_stopped_then_resumed(tmp_path, process, signum, store, *longer)


@pytest.mark.slow
def test_sigint_between_trials_stops_after_the_recorded_trial(tmp_path):
    store = tmp_path / "mlflow.db"
    process = start_search(tmp_path, "tracking=mlflow", "tracking._target_=tests.signalling_tracker.SignallingTracker",
                           "+tracking.signal_after_trial=1", f"tracking.tracking_uri=sqlite:///{store}")
    assert_stopped_then_resumed(tmp_path, process, signal.SIGINT, store)


@pytest.mark.slow
def test_ctrl_c_stops_a_local_training_service_search_and_resume_finishes_it(tmp_path):
    """NNI's local training service: Ctrl-C reaches the node manager and the trial processes too (one process
    group); none is left behind, and the resume does not wait for the trial the stop cut short."""
    store = tmp_path / "mlflow.db"
    local = ("search.execution=local", "train.epochs=2", "train.limit_train_batches=null")
    process = start_search(tmp_path, "tracking=mlflow", f"tracking.tracking_uri=sqlite:///{store}", *local,
                           f"search.port={free_port()}", own_session=True)
    wait_for_trials(tmp_path, 1, process)
    time.sleep(2.0)
    os.killpg(process.pid, signal.SIGINT)
    assert_stopped_then_resumed(tmp_path, process, signal.SIGINT, store, *local, f"search.port={free_port()}")
    time.sleep(1.0)
    leftover = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True,
                              check=False).stdout.split()
    assert leftover == [], f"processes of the stopped search are still running: {leftover}"
