"""A resumed search keeps its own run's config; many searches may start at once against one new store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.cli import FAST, read_trials, run_cli


@pytest.mark.slow
def test_resume_refuses_a_changed_training_setting_and_accepts_a_larger_budget(tmp_path):
    first = run_cli(tmp_path, "strategy=random", "search.max_trials=1")
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "run"

    changed = run_cli(tmp_path, "strategy=random", "search.max_trials=2", f"search.resume={run_dir}",
                      "train.epochs=2")
    assert changed.returncode == 2
    lines = [line for line in changed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "train.epochs" in lines[0] and "resume_override" in lines[0], lines
    assert len(read_trials(tmp_path)) == 1

    # Fewer overrides than the first run: the run's own settings (1 epoch, 3 batches) still hold.
    grown = subprocess.run([sys.executable, "-m", "mnas_nni", "tracking=none", f"search.resume={run_dir}",
                            "search.max_trials=2", f"hydra.run.dir={run_dir}"],
                           capture_output=True, text=True, cwd=tmp_path, check=False,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert grown.returncode == 0, grown.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert [t["trial"] for t in trials] == [1, 2]
    assert all(len(t["history"]) == 1 for t in trials), "the resumed trial trained with the run's 1 epoch"


@pytest.mark.slow
def test_four_searches_started_at_once_share_one_new_store(tmp_path):
    store = tmp_path / "mlflow.db"
    searches = []
    for i in range(4):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        args = [sys.executable, "-m", "mnas_nni", *FAST, "strategy=random", "search.max_trials=1",
                "tracking=mlflow", f"tracking.tracking_uri=sqlite:///{store}", f"hydra.run.dir={folder / 'run'}",
                f"latency.cache_path={folder / 'latency.sqlite'}", f"latency.lock_dir={tmp_path / 'locks'}"]
        searches.append(subprocess.Popen(args, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}))
    for search in searches:
        _, err = search.communicate(timeout=600)
        assert search.returncode == 0, err[-3000:]
    client = MlflowClient(f"sqlite:///{store}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "mnas-nni"]
    runs = client.search_runs([experiment.experiment_id])
    assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 4
    assert all(r.info.status == "FINISHED" for r in runs) and len(runs) == 8


def test_a_secret_masked_inside_a_list_is_taken_from_the_resume_command(tmp_path):
    from mnas_nni.run import resume

    machine = {"host": "10.0.0.2", "ssh_key_file": "/home/me/.ssh/id_ed25519"}
    config = {"search": {"max_trials": 4, "machines": [machine]}, "tracking": {}}
    resume.write_config(tmp_path, {"search": {"max_trials": 4, "machines": [{**machine, "ssh_key_file": "***"}]},
                                   "tracking": {}})
    assert resume.resumed_config(tmp_path, config)["search"]["machines"] == [machine]
    other = {"search": {"max_trials": 4, "machines": [{**machine, "host": "10.0.0.3"}]}, "tracking": {}}
    with pytest.raises(resume.ResumeError, match="search.machines"):
        resume.resumed_config(tmp_path, other)


def test_a_run_saved_before_the_package_was_grouped_resumes_with_its_tracker(tmp_path):
    # config.resolved.yaml of a run from before mnas_nni/ was grouped names the tracker by its old module path
    from hydra.utils import get_class

    from mnas_nni.plugins import SearchObserver
    from mnas_nni.run import resume

    saved = {"search": {"max_trials": 4}, "tracking": {"_target_": "mnas_nni.observers.SearchObserver"},
             "strategy": {"_target_": "strategies.ppo_rnn.PpoRnn"}}
    today = {"search": {"max_trials": 6}, "tracking": {"_target_": "mnas_nni.plugins.SearchObserver"},
             "strategy": {"_target_": "strategies.ppo_rnn.PpoRnn"}}
    resume.write_config(tmp_path, saved)
    merged = resume.resumed_config(tmp_path, today, given=["search.max_trials"])
    assert merged["tracking"]["_target_"] == "mnas_nni.run.observers.SearchObserver"  # the run's own tracker
    assert get_class(merged["tracking"]["_target_"]) is SearchObserver
    assert merged["strategy"]["_target_"] == "strategies.ppo_rnn.PpoRnn" and merged["search"]["max_trials"] == 6
