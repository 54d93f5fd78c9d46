"""Every strategy of the zoo drives a real (short) MNAS search, swapped by one config word."""

from __future__ import annotations

import pytest

from tests.cli import read_trials, run_cli

WORDS = ["ppo_rnn", "ppo_rnn_short", "random", "evolution", "tpe", "policy_rl", "optuna_nsga2"]


@pytest.mark.slow
@pytest.mark.parametrize("word", WORDS)
def test_strategy_word_runs_a_four_trial_search(tmp_path, word):
    result = run_cli(tmp_path, f"strategy={word}", "search.max_trials=4")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert len(trials) == 4
    assert all(t["status"] == "succeeded" and t["reward"] > 0 for t in trials)
    assert len({tuple(t["arch"]["blocks"]) for t in trials}) >= 2  # it explores (NNI PolicyBasedRL repeats some)
