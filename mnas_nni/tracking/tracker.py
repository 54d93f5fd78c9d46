"""MLflow tracking of a search: one parent run per search, one nested child run per trial.

Parent run: the composed config as params (secrets masked) and as `config.yaml`, git commit, device, strategy,
target T, controller statistics as step metrics, and the reports (`reports/pareto.png`, ..., and
`reports/controller.png`: each controller update's batch reward) refreshed as the search goes. Child runs: the
sampled decisions and block strings as params, `arch.json`, the trial's metrics and per-epoch training curves;
failed trials end FAILED with the reason as a tag. Finding, creating and reopening the parent run, and its
summary at the end, are parent_run.py's.

Every call names its run id explicitly (`MlflowClient`), so trials may be recorded from any callback or
thread. Only `on_search_start` may raise (an unreachable server stops the search before training). A tracker
that stops answering later is said once; the trials it misses wait (they are in trials.jsonl) and are sent
when it answers again - at the latest when the search is resumed - and the end says how many are missing.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mnas_core.errors import ConfigError
from mnas_core.retry import retry
from mnas_nni.run.observers import SearchInfo, SearchObserver
from mnas_nni.run.records import TrialRecord, load_records
from mnas_nni.run.records import top_k as best_by
from mnas_nni.tracking.parent_run import create_parent_run, experiment_of, reopen_parent_run, search_summary
from mnas_nni.tracking.support import (
    MAX_TAG_LENGTH,
    METRIC_BATCH,
    PARAM_BATCH,
    _is_client_error,
    _is_number,
    _truncate,
    arch_params,
    check_reachable,
    flatten_params,
    mask_secrets,
    redact_uri,
    resolve_tracking_uri,
    run_link,
    store_creation_lock,
    trial_metrics,
    ui_link,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class _GaveUp(Exception):
    """An MLflow call still failed after every retry (or was rejected: `rejected`); the current hook stops, the
    search goes on."""

    def __init__(self, message: str, rejected: bool = False) -> None:
        super().__init__(message)
        self.rejected = rejected


# ---------------------------------------------------------------- the observer

class MlflowTracker(SearchObserver):
    """Records a search in MLflow; configured by `conf/tracking/mlflow.yaml`.

    tracking_uri: None = $MLFLOW_TRACKING_URI or `sqlite:///<cwd>/mlflow.db` (what `mlflow ui` opens there).
    retries: extra tries of each MLflow call after a failure (with backoff) before it is dropped with a warning.
    log_curves: per-epoch training curves as step metrics of each trial.
    report_every: refresh the parent's reports after this many trials (0 = only at the end).
    top_k: rows of the top-k report.
    """

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = "mnas-nni",
                 run_name: str | None = None, retries: int = 3, log_curves: bool = True,
                 report_every: int = 1, top_k: int = 10):
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.retries = max(0, int(retries))
        self.log_curves = log_curves
        self.report_every = int(report_every)
        self.top_k = int(top_k)
        self.client: Any = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.view_key: str | None = None  # the runs view (`runs_view`) the experiment holds: the link names it
        self.trial_runs: dict[int, str] = {}  # trial -> its run id
        self.target_ms: float | None = None
        self.run_dir: Path | None = None
        self.records: list[TrialRecord] = []
        self.batch_rewards: list[float] = []  # the mean reward of each controller update's batch (reports/controller.png)
        self.logged_trials: set[int] = set()
        self.pending: list[TrialRecord] = []  # finished trials not yet in MLflow, oldest first
        self.behind = False  # the tracker stopped answering; trials wait in `pending`
        self._partial: dict[int, str] = {}  # trial -> a child run a failed send left half-written
        self._since_report = 0
        self._lock = threading.RLock()
        self._finished = False

    # ----- plumbing

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def reason(err: BaseException) -> str:
            text = str(err).splitlines()[0] if str(err) else repr(err)
            errno_text = re.search(r"\[Errno -?\d+\][^\"'()]*", text)  # urllib3's wrapping says it 3 times
            return redact_uri(errno_text.group(0).strip() if errno_text else text[:200])

        def note(err: BaseException, attempt: int, delay: float) -> None:
            log.debug("MLflow tracking: %s failed (%s); retry %d of %d in %.1f s", what, reason(err), attempt,
                      self.retries, delay)

        try:  # any MLflow/network fault is retried, then dropped; a request MLflow rejected is dropped at once
            return retry(lambda: fn(*args, **kwargs), retries=self.retries, retry_on=Exception, delay_s=0.5,
                         max_delay_s=5.0, give_up=_is_client_error, on_retry=note)
        except Exception as err:
            raise _GaveUp(f"{what}: {reason(err)}", rejected=_is_client_error(err)) from err

    def _guarded(self, hook: str, body: Callable[[], None]) -> None:
        """Run a hook body under the lock; a fault ends the hook, never the search. A tracker that stops
        answering is said once (`behind`); a request it rejected is one warning."""
        if self.client is None or self.parent_run_id is None:
            return
        with self._lock:
            if self.behind and not self._answers():
                return
            try:
                body()
            except _GaveUp as err:
                if err.rejected:
                    log.warning("MLflow tracking (%s) rejected: %s", hook, err)
                    return
                if not self.behind:
                    log.warning("MLflow tracking at %s stopped answering (%s: %s); trials wait in trials.jsonl and "
                                "are sent when it answers again", redact_uri(self.tracking_uri), hook, err)
                self.behind = True
            except Exception as err:  # noqa: BLE001 - tracking must never stop a search
                log.warning("MLflow tracking (%s) failed: %s", hook, redact_uri(str(err)))

    def _answers(self) -> bool:
        """One quick look whether a server that stopped answering is back (a store that is not a server: try)."""
        try:
            check_reachable(self.tracking_uri, timeout_s=2.0)
        except ConfigError:
            return False
        return True

    def _log_batch(self, run_id: str, params: dict[str, str] | None = None,
                   metrics: Iterable[tuple[str, float, int]] = (), tags: dict[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        param_list = [Param(k, v) for k, v in (params or {}).items()]
        for start in range(0, len(param_list), PARAM_BATCH):
            self._call("log params", self.client.log_batch, run_id, params=param_list[start:start + PARAM_BATCH])
        metric_list = [Metric(k, v, now, step) for k, v, step in metrics]
        for start in range(0, len(metric_list), METRIC_BATCH):
            self._call("log metrics", self.client.log_batch, run_id, metrics=metric_list[start:start + METRIC_BATCH])
        tag_list = [RunTag(k, _truncate(redact_uri(str(v)), MAX_TAG_LENGTH)) for k, v in (tags or {}).items()]
        if tag_list:
            self._call("set tags", self.client.log_batch, run_id, tags=tag_list)

    # ----- search start

    def on_search_start(self, info: SearchInfo) -> None:
        from mlflow import MlflowClient

        self.target_ms, self.run_dir = info.target_ms, Path(info.run_dir)
        if self.tracking_uri.startswith(("http://", "https://")):
            # MLflow's own defaults retry a dead server for minutes with 120 s timeouts; ours are `retries`.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
            # Without this MLflow prints a "View run" link to stdout for every trial run it closes.
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars inside ours
        check_reachable(self.tracking_uri)
        # A new SQLite store logs its table migrations at INFO, and mlflow's SQLAlchemy mappers warn about a
        # deprecated loader on every start; neither is the user's business.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message=r"The ``noload`` loader strategy is deprecated")
        try:
            with store_creation_lock(self.tracking_uri):
                self.client = MlflowClient(self.tracking_uri)
                self.experiment_id, self.view_key = experiment_of(self.client, self.experiment_name,
                                                                  self.tracking_uri)
            self.parent_run_id = self._resume_parent(info) if info.resumed else None
            if self.parent_run_id is None:
                self.parent_run_id = create_parent_run(self.client, self.experiment_id, info, self.run_name)
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - one clear line instead of a stack trace from deep in MLflow
            reason = redact_uri(str(err).splitlines()[0] if str(err) else type(err).__name__)
            if "_alembic_tmp" in str(err):
                store = self.tracking_uri[len("sqlite:///"):]
                raise ConfigError(f"the MLflow store {store} was left half-migrated by an interrupted start "
                                  f"({reason}); move it aside (mv {store} {store}.damaged) to start a new one, or "
                                  "set tracking.tracking_uri to another store") from None
            raise ConfigError(f"MLflow tracking at {redact_uri(self.tracking_uri)} cannot start ({reason}); "
                              "fix tracking.tracking_uri or set tracking=none") from None
        log.info("MLflow: experiment %r (id %s), run %s at %s", self.experiment_name, self.experiment_id,
                 self.parent_run_id, redact_uri(self.tracking_uri))
        self._guarded("search start", lambda: self._log_search_config(info))
        if self.pending:
            count = len(self.pending)
            self._guarded("catch-up", self._send_pending)
            log.info("MLflow: %d trial run(s) missing from the tracker were sent", count - len(self.pending))

    def ui_hint(self) -> str | None:
        """Lines for the terminal: how to open this search in the MLflow UI, and its best trial's page once known."""
        if self.experiment_id is None:
            return None
        serve, link = ui_link(self.tracking_uri, self.experiment_id, view=self.view_key)
        lines = ([f"MLflow: {serve}"] if serve else []) + [f"MLflow runs: {link}"]
        best = best_by(self.records, 1)
        if best and best[0].trial in self.trial_runs:
            page = run_link(self.tracking_uri, self.experiment_id, self.trial_runs[best[0].trial])
            lines.append(f"MLflow best trial {best[0].trial}: {page}")
        return "\n".join(lines)

    def _resume_parent(self, info: SearchInfo) -> str | None:
        """The parent run of the same run directory, reopened, with the trials it already holds."""
        reopened = reopen_parent_run(self.client, self.experiment_id, info.run_dir)
        if reopened is None:
            return None
        self._partial.update(reopened.partial)
        self.trial_runs.update(reopened.trial_runs)
        self.logged_trials.update(reopened.trial_runs)
        self.records = load_records(info.run_dir / "trials.jsonl")
        # Trials the tracker missed (it was down, or the search was killed first) are sent now.
        self.pending = [r for r in self.records if r.trial not in self.logged_trials]
        return reopened.run_id

    def _log_search_config(self, info: SearchInfo) -> None:
        config = info.config or yaml.safe_load(info.config_yaml or "") or {}
        masked = mask_secrets(config)
        params = flatten_params(config)
        params.update(flatten_params(info.device or {}, "device/"))
        params["search/decisions"] = str(len(info.decisions))
        if info.resumed:
            params = {}  # already logged by the first attempt (params are immutable)
        self._log_batch(self.parent_run_id, params=params)
        self._call("log config.yaml", self.client.log_text, self.parent_run_id,
                   yaml.safe_dump(masked, sort_keys=False, default_flow_style=False), "config.yaml")
        self._call("log device.json", self.client.log_dict, self.parent_run_id, mask_secrets(info.device or {}),
                   "device.json")
        if info.decisions:
            self._call("log decisions.json", self.client.log_dict, self.parent_run_id, info.decisions,
                       "decisions.json")

    # ----- trials

    def on_trial_end(self, record: TrialRecord) -> None:
        self.records = [r for r in self.records if r.trial != record.trial] + [record]
        self.pending.append(record)
        self._guarded(f"trial {record.trial}", self._send_pending)

    def _send_pending(self) -> None:
        """Every waiting trial, oldest first; one that fails stays first in line."""
        caught_up = self.behind and bool(self.pending)
        while self.pending:
            try:
                self._log_trial(self.pending[0])
            except _GaveUp as err:
                if not err.rejected:
                    raise
                log.warning("MLflow tracking (trial %d) rejected: %s", self.pending[0].trial, err)
            self.pending.pop(0)
        if self.behind:
            self.behind = False
            if caught_up:
                log.warning("MLflow tracking answers again; the trials it missed were sent")

    def _log_trial(self, record: TrialRecord) -> None:
        if record.trial in self.logged_trials:
            return
        if record.trial in self._partial:  # a send cut short: its half-written run goes, a whole one replaces it
            self._call("delete a half-sent trial run", self.client.delete_run, self._partial.pop(record.trial))
        end_ms = _timestamp_ms(record.finished_at) or int(time.time() * 1000)
        start_ms = end_ms - int(max(record.duration_seconds, 0.0) * 1000)
        tags = {"mlflow.parentRunId": self.parent_run_id, "trial": str(record.trial), "status": record.status}
        if record.nni_trial_id:
            tags["nni_trial_id"] = record.nni_trial_id
        if record.latency_source:  # latency_ms is "measured" or "predicted" (latency.mode)
            tags["latency_source"] = record.latency_source
        if record.evaluator:  # proxy | supernet: what scored the trial
            tags["evaluator"] = record.evaluator
        if not record.ok:
            tags["error"] = record.error or "unknown error"
        run = self._call("create trial run", self.client.create_run, self.experiment_id, start_time=start_ms,
                         tags=tags, run_name=f"trial-{record.trial:03d}")
        run_id = self._partial[record.trial] = run.info.run_id
        self._log_batch(run_id, params=arch_params(record), metrics=trial_metrics(record, self.log_curves))
        if record.arch:
            self._call("log arch.json", self.client.log_dict, run_id, record.arch, "arch.json")
        self._call("end trial run", self.client.set_terminated, run_id, "FINISHED" if record.ok else "FAILED", end_ms)
        del self._partial[record.trial]
        self.logged_trials.add(record.trial)
        self.trial_runs[record.trial] = run_id
        best = best_by(self.records, 1)
        if best:
            self._log_batch(self.parent_run_id, metrics=[("best_reward", float(best[0].reward), record.trial)])
        self._since_report += 1
        if self.report_every > 0 and self._since_report >= self.report_every:
            self._log_reports(self.records)

    def on_controller_update(self, step: int, stats: dict[str, float]) -> None:
        metrics = [(f"controller/{key}", value, int(step)) for key, value in stats.items()]
        if _is_number(stats.get("reward_mean")):
            self.batch_rewards.append(float(stats["reward_mean"]))
        self._guarded("controller update", lambda: self._log_batch(
            self.parent_run_id, metrics=[m for m in metrics if _is_number(m[1])]))

    # ----- end

    def _log_reports(self, records: list[TrialRecord]) -> None:
        from mnas_nni.tracking.reports import write_reports

        with tempfile.TemporaryDirectory(prefix="mnas-reports-") as tmp:
            write_reports(records, self.target_ms, tmp, self.top_k, self.batch_rewards)
            self._call("log reports", self.client.log_artifacts, self.parent_run_id, tmp, "reports")
        self._since_report = 0

    def on_search_end(self, records: list[TrialRecord]) -> None:
        failure = sys.exc_info()[0]  # the runner calls this from `finally`: an exception in flight = crashed
        self._guarded("catch-up", self._send_pending)
        self._guarded("search end", lambda: self._end_search(list(records) or self.records, failure))
        if self.behind:
            log.warning("MLflow tracking at %s is not answering: it is missing %d trial run(s) of this search and "
                        "its end; resuming the search (search.resume=%s) sends them", redact_uri(self.tracking_uri),
                        len(self.pending), self.run_dir)

    def _end_search(self, records: list[TrialRecord], failure: type[BaseException] | None) -> None:
        self._log_reports(records)
        tags, metrics = search_summary(records, self.target_ms)
        self._log_batch(self.parent_run_id, tags=tags, metrics=metrics)
        if self.run_dir is not None and (self.run_dir / "trials.jsonl").is_file():
            self._call("log trials.jsonl", self.client.log_artifact, self.parent_run_id,
                       str(self.run_dir / "trials.jsonl"))
        status = "FINISHED" if failure is None else "KILLED" if issubclass(failure, KeyboardInterrupt) else "FAILED"
        self._call("end search run", self.client.set_terminated, self.parent_run_id, status)
        self._finished = True

    def close(self) -> None:
        if self._finished:
            return
        # The search stopped without on_search_end: do not leave the parent RUNNING forever.
        self._guarded("close", lambda: self._call("end search run", self.client.set_terminated,
                                                  self.parent_run_id, "KILLED"))
        self._finished = True


def _timestamp_ms(iso: str | None) -> int | None:
    if not iso:
        return None
    try:
        stamp = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.astimezone()  # naive = local time
    return int(stamp.timestamp() * 1000)
