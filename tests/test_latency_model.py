"""The additive latency estimate a search fits to its own trials (strategies/latency_model.py)."""

from __future__ import annotations

import random

import pytest

from strategies.latency_model import AdditiveLatency, LatencyFilter


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


def test_the_filter_refits_once_a_batch_keeps_its_verdicts_until_then_and_reloads_to_the_same_estimate():
    sizes = [2, 3]  # latency 1 + d0 + d1 ms: exact for the estimate; the filter rejects above 1.25 x 2 ms
    latency = lambda key: 1.0 + key[0] + key[1]
    keys = [(a, b) for a in range(2) for b in range(3)]
    assert not LatencyFilter(sizes, None, 2.0, refit_every=1).too_slow((1, 2))  # no factor: rejects nothing
    limit = LatencyFilter(sizes, 1.25, 2.0, refit_every=len(keys))
    for key in keys:
        assert not limit.too_slow(key)  # no estimate yet: nothing is too slow
        limit.add(key, latency(key))
    assert limit.too_slow((1, 2)) and limit.too_slow((0, 2)) and not limit.too_slow((1, 0))  # refit: 4, 3, 2 ms
    limit.add((1, 0), 9.0)  # a slower measurement changes nothing before the next refit
    assert not limit.too_slow((1, 0))
    again = LatencyFilter(sizes, 1.25, 2.0, refit_every=len(keys))
    again.load(**limit.state())
    assert again.model.predict((1, 0)) == pytest.approx(limit.model.predict((1, 0)))
    assert again.model.predict((1, 0)) == pytest.approx(2.0, abs=1e-3)  # the fit before the 9 ms came
    assert again.latencies == limit.latencies
