"""search_space=nb201, evaluator=table, reward=abs, and the hardware-aware bench's regret arithmetic."""

from __future__ import annotations

import csv
import math
import sys

import pytest
import torch

from bench.hw_nas_bench import best_reward_latency, regret_at, regret_curve, samples_to_oracle, summarize_runs
from evaluators.reward import AbsReward
from evaluators.table import SHIPPED_ACCURACY, Table, TableEvaluator, load_nb201_table, load_table, nb201_keys
from mnas_core.errors import ArchitectureError, ConfigError, TrialError
from search_spaces.nb201 import LABELS, OPS, Nb201Arch, Nb201Space, all_archs
from tests.cli import read_trials, run_cli


def test_every_benchmark_architecture_string_round_trips_through_the_space():
    with open(SHIPPED_ACCURACY, newline="") as f:
        strings = [row["arch_str"] for row in csv.DictReader(f)]
    assert len(strings) == 15625
    for text in strings:
        arch = Nb201Arch.from_string(text)
        assert arch.to_string() == text
        assert Nb201Arch.from_sample(arch.sample).key == text
    assert set(strings) == {arch.key for arch in all_archs()}
    decisions = {label: list(m.values) for label, m in Nb201Space().simplify().items()}
    assert decisions == {label: list(OPS) for label in LABELS}
    assert LABELS[:3] == ("edge_1_0", "edge_2_0", "edge_2_1")


@pytest.mark.parametrize("text", ["", "|nor_conv_3x3~0|", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                  "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"])
def test_a_malformed_architecture_string_is_one_clear_line(text):
    with pytest.raises(ArchitectureError) as err:
        Nb201Arch.from_string(text)
    assert "\n" not in str(err.value)


def test_a_frozen_nb201_model_is_the_benchmark_network_and_trains_one_step():
    space = Nb201Space(num_classes=10)
    arch = Nb201Arch.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|"
                                 "nor_conv_3x3~1|avg_pool_3x3~2|")
    model = space.freeze(arch.sample)
    assert model.arch.key == arch.key and model.arch.to_dict()["arch_str"] == arch.key
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 1 + 15 * 4 + 2 * 3  # stem, cells, reductions
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_abs_reward_is_accuracy_minus_the_relative_miss_on_either_side():
    reward = AbsReward(target_ms=10.0, beta=-0.1)
    assert reward(0.9, 10.0) == pytest.approx(0.9)
    assert reward(0.9, 5.0) == pytest.approx(0.9 - 0.05) == pytest.approx(reward(0.9, 15.0))


@pytest.mark.parametrize("kwargs", [{"target_ms": 10, "beta": 0.0}, {"target_ms": 10, "beta": 0.5},
                                    {"target_ms": 0}, {"target_ms": -2}])
def test_abs_reward_bad_settings_are_one_line(kwargs):
    with pytest.raises(ConfigError) as err:
        AbsReward(**kwargs)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------- tables

def write(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def three(tmp_path):
    archs = [a.key for a in all_archs()[:3]]
    acc = write(tmp_path / "acc.csv", ["index", "arch_str", "cifar10"], [[i, a, v] for i, (a, v) in
                                                                          enumerate(zip(archs, (90.0, 92.0, 95.0)))])
    lat = write(tmp_path / "lat.csv", ["index", "latency_ms"], [[0, 4.0], [1, 5.0], [2, 7.0]])
    return archs, acc, lat


def test_the_table_evaluator_looks_up_percent_accuracy_as_a_fraction(three):
    archs, acc, lat = three
    evaluator = TableEvaluator(None, latency_table=str(lat), accuracy_table=str(acc), check_coverage=False)
    assert evaluator.evaluate(None, archs[1])["accuracy"] == pytest.approx(0.92)
    assert evaluator.evaluate(None, archs[1])["latency_ms"] == 5.0
    with pytest.raises(TrialError):
        evaluator.evaluate(None, all_archs()[5].key)


def test_oracle_and_regret_on_a_hand_made_three_architecture_table():
    table = Table(("a", "b", "c"), (90.0, 92.0, 95.0), (4.0, 5.0, 7.0))
    assert table.oracle(5.0) == 92.0 and table.oracle(10.0) == 95.0
    with pytest.raises(ConfigError):
        table.oracle(3.0)
    # a search sampling c (too slow), a, then b: regret 92 (nothing meets T yet), 2, 0
    curve = regret_curve([95.0, 90.0, 92.0], [7.0, 4.0, 5.0], 5.0, 92.0)
    assert curve.tolist() == [92.0, 2.0, 0.0]
    assert samples_to_oracle(curve) == 3 and samples_to_oracle(curve[:2]) == math.inf
    assert regret_at(curve, 2, budget=3) == 2.0
    assert regret_at(curve[:2], 3, budget=10) == 2.0  # stopped by itself: keeps its final regret
    assert regret_at(curve, 5, budget=3) is None  # the budget ended before: no value
    assert best_reward_latency([0.3, 0.5, 0.5], [7.0, 4.0, 5.0]) == 4.0
    run = {"seed": 0, "budget": 3, "accuracy": [95.0, 90.0, 92.0], "latency_ms": [7.0, 4.0, 5.0],
           "rewards": [0.95, 0.90, 0.92], "unique": 3, "wall_s": 1.0, "eval_s": 0.5}
    other = {**run, "seed": 1, "rewards": [0.90, 0.95, 0.92]}
    row = summarize_runs([run, other], oracle=92.0, target_ms=5.0, budget=3)
    assert row["meets_target_share"] == 0.5  # the first run's best reward is c (7 ms), the other's a (4 ms)
    assert row["samples_to_oracle_median"] == 3 and row["reached_oracle"] == 2
    assert row["answer_meets_target_share"] == 1.0  # both answers (the most accurate meeting T) are b
    too_slow = {**run, "seed": 2, "accuracy": [95.0], "latency_ms": [7.0], "rewards": [0.95]}
    assert summarize_runs([run, too_slow], oracle=92.0, target_ms=5.0, budget=3)["answer_meets_target_share"] == 0.5


def test_tables_that_do_not_fit_are_one_clear_line(three, tmp_path):
    _archs, acc, lat = three
    cases = [
        (lambda: load_table(acc, lat, "cifar10", nb201_keys()), "does not cover the search space"),
        (lambda: load_table(acc, lat, "cifar99", None), "is not a column"),
        (lambda: load_table(acc, write(tmp_path / "l2.csv", ["index", "latency_ms"], [[0, 4], [1, 5], [9, 7]]),
                            "cifar10", None), "does not match"),
        (lambda: load_table(acc, write(tmp_path / "l3.csv", ["index", "ms"], [[0, 4]]), "cifar10", None),
         "lacks column"),
        (lambda: load_nb201_table(latency_table=str(tmp_path / "missing.csv")), "no such file"),
    ]
    for build, words in cases:
        with pytest.raises(ConfigError) as err:
            build()
        assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_a_four_trial_cli_search_looks_every_trial_up_in_the_tables(tmp_path):
    result = run_cli(tmp_path, "search_space=nb201", "evaluator=table", "search.max_trials=4", "reward=abs",
                     "reward.target_ms=5.338", "strategy=random")
    assert result.returncode == 0, result.stderr[-2000:]
    trials = read_trials(tmp_path)
    assert len(trials) == 4 and all(t["status"] == "succeeded" for t in trials)
    table = load_nb201_table("pixel3", "cifar10")
    for t in trials:
        accuracy, latency_ms = table.lookup(t["arch"]["arch_str"])
        assert t["accuracy"] == pytest.approx(accuracy / 100) and t["latency_ms"] == latency_ms
        assert t["reward"] == pytest.approx(AbsReward(5.338)(accuracy / 100, latency_ms))
        assert t["train_seconds"] == 0.0


@pytest.mark.slow
def test_a_bad_table_setting_stops_the_cli_search_in_one_line(tmp_path):
    result = run_cli(tmp_path, "search_space=nb201", "evaluator=table", "evaluator.dataset=cifar11")
    assert result.returncode == 2
    assert "evaluator.dataset='cifar11' is not a column" in result.stderr and "Traceback" not in result.stderr


def test_a_strategy_whose_extra_is_missing_is_skipped_with_one_line_naming_it(monkeypatch, capsys):
    from bench.hw_nas_bench import installed

    monkeypatch.setitem(sys.modules, "tianshou", None)  # as if `[rl]` were not installed: its import fails
    assert not installed("policy_rl") and installed("evolution")
    assert capsys.readouterr().out == "skipping policy_rl: strategy=policy_rl needs the 'rl' extra: " \
                                      "pip install 'mnas-nni[rl]'\n"
