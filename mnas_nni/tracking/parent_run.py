"""A search's parent run in MLflow: the experiment it lives in, the run created for a new search or found and
reopened for a resumed one (with the trial runs it already holds), and the summary it gets at the end.

Plain functions of an `MlflowClient`; the tracker (tracker.py) calls them and decides what a failure means.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnas_nni.run.observers import SearchInfo
from mnas_nni.run.records import TrialRecord, pareto_front, target_answer, top_k
from mnas_nni.tracking.support import (
    VIEW_TAG_PREFIX,
    _is_number,
    device_summary,
    experiment_tags,
    git_commit,
    mask_secrets,
)

log = logging.getLogger(__name__)


def experiment_of(client: Any, name: str, tracking_uri: str) -> tuple[str, str | None]:
    """The id of experiment `name` (created, or restored if deleted) with the tags of MLflow's model-training view
    and runs view set where it may, and the key of the runs view it holds (None: the link names no view)."""
    tags = experiment_tags()  # the model-training view and the runs view the printed link names
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if tracking_uri.startswith("sqlite:///"):
            # Next to the database, not under whatever directory the search happens to run in.
            location = str(Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts")
        present = dict(tags)
        experiment_id = client.create_experiment(name, artifact_location=location, tags=tags)
    else:
        experiment_id, present = experiment.experiment_id, dict(experiment.tags)
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    for key in tags.keys() - present.keys():
        try:  # cosmetic: how the UI shows the runs; a read-only user may not set it
            client.set_experiment_tag(experiment_id, key, tags[key])
            present[key] = tags[key]
        except Exception as err:  # noqa: BLE001
            log.debug("cannot tag experiment %s: %s", experiment_id, err)
    view_key = next((k[len(VIEW_TAG_PREFIX):] for k in tags if k.startswith(VIEW_TAG_PREFIX) and k in present), None)
    return experiment_id, view_key


def create_parent_run(client: Any, experiment_id: str, info: SearchInfo, run_name: str | None) -> str:
    """A new parent run for the search `info` describes, tagged with its run directory (a resume finds it by that)."""
    strategy = str(info.strategy).rsplit(".", 1)[-1]
    name = run_name or f"{strategy} {info.run_dir.parent.name}/{info.run_dir.name}"
    tags = {"run_dir": str(info.run_dir), "strategy": str(info.strategy), "target_ms": f"{info.target_ms:g}",
            "device": device_summary(mask_secrets(info.device or {})), "mnas_nni.role": "search"}
    commit = git_commit(Path.cwd()) or git_commit(Path(__file__).resolve().parent)
    if commit:
        tags["mlflow.source.git.commit"], tags["git_dirty"] = commit[0], str(commit[1]).lower()
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    return run.info.run_id


def search_parent_run(client: Any, experiment_id: str, run_dir: str) -> Any | None:
    """The newest parent run the tracker made for the search in `run_dir` (it tags it `run_dir`), or None."""
    folder = str(run_dir).replace("'", "\\'")
    runs = client.search_runs([experiment_id], f"tags.run_dir = '{folder}'", order_by=["attributes.start_time DESC"],
                              max_results=1)
    return runs[0] if runs else None


@dataclass
class ReopenedRun:
    """A resumed search's parent run, RUNNING again, and the trial runs it holds."""

    run_id: str
    trial_runs: dict[int, str] = field(default_factory=dict)  # trial -> its finished run
    partial: dict[int, str] = field(default_factory=dict)  # trial -> a run a send cut short (still RUNNING)


def reopen_parent_run(client: Any, experiment_id: str, run_dir: Path) -> ReopenedRun | None:
    """The parent run of the search in `run_dir`, set RUNNING again, with its trial runs; None if it has none."""
    run = search_parent_run(client, experiment_id, str(run_dir))
    if run is None:
        return None
    reopened = ReopenedRun(run.info.run_id)
    client.update_run(reopened.run_id, status="RUNNING")
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{reopened.run_id}'",
                                  max_results=50000)
    for child in children:
        trial = child.data.tags.get("trial", "")
        if not trial.isdigit():
            continue
        if child.info.status == "RUNNING":  # a send cut short: replaced by a whole one
            reopened.partial[int(trial)] = child.info.run_id
        else:
            reopened.trial_runs[int(trial)] = child.info.run_id
    return reopened


def search_summary(records: list[TrialRecord], target_ms: float | None
                   ) -> tuple[dict[str, str], list[tuple[str, float, int]]]:
    """The tags and metrics the parent run ends with: the Pareto front, the trial counts, the best trial, and the
    answer for T (the most accurate trial meeting it; its confirmed figures once confirmed)."""
    front = pareto_front(records)
    done = [r for r in records if r.ok]
    tags = {"pareto_trials": ",".join(str(r.trial) for r in front),
            "trials_succeeded": str(len(done)), "trials_failed": str(len(records) - len(done))}
    best = top_k(records, 1)
    if best:
        tags["best_trial"] = str(best[0].trial)
    metrics = []
    answer = target_answer(records, target_ms) if target_ms is not None else None
    if answer is not None:
        tags["answer_trial"] = str(answer.trial)
        metrics = [("answer_accuracy", answer.final_accuracy, 0), ("answer_latency_ms", answer.final_latency_ms, 0)]
    return tags, [m for m in metrics if _is_number(m[1])]
