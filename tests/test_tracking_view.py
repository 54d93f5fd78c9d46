"""The experiment tags MLflow's UI reads to show a search (model training, the runs view the printed link names)
and the links; the browser check is tests/test_mlflow_ui.py."""

from __future__ import annotations

import json

import pytest

from mnas_nni.tracking import MlflowTracker
from mnas_nni.tracking.parent_run import experiment_of
from mnas_nni.tracking.support import EXPERIMENT_KIND, VIEW_TAG_PREFIX, run_link, runs_view, ui_link


def test_the_runs_view_shows_the_trials_metrics_best_reward_first():
    key, value = runs_view()
    state = json.loads(value)
    assert state["selectedColumns"] == ["metrics.`reward`", "metrics.`accuracy`", "metrics.`latency_ms`"]
    assert state["orderByKey"] == "metrics.`reward`" and state["orderByAsc"] is False
    assert runs_view() == (key, value) and key.startswith("mnas-nni-")  # stable: printed links keep working


def test_links_open_the_model_training_view():
    _, link = ui_link("http://user:pw@host:5000/", "7", view="mnas-nni-abc")
    assert link == "http://user:***@host:5000/#/experiments/7/runs?workflowType=machine_learning" \
                   "&viewStateShareKey=mnas-nni-abc"
    assert run_link("sqlite:////tmp/x/mlflow.db", "7", "r1", port=5001) == \
        "http://127.0.0.1:5001/#/experiments/7/runs/r1?workflowType=machine_learning"


@pytest.mark.parametrize("can_tag", [True, False])
def test_an_existing_experiment_gets_the_tags_or_a_link_without_the_view(tmp_path, monkeypatch, can_tag):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = MlflowClient(uri).create_experiment("old")  # made before the tags existed
    tracker = MlflowTracker(tracking_uri=uri, experiment_name="old")
    tracker.client = MlflowClient(uri)
    if not can_tag:
        def refuse(*args, **kwargs):
            raise PermissionError("read-only")
        monkeypatch.setattr(tracker.client, "set_experiment_tag", refuse)
    tracker.experiment_id, tracker.view_key = experiment_of(tracker.client, "old", uri)
    assert tracker.experiment_id == experiment_id
    tags = MlflowClient(uri).get_experiment(experiment_id).tags
    key, value = runs_view()
    link = tracker.ui_hint().splitlines()[-1]
    if can_tag:
        assert tags[EXPERIMENT_KIND] == "custom_model_development" and tags[VIEW_TAG_PREFIX + key] == value
        assert link.endswith(f"&viewStateShareKey={key}")
    else:  # a link naming a view the experiment lacks would open MLflow's error, then the GenAI view
        assert VIEW_TAG_PREFIX + key not in tags and link.endswith("?workflowType=machine_learning")
