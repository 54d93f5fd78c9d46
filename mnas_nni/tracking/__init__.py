"""Tracking and reports: what records a search besides its run folder, and what a person sees of it.

`tracker.MlflowTracker` records a search in MLflow (its parent run is `parent_run`'s), `support` holds what that
needs without calling MLflow (masked secrets, MLflow-safe names, the store's URI and UI links), `reports` draws
the Pareto and top-k reports, and `console` is the terminal's progress bar and table.

`mnas_nni.tracking.MlflowTracker` is the `_target_` of conf/tracking/mlflow.yaml; it and the helpers below,
which code imported from the single module `mnas_nni/tracking.py` this package replaced, stay importable here.
"""

from mnas_nni.tracking.parent_run import search_parent_run
from mnas_nni.tracking.support import (
    EXPERIMENT_KIND,
    MASK,
    MAX_TAG_LENGTH,
    METRIC_BATCH,
    PARAM_BATCH,
    SECRET_WORDS,
    TRIAL_METRICS,
    VIEW_TAG_PREFIX,
    arch_params,
    check_reachable,
    default_tracking_uri,
    device_summary,
    experiment_tags,
    flatten_params,
    git_commit,
    health_request,
    is_secret,
    mask_secrets,
    metric_name,
    redact_uri,
    resolve_tracking_uri,
    run_link,
    store_creation_lock,
    trial_metrics,
    ui_link,
)
from mnas_nni.tracking.tracker import MlflowTracker

__all__ = [
    "EXPERIMENT_KIND", "MASK", "MAX_TAG_LENGTH", "METRIC_BATCH", "PARAM_BATCH", "SECRET_WORDS", "TRIAL_METRICS",
    "VIEW_TAG_PREFIX", "MlflowTracker", "arch_params", "check_reachable", "default_tracking_uri", "device_summary",
    "experiment_tags", "flatten_params", "git_commit", "health_request", "is_secret", "mask_secrets", "metric_name",
    "redact_uri", "resolve_tracking_uri", "run_link", "search_parent_run", "store_creation_lock", "trial_metrics",
    "ui_link",
]
