"""The MnasNet reward (paper, Eq. 2): ACC * (LAT / T) ** w, w = alpha if LAT <= T else beta."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mnas_core.errors import ConfigError


@dataclass(frozen=True)
class MnasReward:
    """Soft constraint: alpha = beta = -0.07. Hard constraint: alpha = 0, beta = -1."""

    target_ms: float
    alpha: float = -0.07
    beta: float = -0.07

    def __post_init__(self) -> None:
        if not (isinstance(self.target_ms, (int, float)) and math.isfinite(self.target_ms) and self.target_ms > 0):
            raise ConfigError(f"reward.target_ms must be a positive number of milliseconds, got {self.target_ms!r}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)) or value > 0:
                raise ConfigError(
                    f"reward.{name} must be <= 0 (a slower model may not score higher), got {value!r}; "
                    "soft: alpha=beta=-0.07, hard: alpha=0 beta=-1"
                )

    @classmethod
    def soft(cls, target_ms: float) -> MnasReward:
        return cls(target_ms, -0.07, -0.07)

    @classmethod
    def hard(cls, target_ms: float) -> MnasReward:
        return cls(target_ms, 0.0, -1.0)

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        if not (math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
            raise ValueError(f"accuracy must lie in [0, 1], got {accuracy}")
        if not (math.isfinite(latency_ms) and latency_ms > 0):
            raise ValueError(f"latency must be a positive number of ms, got {latency_ms}")
        exponent = self.alpha if latency_ms <= self.target_ms else self.beta
        return accuracy * (latency_ms / self.target_ms) ** exponent
