"""The evaluator surface: how a trial's accuracy and latency are obtained (one config word, `evaluator=`).

The trial context (built once per process by the app) hands each evaluator its `TrialParts`; every part is
built on first use, so an evaluator that needs no device or data never builds one. An evaluator returns the
trial's measurements; the app computes the reward from `accuracy` and `latency_ms` and records the rest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

from torch import nn


class LatencySource(Protocol):
    """Latency of a model at batch 1: `evaluators.latency.LatencyEvaluator` (measured on the device)."""

    def measure(self, model: nn.Module, arch_key: str, input_shape: Sequence[int]) -> Any: ...


class TrialParts(Protocol):
    """What an evaluator may use. `train` holds the `train.*` config; `latency_settings` the `latency.*` one."""

    seed: int
    train: dict[str, Any]
    latency_settings: dict[str, Any]

    @property
    def datamodule(self) -> Any: ...

    @property
    def latency(self) -> LatencySource: ...


class TrialEvaluator(ABC):
    """Scores one sampled model. `kind` is recorded with every trial (`evaluator` in trials.jsonl)."""

    kind: str = "?"

    def __init__(self, parts: TrialParts) -> None:
        self.parts = parts

    @abstractmethod
    def evaluate(self, model: nn.Module, arch_key: str) -> dict[str, Any]:
        """At least `accuracy` (in [0, 1]) and `latency_ms`; optionally `latency` (the measurement's summary),
        `latency_source`, `history`, `train_seconds`, `measure_seconds`. Raise a `MnasNniError` on failure."""
