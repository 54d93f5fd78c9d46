"""Any Optuna sampler as an NNI strategy: ask a trial, suggest one categorical per decision, tell the result.

Objectives are read from the trial's final metric: a dict like ``{"default": r, "accuracy": a, "latency_ms": l}``
(NSGA-II on accuracy and latency), or a plain float when the only objective is ``default``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nni.mutable import Categorical, MutableAnnotation, Sample, SampleValidationError
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy.base import Strategy

from mnas_core.errors import ConfigError

if TYPE_CHECKING:
    import optuna

__all__ = ["OptunaStrategy", "make_sampler"]

_logger = logging.getLogger(__name__)
_SAMPLERS = {"nsga2": "NSGAIISampler", "nsga3": "NSGAIIISampler", "tpe": "TPESampler", "random": "RandomSampler",
             "cmaes": "CmaEsSampler", "gp": "GPSampler", "qmc": "QMCSampler"}
_PRIMITIVE = (type(None), bool, int, float, str)


def _optuna():
    try:
        import optuna
    except ImportError as err:
        raise ConfigError("this strategy needs the 'optuna' extra: pip install 'mnas-nni[optuna]'") from err
    return optuna


def make_sampler(name: str, seed: int | None = None, **kwargs: Any) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by short name (nsga2, nsga3, tpe, random, cmaes, gp, qmc)."""
    optuna = _optuna()
    if name not in _SAMPLERS:
        raise ConfigError(f"unknown Optuna sampler {name!r}; choose one of {sorted(_SAMPLERS)}")
    return getattr(optuna.samplers, _SAMPLERS[name])(seed=seed, **kwargs)


class OptunaStrategy(Strategy):
    """Drive an Optuna sampler through NNI's engine with ask/tell.

    Parameters
    ----------
    sampler
        A short name (see :func:`make_sampler`) or an ``optuna.samplers.BaseSampler``.
    sampler_kwargs
        Keyword arguments of the named sampler.
    objectives
        Metric key -> ``maximize`` / ``minimize``, in order. Default: ``{"default": "maximize"}``.
    seed
        Seed of a named sampler.
    dedup
        Tell an already-evaluated architecture its known values instead of training it again (no budget used).
    stall_limit
        Stop after this many duplicates in a row.
    """

    def __init__(self, *, sampler: str | Any = "tpe", sampler_kwargs: Mapping[str, Any] | None = None,
                 objectives: Mapping[str, str] | None = None, seed: int | None = None, dedup: bool = True,
                 stall_limit: int = 1000):
        super().__init__()
        optuna = _optuna()
        self.objectives = dict(objectives or {"default": "maximize"})
        bad = {d for d in self.objectives.values() if d not in ("maximize", "minimize")}
        if bad or not self.objectives:
            raise ConfigError(f"objectives must map metric keys to 'maximize'/'minimize', got {self.objectives}")
        if isinstance(sampler, str):
            sampler = make_sampler(sampler, seed, **dict(sampler_kwargs or {}))
        self.sampler = sampler
        self.study = optuna.create_study(directions=list(self.objectives.values()), sampler=sampler)
        self.dedup, self.stall_limit = dedup, stall_limit
        self._decisions: list[tuple[str, list, bool]] = []  # label, values, suggest indices instead of values
        self._running: dict[ExecutableModelSpace, Any] = {}
        self._raw: dict[ExecutableModelSpace, Any] = {}
        self._known: dict[tuple, list[float] | None] = {}  # evaluated architecture -> values (None: failed)
        self._lock = threading.Lock()
        self._deferred_state: dict | None = None

    def extra_repr(self) -> str:
        return f"sampler={type(self.sampler).__name__}, objectives={self.objectives}"

    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        for label, mutable in model_space.simplify().items():
            if isinstance(mutable, MutableAnnotation):
                continue
            if not isinstance(mutable, Categorical):
                raise ConfigError(f"the Optuna bridge supports categorical decisions only; {label!r} is "
                                  f"{type(mutable).__name__}")
            values = list(mutable.values)
            self._decisions.append((str(label), values, not all(isinstance(v, _PRIMITIVE) for v in values)))
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_metric)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_end)
        if self._deferred_state is not None:
            self.load_state_dict(self._deferred_state)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_metric)
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_end)

    def _run(self) -> None:
        stall = 0
        while stall < self.stall_limit and self.wait_for_resource():
            with self._lock:
                trial = self.study.ask()
                sample, key = self._suggest(trial)
                if self.dedup and key in self._known:
                    self._tell(trial, self._known[key])
                    stall += 1
                    continue
            stall = 0
            try:
                model = self.model_space.freeze(sample)
            except SampleValidationError:
                with self._lock:
                    self._tell(trial, None)
                continue
            with self._lock:
                self._running[model] = (trial, key)
            self.engine.submit_models(model)
        if stall >= self.stall_limit:
            _logger.warning("%d duplicate suggestions in a row. Stop.", stall)
        self.engine.wait_models(*list(self._running))

    def _suggest(self, trial: optuna.Trial) -> tuple[Sample, tuple[int, ...]]:
        """The NNI sample, and the architecture as choice indices."""
        sample, key = {}, []
        for label, values, by_index in self._decisions:
            if by_index:
                k = trial.suggest_categorical(label, list(range(len(values))))
            else:
                k = values.index(trial.suggest_categorical(label, values))
            sample[label] = values[k]
            key.append(k)
        return sample, tuple(key)

    def _values(self, metric: Any) -> list[float] | None:
        """Objective values from a final metric, None when one is missing or not finite."""
        if not isinstance(metric, Mapping):
            metric = {"default": metric}
        values = []
        for key in self.objectives:
            v = metric.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return None
            values.append(float(v))
        return values

    def _tell(self, trial: optuna.Trial, values: list[float] | None) -> None:
        optuna = _optuna()
        if values is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, values)

    def _on_metric(self, event: FinalMetricEvent) -> None:
        with self._lock:
            if event.model in self._running:
                self._raw[event.model] = event.metric

    def _on_end(self, event: TrainingEndEvent) -> None:
        with self._lock:
            entry = self._running.pop(event.model, None)
            if entry is None:
                return
            trial, key = entry
            raw = self._raw.pop(event.model, None)
            values = self._values(raw) if event.status == ModelStatus.Trained else None
            self._known[key] = values
            self._tell(trial, values)

    def state_dict(self) -> dict:
        """Finished trials as (params, values, state name); enough to rebuild the study."""
        trials = [(dict(t.params), t.values, t.state.name) for t in self.study.trials if t.state.is_finished()]
        return {"trials": trials, "known": [(list(k), v) for k, v in self._known.items()]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Add the finished trials to the study. May be called before ``initialize`` (then deferred)."""
        if not self._decisions:
            self._deferred_state = state_dict
            return
        self._deferred_state = None
        optuna = _optuna()
        dists = {label: optuna.distributions.CategoricalDistribution(
            list(range(len(values))) if by_index else values) for label, values, by_index in self._decisions}
        for params, values, state in state_dict["trials"]:
            self.study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params}, values=values,
                state=optuna.trial.TrialState[state]))
        self._known = {tuple(k): v for k, v in state_dict["known"]}
