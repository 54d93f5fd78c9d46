"""`evaluator=supernet`: every trial scored by one weight-sharing supernet, trained (or loaded) once per process.

A trial's accuracy is its path's validation score with the inherited weights, after the path's BN statistics
are recalibrated on a few training batches (`supernet.score`: accuracy, or likelihood, exp(-validation loss)); its latency is measured on the device like a proxy trial (cached by
architecture). Settings are the `supernet.*` group (conf/evaluator/supernet.yaml). A trained supernet lives in
`supernet.dir` (by default `outputs/supernets/<hash of space, data and training settings>`), so a second search
with the same settings reuses it and a killed training resumes there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from evaluators.base import TrialEvaluator, TrialParts
from evaluators.proxy import measure_with_retries
from mnas_core.errors import ConfigError

log = logging.getLogger(__name__)
UNTRAINED_LOSS_FRACTION = 0.9  # of ln(classes): a training loss above it has learned next to nothing
# `supernet.*` keys that are not arguments of train_supernet.
SCORING_KEYS = ("checkpoint", "dir", "calibration_batches", "val_batches", "score_device", "score")
SPLIT_KEYS = ("split", "split_epochs")  # few-shot sub-supernets, trained from the one-shot one in its folder


def untrained_warning(train_loss: float, num_classes: int) -> str | None:
    """The warning for a supernet whose training loss is still within 10% of a uniform guess's, else None."""
    chance = math.log(num_classes)  # cross-entropy of the uniform prediction, with or without label smoothing
    if train_loss < UNTRAINED_LOSS_FRACTION * chance:
        return None
    return (f"supernet: its training ended at loss {train_loss:.3f}, a uniform guess's is {chance:.3f}, so its "
            "scores will not rank architectures; train it longer (supernet.epochs) or search with evaluator=proxy")


def _plain(node: Any) -> dict[str, Any]:
    return dict(OmegaConf.to_container(node, resolve=True)) if isinstance(node, DictConfig) else dict(node or {})


class SupernetEvaluator(TrialEvaluator):
    kind = "supernet"

    def __init__(self, parts: TrialParts, search_space: Any, settings: Any) -> None:
        super().__init__(parts)
        self.space_settings = {k: v for k, v in _plain(search_space).items() if not k.startswith("_")}
        self.settings = _plain(settings)
        self.calibration_batches = int(self.settings.get("calibration_batches", 5))
        self.val_batches = self.settings.get("val_batches")
        self.score = self.settings.get("score", "accuracy")
        if self.calibration_batches < 1:
            raise ConfigError(f"supernet.calibration_batches must be >= 1, got {self.calibration_batches}")
        from evaluators.supernet_train import check_score

        check_score(self.score)
        self._supernet, self._base, self._checked = None, None, False
        from evaluators.supernet_split import check_split

        split = self.settings.get("split")
        check_split(split, self.settings.get("split_epochs", 2), self.space_config() if split else None)
        if self.settings.get("checkpoint"):  # a missing or foreign checkpoint fails now, before any trial
            self._base = self._load(self.settings["checkpoint"])
        else:  # and so do training settings that would fail the first trial, and every one after it
            from evaluators.supernet_train import (
                check_distill,
                check_epochs,
                check_last_checkpoint,
                check_sampling,
            )

            check_epochs(self.settings.get("epochs", 10))
            check_distill(self.settings.get("distill", False))
            check_sampling(self.settings.get("sampling", "fair"), self.settings.get("warmup", 0.5))
            check_last_checkpoint(self.training_dir())

    def space_config(self):
        from search_spaces.space import SpaceConfig

        datamodule = self.parts.datamodule
        fields = {**self.space_settings, "resolution": int(datamodule.resolution)}
        if fields.get("num_classes") is None:
            fields["num_classes"] = int(datamodule.num_classes)
        return SpaceConfig(**fields)

    def _load(self, path: str):
        from search_spaces.supernet import Supernet

        return Supernet.load(Path(path).expanduser(), self.space_config())

    def training_dir(self) -> Path:
        if self.settings.get("dir"):
            return Path(self.settings["dir"]).expanduser()
        identity = {"space": self.space_settings, "data": getattr(self.parts, "settings", {}).get("data"),
                    "seed": self.parts.seed, "train": self.train_args()}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return Path("outputs") / "supernets" / digest

    def train_args(self) -> dict[str, Any]:
        """The one-shot training's arguments (`train_supernet`'s): what its folder's hash covers."""
        return {k: v for k, v in self.settings.items() if k not in SCORING_KEYS + SPLIT_KEYS}

    @property
    def supernet(self):
        """Trained on first use (or reused from `training_dir()`), split into sub-supernets with `supernet.split`,
        then kept for every trial of the process."""
        if self._supernet is None:
            from evaluators.supernet_split import train_split
            from evaluators.supernet_train import train_supernet

            directory, train_args = self.training_dir(), self.train_args()
            if self._base is None:
                log.info("supernet: training in %s (%s)", directory, train_args)
                self._base = train_supernet(self.space_config(), self.parts.datamodule, directory,
                                            seed=self.parts.seed, **train_args)
            self._supernet = self._base
            if self.settings.get("split"):
                if self.settings.get("checkpoint") and not self.settings.get("dir"):  # beside the one they refine
                    directory = Path(self.settings["checkpoint"]).expanduser().parent
                log.info("supernet: few-shot sub-supernets by %s in %s", self.settings["split"], directory)
                self._supernet = train_split(self.space_config(), self.parts.datamodule, directory, self._base,
                                             self.settings["split"], split_epochs=self.settings.get("split_epochs", 2),
                                             seed=self.parts.seed, **train_args)
            self._supernet.eval()
        if not self._checked:
            self._checked = True
            self.warn_if_untrained()
        return self._supernet

    def warn_if_untrained(self) -> None:
        """One warning when the supernet's last training epoch ended at the loss of a uniform guess: then every
        trial's score is noise and the search ranks nothing (a short or failed supernet training)."""
        history = self._supernet.training_info.get("history") or []
        if history:
            message = untrained_warning(float(history[-1]["train_loss"]), int(self.parts.datamodule.num_classes))
            if message:
                log.warning(message)

    def evaluate(self, model: nn.Module, arch_key: str) -> dict[str, Any]:
        from evaluators.supernet_train import score_path

        supernet = self.supernet
        started = time.perf_counter()
        _, accuracy = score_path(supernet, model.arch, self.parts.datamodule,
                                 calibration_batches=self.calibration_batches, val_batches=self.val_batches,
                                 device=self.settings.get("score_device", "cpu"), score=self.score)
        score_seconds = time.perf_counter() - started
        started = time.perf_counter()
        measured = measure_with_retries(self.parts, model, arch_key)
        return {
            "accuracy": accuracy,
            "latency_ms": measured.median_ms,
            "latency": measured.to_dict(),
            "latency_source": "measured",
            "train_seconds": score_seconds,  # BN recalibration + validation; the supernet's own training is shared
            "measure_seconds": time.perf_counter() - started,
        }
