"""The summary of one latency measurement and how it is computed from raw per-run timings."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one model on one device, in milliseconds. ``cv`` is std / mean (0.02 = 2 %)."""

    median_ms: float
    mean_ms: float
    p10_ms: float
    p90_ms: float
    std_ms: float
    runs: int
    cv: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyResult:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def summarize(samples_ms: Sequence[float]) -> LatencyResult:
    """Summarize the timed runs (warm-up already excluded) of one measurement."""
    samples = [float(s) for s in samples_ms]
    if not samples or not all(math.isfinite(s) and s >= 0 for s in samples):
        raise ValueError(f"need at least one finite, non-negative timing, got {samples[:5]}...")
    mean = statistics.fmean(samples)
    std = statistics.stdev(samples) if len(samples) > 1 else 0.0
    if len(samples) > 1:
        deciles = statistics.quantiles(samples, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10 = p90 = samples[0]
    return LatencyResult(
        median_ms=statistics.median(samples),
        mean_ms=mean,
        p10_ms=p10,
        p90_ms=p90,
        std_ms=std,
        runs=len(samples),
        cv=std / mean if mean > 0 else 0.0,
    )
