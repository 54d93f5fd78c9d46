"""MLflow tracking of a search: one parent run per search, one nested child run per trial.

Parent run: the composed config as params (secrets masked) and as `config.yaml`, git commit, device, strategy,
target T, controller statistics as step metrics, and the reports (`reports/pareto.png`, ...) refreshed as
the search goes. Child runs: the sampled decisions and block strings as params, `arch.json`, the trial's
metrics and per-epoch training curves; failed trials end FAILED with the reason as a tag.

Every call names its run id explicitly (`MlflowClient`), so trials may be recorded from any callback or
thread. Only `on_search_start` may raise (an unreachable server stops the search before training); later
faults are retried and then logged as warnings.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mnas_core.errors import ConfigError
from mnas_core.retry import retry
from mnas_nni.observers import SearchInfo, SearchObserver
from mnas_nni.records import TrialRecord, load_records, pareto_front
from mnas_nni.records import top_k as best_by

log = logging.getLogger(__name__)
T = TypeVar("T")

SECRET_WORDS = ("password", "passphrase", "token", "secret", "key_file", "api_key", "apikey", "private_key")
MASK = "***"
PARAM_BATCH = 100  # MLflow's limit of params per log_batch call
METRIC_BATCH = 1000
MAX_TAG_LENGTH = 5000
TRIAL_METRICS = ("accuracy", "latency_ms", "reward", "params", "macs", "duration_seconds", "train_seconds",
                 "measure_seconds", "latency_predicted_ms", "latency_measured_ms")
# MLflow 3's UI opens an experiment of this kind on its runs table (not the GenAI trace overview).
EXPERIMENT_KIND = "mlflow.experimentKind"
_URI_PASSWORD = re.compile(r"(\w[\w+.-]*://[^/\s:@]+:)[^@\s/]+@")
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


def _max_param_length() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:  # pragma: no cover - older MLflow
        return 500
    return int(MAX_PARAM_VAL_LENGTH)


# ---------------------------------------------------------------- pure helpers (no MLflow calls)

def is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact_uri(text: str) -> str:
    """`scheme://user:password@host` -> `scheme://user:***@host` anywhere in `text`."""
    return _URI_PASSWORD.sub(rf"\g<1>{MASK}@", text)


def mask_secrets(value: Any) -> Any:
    """A copy of a config tree with every secret-looking key's value replaced by `***`."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret(str(k)) and v not in (None, "") else mask_secrets(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    if isinstance(value, str):
        return redact_uri(value)
    return value


def metric_name(key: str) -> str:
    """A name MLflow accepts for a param or metric: safe characters, no empty or dot path segments."""
    parts = [_BAD_NAME_CHARS.sub("_", part) for part in str(key).split("/")]
    parts = [p if p not in ("", ".", "..") else "_" for p in parts]
    return "/".join(parts)[:250]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _param_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def flatten_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'train': {'lr': 0.1}} -> {'train.lr': '0.1'}; lists stay one JSON value; secrets come out masked."""
    limit = _max_param_length()
    flat: dict[str, str] = {}
    for key, value in mask_secrets(config).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[metric_name(name)] = _truncate(_param_value(value), limit)
    return flat


def arch_params(record: TrialRecord) -> dict[str, str]:
    """The architecture as readable params: each decision (`block3/kernel`) and block string (`arch/block3`)."""
    params = {metric_name(label): _param_value(value) for label, value in sorted(record.sample.items())}
    arch = record.arch or {}
    for key in ("name", "stem_filters", "head_filters", "dropout"):
        if arch.get(key) is not None:
            params[f"arch/{key}"] = str(arch[key])
    for index, block in enumerate(arch.get("blocks", []), start=1):
        params[f"arch/block{index}"] = block
    return params


def trial_metrics(record: TrialRecord, log_curves: bool = True) -> list[tuple[str, float, int]]:
    """(key, value, step) of a trial: final metrics at step 0, the latency spread, the per-epoch curves."""
    metrics: list[tuple[str, float, int]] = []

    def add(key: str, value: Any, step: int = 0) -> None:
        if _is_number(value):
            metrics.append((metric_name(key), float(value), step))

    for key in TRIAL_METRICS:
        add(key, getattr(record, key))
    for key, value in (record.latency or {}).items():
        add(f"latency/{key}", value)
    if log_curves:
        for index, epoch in enumerate(record.history or []):
            step = int(epoch.get("epoch", index))
            for key, value in epoch.items():
                if key != "epoch":
                    add(key, value, step)
    return metrics


def device_summary(device: dict[str, Any]) -> str:
    keys = ("device", "cpu", "runtime", "runtime_version", "threads")
    parts = [f"{k}={device[k]}" for k in keys if device.get(k) not in (None, "")]
    return redact_uri(", ".join(parts)) or "unknown"


def git_commit(cwd: Path | None = None) -> tuple[str, bool] | None:
    """(commit, dirty) of the git work tree around `cwd`, or None outside one."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5,
                              check=False)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip(), bool(status.stdout.strip())


def default_tracking_uri(cwd: Path | None = None) -> str:
    return f"sqlite:///{(cwd or Path.cwd()).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None) -> str:
    """None -> $MLFLOW_TRACKING_URI or ./mlflow.db; a relative SQLite path becomes absolute (cwd may change)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        relative = uri[len("sqlite:///"):]
        if relative and relative != ":memory:":
            uri = f"sqlite:///{Path(relative).expanduser().resolve()}"
    return uri


def ui_link(tracking_uri: str, experiment_id: str, host: str = "127.0.0.1", port: int = 5000
            ) -> tuple[str | None, str]:
    """The command that serves a store (None for a server) and the link to an experiment's runs table.

    MLflow 3's UI opens an experiment in its GenAI view whatever the experiment's kind tag says;
    `workflowType=machine_learning` opens the runs table in model-training mode."""
    runs = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if tracking_uri.startswith(("http://", "https://")):
        return None, f"{redact_uri(tracking_uri).rstrip('/')}/{runs}"
    return (f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)} --host {host} --port {port}",
            f"http://{host}:{port}/{runs}")


@contextmanager
def store_creation_lock(tracking_uri: str) -> Iterator[None]:
    """Searches started at once against one new SQLite store would race on MLflow's schema migration (and
    leave an `_alembic_tmp_*` table that breaks every later start): the first connection is serialised by a
    file lock beside the database."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    database = Path(tracking_uri[len("sqlite:///"):])
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(database) + ".lock", timeout=300):
        yield


def health_request(uri: str) -> urllib.request.Request:
    """GET <uri>/health; credentials in the URI (`http://user:pass@host`) go in a Basic auth header, since
    urllib reads `user:pass@host:port` as a host with a non-numeric port."""
    parts = urllib.parse.urlsplit(uri.rstrip("/") + "/health")
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    return request


def check_reachable(uri: str, timeout_s: float = 3.0, fix: str = "start it or set tracking=none") -> None:
    """Raise ConfigError at once when an http(s) tracking server does not answer; other stores pass."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(health_request(uri), timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # it answered (an auth proxy, an old server without /health): reachable
    except (OSError, ValueError):
        raise ConfigError(
            f"MLflow tracking server {redact_uri(uri)} is unreachable; {fix}") from None


def _is_client_error(err: Exception) -> bool:
    """A request MLflow rejected (bad value, param already set): trying again cannot help."""
    status = getattr(err, "get_http_status_code", lambda: 500)()
    return isinstance(status, int) and 400 <= status < 500


class _GaveUp(Exception):
    """An MLflow call still failed after every retry; the current hook stops, the search goes on."""


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
        self.target_ms: float | None = None
        self.run_dir: Path | None = None
        self.records: list[TrialRecord] = []
        self.logged_trials: set[int] = set()
        self._since_report = 0
        self._lock = threading.RLock()
        self._finished = False

    # ----- plumbing

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def reason(err: BaseException) -> str:
            return redact_uri(str(err).splitlines()[0] if str(err) else repr(err))

        def warn(err: BaseException, attempt: int, delay: float) -> None:
            log.warning("MLflow tracking: %s failed (%s); retry %d of %d in %.1f s", what, reason(err), attempt,
                        self.retries, delay)

        try:  # any MLflow/network fault is retried, then dropped; a request MLflow rejected is dropped at once
            return retry(lambda: fn(*args, **kwargs), retries=self.retries, retry_on=Exception, delay_s=0.5,
                         max_delay_s=5.0, give_up=_is_client_error, on_retry=warn)
        except Exception as err:
            raise _GaveUp(f"{what}: {reason(err)}") from err

    def _guarded(self, hook: str, body: Callable[[], None]) -> None:
        """Run a hook body under the lock; a dropped call ends the hook with one warning, never an exception."""
        if self.client is None or self.parent_run_id is None:
            return
        with self._lock:
            try:
                body()
            except _GaveUp as err:
                log.warning("MLflow tracking (%s) skipped after %d retries: %s", hook, self.retries, err)
            except Exception as err:  # noqa: BLE001 - tracking must never stop a search
                log.warning("MLflow tracking (%s) failed: %s", hook, redact_uri(str(err)))

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
                self.experiment_id = self._experiment_id()
            self.parent_run_id = self._resume_parent(info) if info.resumed else None
            if self.parent_run_id is None:
                self.parent_run_id = self._create_parent(info)
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

    def ui_hint(self) -> str | None:
        """Two lines for the terminal: how to open this search in the MLflow UI."""
        if self.experiment_id is None:
            return None
        serve, link = ui_link(self.tracking_uri, self.experiment_id)
        return (f"MLflow: {serve}\n" if serve else "") + f"MLflow runs: {link}"

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            location = None
            if self.tracking_uri.startswith("sqlite:///"):
                # Next to the database, not under whatever directory the search happens to run in.
                location = str(Path(self.tracking_uri[len("sqlite:///"):]).parent / "mlartifacts")
            return self.client.create_experiment(self.experiment_name, artifact_location=location,
                                                 tags={EXPERIMENT_KIND: "custom_model_development"})
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        if EXPERIMENT_KIND not in experiment.tags:
            try:  # cosmetic: which page the UI opens first; a read-only user may not set it
                self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, "custom_model_development")
            except Exception as err:  # noqa: BLE001
                log.debug("cannot tag experiment %s: %s", experiment.experiment_id, err)
        return experiment.experiment_id

    def _create_parent(self, info: SearchInfo) -> str:
        strategy = str(info.strategy).rsplit(".", 1)[-1]
        name = self.run_name or f"{strategy} {info.run_dir.parent.name}/{info.run_dir.name}"
        tags = {"run_dir": str(info.run_dir), "strategy": str(info.strategy), "target_ms": f"{info.target_ms:g}",
                "device": device_summary(mask_secrets(info.device or {})), "mnas_nni.role": "search"}
        commit = git_commit(Path.cwd()) or git_commit(Path(__file__).resolve().parent)
        if commit:
            tags["mlflow.source.git.commit"], tags["git_dirty"] = commit[0], str(commit[1]).lower()
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        return run.info.run_id

    def _resume_parent(self, info: SearchInfo) -> str | None:
        """The parent run of the same run directory, reopened, with the trials it already holds."""
        run_dir = str(info.run_dir).replace("'", "\\'")
        runs = self.client.search_runs([self.experiment_id], f"tags.run_dir = '{run_dir}'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            return None
        parent = runs[0].info.run_id
        self.client.update_run(parent, status="RUNNING")
        children = self.client.search_runs([self.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'",
                                           max_results=50000)
        self.logged_trials = {int(r.data.tags["trial"]) for r in children if r.data.tags.get("trial", "").isdigit()}
        self.records = load_records(info.run_dir / "trials.jsonl")
        return parent

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
        self._guarded(f"trial {record.trial}", lambda: self._log_trial(record))

    def _log_trial(self, record: TrialRecord) -> None:
        if record.trial in self.logged_trials:
            return
        self.records = [r for r in self.records if r.trial != record.trial] + [record]
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
        run_id = run.info.run_id
        self.logged_trials.add(record.trial)
        try:
            self._log_batch(run_id, params=arch_params(record), metrics=trial_metrics(record, self.log_curves))
            if record.arch:
                self._call("log arch.json", self.client.log_dict, run_id, record.arch, "arch.json")
        finally:  # a child must not stay RUNNING, whatever failed above
            self._call("end trial run", self.client.set_terminated, run_id,
                       "FINISHED" if record.ok else "FAILED", end_ms)
        best = best_by(self.records, 1)
        if best:
            self._log_batch(self.parent_run_id, metrics=[("best_reward", float(best[0].reward), record.trial)])
        self._since_report += 1
        if self.report_every > 0 and self._since_report >= self.report_every:
            self._log_reports(self.records)

    def on_controller_update(self, step: int, stats: dict[str, float]) -> None:
        metrics = [(f"controller/{key}", value, int(step)) for key, value in stats.items()]
        self._guarded("controller update", lambda: self._log_batch(
            self.parent_run_id, metrics=[m for m in metrics if _is_number(m[1])]))

    # ----- end

    def _log_reports(self, records: list[TrialRecord]) -> None:
        from mnas_nni.reports import write_reports

        with tempfile.TemporaryDirectory(prefix="mnas-reports-") as tmp:
            write_reports(records, self.target_ms, tmp, self.top_k)
            self._call("log reports", self.client.log_artifacts, self.parent_run_id, tmp, "reports")
        self._since_report = 0

    def on_search_end(self, records: list[TrialRecord]) -> None:
        failure = sys.exc_info()[0]  # the runner calls this from `finally`: an exception in flight = crashed
        self._guarded("search end", lambda: self._end_search(list(records) or self.records, failure))

    def _end_search(self, records: list[TrialRecord], failure: type[BaseException] | None) -> None:
        self._log_reports(records)
        front = pareto_front(records)
        done = [r for r in records if r.ok]
        tags = {"pareto_trials": ",".join(str(r.trial) for r in front),
                "trials_succeeded": str(len(done)), "trials_failed": str(len(records) - len(done))}
        best = best_by(records, 1)
        if best:
            tags["best_trial"] = str(best[0].trial)
        self._log_batch(self.parent_run_id, tags=tags)
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
