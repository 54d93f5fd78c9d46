"""`evaluator=proxy` (the default): the paper's recipe. Latency measured on the device first (cheap, and a
device fault then costs no training), then a short proxy training for accuracy."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

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


class ProxyEvaluator(TrialEvaluator):
    kind = "proxy"

    def evaluate(self, model: nn.Module, arch_key: str) -> dict[str, Any]:
        from evaluators.accuracy import train_proxy

        started = time.perf_counter()
        measured = measure_with_retries(self.parts, model, arch_key)
        measure_seconds = time.perf_counter() - started
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
