"""NNI's trial database (`<working dir>/<experiment id>/db/nni.sqlite`, written by its node manager), read and
mended before a resume: the NNI workarounds that need it. Sequential execution has no such database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


def database_path(working_dir: Path | str, experiment_id: str) -> Path:
    return Path(working_dir) / experiment_id / "db" / "nni.sqlite"


def prepare_trial_database(experiment, trials_left: int) -> list[str]:
    """Two things NNI's node manager reads from its database on resume are wrong for us; both are mended
    before the resume. Returns the removed job ids.

    - It re-submits every trial job the database still shows WAITING or RUNNING
      (`NNIManager.addRecoveredTrialJob`), but the Python engine of the resumed process has no model for that
      job's parameter id: the job takes a concurrency slot that never frees and the search hangs. Those jobs
      were cut short by the stop and our strategy runs their architectures again, so they are removed.
    - It stops submitting once the database holds `maxTrialNumber` jobs, taken from the stored experiment
      profile (so a resume that grows `search.max_trials` would not reach it). A job can also end after the
      stop began - SUCCEEDED in the database, its result never delivered to the strategy - and it would count
      against the budget of a strategy that never saw it: the search would end a trial short. So the newest
      profile's `maxTrialNumber` becomes the jobs kept plus `trials_left` (what the checkpointed strategy
      still owes the budget)."""
    db = database_path(experiment.config.experiment_working_directory, experiment.id)
    if not db.is_file():
        return []
    with sqlite3.connect(db) as connection:
        latest = _latest_status(connection)
        unfinished = [(job,) for job, status in latest.items() if status in ("WAITING", "RUNNING")]
        connection.executemany("delete from TrialJobEvent where trialJobId = ?", unfinished)
        connection.executemany("delete from MetricData where trialJobId = ?", unfinished)
        newest = connection.execute("select rowid, params from ExperimentProfile where id = ? "
                                    "order by revision desc limit 1", (experiment.id,)).fetchone()
        if newest is not None:
            params = json.loads(newest[1])
            params["maxTrialNumber"] = len(latest) - len(unfinished) + max(trials_left, 0)
            connection.execute("update ExperimentProfile set params = ? where rowid = ?",
                               (json.dumps(params), newest[0]))
    return [job for (job,) in unfinished]


def results_the_stop_missed(working_dir: Path | str, experiment_id: str | None,
                            recorded_jobs: set[str]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Final results NNI's node manager stored for trial jobs whose result never reached our strategy: once a
    stop begins, NNI's Python engine shuts its command channel while a trial may still report. Successes only,
    each as (final metric, the model's sample), in the order they were stored; replays of recorded results and
    jobs in `recorded_jobs` (the `nni_trial_id`s of trials.jsonl) are left out."""
    db = database_path(working_dir, experiment_id) if experiment_id else None
    if db is None or not db.is_file():
        return []
    missed = []
    with sqlite3.connect(db) as connection:
        samples = _samples(connection)
        for job, data in connection.execute("select trialJobId, data from MetricData where type = 'FINAL' "
                                            "order by rowid"):
            metric = _decode(data)
            if job in recorded_jobs or not isinstance(metric, dict) or metric.get("replayed_trial"):
                continue
            if metric.get("status", "succeeded") != "succeeded":  # a failure set aside to run again stays so
                continue
            missed.append(({**metric, "nni_trial_id": job}, samples.get(job, {})))
    return missed


def _latest_status(connection: sqlite3.Connection) -> dict[str, str]:
    latest: dict[str, str] = {}
    for job, event in connection.execute("select trialJobId, event from TrialJobEvent order by rowid"):
        if job and event != "ADD_HYPERPARAMETER":  # NNI's replay: that event keeps the status
            latest[job] = {"ADD_CUSTOMIZED": "WAITING", "USER_TO_CANCEL": "USER_CANCELED"}.get(event, event)
    return latest


def _samples(connection: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """A job's sampled decisions, from the frozen model NNI stored with its first event that has one."""
    samples: dict[str, dict[str, Any]] = {}
    for job, data in connection.execute("select trialJobId, data from TrialJobEvent where data is not null "
                                        "order by rowid"):
        decoded = _decode(data) if job not in samples else None
        parameters = decoded.get("parameters") if isinstance(decoded, dict) else None
        if isinstance(parameters, dict) and isinstance(parameters.get("sample"), dict):
            samples[job] = parameters["sample"]
    return samples


def _decode(data: str | None) -> Any:
    """NNI stores a final metric as JSON text of the JSON text the trial reported; events as JSON once."""
    try:
        value = json.loads(data) if data else None
        return json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return None
