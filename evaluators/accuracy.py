"""Proxy training: the accuracy half of a MnasNet trial reward.

:func:`train_proxy` trains any logits-producing ``nn.Module`` for a few epochs on a datamodule from
:mod:`evaluators.data` and returns the validation top-1 accuracy. It builds a fresh, quiet ``pl.Trainer`` on
every call, because NNI reuses evaluator objects across models and a finished Trainer would not train again.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger
from torch import Tensor, nn
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnas_core.errors import ConfigError, TrialError

__all__ = ["ClassificationModule", "ProxyResult", "lr_scheduler", "train_proxy"]

OPTIMIZERS = ("sgd", "rmsprop", "adam")
SCHEDULES = ("cosine", "constant", "exponential")
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")


class ClassificationData(Protocol):
    """What :func:`train_proxy` needs from a datamodule (every module in :mod:`evaluators.data` has it)."""

    num_classes: int

    def train_dataloader(self) -> Any: ...

    def val_dataloader(self) -> Any: ...


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, steps_per_epoch: float,
                 warmup_steps: float = 0.0, lr_decay: float = 0.97) -> LRScheduler:
    """Per-step schedule from torch's own schedulers: linear warm-up (`LinearLR`, (step + 1) / warmup of the
    peak) then cosine to zero over the remaining steps, constant, or exponential (`lr_decay` per epoch)."""
    warmup = round(warmup_steps)
    if schedule == "cosine":
        main: LRScheduler = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup))
    elif schedule == "exponential":
        main = ExponentialLR(optimizer, gamma=lr_decay ** (1.0 / max(steps_per_epoch, 1e-9)))
    else:
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup < 1:
        return main
    ramp = LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=max(1, warmup - 1))
    return SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"train.{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _check_range(
    name: str, value: float, low: float, high: float = math.inf, *, low_open: bool = False
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``), else ConfigError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    above_low = number > low if low_open else number >= low
    if not (math.isfinite(number) and above_low and number <= high):
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if math.isfinite(high) else "")
        raise ConfigError(f"train.{name} must be a finite number {bound}, got {value!r}")
    return number


class ClassificationModule(pl.LightningModule):
    """Trains ``model`` (images -> logits over ``num_classes``) with cross-entropy.

    Logs ``train_loss`` (label-smoothed, epoch mean), ``val_loss`` and ``val_acc`` (top-1) per epoch and keeps
    them in :attr:`history`. A non-finite training loss raises :class:`TrialError` immediately. Weight decay
    applies to weights only (not to biases or normalisation parameters). ``momentum`` is ignored by ``adam``;
    ``rmsprop`` uses MnasNet's TF-style settings (decay 0.9, epsilon 1e-3).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        *,
        optimizer: str = "sgd",
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        schedule: str = "cosine",
        warmup_epochs: float = 0.0,
        lr_decay: float = 0.97,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.model = model
        self.num_classes = num_classes
        self.optimizer_name = _check_choice("optimizer", optimizer, OPTIMIZERS)
        self.schedule = _check_choice("schedule", schedule, SCHEDULES)
        self.lr = _check_range("lr", lr, 0.0, low_open=True)
        self.momentum = _check_range("momentum", momentum, 0.0, 1.0)
        self.weight_decay = _check_range("weight_decay", weight_decay, 0.0)
        self.warmup_epochs = _check_range("warmup_epochs", warmup_epochs, 0.0)
        self.lr_decay = _check_range("lr_decay", lr_decay, 0.0, 1.0, low_open=True)
        self.label_smoothing = _check_range("label_smoothing", label_smoothing, 0.0, 0.99)
        self.train_loss_mean = MeanMetric()
        self.val_loss_mean = MeanMetric()
        self.val_accuracy = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro")
        self.history: list[dict[str, float | int | None]] = []
        self._last_val: tuple[float, float] | None = None

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def _logits(self, images: Tensor) -> Tensor:
        logits = self.model(images)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise TrialError(
                f"model outputs logits of shape {tuple(logits.shape)} but the data has {self.num_classes} "
                f"classes; build the model with num_classes={self.num_classes}"
            )
        return logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = F.cross_entropy(self._logits(images), labels, label_smoothing=self.label_smoothing)
        if not torch.isfinite(loss):
            raise TrialError(
                f"non-finite loss ({float(loss.detach())}) at epoch {self.current_epoch} step {batch_idx}; "
                "lower the learning rate"
            )
        self.train_loss_mean.update(loss.detach(), weight=labels.numel())
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self._logits(images)
        self.val_loss_mean.update(F.cross_entropy(logits, labels), weight=labels.numel())
        self.val_accuracy.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        val_loss, val_acc = self.val_loss_mean.compute(), self.val_accuracy.compute()
        self.val_loss_mean.reset()
        self.val_accuracy.reset()
        self.log_dict({"val_loss": val_loss, "val_acc": val_acc})
        if not self.trainer.sanity_checking:
            self._last_val = (float(val_loss), float(val_acc))

    def on_train_epoch_end(self) -> None:
        # Lightning validates at the end of each training epoch, before this hook, so both halves are known.
        train_loss = self.train_loss_mean.compute()
        self.train_loss_mean.reset()
        self.log("train_loss", train_loss)
        val_loss, val_acc = self._last_val if self._last_val is not None else (None, None)
        self._last_val = None
        self.history.append(
            {
                "epoch": self.current_epoch,
                "train_loss": float(train_loss),
                "val_loss": val_loss,
                "val_acc": val_acc,
            }
        )

    def _parameter_groups(self) -> list[dict[str, Any]]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        decayed = [p for p in params if p.ndim > 1]
        undecayed = [p for p in params if p.ndim <= 1]
        return [
            {"params": decayed, "weight_decay": self.weight_decay},
            {"params": undecayed, "weight_decay": 0.0},
        ]

    def _build_optimizer(self) -> torch.optim.Optimizer:
        groups = self._parameter_groups()
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum)
        if self.optimizer_name == "rmsprop":
            return torch.optim.RMSprop(groups, lr=self.lr, alpha=0.9, eps=1e-3, momentum=self.momentum)
        return torch.optim.Adam(groups, lr=self.lr)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self._build_optimizer()
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = total_steps / max(1, self.trainer.max_epochs or 1)
        scheduler = lr_scheduler(optimizer, self.schedule, total_steps, steps_per_epoch,
                                 warmup_steps=self.warmup_epochs * steps_per_epoch, lr_decay=self.lr_decay)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """Proxy runs are short: with TF's 0.99 (PyTorch 0.01) the running statistics barely leave their
    initial values in a few dozen steps, and validation in eval mode then scores at chance."""
    if not 0.0 < momentum <= 1.0:
        raise ConfigError(f"train.bn_momentum must lie in (0, 1] (PyTorch convention), got {momentum!r}")
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


@dataclass
class ProxyResult:
    """Outcome of one proxy training: final validation top-1 in [0, 1], wall time of ``fit``, per-epoch log."""

    accuracy: float
    seconds: float
    history: list[dict[str, float | int | None]] = field(default_factory=list)


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silences Lightning's INFO banners and its worker-count hint for the duration of one proxy training."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            # torch >= 2.10 deprecates a pytree API that Lightning 2.6 still calls on every batch transfer.
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _check_limit(name: str, value: float | None) -> float | None:
    if value is not None and (isinstance(value, bool) or value <= 0):
        raise ConfigError(
            f"train.{name} must be null, a positive batch count or a fraction in (0, 1], got {value!r}"
        )
    return value


def train_proxy(
    model: nn.Module,
    datamodule: ClassificationData,
    *,
    epochs: int = 5,
    lr: float = 0.05,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 4e-5,
    schedule: str = "cosine",
    warmup_epochs: float = 0.0,
    lr_decay: float = 0.97,
    label_smoothing: float = 0.1,
    limit_train_batches: float | None = None,
    limit_val_batches: float | None = None,
    precision: str | int = "32-true",
    accelerator: str = "cpu",
    devices: int | str | list[int] = 1,
    seed: int = 0,
    bn_momentum: float | None = None,
    logger: Logger | bool = False,
    callbacks: Sequence[Callback] = (),
) -> ProxyResult:
    """Trains ``model`` (in place) for ``epochs`` on ``datamodule`` and returns its final validation accuracy.

    Seeds everything with ``seed`` first, so the same seed and the same initial weights give the same accuracy
    on CPU. Raises :class:`TrialError` on a non-finite loss and :class:`ConfigError` on invalid settings.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"train.epochs must be a positive integer, got {epochs!r}")
    if bn_momentum is not None:
        set_bn_momentum(model, bn_momentum)
    module = ClassificationModule(
        model,
        datamodule.num_classes,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        schedule=schedule,
        warmup_epochs=warmup_epochs,
        lr_decay=lr_decay,
        label_smoothing=label_smoothing,
    )
    with _quiet_lightning():
        pl.seed_everything(seed, workers=True, verbose=False)
        trainer = pl.Trainer(  # fresh on every call: a Trainer that has finished fit() will not train again
            max_epochs=epochs,
            limit_train_batches=_check_limit("limit_train_batches", limit_train_batches),
            limit_val_batches=_check_limit("limit_val_batches", limit_val_batches),
            precision=precision,
            accelerator=accelerator,
            devices=devices,
            logger=logger,
            callbacks=list(callbacks),
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        seconds = time.perf_counter() - start
    scored = [row for row in module.history if row["val_acc"] is not None]
    if not scored:
        raise TrialError(
            f"training stopped after {len(module.history)} epoch(s) without a validation pass; "
            "check the callbacks and train.limit_val_batches"
        )
    return ProxyResult(accuracy=float(scored[-1]["val_acc"]), seconds=seconds, history=module.history)
