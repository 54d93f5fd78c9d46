"""The Python API: what `python -m mnas_nni` and `python -m mnas_nni.train` run, as calls that return results.

    from mnas_nni import search
    result = search(["strategy=random", "search.max_trials=4", "hydra.run.dir=outputs/demo"])
    result.records            # trials.jsonl as a pandas DataFrame
    result.best, result.answer, result.run_dir, result.mlflow_run_id
    result.export("exported/")

The overrides are the command line's own strings. Each call composes the config and runs the job through Hydra
exactly as the command does (the run folder, its `.hydra/` copies with secrets masked, logging), then clears
Hydra's global state, so a notebook may call it again. Errors are raised, not printed: `MnasNniError`
(one line naming the fix) for bad input, `SearchStopped`/`SearchAborted` for a stopped search.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mnas_nni.run.records import TrialRecord, load_records, target_answer, top_k
from mnas_nni.run.stopping import SearchAborted, SearchStopped  # noqa: F401 - raised by search(): public here


@dataclass
class SearchResult:
    """A finished search: its run folder and what it recorded there."""

    run_dir: Path
    config: dict[str, Any]  # the run's resolved config (its config.yaml, secrets masked)
    trials: list[TrialRecord] = field(default_factory=list)
    mlflow_run_id: str | None = None  # the search's parent run (None with tracking=none or no server)

    @property
    def records(self) -> Any:
        """The trial records (the rows of trials.jsonl, nested fields flattened with dots) as a DataFrame."""
        import pandas as pd

        rows = [json.loads(line) for line in (self.run_dir / "trials.jsonl").read_text().splitlines() if line]
        return pd.json_normalize(rows)

    @property
    def target_ms(self) -> float | None:
        return self.config.get("reward", {}).get("target_ms")

    @property
    def best(self) -> TrialRecord | None:
        """The best trial by reward (by confirmed reward once the search confirmed some)."""
        return next(iter(top_k(self.trials, 1)), None)

    @property
    def answer(self) -> TrialRecord | None:
        """The most accurate trial whose latency meets the target T (None without a target or when none does)."""
        return target_answer(self.trials, float(self.target_ms)) if self.target_ms else None

    def export(self, out_dir: str | Path, *, trial: int | None = None, answer: bool = False,
               weights: str | Path | None = None, seed: int = 0) -> dict[str, Path]:
        """`python -m mnas_nni.export <run_dir> --out OUT_DIR`: the best trial (or `trial`, or the answer for T)
        as model.py, arch.json, state_dict.pt, model.onnx, retrain.yaml; returns the files written."""
        from mnas_nni.export import export_source

        return export_source(str(self.run_dir), out_dir, trial=trial, answer=answer, weights=weights, seed=seed)[3]


def search(overrides: Sequence[str] = (), *, config: DictConfig | None = None,
           run_dir: str | Path | None = None) -> SearchResult:
    """Run a search: from the CLI's override strings (`["strategy=evolution", "hydra.run.dir=..."]`), or from a
    composed `config` (then in `run_dir`, default the current folder). Returns its `SearchResult`."""
    from mnas_nni.run.search import run_dir_of, run_search

    if config is not None:
        folder = Path(run_dir or Path.cwd()).resolve()
        run_search(config, run_dir=folder)
        return _result(resumed_folder(config) or folder)

    def task(cfg: DictConfig) -> SearchResult:
        run_search(cfg)
        return _result(resumed_folder(cfg) or run_dir_of(cfg))

    return _run_hydra_job(list(overrides), task)


def train(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train an architecture stand-alone, as `python -m mnas_nni.train +experiment=retrain retrain.arch=...`;
    returns its results (results.json: final top-1/top-5, epochs, the model folder)."""
    from mnas_nni.train import run_training

    return _run_hydra_job(list(overrides), lambda cfg: run_training(cfg))


def latency_table(command: str, overrides: Sequence[str] = (), *, models: int = 160, n: int = 30,
                  seed: int = 1, repeats: int = 5) -> dict[str, Any]:
    """`python -m mnas_nni.latency_table build|evaluate` with the search's overrides: `build` measures the layers
    and `models` calibration models (`repeats` passes each) and returns what it measured; `evaluate` measures `n` unseen architectures
    and returns the prediction's errors."""
    from mnas_nni import latency_table as table

    s = table.setup(table.compose(list(overrides)))
    if command == "build":
        return table.build(s, models, progress=False, repeats=repeats)
    if command == "evaluate":
        return table.evaluate(s, n, seed)
    raise ValueError(f"latency_table command {command!r} is unknown; use build or evaluate")


def resumed_folder(cfg: DictConfig) -> Path | None:
    """The run folder a `search.resume=...` continued (the search runs there, not in Hydra's new folder)."""
    from mnas_nni.run.resume import find_run_dir

    resume = cfg.get("search", {}).get("resume")
    return find_run_dir(str(resume), Path.cwd() / "outputs") if resume else None


def _result(run_dir: Path) -> SearchResult:
    import yaml

    from mnas_nni.run.resume import CONFIG_FILE

    run_dir = run_dir.resolve()  # as the search and its tracker name it

    config_path = run_dir / CONFIG_FILE
    config = (yaml.safe_load(config_path.read_text()) if config_path.is_file() else None) or {}
    return SearchResult(run_dir=run_dir, config=config, trials=load_records(run_dir / "trials.jsonl"),
                        mlflow_run_id=mlflow_parent_run(config.get("tracking", {}), run_dir))


def mlflow_parent_run(tracking: dict[str, Any], run_dir: Path) -> str | None:
    """The MLflow run the tracker made for the search in `run_dir` (it tags it with the folder). A tracking URI
    holding a password is masked in the run's config: then the id is not looked up (None)."""
    if not str(tracking.get("_target_", "")).endswith("MlflowTracker"):
        return None
    try:
        from mlflow.tracking import MlflowClient

        from mnas_nni.tracking.parent_run import search_parent_run
        from mnas_nni.tracking.support import resolve_tracking_uri

        uri = resolve_tracking_uri(tracking.get("tracking_uri"))
        if "***" in uri:
            return None
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(tracking.get("experiment_name", "mnas-nni"))
        run = search_parent_run(client, experiment.experiment_id, str(run_dir)) if experiment else None
    except Exception:  # noqa: BLE001 - the id is a convenience: an unreachable server is not an error here
        return None
    return run.info.run_id if run else None


def _run_hydra_job(overrides: list[str], task: Callable[[DictConfig], Any]) -> Any:
    """Compose conf/ with `overrides` and run `task` as Hydra runs a job of `@hydra.main`, in this process."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from mnas_nni.__main__ import config_dir
    from mnas_nni.plugins import register_search_path
    from mnas_nni.run.hydra_files import mask_job_copies
    from mnas_nni.run.preflight import check_hydra_output_dir
    from mnas_nni.run.resume import with_run_choices

    register_search_path()
    check_hydra_output_dir(overrides, Path.cwd())
    overrides = with_run_choices(overrides, Path(config_dir()), Path.cwd())

    def job(cfg: DictConfig) -> Any:
        mask_job_copies()
        return task(cfg)

    GlobalHydra.instance().clear()  # a notebook's earlier call, or its own Hydra use
    hydra = Hydra.create_main_hydra2(task_name="mnas_nni", config_search_path=create_config_search_path(config_dir()))
    with caller_logging_kept():
        try:
            return hydra.run(config_name="config", task_function=job, overrides=overrides).return_value
        finally:
            GlobalHydra.instance().clear()
            HydraConfig.instance().cfg = None  # type: ignore[assignment] - Hydra's run_job leaves the job's set


@contextmanager
def caller_logging_kept() -> Iterator[None]:
    """Hydra points the root logger at its own handlers for the job; the caller's come back after it (a
    notebook's output stays its own, and no handler of a finished job is left writing to a closed stream)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
