"""The parts of `python -m mnas_nni.train` around the Lightning run: where the architecture comes from, which
MLflow run to log into (nested under the search's), the files a finished run leaves behind, and stopping it."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from mnas_core.errors import ArchitectureError, ConfigError
from search_spaces.arch import ArchSpec

log = logging.getLogger(__name__)
SOURCE_FILE = "source.json"  # written by `python -m mnas_nni.export`: the search an exported model came from


@dataclass
class ArchSource:
    """An architecture and where it came from: the search's run directory or MLflow run, when known."""

    arch: ArchSpec
    label: str
    hints: dict[str, Any] = field(default_factory=dict)
    search_run_dir: str | None = None
    search_mlflow_run: str | None = None


def resolve_arch(ref: str) -> ArchSource:
    """A preset, an arch.json, an exported folder (arch.json + source.json) or a search's run directory."""
    from mnas_nni.export import resolve_source

    try:
        arch, hints = resolve_source(ref)
    except (ConfigError, ArchitectureError):
        raise
    except (ValueError, KeyError, TypeError) as err:
        raise ArchitectureError(f"retrain.arch={ref}: {' '.join(str(err).split())[:160]}") from None
    path = Path(ref).expanduser()
    source = ArchSource(arch=arch, label=arch.name or path.stem or ref, hints=hints)
    if (path / "trials.jsonl").is_file() or (path.is_file() and path.suffix == ".jsonl"):
        source.search_run_dir = str((path if path.is_dir() else path.parent).resolve())
    provenance = path / SOURCE_FILE if path.is_dir() else path.with_name(SOURCE_FILE)
    if provenance.is_file():
        try:
            recorded = json.loads(provenance.read_text())
        except (OSError, json.JSONDecodeError):
            recorded = {}
        source.search_run_dir = recorded.get("search_run_dir") or source.search_run_dir
        source.search_mlflow_run = recorded.get("mlflow_run")
    return source


def checkpoint_arch(path: Path) -> dict[str, Any] | None:
    """The architecture a retrain checkpoint was written for (None for a checkpoint without one)."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        raise ConfigError(f"{path} cannot be read as a Lightning checkpoint ({type(err).__name__}); "
                          "drop retrain.resume to start afresh") from None
    arch = checkpoint.get("arch") if isinstance(checkpoint, dict) else None
    return arch if isinstance(arch, dict) else None


# ---------------------------------------------------------------- MLflow

def _search_parent(client: Any, experiment_id: str, source: ArchSource) -> str | None:
    """The search's parent run: named by the export (a run id: its parent, else itself), or found by run_dir."""
    if source.search_mlflow_run:
        run_id = source.search_mlflow_run.removeprefix("runs:/").split("/", 1)[0]
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - another store, a deleted run: log unnested
            return None
        return run.data.tags.get("mlflow.parentRunId") or run_id
    if source.search_run_dir:
        run_dir = source.search_run_dir.replace("'", "\\'")
        runs = client.search_runs([experiment_id], f"tags.run_dir = '{run_dir}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs else None
    return None


def mlflow_logger(tracking: dict[str, Any], source: ArchSource, recipe: dict[str, Any], run_dir: Path,
                  run_id: str | None) -> Any:
    """Lightning's MLFlowLogger on a run of its own, nested under the search's parent run when it is known.
    `tracking=none` gives no logger; a resumed run (`run_id`) logs into its earlier MLflow run."""
    if not str(tracking.get("_target_", "")).endswith("MlflowTracker"):
        return False
    from mlflow import MlflowClient
    from mlflow.entities import Param
    from pytorch_lightning.loggers import MLFlowLogger
    from pytorch_lightning.utilities import rank_zero_only

    from mnas_nni.tracking import check_reachable, flatten_params, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking.get("tracking_uri"))
    check_reachable(uri)
    name = str(tracking.get("experiment_name") or "mnas-nni")
    if rank_zero_only.rank != 0:  # other processes of a multi-GPU run log nothing: no run of their own
        return MLFlowLogger(experiment_name=name, tracking_uri=uri, run_id=run_id)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        location = (str(Path(uri[len("sqlite:///"):]).parent / "mlartifacts") if uri.startswith("sqlite:///")
                    else None)
        experiment_id = client.create_experiment(name, artifact_location=location)
    if run_id is None:
        tags = {"mnas_nni.role": "retrain", "run_dir": str(run_dir), "arch": source.label}
        parent = _search_parent(client, experiment_id, source)
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = client.create_run(experiment_id, tags=tags, run_name=f"retrain {source.label}")
        run_id = run.info.run_id
        params = flatten_params({"retrain": {k: v for k, v in recipe.items() if k != "trainer"}})
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    return MLFlowLogger(experiment_name=name, tracking_uri=uri, run_id=run_id)


# ---------------------------------------------------------------- outputs

def write_outputs(module: Any, source: ArchSource, run_dir: Path, num_classes: int, resolution: int,
                  recipe: dict[str, Any], steps: int) -> dict[str, Any]:
    """state_dict.pt (EMA), raw_state_dict.pt, model/ (the export, with ONNX) and results.json."""
    import torch

    from mnas_nni.export import export

    if not module.history:
        raise ConfigError("training ended without a validation pass; check retrain.limit_val_batches")
    ema_state = module.ema.module.state_dict()
    torch.save(ema_state, run_dir / "state_dict.pt")
    torch.save(module.model.state_dict(), run_dir / "raw_state_dict.pt")
    paths = export(source.arch, run_dir / "model", num_classes, resolution, weights=run_dir / "state_dict.pt")
    final = {k: v for k, v in module.history[-1].items() if k not in ("epoch", "step")}
    results = {"arch": source.label, "epochs": int(module.history[-1]["epoch"]) + 1, "steps": steps,
               "num_classes": num_classes, "resolution": resolution, "batch_size": recipe["batch_size"],
               "lr": recipe["lr"], "final": final, "history": module.history, "model_dir": str(paths["model.py"].parent),
               "weights": {"ema": str(run_dir / "state_dict.pt"), "raw": str(run_dir / "raw_state_dict.pt")}}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return results


class TrainingStopped(BaseException):
    """A training stopped on purpose by SIGINT/SIGTERM after saving a checkpoint at `step`. Not a
    KeyboardInterrupt: Lightning turns that into SystemExit(1) before anything can be saved or reported."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        self.run_dir: Path | None = None


class StopOnSignal:
    """The first Ctrl-C or SIGTERM during `fit` asks for a stop; the next training batch's end saves
    `checkpoint` (optimizer, schedule and loop state at that step) and raises TrainingStopped. Lightning's own
    SIGTERM path (it stops validation with SIGTERMException) saves the same way, from `on_exception`. A second
    signal exits at once, except while the checkpoint is written (written beside, then moved over the old one).
    Use as a context manager around `trainer.fit`, and `callback()` among the Trainer's."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.signum: int | None = None
        self.saved_step: int | None = None
        self._saving = False
        self._exit_after_save: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            if self._saving:  # never leave a half-written checkpoint: exit once it is in place
                self._exit_after_save = signum
                return
            os._exit(128 + signum)
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint at this step, then stopping; press Ctrl-C "
              "again to exit at once", file=sys.stderr, flush=True)

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def save(self, trainer: Any) -> None:
        partial = self.checkpoint.with_name(self.checkpoint.name + ".partial")
        self._saving = True
        try:
            trainer.save_checkpoint(partial)
            if trainer.is_global_zero:
                os.replace(partial, self.checkpoint)
        finally:
            self._saving = False
        self.saved_step = int(trainer.global_step)
        if self._exit_after_save is not None:
            os._exit(128 + self._exit_after_save)

    def stopped(self) -> TrainingStopped:
        return TrainingStopped(self.signum or signal.SIGTERM, self.saved_step or 0, self.checkpoint)

    def callback(self) -> Any:
        from pytorch_lightning.callbacks import Callback

        stop = self

        class _SaveAndStop(Callback):
            def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
                if stop.signum is not None:
                    stop.save(trainer)
                    raise stop.stopped()

            def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
                if stop.signum is not None and not isinstance(exception, TrainingStopped):
                    stop.save(trainer)  # Lightning stopped the loop itself (SIGTERM during validation)

        return _SaveAndStop()


def resume_command(overrides: Sequence[str], run_dir: Path) -> str:
    """The command that continues a stopped training: its own overrides, `retrain.resume` pointing at it."""
    from mnas_nni.run.hydra_files import mask_text  # a password typed on the command line is not printed back

    kept = [mask_text(o) for o in overrides if not o.startswith(("retrain.resume=", "hydra.run.dir="))]
    return shlex.join(["python", "-m", "mnas_nni.train", *kept, f"retrain.resume={run_dir}"])
