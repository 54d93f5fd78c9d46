"""The additive latency estimate a search fits to its own trials (strategies/latency_model.py)."""

from __future__ import annotations

import random

import pytest

from strategies.latency_model import AdditiveLatency


def test_an_additive_latency_is_recovered_from_as_many_trials_as_unknowns():
    sizes = [3, 4, 2, 5]
    costs = [[random.Random(t).uniform(0.1, 2.0) for _ in range(n)] for t, n in enumerate(sizes)]
    latency = lambda key: 0.7 + sum(c[v] for c, v in zip(costs, key))
    rng = random.Random(0)
    model = AdditiveLatency(sizes)
    assert model.min_trials == 1 + sum(sizes)
    trials = [tuple(rng.randrange(n) for n in sizes) for _ in range(3 * model.min_trials)]
    for key in trials[:model.min_trials - 1]:
        model.add(key, latency(key))
    model.refit()
    assert model.predict(trials[0]) is None  # fewer trials than unknowns: no estimate yet
    for key in trials[model.min_trials - 1:]:
        model.add(key, latency(key))
    assert model.predict(trials[0]) is None  # nor before the next refit
    model.refit()
    assert model.fitted_at == len(trials)
    for key in [tuple(rng.randrange(n) for n in sizes) for _ in range(20)]:
        assert model.predict(key) == pytest.approx(latency(key), rel=1e-3)
