"""A whole search tracked on a real MLflow server on 127.0.0.1, read back with MlflowClient."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.cli import read_trials, run_cli
from tests.mlflow_server import mlflow_server


def test_three_trial_search_lands_in_mlflow(tmp_path):
    with mlflow_server(tmp_path / "mlflow") as url:
        result = run_cli(tmp_path, "strategy=random", "search.max_trials=3", "tracking=mlflow",
                         f"tracking.tracking_uri={url}", "tracking.experiment_name=e2e")
        assert result.returncode == 0, result.stderr[-3000:]
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("e2e")
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == 1 and len(children) == 3
        parent = parents[0]
        assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
        assert parent.data.params["search.max_trials"] == "3"
        trials = {t["trial"]: t for t in read_trials(tmp_path)}
        for child in children:
            metrics = child.data.metrics
            assert {"accuracy", "latency_ms", "reward", "params", "macs"} <= set(metrics)
            assert child.data.params["block3/kernel"] in ("3", "5")
            assert any(abs(metrics["reward"] - t["reward"]) < 1e-9 for t in trials.values())
            assert "arch.json" in [a.path for a in client.list_artifacts(child.info.run_id)]
            assert len(client.get_metric_history(child.info.run_id, "val_acc")) >= 1  # the training curve
        reports = [a.path for a in client.list_artifacts(parent.info.run_id, "reports")]
        assert "reports/pareto.png" in reports and "reports/reward.png" in reports
        pareto = client.download_artifacts(parent.info.run_id, "reports/pareto.png", str(tmp_path))
        assert Path(pareto).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_tracker_lost_mid_search_gets_every_trial_when_it_is_back(tmp_path):
    import subprocess
    import time
    from urllib.parse import urlsplit

    from tests.cli import cli_args, cli_env

    store = tmp_path / "mlflow"
    with mlflow_server(store) as url:
        search = subprocess.Popen(cli_args(tmp_path, "strategy=random", "search.max_trials=4", "tracking=mlflow",
                                           f"tracking.tracking_uri={url}", "tracking.experiment_name=lost",
                                           "tracking.retries=1"),
                                  cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        deadline = time.monotonic() + 300
        while len(read_trials(tmp_path)) < 1 and search.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    # The server is gone after trial 1: the search finishes, says so once, and counts what is missing.
    output = "".join(search.communicate(timeout=600))
    assert search.returncode == 0, output[-3000:]
    assert len(read_trials(tmp_path)) == 4
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert len(warnings) == 2 and all(len(line) < 400 for line in warnings), warnings
    assert "stopped answering" in warnings[0] and "Connection refused" in warnings[0], warnings
    assert "missing 3 trial run(s)" in warnings[1] and "search.resume=" in warnings[1], warnings

    with mlflow_server(store, port=urlsplit(url).port):  # back, same store: the resume sends what it missed
        resumed = run_cli(tmp_path, f"search.resume={tmp_path / 'run'}", fast=False)  # as the run was
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        client = MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name("lost").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted(int(r.data.tags["trial"]) for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert children == [1, 2, 3, 4]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
