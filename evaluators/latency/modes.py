"""`latency.mode`: where a trial's latency comes from (one config word).

* ``measure`` (default): every architecture exported and measured on the device (`LatencyEvaluator`).
* ``predict``: the layer table only (`LatencyPredictor`); no device measurement during the search.
* ``predict_verify``: every architecture predicted; each one that enters the current top-k (by reward) or the
  accuracy/latency Pareto front is also measured on the device, its reward uses the measured figure, both
  figures are recorded, and the calibration is refitted with it (and saved into the table file). A layer the
  table lacks is measured on demand.

`PredictedLatency` has LatencyEvaluator's surface (`measure(model, arch_key, shape)` -> a result with
`median_ms` and `to_dict()`), plus `finish(...)`, which the trial context calls once accuracy is known.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mnas_core.errors import ConfigError

from .evaluator import LatencyEvaluator
from .predictor import LatencyPredictor, Meter, MissingLayerError, add_measured_layers
from .table import LatencyTable, default_table_path

log = logging.getLogger(__name__)
MODES = ("measure", "predict", "predict_verify")


@dataclass(frozen=True)
class PredictedResult:
    """A predicted latency, shaped like a LatencyResult where the trial needs it (median_ms, to_dict())."""

    median_ms: float
    sum_ms: float
    layers: int
    source: str = "predicted"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PredictedLatency:
    """Latency from the table (``verify=False``: mode predict) or from the table checked on the device."""

    def __init__(self, table: LatencyTable, evaluator: LatencyEvaluator, verify: bool = False, top_k: int = 3,
                 num_classes: int = 1000):
        self.table, self.evaluator, self.verify, self.top_k = table, evaluator, verify, int(top_k)
        self.predictor = LatencyPredictor(table, num_classes)
        self.seen: list[tuple[float, float, float]] = []  # (reward, accuracy, latency_ms) of finished trials
        self.verified: list[str] = []                     # arch keys measured on the device, in order
        self._runtime_checked = False
        self._meter: Meter | None = None

    @property
    def device(self) -> Any:
        return self.evaluator.device

    @property
    def meter(self) -> Meter:
        """Measures as the table was built (same repeats), so verified figures and the table agree."""
        if self._meter is None:
            self._meter = Meter(self.device, self.evaluator.lock_dir, self.evaluator.interval_log,
                                self.table.repeats or 1)
        return self._meter

    def _check_runtime(self) -> None:
        if not self._runtime_checked:  # reaches the device: only when it is about to be used anyway
            self.table.check_matches(runtime=self.device.runtime_id())
            self._runtime_checked = True

    def measure(self, model: nn.Module, arch_key: str, input_shape: Sequence[int]) -> PredictedResult:
        arch = getattr(model, "arch", None)
        if arch is None:
            raise ConfigError("latency.mode=predict needs a model built from an architecture (model.arch)")
        resolution = int(tuple(input_shape)[-1])
        self.table.check_matches(resolution=resolution)
        num_classes = int(getattr(model, "num_classes", self.predictor.num_classes))
        try:
            terms = self.predictor.terms(arch, num_classes)
        except MissingLayerError as err:
            if not self.verify:
                raise
            self._measure_missing(err.signatures)
            terms = self.predictor.terms(arch, num_classes)
        return PredictedResult(self.predictor.calibrated(terms), terms.sum_ms, terms.count)

    def _measure_missing(self, signatures: list[str]) -> None:
        self._check_runtime()
        add_measured_layers(self.table, signatures, self.meter)
        log.info("measured %d missing layer(s) on %s and added them to %s", len(signatures), self.device.name,
                 self.table.path)

    def finish(self, model: nn.Module, arch_key: str, input_shape: Sequence[int], metric: dict[str, Any],
               reward: Callable[[float, float], float]) -> dict[str, Any]:
        """The trial's metric with both latency fields; in predict_verify, measured if it enters top-k/Pareto."""
        metric = dict(metric)
        if metric.get("latency_source") != "predicted":
            return metric
        predicted, accuracy = float(metric["latency_ms"]), float(metric["accuracy"])
        metric["latency_predicted_ms"] = predicted
        latency = predicted
        if self.verify and self.enters_front(reward(accuracy, predicted), accuracy, predicted):
            latency = self._verify(model, arch_key, input_shape, metric)
        self.seen.append((reward(accuracy, latency), accuracy, latency))
        return metric

    def enters_front(self, reward_value: float, accuracy: float, latency_ms: float) -> bool:
        """Would this trial enter the top-k by reward, or the Pareto front of (accuracy up, latency down)?"""
        rewards = sorted((r for r, _, _ in self.seen), reverse=True)
        if len(rewards) < self.top_k or reward_value > rewards[self.top_k - 1]:
            return True
        return not any(a >= accuracy and lat <= latency_ms and (a > accuracy or lat < latency_ms)
                       for _, a, lat in self.seen)

    def _verify(self, model: nn.Module, arch_key: str, input_shape: Sequence[int], metric: dict[str, Any]) -> float:
        self._check_runtime()
        (measured,) = self.meter.measure([(model, (1, *tuple(input_shape)[1:]))])
        arch = model.arch  # type: ignore[attr-defined]
        terms = self.predictor.terms(arch, int(getattr(model, "num_classes", self.predictor.num_classes)))
        if arch_key not in self.table.calibration_keys():
            self.table.add_model(arch_key, terms, measured.median_ms, "verify")
            self.predictor.refit()
            self.table.save()
        self.verified.append(arch_key)
        metric.update(latency_ms=measured.median_ms, latency_measured_ms=measured.median_ms,
                      latency_source="measured", latency={**measured.to_dict(), "predicted_ms": metric["latency_ms"]})
        return measured.median_ms


def latency_for_mode(mode: str, evaluator: LatencyEvaluator, resolution: int, num_classes: int = 1000,
                     table: str | Path | None = None, top_k: int = 3) -> LatencyEvaluator | PredictedLatency:
    """The latency part for ``latency.mode``; a missing, damaged or foreign table fails here, in one line."""
    if mode not in MODES:
        raise ConfigError(f"latency.mode={mode!r} is unknown; use one of {', '.join(MODES)}")
    if mode == "measure":
        return evaluator
    path = Path(table).expanduser() if table else default_table_path(evaluator.device.name, resolution)
    loaded = LatencyTable.load(path)
    loaded.check_matches(device=evaluator.device.name, resolution=int(resolution))
    return PredictedLatency(loaded, evaluator, verify=mode == "predict_verify", top_k=top_k, num_classes=num_classes)
