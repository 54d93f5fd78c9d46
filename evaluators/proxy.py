"""`evaluator=proxy` (the default): the paper's recipe. Latency measured on the device first (cheap, and a
device fault then costs no training), then a short proxy training for accuracy."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

import torch
from torch import nn

from evaluators.base import TrialEvaluator, TrialParts
from mnas_core.errors import DeviceError, TrialError
from mnas_core.retry import retry

log = logging.getLogger(__name__)


def measure_with_retries(parts: TrialParts, model: nn.Module, arch_key: str) -> Any:
    """A device that is briefly unreachable or slow gets `latency.retries` more tries before the trial fails."""
    resolution = int(parts.datamodule.resolution)
    retries = int(parts.latency_settings.get("retries", 0))
    try:
        return retry(lambda: parts.latency.measure(model, arch_key, (1, 3, resolution, resolution)),
                     retries=retries, retry_on=DeviceError, delay_s=1.0, what="latency measurement")
    except DeviceError as err:
        if not retries:
            raise
        raise type(err)(f"{err} (gave up after {retries + 1} attempts)") from None


def seeded_init(model: nn.Module, seed: int, arch_key: str) -> None:
    """Initial weights drawn from the search seed and the architecture alone, so a trial's result does not
    depend on what ran before it in the process: a resumed search reproduces the trials of an unbroken one."""
    if not hasattr(model, "reset_parameters"):
        return
    digest = int(hashlib.sha256(f"{seed}:{arch_key}".encode()).hexdigest()[:8], 16)
    with torch.random.fork_rng():
        torch.manual_seed(digest)
        model.reset_parameters()


class ProxyEvaluator(TrialEvaluator):
    kind = "proxy"

    def __init__(self, parts: TrialParts) -> None:
        from evaluators.accuracy import check_train_settings

        super().__init__(parts)
        check_train_settings(int(parts.datamodule.num_classes), **parts.train)  # bad train.* fails at startup

    def evaluate(self, model: nn.Module, arch_key: str) -> dict[str, Any]:
        from evaluators.accuracy import train_proxy

        started = time.perf_counter()
        measured = measure_with_retries(self.parts, model, arch_key)
        measure_seconds = time.perf_counter() - started
        seeded_init(model, self.parts.seed, arch_key)
        proxy = train_proxy(model, self.parts.datamodule, seed=self.parts.seed, **self.parts.train)
        if not math.isfinite(proxy.accuracy):
            raise TrialError(f"validation accuracy is {proxy.accuracy}; lower the learning rate")
        return {
            "accuracy": proxy.accuracy,
            "latency_ms": measured.median_ms,
            "latency": measured.to_dict(),
            "latency_source": getattr(measured, "source", "measured"),  # latency.mode=predict*: "predicted"
            "train_seconds": proxy.seconds,
            "measure_seconds": measure_seconds,
            "history": proxy.history,
        }
