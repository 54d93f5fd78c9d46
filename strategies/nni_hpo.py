"""NNI's TPE strategy, with its tuner's duplicate handling made usable for NAS spaces.

NNI 3.0's ``TpeTuner`` passes every suggestion through a ``Deduplicator`` that, on the first duplicate, switches
to a grid search and from then on replaces each duplicate by the next grid point. The grid starts at the first
value of every decision, so a converging TPE (which repeats itself often) is dragged to one corner of the space:
on the MNAS space it does worse than random search. Here a duplicate is redrawn from TPE a few times, then
replaced by a uniformly random new point (what NNI's random tuner draws) instead of the next grid point.
"""

from __future__ import annotations

from typing import Any

from nni.algorithms.hpo import random_tuner
from nni.algorithms.hpo.tpe_tuner import TpeTuner, suggest

__all__ = ["ResamplingTpeTuner", "tpe"]


class ResamplingTpeTuner(TpeTuner):
    """``TpeTuner`` whose duplicate suggestion is redrawn from TPE (``retries`` times), then drawn at random;
    NNI's grid fallback is only the last resort (a nearly exhausted space)."""

    def __init__(self, optimize_mode: str = "maximize", seed: int | None = None,
                 tpe_args: dict[str, Any] | None = None, retries: int = 1):
        super().__init__(optimize_mode=optimize_mode, seed=seed, tpe_args=tpe_args)
        self.retries = retries

    def update_search_space(self, space) -> None:
        super().update_search_space(space)
        grid_fallback = self.dedup

        def dedup(params):
            for attempt in range(2 * self.retries):
                if grid_fallback._not_dup(params):  # records it when new
                    return params
                if attempt < self.retries:
                    params = suggest(self.args, self.rng, self.space, self._history)
                else:
                    params = random_tuner.suggest(self.rng, self.space)
            return grid_fallback(params)

        self.dedup = dedup


def tpe(*, optimize_mode: str = "maximize", seed: int | None = None, tpe_args: dict[str, Any] | None = None,
        resample_duplicates: bool = True, retries: int = 1):
    """``nni.nas.strategy.TPE``; with ``resample_duplicates`` its tuner is a :class:`ResamplingTpeTuner`."""
    from nni.nas.strategy import TPE

    tpe_args = dict(tpe_args) if tpe_args is not None else None
    strategy = TPE(optimize_mode=optimize_mode, seed=seed, tpe_args=tpe_args)
    if resample_duplicates:
        strategy.tuner = ResamplingTpeTuner(optimize_mode, seed, tpe_args, retries)
    return strategy
