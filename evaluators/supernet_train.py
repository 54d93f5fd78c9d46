"""Training a supernet once (a LightningModule over the usual datamodules) and scoring one of its paths.

Each training step samples a path: uniformly over the weight families (`fair`, default), uniformly over the
space's words, or by the sandwich rule (largest + smallest + one fair path, their losses averaged). Over the
first `warmup` fraction of the steps the path is warmed up with a probability falling linearly from 1 to 0
(`Supernet.training_path`: other conv-op families blended in, largest kernel/SE/filters, pooling skip). The path
of a step is a function of (seed, global step), so a resumed run continues the same sequence. With `distill`
(in-place distillation, BigNAS) the largest path learns from the labels and every other path of the step from
the largest path's predictions on the same batch. Lightning owns the
loop: `accelerator`/`devices`/`strategy`/`num_nodes` are its own flags (with DDP use
`strategy=ddp_find_unused_parameters_true`: a path leaves most weights unused).
A killed training resumes from `<directory>/last.ckpt`; a finished one is `<directory>/supernet.pt`.
"""

from __future__ import annotations

import logging
import math
import random
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor, nn

from evaluators.accuracy import ClassificationModule, _check_limit, _quiet_lightning, set_bn_momentum
from mnas_core.errors import ConfigError, TrialError, one_line
from search_spaces.arch import ArchSpec
from search_spaces.space import SpaceConfig
from search_spaces.supernet import Supernet, TrainingPath

log = logging.getLogger(__name__)
SAMPLINGS = ("fair", "uniform", "sandwich")
FINAL_NAME, LAST_NAME = "supernet.pt", "last.ckpt"


def check_sampling(sampling: str, warmup: float) -> None:
    """`supernet.sampling` and `supernet.warmup`, refused in one line each."""
    if sampling not in SAMPLINGS:
        raise ConfigError(f"supernet.sampling must be one of {', '.join(SAMPLINGS)}; got {sampling!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0.0 <= warmup <= 1.0:
        raise ConfigError(f"supernet.warmup must be a fraction of the training in [0, 1], got {warmup!r}")


def check_distill(distill: Any) -> None:
    if not isinstance(distill, bool):
        raise ConfigError(f"supernet.distill must be true or false, got {distill!r}")


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of `logits` against the probability rows `targets` (mean over the batch)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def check_epochs(epochs: Any, name: str = "supernet.epochs") -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"{name} must be a positive integer, got {epochs!r}")


class SupernetModule(ClassificationModule):
    """`ClassificationModule` whose model is a `Supernet`: one (or, sandwich, three) sampled paths per step;
    validation runs the largest path (a progress signal only: the shared BN statistics mix every path). With
    `distill` the largest path leads every step and teaches the others."""

    def __init__(self, supernet: Supernet, num_classes: int, *, sampling: str = "fair", warmup: float = 0.5,
                 distill: bool = False, fixed: dict[str, Any] | None = None, seed: int = 0,
                 **optimization: Any) -> None:
        check_sampling(sampling, warmup)
        check_distill(distill)
        super().__init__(supernet, num_classes, **optimization)
        self.sampling, self.warmup, self.distill, self.seed = sampling, float(warmup), distill, int(seed)
        self.fixed = dict(fixed or {})  # decisions every path keeps (a few-shot sub-supernet's)
        self.largest = TrainingPath(supernet.sample(random.Random(0), "largest", self.fixed))
        self.images_seen = 0  # training-image passes: images x paths, the cost unit of bench/supernet.py

    def warm_probability(self) -> float:
        """The warm-up probability of this step (`Supernet.training_path`): 1 at the start, 0 after `warmup`."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        if self.warmup == 0 or not math.isfinite(total):
            return 0.0
        return max(0.0, 1.0 - self.global_step / (self.warmup * max(1, total)))

    def step_paths(self) -> list[TrainingPath]:
        rng = random.Random(self.seed * 1_000_003 + int(self.global_step))
        supernet: Supernet = self.model  # type: ignore[assignment]
        path = supernet.training_path(rng, "uniform" if self.sampling == "uniform" else "fair",
                                      self.warm_probability(), self.fixed)
        if self.sampling == "sandwich":
            return [self.largest, TrainingPath(supernet.sample(rng, "smallest", self.fixed)), path]
        return [self.largest, path] if self.distill else [path]

    def path_losses(self, images: Tensor, labels: Tensor, paths: list[TrainingPath]) -> list[Tensor]:
        """One loss per path: against the labels, or with `distill` (the largest path first) every path after the
        first against the first's detached predictions on the same batch."""
        losses, targets = [], None
        for path in paths:
            logits = self.model(images, path.arch, path.blends)
            if targets is None:
                losses.append(F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing))
                if self.distill:
                    targets = F.softmax(logits.detach(), dim=1)
            else:
                losses.append(soft_cross_entropy(logits, targets))
        return losses

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        paths = self.step_paths()
        loss = sum(self.path_losses(images, labels, paths)) / len(paths)
        if not torch.isfinite(loss):
            raise TrialError(f"supernet training: non-finite loss at epoch {self.current_epoch} step {batch_idx}; "
                             "lower supernet.lr")
        self.train_loss_mean.update(loss.detach(), weight=labels.numel())
        self.images_seen += labels.numel() * len(paths)
        return loss

    def _logits(self, images: Tensor) -> Tensor:
        return self.model(images, self.largest.arch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["images_seen"] = self.images_seen

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.images_seen = int(checkpoint.get("images_seen", 0))


@contextmanager
def full_batches(datamodule: Any) -> Iterator[None]:
    """Training batches of `batch_size` only. A path trained on an epoch's left-over images (4 on digits) gets BN
    statistics of a handful of values per channel (the last blocks of a 32 px net see 1x1 maps), and in the demo
    such steps sent the supernet back to chance (last loss 2.30 against 1.74 with full batches, same seed)."""
    previous = getattr(datamodule, "drop_last_train", False)
    datamodule.drop_last_train = True
    try:
        yield
    finally:
        datamodule.drop_last_train = previous


def check_last_checkpoint(directory: str | Path) -> None:
    """A killed training's `last.ckpt` that cannot be read (cut short by a kill mid-save, a full disk) is one line
    naming it, not PyTorch's zip error in every trial."""
    directory = Path(directory)
    last = directory / LAST_NAME
    if (directory / FINAL_NAME).is_file() or not last.is_file():
        return
    try:
        with zipfile.ZipFile(last) as archive:  # torch.save's format; a cut file has no central directory
            damaged = archive.testzip()
            problem = f"member {damaged} is corrupt" if damaged else None
    except (zipfile.BadZipFile, OSError) as err:
        problem = one_line(err, 120)
    if problem:
        raise ConfigError(f"the supernet's training checkpoint {last} is damaged ({problem}); delete it to train "
                          "the supernet from the start")


def train_supernet(config: SpaceConfig, datamodule: Any, directory: str | Path, *, epochs: int = 10,
                   sampling: str = "fair", warmup: float = 0.5, distill: bool = False, seed: int = 0,
                   optimizer: str = "adam",
                   lr: float = 0.003, momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "cosine",
                   warmup_epochs: float = 0.0, label_smoothing: float = 0.1, bn_momentum: float | None = 0.1,
                   limit_train_batches: float | None = None, limit_val_batches: float | None = None,
                   precision: str | int = "32-true", accelerator: str = "cpu", devices: Any = 1,
                   strategy: str = "auto", num_nodes: int = 1, callbacks: list[Any] | None = None,
                   fixed: dict[str, Any] | None = None, init: Supernet | None = None) -> Supernet:
    """The supernet of `config` trained on `datamodule`; reuses `<directory>/supernet.pt` when it exists and
    resumes `<directory>/last.ckpt` when a training was killed. `fixed` pins decisions on every path (a few-shot
    sub-supernet, whose checkpoint records them) and `init` gives the starting weights."""
    directory = Path(directory)
    final = directory / FINAL_NAME
    fixed = dict(fixed or {})
    if final.is_file():
        log.info("supernet: reusing %s", final)
        supernet = Supernet.load(final, config)
        if supernet.training_info.get("fixed", {}) != fixed:
            raise ConfigError(f"the supernet {final} was trained with the decisions "
                              f"{supernet.training_info.get('fixed') or 'free'}, not {fixed or 'free'}; delete it or "
                              "give another supernet.dir")
        return supernet
    check_epochs(epochs)
    check_last_checkpoint(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    supernet = Supernet(config)
    if init is not None:
        supernet.load_state_dict(init.state_dict())
    if bn_momentum is not None:
        set_bn_momentum(supernet, bn_momentum)
    module = SupernetModule(supernet, datamodule.num_classes, sampling=sampling, warmup=warmup, distill=distill,
                            fixed=fixed, seed=seed, optimizer=optimizer, lr=lr, momentum=momentum,
                            weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs,
                            label_smoothing=label_smoothing)
    last = directory / LAST_NAME
    with _quiet_lightning():
        pl.seed_everything(seed, workers=True, verbose=False)
        trainer = pl.Trainer(
            max_epochs=epochs, precision=precision, accelerator=accelerator, devices=devices, strategy=strategy,
            num_nodes=num_nodes, limit_train_batches=_check_limit("limit_train_batches", limit_train_batches),
            limit_val_batches=_check_limit("limit_val_batches", limit_val_batches), logger=False,
            callbacks=[ModelCheckpoint(dirpath=directory, filename="last", save_top_k=1, every_n_epochs=1,
                                       enable_version_counter=False),  # the newest epoch only, as last.ckpt
                       *(callbacks or [])],
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
            default_root_dir=directory)
        started = time.perf_counter()
        if last.is_file():
            log.info("supernet: resuming the killed training from %s", last)
        with full_batches(datamodule):
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
        seconds = time.perf_counter() - started
    if trainer.is_global_zero:
        supernet.save(final, epochs=epochs, train_seconds=seconds, images_seen=module.images_seen,
                      history=module.history, fixed=fixed)
    return supernet


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Any, batches: int, device: str | torch.device = "cpu") -> None:
    """Fresh BN statistics for one path: the cumulative average over `batches` training batches."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    for index, (images, _) in enumerate(loader):
        if index >= batches:
            break
        model(images.to(device))
    model.eval()


SCORES = ("accuracy", "likelihood")  # supernet.score: what a path's validation gives a trial as its accuracy


def check_score(score: Any) -> None:
    if score not in SCORES:
        raise ConfigError(f"supernet.score must be one of {', '.join(SCORES)}, got {score!r}")


def validation_metrics(model: nn.Module, loader: Any, batches: int | None = None,
                       device: str | torch.device = "cpu") -> dict[str, float]:
    """Accuracy and mean cross-entropy of `model` (eval mode) over `batches` validation batches (None = all)."""
    model.eval()
    correct = total = 0
    loss = 0.0
    with torch.no_grad():
        for index, (images, labels) in enumerate(loader):
            if batches is not None and index >= batches:
                break
            logits = model(images.to(device)).float().cpu()
            correct += int((logits.argmax(1) == labels).sum())
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            total += labels.numel()
    if not total:
        raise TrialError("the validation loader gave no batches; check data and supernet.limit_val_batches")
    return {"accuracy": correct / total, "loss": loss / total}


def inherited_path(supernet: Supernet, arch: ArchSpec, datamodule: Any, *, calibration_batches: int = 10,
                   device: str = "cpu") -> nn.Module:
    """The stand-alone model of `arch` with inherited weights and BN recalibrated on `calibration_batches` training
    batches (the same images for every path), on `device`."""
    model = supernet.extract(arch).to(device)
    generator = torch.Generator().manual_seed(0)  # the same calibration images for every path
    loader = torch.utils.data.DataLoader(datamodule.train_dataloader().dataset, batch_size=datamodule.batch_size,
                                         shuffle=True, generator=generator, num_workers=datamodule.num_workers,
                                         collate_fn=datamodule.train_dataloader().collate_fn)
    recalibrate_bn(model, loader, calibration_batches, device)
    return model


def score_path(supernet: Supernet, arch: ArchSpec, datamodule: Any, *, calibration_batches: int = 10,
               val_batches: int | None = None, device: str = "cpu", score: str = "accuracy") -> tuple[nn.Module, float]:
    """`inherited_path`'s model and its score on the validation images (computed on `device`; the model comes back
    on the CPU, ready to export): `accuracy`, or `likelihood`, exp(-mean cross-entropy), the geometric mean of the
    probabilities the path gives the true classes, a finer score than accuracy for paths that inherited weights
    leave far below their stand-alone accuracy."""
    check_score(score)
    model = inherited_path(supernet, arch, datamodule, calibration_batches=calibration_batches, device=device)
    metrics = validation_metrics(model, datamodule.val_dataloader(), val_batches, device)
    return model.cpu(), metrics["accuracy"] if score == "accuracy" else math.exp(-metrics["loss"])
