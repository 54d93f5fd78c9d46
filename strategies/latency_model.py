"""A search's own latency estimate: one cost per decision value plus a constant, fitted to the trials so far.

A strategy with a latency target can skip candidates that are clearly too slow before training them. The
estimate is the additive model a layer-wise latency table also assumes (a network's latency is about the sum of
its blocks'), fitted by ridge least squares to the latencies the search's own trials measured, so it needs
neither a table nor a device: on HW-NAS-Bench's Eyeriss table it is exact, on its Pixel 3 table (where a `none`
edge cuts whole paths) it is off by a median 11 % after 100 trials - good enough to skip what lies far above T,
not to judge what lies near it. The sums grow one trial at a time and `refit` (when the caller chooses: a search
refits once per batch) is one small linear solve, in torch under the caller's thread setting (numpy's BLAS would
start its own threads for it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Key = tuple[int, ...]


class AdditiveLatency:
    """Latency of an architecture (choice indices) as `bias + sum of one cost per chosen value`."""

    def __init__(self, sizes: Sequence[int], ridge: float = 1e-3):
        self._sizes = [int(n) for n in sizes]
        self._offsets = [1 + sum(self._sizes[:t]) for t in range(len(self._sizes))]  # column 0 is the bias
        features = 1 + sum(self._sizes)
        self.min_trials = features  # fewer trials than unknowns: no estimate
        self._gram = torch.zeros(features, features, dtype=torch.float64)
        self._moment = torch.zeros(features, dtype=torch.float64)
        self._ridge = ridge
        self._bias = 0.0
        self._costs: list[list[float]] | None = None  # per decision, the cost of each value
        self.trials = 0
        self.fitted_at = 0  # trials added at the last refit

    def add(self, key: Key, latency_ms: float) -> None:
        cols = torch.tensor([0, *(start + value for start, value in zip(self._offsets, key))])
        self._gram[cols.unsqueeze(1), cols] += 1.0
        self._moment[cols] += latency_ms
        self.trials += 1

    def refit(self) -> None:
        """Fit the costs to every trial added so far (no estimate while there are fewer than `min_trials`)."""
        self.fitted_at = self.trials
        if self.trials < self.min_trials:
            self._costs = None
            return
        eye = torch.eye(len(self._moment), dtype=torch.float64)
        weights = torch.linalg.solve(self._gram + self._ridge * eye, self._moment).tolist()
        self._bias = weights[0]
        self._costs = [weights[start:start + n] for start, n in zip(self._offsets, self._sizes)]

    def predict(self, key: Key) -> float | None:
        """The estimated latency of `key` in ms at the last refit; None before one had `min_trials` trials."""
        if self._costs is None:
            return None
        return self._bias + sum(costs[value] for costs, value in zip(self._costs, key))


class LatencyFilter:
    """Which candidates are too slow to train: those whose estimate exceeds ``factor * target_ms``.

    It keeps every trial's latency in the order it came (a checkpoint replays them to rebuild the same estimate),
    refits the estimate once ``refit_every`` new trials came back, and keeps its verdicts until the next refit.
    Without a factor or a T it rejects nothing.
    """

    def __init__(self, sizes: Sequence[int], factor: float | None, target_ms: float | None, refit_every: int):
        self._sizes = list(sizes)
        self.model = AdditiveLatency(sizes)
        self.latencies: list[tuple[Key, float]] = []  # in the order they came
        self._limit = None if factor is None or target_ms is None else factor * target_ms
        self._refit_every = max(1, int(refit_every))
        self._verdicts: dict[Key, bool] = {}

    def add(self, key: Key, latency_ms: float) -> None:
        self.latencies.append((key, latency_ms))
        self.model.add(key, latency_ms)

    def too_slow(self, key: Key) -> bool:
        """Whether `key`'s estimate lies above the limit (never before the estimate has enough trials)."""
        if self._limit is None:
            return False
        if self.model.trials - self.model.fitted_at >= self._refit_every:
            self.model.refit()
            self._verdicts.clear()
        if key not in self._verdicts:
            estimate = self.model.predict(key)
            self._verdicts[key] = estimate is not None and estimate > self._limit
        return self._verdicts[key]

    def state(self) -> dict:
        return {"latencies": [(list(k), ms) for k, ms in self.latencies], "fitted_at": self.model.fitted_at}

    def load(self, latencies: Sequence[tuple[Sequence[int], float]], fitted_at: int) -> None:
        """Replay `latencies` in order, refitting where the saved filter last refitted: the same estimate."""
        self.model = AdditiveLatency(self._sizes)
        self.latencies, self._verdicts = [], {}
        for i, (key, ms) in enumerate(latencies):
            if i == fitted_at:
                self.model.refit()
            self.add(tuple(key), ms)
        if fitted_at == len(latencies):
            self.model.refit()
