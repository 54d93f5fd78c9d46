"""The calibration's fit alone (no device): an overhead per piece kind, a cost per weight, and when it falls
back to fewer terms."""

from __future__ import annotations

import random

import pytest

from evaluators.latency import Terms, fit_calibration
from evaluators.latency.table import LatencyTable

OVERHEAD_US = {"stem": 9.0, "head": 14.0, "body-mbconv": 6.0, "body-mbconv-se": 15.0, "add": 3.0}


def measured_like_a_runtime(terms: Terms) -> float:
    """A model latency that pays a different overhead per piece kind, as onnxruntime does."""
    return 0.8 * terms.sum_ms - sum(OVERHEAD_US[k] * n for k, n in terms.kinds.items()) / 1e3 + 0.02


def models(n: int, seed: int = 0) -> LatencyTable:
    rng, table = random.Random(seed), LatencyTable("unused.json", "dev", "rt", 32)
    for i in range(n):
        kinds = {"stem": 1, "head": 1, "body-mbconv": rng.randint(2, 12), "body-mbconv-se": rng.randint(0, 10),
                 "add": rng.randint(0, 6)}
        terms = Terms(0.05 * sum(kinds.values()) + rng.uniform(0.1, 0.3), kinds)
        table.add_model(f"arch{i}", terms, measured_like_a_runtime(terms), "build")
    return table


def test_enough_models_fit_an_overhead_per_kind_and_predict_new_models_exactly():
    fit = fit_calibration(models(40).models)
    assert set(fit["kind_coef"]) == set(OVERHEAD_US) and fit["worst_abs_error"] < 1e-9
    a, b, c = fit["coef"]
    for model in models(10, seed=1).models:
        terms = Terms(model["sum_ms"], model["kinds"])
        predicted = a * terms.sum_ms + b * terms.count + c + sum(fit["kind_coef"][k] * n for k, n in terms.kinds.items())
        assert predicted == pytest.approx(model["measured_ms"], rel=1e-9)
    one_overhead = fit_calibration([{k: v for k, v in m.items() if k != "kinds"} for m in models(40).models])
    assert one_overhead["kind_coef"] == {} and one_overhead["worst_abs_error"] > 0.01  # why kinds are worth it


def test_too_few_models_for_a_term_per_kind_fit_one_overhead():
    assert fit_calibration(models(10).models)["kind_coef"] == {}  # 8 terms need 24 models
    assert fit_calibration(models(3).models)["coef"][1:] == [0.0, 0.0]  # a plain scale


def test_a_cost_per_weight_is_fitted_when_every_model_records_its_weights():
    """In the whole network each layer's weights stream through the cache again; measured alone they stayed."""
    rng, table = random.Random(2), LatencyTable("unused.json", "dev", "rt", 32)
    for i in range(40):
        kinds = {"stem": 1, "head": 1, "body-mbconv": rng.randint(2, 12)}
        terms = Terms(0.05 * sum(kinds.values()) + rng.uniform(0.1, 0.3), kinds, rng.randint(200_000, 3_000_000))
        table.add_model(f"arch{i}", terms, measured_like_a_runtime(terms) + 0.04 * terms.weights / 1e6, "build")
    fit = fit_calibration(table.models)
    assert fit["weight_coef"] == pytest.approx(0.04, rel=1e-6) and fit["worst_abs_error"] < 1e-9
    without = fit_calibration([{k: v for k, v in m.items() if k != "weights"} for m in table.models])
    assert without["weight_coef"] == 0.0 and without["worst_abs_error"] > 0.01  # old tables: no such term


def test_too_few_models_for_the_weight_term_keep_the_overhead_per_kind():
    table = models(25)  # 8 terms need 24 models, 9 (with weights) 27
    for model in table.models:
        model["weights"] = 1_000_000
    fit = fit_calibration(table.models)
    assert set(fit["kind_coef"]) == set(OVERHEAD_US) and fit["weight_coef"] == 0.0
