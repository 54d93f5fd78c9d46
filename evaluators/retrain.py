"""Full training of one architecture with the MnasNet recipe, as a LightningModule.

The recipe (conf/experiment/retrain.yaml) follows the paper (section 5) and the official TensorFlow code:
RMSProp (decay 0.9, momentum 0.9, epsilon inside the square root and the mean square starting at 1, as in TF), a linear warm-up to the peak
learning rate, then a staircase exponential decay counted from step 0, label smoothing, dropout, TF-style
BatchNorm momentum, L2 weight decay on weights only, and an exponential moving average of the weights (and
BatchNorm statistics) that is evaluated beside the raw weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnas_core.errors import ConfigError, TrialError

__all__ = ["RecipeSchedule", "RetrainModule", "TfEma", "apply_recipe_to_model", "init_rmsprop_like_tf", "rmsprop_tf_eps"]


@dataclass(frozen=True)
class RecipeSchedule:
    """The official learning-rate multiplier per optimizer step (peak lr = 1).

    ``step < warmup_steps``: ``step / warmup_steps`` (warmup_steps = int(warmup_epochs * steps_per_epoch));
    after: ``lr_decay ** floor(step / (lr_decay_epochs * steps_per_epoch))`` (TF's staircase exponential_decay,
    counted from step 0, as in the official build_learning_rate).
    """

    steps_per_epoch: float
    warmup_epochs: float = 5.0
    lr_decay: float = 0.97
    lr_decay_epochs: float = 2.4

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup_epochs * self.steps_per_epoch)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        return self.lr_decay ** math.floor(step / (self.lr_decay_epochs * self.steps_per_epoch))


class TfEma:
    """``multi_avg_fn`` for AveragedModel: TF's ExponentialMovingAverage with ``num_updates``, whose decay is
    ``min(decay, (1 + n) / (10 + n))`` so that the average follows the weights early in training."""

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def __call__(self, averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        n = float(num_averaged)
        get_ema_multi_avg_fn(min(self.decay, (1.0 + n) / (10.0 + n)))(averaged, current, num_averaged)


def rmsprop_tf_eps(tf_epsilon: float) -> float:
    """TF adds epsilon inside the square root (sqrt(ms + eps)), PyTorch outside (sqrt(ms) + eps): the PyTorch
    epsilon that matches TF's where it matters (small ``ms``) is ``sqrt(eps)``."""
    return math.sqrt(tf_epsilon)


def init_rmsprop_like_tf(optimizer: torch.optim.RMSprop) -> None:
    """TF's RMSProp starts its mean square at 1, PyTorch's at 0: from 0 the first steps divide by the square
    root of one squared gradient and move every weight by about lr / sqrt(1 - decay) at once. Seeding
    PyTorch's own state (which it then uses as is) gives TF's start."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state[param]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["square_avg"] = torch.ones_like(param, memory_format=torch.preserve_format)
                if group["momentum"] > 0:
                    state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                if group["centered"]:
                    state["grad_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)


def apply_recipe_to_model(model: nn.Module, *, dropout: float, bn_momentum: float, bn_epsilon: float) -> None:
    """Dropout before the classifier, and BatchNorm momentum given in TF's convention (0.99 = PyTorch 0.01)."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"retrain.dropout must lie in [0, 1), got {dropout!r}")
    if not 0.0 <= bn_momentum < 1.0:
        raise ConfigError(f"retrain.bn_momentum must lie in [0, 1) (TF convention, e.g. 0.99), got {bn_momentum!r}")
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = dropout
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum, module.eps = 1.0 - bn_momentum, bn_epsilon


class RetrainModule(pl.LightningModule):
    """Trains ``model`` with the recipe; validates the raw weights and their EMA on the evaluation split.

    Logs per epoch: ``train_loss``, ``val_loss``, ``val_top1``, ``val_top5``, ``ema_val_top1``,
    ``ema_val_top5``, ``lr``. ``arch`` (the architecture as a dict) is stored in every checkpoint.
    """

    def __init__(self, model: nn.Module, num_classes: int, recipe: dict[str, Any], arch: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.recipe = recipe
        self.arch = arch
        self.ema = AveragedModel(model, multi_avg_fn=TfEma(float(recipe["ema_decay"])), use_buffers=True)
        self.ema.requires_grad_(False)
        self.train_loss = MeanMetric()
        top5 = min(5, num_classes)
        self.metrics = nn.ModuleDict({
            "val_loss": MeanMetric(), "ema_val_loss": MeanMetric(),
            "val_top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "val_top5": MulticlassAccuracy(num_classes, top_k=top5, average="micro"),
            "ema_val_top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "ema_val_top5": MulticlassAccuracy(num_classes, top_k=top5, average="micro"),
        })
        self.history: list[dict[str, float]] = []

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=float(self.recipe["label_smoothing"]))
        if not torch.isfinite(loss):
            raise TrialError(f"non-finite loss at step {self.global_step}; lower retrain.lr or raise the warm-up")
        self.train_loss.update(loss.detach(), weight=labels.numel())
        self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ema.update_parameters(self.model)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        for prefix, net in (("", self.model), ("ema_", self.ema.module)):
            logits = net(images)
            self.metrics[f"{prefix}val_loss"].update(F.cross_entropy(logits, labels), weight=labels.numel())
            self.metrics[f"{prefix}val_top1"].update(logits, labels)
            self.metrics[f"{prefix}val_top5"].update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        values = {name: float(metric.compute()) for name, metric in self.metrics.items()}
        for metric in self.metrics.values():
            metric.reset()
        self.log_dict(values, prog_bar=False, sync_dist=False)
        if not self.trainer.sanity_checking:
            self.history.append({"epoch": self.current_epoch, "step": self.global_step, **values})

    def on_train_epoch_end(self) -> None:
        train_loss = float(self.train_loss.compute())
        self.train_loss.reset()
        self.log("train_loss", train_loss)
        if self.history and self.history[-1]["epoch"] == self.current_epoch:  # validation ran before this hook
            self.history[-1]["train_loss"] = train_loss
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["arch"] = self.arch
        checkpoint["history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("history", []))

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """L2 on conv and linear weights only, as the official code skips BatchNorm (and there are no biases)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": float(self.recipe["weight_decay"])},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]

    def configure_optimizers(self) -> dict[str, Any]:
        recipe = self.recipe
        if recipe["optimizer"] != "rmsprop":
            raise ConfigError(f"retrain.optimizer must be rmsprop (the MnasNet recipe), got {recipe['optimizer']!r}")
        optimizer = torch.optim.RMSprop(
            self._parameter_groups(), lr=float(recipe["lr"]), alpha=float(recipe["rmsprop_decay"]),
            eps=rmsprop_tf_eps(float(recipe["rmsprop_epsilon"])), momentum=float(recipe["momentum"]),
        )
        init_rmsprop_like_tf(optimizer)
        steps_per_epoch = max(1, int(self.trainer.estimated_stepping_batches)) / max(1, self.trainer.max_epochs)
        schedule = RecipeSchedule(steps_per_epoch, float(recipe["warmup_epochs"]), float(recipe["lr_decay"]),
                                  float(recipe["lr_decay_epochs"]))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": LambdaLR(optimizer, schedule), "interval": "step"}}
