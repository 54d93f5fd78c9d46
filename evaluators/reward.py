"""Rewards of accuracy and latency (`reward=`): the MnasNet reward (paper, Eq. 2), ACC * (LAT / T) ** w with
w = alpha if LAT <= T else beta (`soft`, `hard`), and TuNAS's absolute reward ACC + beta * |LAT / T - 1| (`abs`)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

from mnas_core.errors import ConfigError


def check_target(target_ms: object) -> None:
    if not (isinstance(target_ms, (int, float)) and math.isfinite(target_ms) and target_ms > 0):
        raise ConfigError(f"reward.target_ms must be a positive number of milliseconds, got {target_ms!r}")


def check_measurements(accuracy: float, latency_ms: float) -> None:
    if not (math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
        raise ValueError(f"accuracy must lie in [0, 1], got {accuracy}")
    if not (math.isfinite(latency_ms) and latency_ms > 0):
        raise ValueError(f"latency must be a positive number of ms, got {latency_ms}")


class Reward(ABC):
    """The reward interface (`reward=`): `target_ms`, the latency target T the console, the answer for a
    target and the trackers report, and `reward(accuracy, latency_ms) -> float`, what the strategy maximises.
    Raise a `ConfigError` from the constructor for a bad setting: it is shown as one line before any trial."""

    target_ms: float

    @abstractmethod
    def __call__(self, accuracy: float, latency_ms: float) -> float: ...


@dataclass(frozen=True)
class MnasReward(Reward):
    """Soft constraint: alpha = beta = -0.07. Hard constraint: alpha = 0, beta = -1."""

    target_ms: float
    alpha: float = -0.07
    beta: float = -0.07

    def __post_init__(self) -> None:
        check_target(self.target_ms)
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
        check_measurements(accuracy, latency_ms)
        exponent = self.alpha if latency_ms <= self.target_ms else self.beta
        return accuracy * (latency_ms / self.target_ms) ** exponent


@dataclass(frozen=True)
class AbsReward(Reward):
    """TuNAS's absolute reward (Bender et al. 2020): ACC + beta * |LAT / T - 1|, beta < 0. It pulls the latency
    towards T from both sides, so a search lands near the target rather than anywhere below it."""

    target_ms: float
    beta: float = -0.07  # 2x the target costs 0.07 of accuracy (MnasNet's soft exponent; TuNAS tunes beta)

    def __post_init__(self) -> None:
        check_target(self.target_ms)
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta)) or self.beta >= 0:
            raise ConfigError(f"reward.beta must be < 0 for reward=abs (the cost of missing T), got {self.beta!r}; "
                              "e.g. reward.beta=-0.07")

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        check_measurements(accuracy, latency_ms)
        return accuracy + self.beta * abs(latency_ms / self.target_ms - 1.0)
