"""bench/runtimes.py's arithmetic: the Pareto front, its hypervolume, and what a front chosen on one runtime loses."""

from __future__ import annotations

import pytest

from bench.runtimes import front_loss, hypervolume, pareto


def test_the_front_keeps_only_undominated_models_and_its_area_is_exact():
    points = {"fast": (0.80, 1.0), "slow_good": (0.90, 2.0), "dominated": (0.70, 1.5)}
    assert sorted(pareto(points)) == ["fast", "slow_good"]
    # (0.80 - 0.70) * (3 - 1) + (0.90 - 0.80) * (3 - 2)
    assert hypervolume([(0.80, 1.0), (0.90, 2.0)], ref=(0.70, 3.0)) == pytest.approx(0.3)


def test_a_front_chosen_on_the_other_runtime_loses_what_it_missed():
    accuracy = {"a": 0.90, "b": 0.80, "c": 0.85}
    same = front_loss(accuracy, {"a": 2.0, "b": 1.0, "c": 1.5}, {"a": 2.0, "b": 1.0, "c": 1.5})
    assert same["hypervolume_lost"] == pytest.approx(0.0) and same["still_on_front"] == same["true_front"] == 3
    moved = front_loss(accuracy, {"a": 2.0, "b": 1.0, "c": 3.0}, {"a": 2.0, "b": 1.0, "c": 1.5})
    assert (moved["front"], moved["still_on_front"], moved["true_front"]) == (2, 2, 3)
    assert 0.0 < moved["hypervolume_lost"] < 1.0
