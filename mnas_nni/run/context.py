"""The trial context: what every trial of a search shares, built once per process.

The search builds it from the resolved config before the first trial (so a bad device or data folder fails
at startup) and each trial reuses it: the datamodule is loaded once, the latency device is described once,
the latency cache stays open. In a training-service trial process, `context_for` builds it from the
evaluator's arguments on the first trial of that process.
"""

from __future__ import annotations

import json
import time
from functools import cached_property
from typing import Any

from torch import nn

from evaluators.latency import LatencyEvaluator
from mnas_core.errors import TrialError
from mnas_nni.plugins import build
from mnas_nni.run.records import SUCCEEDED
from search_spaces.profile import profile_model

SETTINGS = ("data", "train", "device", "reward", "latency", "evaluator", "seed")


class TrialContext:
    """Built parts of one search's trials; each part is built on first use."""

    def __init__(self, settings: dict[str, Any]):
        missing = [key for key in SETTINGS if key not in settings]
        if missing:
            raise TrialError(f"trial settings lack {', '.join(missing)}")
        self.settings = settings
        self.seed = int(settings["seed"])
        self.train: dict[str, Any] = dict(settings["train"])
        self.latency_settings: dict[str, Any] = dict(settings["latency"])
        self.replayed: set[int] = set()  # trials a resumed search already replayed (see mnas_nni/run/resume.py)

    @cached_property
    def datamodule(self) -> Any:
        return build("data", self.settings["data"])

    @cached_property
    def device(self) -> Any:
        return build("device", self.settings["device"])

    @cached_property
    def latency(self) -> Any:
        """latency.mode: measure (LatencyEvaluator) | predict | predict_verify (the layer table's predictor)."""
        from evaluators.latency import latency_for_mode

        latency = self.latency_settings
        evaluator = LatencyEvaluator(self.device, cache_path=latency.get("cache_path"), lock_dir=latency["lock_dir"],
                                     outlier_rel_tol=latency["outlier_rel_tol"],
                                     interval_log=latency.get("interval_log"))
        return latency_for_mode(latency.get("mode", "measure"), evaluator, int(self.datamodule.resolution),
                                num_classes=int(self.datamodule.num_classes), table=latency.get("table"),
                                top_k=int(latency.get("verify_top_k", 3)))

    @cached_property
    def reward(self) -> Any:
        return build("reward", self.settings["reward"])

    @cached_property
    def evaluator(self) -> Any:
        return build("evaluator", self.settings["evaluator"], parts=self)

    def run(self, model: nn.Module) -> dict[str, Any]:
        """Score one sampled model: the evaluator's measurements, its size, the reward."""
        arch = getattr(model, "arch", None)
        if arch is None:
            raise TrialError("the sampled model carries no architecture (.arch); use a search_spaces model space")
        started = time.perf_counter()
        profile = profile_model(model, int(self.datamodule.resolution))
        metric = self.evaluator.evaluate(model, arch.key)
        finish = getattr(self.latency, "finish", None)  # predicted latency: record it, verify it on the device
        if finish is not None:
            resolution = int(self.datamodule.resolution)
            metric = finish(model, arch.key, (1, 3, resolution, resolution), metric, self.reward)
        return {
            "default": self.reward(metric["accuracy"], metric["latency_ms"]),
            "status": SUCCEEDED,
            "evaluator": self.evaluator.kind,
            **metric,
            "params": profile.params,
            "macs": profile.macs,
            "duration_seconds": time.perf_counter() - started,
            "arch": arch.to_dict(),
        }


_CONTEXTS: dict[str, TrialContext] = {}


def settings_key(settings: dict[str, Any]) -> str:
    return json.dumps({k: settings[k] for k in SETTINGS}, sort_keys=True, default=str)


def context_for(settings: dict[str, Any]) -> TrialContext:
    """The process's context for these settings: the search's own one in-process, else built once here."""
    key = settings_key(settings)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = TrialContext({k: settings[k] for k in SETTINGS})
    return _CONTEXTS[key]
