"""What the PPO-RNN controller reads from NNI: the decisions of a model space, and a trial's reward.

`decisions_of` lists the ``nni.mutable.Categorical`` decisions of a model space in declaration order (that of
``model_space.simplify()``, the order in which the space creates its mutables); `extract_reward` takes the scalar
reward out of a trial's final metric (a number, or a dict of them).
"""

from __future__ import annotations

import math
from typing import Any

from nni.mutable import Categorical, MutableAnnotation
from nni.nas.space import ExecutableModelSpace

from mnas_core.errors import ConfigError


def extract_reward(metric: Any, key: str = "default") -> float | None:
    """The scalar reward in a final metric: the metric itself, or ``metric[key]`` (falling back to ``default``)."""
    if isinstance(metric, dict):
        metric = metric.get(key, metric.get("default"))
    if isinstance(metric, bool) or not isinstance(metric, (int, float)) or not math.isfinite(metric):
        return None
    return float(metric)


def _finite(metric: Any, key: str) -> float | None:
    """`metric[key]` of a final metric dict when it is a finite number (not a bool); None otherwise."""
    value = metric.get(key) if isinstance(metric, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def accuracy_meeting(metric: Any, target_ms: float | None) -> float | None:
    """The accuracy of a final metric dict whose `latency_ms` meets `target_ms`; None otherwise (or without T)."""
    latency, accuracy = latency_of(metric), _finite(metric, "accuracy")
    if target_ms is None or latency is None or accuracy is None:
        return None
    return accuracy if latency <= target_ms else None


def latency_of(metric: Any) -> float | None:
    """The finite `latency_ms` of a final metric dict; None otherwise."""
    return _finite(metric, "latency_ms")


def decisions_of(model_space: ExecutableModelSpace) -> list[tuple[str, list]]:
    """(label, values) of each categorical decision, in declaration order; annotations are skipped."""
    decisions = []
    for label, mutable in model_space.simplify().items():
        if isinstance(mutable, MutableAnnotation):
            continue
        if not isinstance(mutable, Categorical):
            raise ConfigError(f"ppo_rnn supports categorical decisions only; {label!r} is {type(mutable).__name__}")
        decisions.append((str(label), list(mutable.values)))
    if not decisions:
        raise ConfigError("ppo_rnn: the model space has no decisions to search")
    return decisions
