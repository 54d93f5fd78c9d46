"""`python -m mnas_nni.train +experiment=retrain retrain.arch=<preset | arch.json | exported folder>`.

Full training of one architecture with the MnasNet recipe (conf/experiment/retrain.yaml) as a Lightning run
over any datamodule (`data=digits | cifar10 | imagenet`). The run directory receives:

    checkpoints/last.ckpt   refreshed every retrain.checkpoint_every_steps optimizer steps
    state_dict.pt           the EMA weights (the evaluated model; `python -m mnas_nni.export --weights` loads it)
    raw_state_dict.pt       the raw weights
    model/                  the exported model: model.py, arch.json, state_dict.pt, model.onnx (for the devices)
    results.json            final top-1/top-5 of the raw and the EMA weights, per-epoch history

A killed run continues with `retrain.resume=<its run directory>` (Lightning's ckpt_path="last"). The first Ctrl-C
or SIGTERM saves checkpoints/last.ckpt at the current step, marks the MLflow run KILLED, prints that command and
exits 130 / 143.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from mnas_core.errors import ArchitectureError, ConfigError, MnasNniError
from mnas_nni import plugins
from mnas_nni.__main__ import config_dir
from mnas_nni.train_support import (
    ArchSource,
    StopOnSignal,
    TrainingStopped,
    checkpoint_arch,
    mlflow_logger,
    resolve_arch,
    resume_command,
    write_outputs,
)

log = logging.getLogger(__name__)
INITS = ("scratch", "supernet")
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "train_state.json"  # the MLflow run id, so that a resumed run logs into the same MLflow run


def check_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe with retrain.scale applied (batch and peak lr multiplied), after checking what a user sets."""
    from mnas_nni.export import scaled_recipe

    scale = recipe.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ConfigError(f"retrain.scale must be a number > 0 (batch = batch_size * scale, lr = lr * scale), "
                          f"got {scale!r}")
    if recipe.get("init", "scratch") not in INITS:
        raise ConfigError(f"retrain.init must be one of {', '.join(INITS)}, got {recipe.get('init')!r}")
    epochs = recipe.get("epochs")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"retrain.epochs must be a positive integer, got {epochs!r}")
    if not 0.0 <= float(recipe["ema_decay"]) < 1.0:
        raise ConfigError(f"retrain.ema_decay must lie in [0, 1), got {recipe['ema_decay']!r}")
    return scaled_recipe(recipe)


def build_datamodule(data: dict[str, Any], recipe: dict[str, Any]) -> Any:
    overrides: dict[str, Any] = {"batch_size": int(recipe["batch_size"]), "resolution": int(recipe["resolution"])}
    if "val_split" in data and recipe.get("eval_split"):
        overrides["val_split"] = recipe["eval_split"]
    return plugins.build("data", data, **overrides)


def build_network(source: ArchSource, num_classes: int, recipe: dict[str, Any]) -> Any:
    from evaluators.retrain import apply_recipe_to_model
    from search_spaces.builder import build_model

    try:
        model = build_model(source.arch, num_classes=num_classes)
    except (ValueError, RuntimeError, TypeError) as err:
        raise ArchitectureError(f"the model builder refuses {source.label}: {' '.join(str(err).split())[:160]}"
                                ) from None
    apply_recipe_to_model(model, dropout=float(recipe["dropout"]), bn_momentum=float(recipe["bn_momentum"]),
                          bn_epsilon=float(recipe["bn_epsilon"]))
    return model


def resume_point(resume: str | None, run_dir: Path) -> tuple[Path, str | None]:
    """(run directory, ckpt_path for Trainer.fit): a resumed run continues in its own directory."""
    if not resume:
        return run_dir, None
    previous = Path(str(resume)).expanduser()
    if previous.is_file() and previous.suffix == ".ckpt":
        previous = previous.parent.parent
    if not (previous / CHECKPOINT_DIR / "last.ckpt").is_file():
        raise ConfigError(f"retrain.resume={resume}: no {CHECKPOINT_DIR}/last.ckpt there; give the run directory "
                          "of an earlier `python -m mnas_nni.train` (or drop retrain.resume to start afresh)")
    return previous.resolve(), "last"


def trainer_flags(recipe: dict[str, Any]) -> dict[str, Any]:
    flags = dict(recipe.get("trainer") or {})
    flags.setdefault("accelerator", "auto")
    for name in ("limit_train_batches", "limit_val_batches"):
        if recipe.get(name) is not None:
            flags[name] = recipe[name]
    return flags


def run_dir_of() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()


def run_training(cfg: DictConfig, run_dir: Path | None = None, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train `retrain.arch` with the recipe; returns the final metrics (also in results.json)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.utilities import rank_zero_only
    from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException

    from evaluators.retrain import RetrainModule

    if "retrain" not in cfg:
        raise ConfigError("no retrain settings in the config; add +experiment=retrain")
    try:
        resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    except MissingMandatoryValue as err:
        key = getattr(err, "full_key", "") or "a value"
        hint = " (a preset, an arch.json or an exported folder)" if key == "retrain.arch" else ""
        raise ConfigError(f"{key} is not set{hint}; pass {key}=...") from None
    recipe = check_recipe(resolved["retrain"])
    source = resolve_arch(str(recipe["arch"]))
    if recipe.get("init", "scratch") == "supernet":
        raise ConfigError("retrain.init=supernet is not available yet: this project has no weight-sharing supernet "
                          "to inherit weights from; use retrain.init=scratch")
    run_dir, ckpt_path = resume_point(recipe.get("resume"), Path(run_dir or run_dir_of()).resolve())
    run_dir.mkdir(parents=True, exist_ok=True)
    last_ckpt = run_dir / CHECKPOINT_DIR / "last.ckpt"
    if ckpt_path:
        found = checkpoint_arch(last_ckpt)
        if found is not None and found.get("blocks") != source.arch.to_dict().get("blocks"):
            raise ConfigError(f"{last_ckpt} is a checkpoint of another architecture ({found.get('name') or '?'}: "
                              f"{' '.join(found.get('blocks', [])[:2])} ...), not of {source.label}; resume with "
                              "the retrain.arch it was trained with, or drop retrain.resume")

    pl.seed_everything(int(recipe.get("seed") or 0), workers=True, verbose=False)
    datamodule = build_datamodule(resolved["data"], recipe)
    num_classes = int(datamodule.num_classes)
    wanted = recipe.get("num_classes")
    if wanted is not None and int(wanted) != num_classes:
        raise ConfigError(f"retrain.num_classes={wanted} but the data has {num_classes} classes; drop it (null "
                          "takes the data's) or point data.root at the matching data")
    model = build_network(source, num_classes, recipe)
    module = RetrainModule(model, num_classes, recipe, source.arch.to_dict())

    state_path = run_dir / STATE_FILE
    state = json.loads(state_path.read_text()) if ckpt_path and state_path.is_file() else {}
    logger = mlflow_logger(resolved.get("tracking") or {}, source, recipe, run_dir, state.get("mlflow_run_id"))
    if logger and logger.run_id:
        state["mlflow_run_id"] = logger.run_id
    if rank_zero_only.rank == 0:
        state_path.write_text(json.dumps(state))

    every = int(recipe.get("checkpoint_every_steps") or 0)
    if every < 1:
        raise ConfigError(f"retrain.checkpoint_every_steps must be a positive integer, got {every!r}")
    checkpoint = ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, save_last=True, save_top_k=0,
                                 every_n_train_steps=every)
    stop = StopOnSignal(last_ckpt)
    try:
        trainer = pl.Trainer(max_epochs=int(recipe["epochs"]), logger=logger,
                             callbacks=[checkpoint, *callbacks, stop.callback()],
                             default_root_dir=str(run_dir), log_every_n_steps=min(50, every),
                             num_sanity_val_steps=0, **trainer_flags(recipe))
    except (ValueError, TypeError, RuntimeError, MisconfigurationException) as err:  # Lightning's flag checks
        raise ConfigError(f"retrain.trainer: {' '.join(str(err).split())[:200]} (check retrain.trainer.accelerator, "
                          "devices, strategy and precision)") from None
    try:
        with stop:
            try:
                trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
            except SIGTERMException:  # Lightning's own SIGTERM stop (during validation); saved in on_exception
                if stop.saved_step is None:
                    raise
                raise stop.stopped() from None
    except TrainingStopped as stopped:
        if logger and logger.run_id:  # Lightning marked it FAILED on the way out; a stop on purpose is KILLED
            logger.experiment.set_terminated(logger.run_id, "KILLED")
        stopped.run_dir = run_dir
        raise
    if trainer.global_rank != 0:
        return {}
    results = write_outputs(module, source, run_dir, num_classes, int(recipe["resolution"]), recipe,
                            steps=int(trainer.global_step))
    if logger:
        logger.log_metrics({f"final_{k}": v for k, v in results["final"].items()}, step=trainer.global_step)
        logger.experiment.log_artifact(logger.run_id, str(run_dir / "results.json"))
        logger.experiment.log_artifact(logger.run_id, str(run_dir / "model" / "arch.json"))
    return results


def train_from_cli(cfg: DictConfig, overrides: Sequence[str], run_dir: Path | None = None,
                   callbacks: Sequence[Any] = ()) -> None:
    """What the command does with a composed config: train, then one line of results; a bad input is one
    line and exit 2; a stop (Ctrl-C / SIGTERM) saves a checkpoint, prints the resume command, exits 130 / 143."""
    try:
        results = run_training(cfg, run_dir=run_dir, callbacks=callbacks)
    except MnasNniError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except TrainingStopped as stopped:
        print(f"training {stopped} (checkpoint {stopped.checkpoint}); resume it with: "
              f"{resume_command(overrides, stopped.run_dir or Path.cwd())}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    if results:
        final = results["final"]
        print(f"{results['arch']}: {results['epochs']} epochs, {results['steps']} steps; "
              f"top-1 {final['val_top1']:.4f} (EMA {final['ema_val_top1']:.4f}), "
              f"top-5 {final['val_top5']:.4f} (EMA {final['ema_val_top5']:.4f}); model in {results['model_dir']}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from mnas_nni.run.hydra_files import mask_job_copies

    mask_job_copies()  # Hydra's copies of the config hold secrets as typed
    train_from_cli(cfg, list(HydraConfig.get().overrides.task))


def main() -> None:
    from mnas_nni.run.preflight import exit_if_output_dir_unwritable

    plugins.register_search_path()  # pip-installed plugins' config words
    exit_if_output_dir_unwritable()  # before Hydra makes the folder (its failure there is a traceback)
    _main()


if __name__ == "__main__":
    main()
