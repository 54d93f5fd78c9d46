"""The sample-efficiency bench's bookkeeping: how a run's best-so-far is read, and how its rows are built."""

from __future__ import annotations

import math

from bench.strategies import best_so_far, make_strategy, samples_to_reach, summarize
from strategies.ppo_rnn import PpoRnn


def test_best_so_far_reads_the_first_n_samples_and_a_converged_run_keeps_its_final_best():
    rewards = [0.1, 0.5, 0.3, 0.7]
    assert best_so_far(rewards, 3, budget=10) == 0.5
    assert best_so_far(rewards, 8, budget=10) == 0.7  # stopped by itself after 4 of 10: its final best
    assert best_so_far(rewards, 8, budget=4) is None  # its budget ended before 8: no value
    assert samples_to_reach(rewards, 0.6) == 4 and samples_to_reach(rewards, 0.9) == math.inf


def test_summarize_takes_the_median_over_seeds_and_random_s_best_as_the_target():
    results = [{"word": w, "seed": s, "budget": 4, "rewards": r, "unique": len(r), "wall_s": 1.0, "eval_s": 0.5}
               for w, s, r in [("random", 0, [0.1, 0.2, 0.3, 0.4]), ("random", 1, [0.2, 0.2, 0.2, 0.6]),
                               ("random", 2, [0.5, 0.1, 0.1, 0.1]), ("ours", 0, [0.6, 0.1]),
                               ("ours", 1, [0.1, 0.5, 0.9]), ("ours", 2, [0.0, 0.0, 0.0, 0.2])]]
    rows, target = summarize(results, ["ours", "random"], budget=4)
    assert target == 0.5  # median of 0.4, 0.6, 0.5
    ours = rows[0]
    assert ours["samples_run"] == [2, 3, 4]
    assert ours["reach"] == 2 and ours["reached"] == 2  # 1, 2, never -> median 2


def test_the_ppo_rnn_row_is_built_from_the_short_search_word_as_the_cli_composes_it():
    strategy = make_strategy("ppo_rnn_short", 3, {})
    assert isinstance(strategy, PpoRnn)
    assert (strategy.advantage, strategy.elite_size, strategy.seed, strategy.batch_size) == ("rank", 5, 3, 10)
    paper = make_strategy("ppo_rnn", 3, {"learning_rate": 0.002})
    assert (paper.advantage, paper.elite_size, paper.learning_rate) == ("ema", 0, 0.002)
