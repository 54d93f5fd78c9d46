"""What MLflow tracking needs besides the tracker itself: masking secrets, MLflow-safe names and values, a
trial's params and metrics, the store's URI, its UI link and reachability. No MLflow calls."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnas_core.errors import ConfigError
from mnas_nni.run.records import TrialRecord

SECRET_WORDS = ("password", "passphrase", "token", "secret", "key_file", "api_key", "apikey", "private_key")
MASK = "***"
PARAM_BATCH = 100  # MLflow's limit of params per log_batch call
METRIC_BATCH = 1000
MAX_TAG_LENGTH = 5000
TRIAL_METRICS = ("accuracy", "latency_ms", "reward", "params", "macs", "duration_seconds", "train_seconds",
                 "measure_seconds", "latency_predicted_ms", "latency_measured_ms")
# MLflow 3's UI takes the experiment's kind from this tag only without its GenAI / Model training switch; with it
# (3.17) the view is the link's `workflowType`, else the browser's own switch (localStorage `mlflow.workflowType_v1`,
# GenAI until clicked), and its own links between pages (a run's name in the runs table) drop `workflowType`.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "workflowType=machine_learning"
# A runs-table view a link can name: MLflow's shared view state, the experiment tag `mlflow.sharedViewState.<key>`
# that `?viewStateShareKey=<key>` loads (search facets and table state: columns, sort), as its Share button writes.
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_METRICS = ("reward", "accuracy", "latency_ms")
_URI_PASSWORD = re.compile(r"(\w[\w+.-]*://[^/\s:@]+:)[^@\s/]+@")
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")


def _max_param_length() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:  # pragma: no cover - older MLflow
        return 500
    return int(MAX_PARAM_VAL_LENGTH)


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


def runs_view() -> tuple[str, str]:
    """(share key, tag value) of the runs table the printed link opens: the trials' reward, accuracy and
    latency_ms as columns, best reward first. Sorted by a metric, MLflow lists the trials themselves; sorted by
    start time (its default) it folds them, collapsed, under the search's run. The rest is MLflow's defaults
    (older UIs replace their table state with the shared one). The key is a hash of the view: links printed
    with an earlier view keep theirs."""
    columns = [f"metrics.`{name}`" for name in VIEW_METRICS]
    state = {"searchFilter": "", "orderByKey": columns[0], "orderByAsc": False, "startTime": "ALL",
             "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
             "selectedColumns": columns, "columnOrder": [], "columnWidths": {}, "runsExpanded": {},
             "runsPinned": [], "runsHidden": [], "runsVisibilityMap": {}, "runsHiddenMode": "FIRST_10_RUNS",
             "viewMaximized": False, "runListHidden": False, "isAccordionReordered": False, "groupBy": None,
             "groupsExpanded": {}, "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
             "autoRefreshEnabled": True,
             "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""}}
    value = json.dumps(state, sort_keys=True)
    return f"mnas-nni-{hashlib.sha256(value.encode()).hexdigest()[:12]}", value


def experiment_tags() -> dict[str, str]:
    """The tags that make MLflow's UI show an experiment as model training, with the runs view the link names."""
    key, value = runs_view()
    return {EXPERIMENT_KIND: "custom_model_development", VIEW_TAG_PREFIX + key: value}


def _ui_base(tracking_uri: str, host: str, port: int) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return redact_uri(tracking_uri).rstrip("/")
    return f"http://{host}:{port}"


def ui_link(tracking_uri: str, experiment_id: str, host: str = "127.0.0.1", port: int = 5000,
            view: str | None = None) -> tuple[str | None, str]:
    """The command that serves a store (None for a server) and the link to an experiment's runs table, in the
    model-training view (`workflowType`), with the table view `view` (a `runs_view` key set on the experiment:
    a missing one is an error page)."""
    runs = f"#/experiments/{experiment_id}/runs?{MODEL_TRAINING}" + (f"&viewStateShareKey={view}" if view else "")
    link = f"{_ui_base(tracking_uri, host, port)}/{runs}"
    if tracking_uri.startswith(("http://", "https://")):
        return None, link
    # This interpreter's mlflow: the command works as printed, with or without an activated venv.
    serve = (f"{shlex.quote(sys.executable)} -m mlflow ui --backend-store-uri {shlex.quote(tracking_uri)} "
             f"--host {host} --port {port}")
    return serve, link


def run_link(tracking_uri: str, experiment_id: str, run_id: str, host: str = "127.0.0.1", port: int = 5000) -> str:
    """A run's page in the model-training view (the bare page follows the browser's switch, GenAI by default)."""
    return f"{_ui_base(tracking_uri, host, port)}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING}"


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

