"""Turns NNI's model events into trial records, in completion order, for the observers."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from mnas_nni.run.observers import SearchObserver
from mnas_nni.run.records import FAILED, SUCCEEDED, TrialRecord
from mnas_nni.run.stopping import signals_deferred


class TrialRecorder:
    """Engine callback target: one record per finished model, numbered from `first_trial`."""

    def __init__(self, observer: SearchObserver, first_trial: int = 1, on_recorded=None):
        self.observer = observer
        self.next_trial = first_trial
        self.on_recorded = on_recorded  # e.g. checkpoint the strategy
        self.last_ok: bool | None = None  # the last recorded trial's outcome (None before the first)
        self._recorded: set[int] = set()
        self._ended_without_result: dict[int, tuple[Any, str]] = {}
        self._lock = threading.Lock()

    def on_final_metric(self, event: Any) -> None:
        metric = event.metric if isinstance(event.metric, dict) else {"default": event.metric}
        with self._lock:
            self._ended_without_result.pop(id(event.model), None)
        self._record(event.model, metric)

    def on_training_end(self, event: Any) -> None:
        # The training service may deliver a trial's end before its final metric; hold it until the search ends.
        with self._lock:
            if id(event.model) not in self._recorded:
                self._ended_without_result[id(event.model)] = (event.model, getattr(event.status, "value", event.status))

    def flush(self) -> None:
        """Record every model that ended and never reported (killed on timeout, crashed, machine lost) as failed."""
        with self._lock:
            pending = list(self._ended_without_result.values())
            self._ended_without_result.clear()
        for model, status in pending:
            self._record(model, {"status": FAILED, "error": f"trial ended ({status}) without reporting a result"})

    def _record(self, model: Any, metric: dict[str, Any]) -> None:
        with self._lock:
            if id(model) in self._recorded:
                return
            self._recorded.add(id(model))
            if metric.get("replayed_trial"):  # recorded before the search was killed; already in the log
                return
            record = record_from_metric(self.next_trial, metric, dict(getattr(model, "sample", None) or {}))
            self.next_trial += 1
            self.last_ok = record.ok
        with signals_deferred():
            self.observer.on_trial_end(record)
        if self.on_recorded is not None:
            self.on_recorded(record)


def record_from_metric(trial: int, metric: dict[str, Any], sample: dict[str, Any]) -> TrialRecord:
    """The record of trial number `trial` from the final metric `mnas_nni.trial.evaluate_trial` reported."""
    ok = metric.get("status", SUCCEEDED) == SUCCEEDED
    return TrialRecord(
        trial=trial,
        status=metric.get("status", SUCCEEDED),
        arch=metric.get("arch"),
        sample=sample,
        accuracy=metric.get("accuracy"),
        latency_ms=metric.get("latency_ms"),
        reward=metric.get("default") if ok else None,
        params=metric.get("params"),
        macs=metric.get("macs"),
        train_seconds=float(metric.get("train_seconds") or 0.0),
        measure_seconds=float(metric.get("measure_seconds") or 0.0),
        duration_seconds=float(metric.get("duration_seconds") or 0.0),
        error=metric.get("error"),
        latency=metric.get("latency") or {},
        latency_source=metric.get("latency_source"),
        latency_predicted_ms=metric.get("latency_predicted_ms"),
        latency_measured_ms=metric.get("latency_measured_ms"),
        history=metric.get("history") or [],
        nni_trial_id=metric.get("nni_trial_id"),
        evaluator=metric.get("evaluator"),
        finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
