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
