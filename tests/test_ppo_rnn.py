"""PpoRnn on real NNI 3.0 runs: in-process sequential engine, toy model spaces, deterministic rewards."""

from __future__ import annotations

import inspect
import logging
import uuid
from pathlib import Path

import nni
import pytest
import torch
from hydra.utils import instantiate
from nni.mutable import ensure_frozen
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.nn.pytorch import ModelSpace
from omegaconf import OmegaConf

from mnas_core.errors import ConfigError
from strategies.controller import Controller, centred_ranks
from strategies.ppo_rnn import PpoRnn

CONF = Path(__file__).resolve().parents[1] / "conf" / "strategy"


class GridSpace(ModelSpace):
    """``n`` decisions ``d0..d{n-1}`` over ``0..k-1``; the frozen model keeps its sample."""

    def __init__(self, n: int = 6, k: int = 4):
        super().__init__()
        self.sample = {f"d{i}": ensure_frozen(self.add_mutable(nni.choice(f"d{i}", list(range(k)))))
                       for i in range(n)}

    def forward(self, x):
        return x


class Recorder:
    """Evaluator function: reward = (mean choice / (k-1)) ** power (unique optimum: all k-1), latency 0.5 ms + the
    mean choice / (k-1); logs every call."""

    def __init__(self, k: int = 4, fail_on: dict | None = None, silent_on: dict | None = None, power: float = 1.0):
        self.k, self.fail_on, self.silent_on, self.power = k, fail_on, silent_on, power
        self.calls: list[dict] = []

    def __call__(self, model):
        sample = dict(model.sample)
        self.calls.append(sample)
        if self.fail_on is not None and sample.items() >= self.fail_on.items():
            raise RuntimeError("this architecture cannot be trained")
        if self.silent_on is not None and sample.items() >= self.silent_on.items():
            return  # trains, reports nothing
        share = sum(sample.values()) / (len(sample) * (self.k - 1))
        nni.report_final_result({"default": share ** self.power, "reward": 2 * share ** self.power,
                                 "accuracy": share ** self.power, "latency_ms": 0.5 + share})


@pytest.fixture(autouse=True)
def nni_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def run(strategy, recorder: Recorder, trials: int, tmp: Path, n: int = 6, k: int = 4,
        continue_on_failure: bool = False) -> NasExperiment:
    config = NasExperimentConfig("sequential", "simplified")
    config.max_trial_number = trials
    config.experiment_working_directory = str(tmp / "nni-experiments")
    config.execution_engine.continue_on_failure = continue_on_failure
    exp = NasExperiment(GridSpace(n, k), FunctionalEvaluator(recorder), strategy, config,
                        id=uuid.uuid4().hex[:8])
    assert exp.run(port=8090, wait_completion=True, debug=False) is not False
    exp.stop()
    return exp


def test_sampled_log_probs_match_the_batched_update_pass():
    g = torch.Generator().manual_seed(0)
    net = Controller([3, 5, 2, 4], generator=g)
    choices, logp = net.sample(64, g)
    assert choices.shape == (64, 4)
    assert all((choices[:, t] < n).all() for t, n in enumerate([3, 5, 2, 4]))
    again, entropy = net.evaluate(choices)
    assert logp.shape == again.shape == (64, 4)
    torch.testing.assert_close(again, logp, rtol=1e-5, atol=1e-5)
    assert (entropy > 0).all() and (entropy <= torch.tensor([3, 5, 2, 4]).log().sum() + 1e-5).all()
    for p in net.parameters():
        assert p.abs().max() <= 0.1


def test_samples_follow_the_controller_distribution():
    g = torch.Generator().manual_seed(0)
    net = Controller([4, 3], generator=g)
    with torch.no_grad():
        net.head_bias[0] = torch.tensor([2.0, 0.0, -2.0, 0.5])
    choices, _ = net.sample(40_000, g)
    expected = torch.softmax(net.head_bias[0] + net.head_weight[0] @ _first_hidden(net), 0).detach()
    observed = torch.bincount(choices[:, 0], minlength=4) / 40_000
    torch.testing.assert_close(observed, expected, atol=0.01, rtol=0)
    assert choices[:, 1].max() <= 2  # the padded 4th choice of decision 1 is never drawn


def _first_hidden(net: Controller) -> torch.Tensor:
    """The LSTM's hidden state after the start token (what the first head sees)."""
    with torch.no_grad():
        out, _ = net.lstm(net.embedding(torch.zeros(1, 1, dtype=torch.long)))
    return out[0, 0]


def test_learns_a_toy_problem_with_a_clear_optimum(tmp_path):
    recorder = Recorder()
    # The paper's lr (3.5e-4) is for 8,000 samples; 200 toy trials need a larger step.
    strategy = PpoRnn(batch_size=10, learning_rate=0.005, seed=0)
    run(strategy, recorder, 200, tmp_path)
    stats = strategy.update_stats
    assert len(stats) >= 10
    first, last = stats[0]["reward_mean"], stats[-1]["reward_mean"]
    assert last > first + 0.25, (first, last)
    assert stats[-1]["entropy"] < stats[0]["entropy"] / 2
    assert max(r for _, r in strategy.history) == 1.0


def test_without_learning_rate_it_does_not_learn(tmp_path):
    """The learning assertion above can fail: a frozen controller stays near the random mean."""
    strategy = PpoRnn(batch_size=10, learning_rate=1e-12, seed=0)
    run(strategy, Recorder(), 100, tmp_path)
    assert abs(strategy.update_stats[-1]["reward_mean"] - 0.5) < 0.15


def test_centred_ranks_keep_only_the_order_and_share_ties():
    torch.testing.assert_close(centred_ranks(torch.tensor([0.3, 0.1, 0.2])), torch.tensor([0.5, -0.5, 0.0]))
    torch.testing.assert_close(centred_ranks(torch.tensor([1.0, 5.0, 5.0, 0.0])),
                               torch.tensor([-1 / 6, 1 / 3, 1 / 3, -0.5]))
    torch.testing.assert_close(centred_ranks(torch.tensor([7.0])), torch.tensor([0.0]))


@pytest.mark.parametrize("advantage, invariant", [("rank", True), ("ema", False)])
def test_rank_advantage_makes_the_search_blind_to_a_monotone_change_of_the_reward(tmp_path, advantage, invariant):
    """Cubing the reward keeps its order: with ranks the search is the same; with the paper's advantage it is not."""
    searches = []
    for power in (1.0, 3.0):
        recorder = Recorder(power=power)
        run(PpoRnn(batch_size=5, learning_rate=0.05, advantage=advantage, seed=0), recorder, 30,
            tmp_path / str(power))
        searches.append(recorder.calls)
    assert (searches[0] == searches[1]) is invariant


def test_elite_training_concentrates_the_controller_on_the_best_architectures_found(tmp_path):
    def search(elite_weight: float) -> PpoRnn:
        strategy = PpoRnn(batch_size=5, learning_rate=0.01, elite_size=3, elite_weight=elite_weight, seed=0)
        run(strategy, Recorder(), 20, tmp_path / str(elite_weight))
        return strategy

    def elite_log_likelihood(strategy: PpoRnn) -> float:
        best = sorted(strategy._history.items(), key=lambda item: -item[1])[:3]
        with torch.no_grad():
            return float(strategy.controller.evaluate(torch.tensor([k for k, _ in best]))[0].sum(1).mean())

    with_elite, without = search(1.0), search(0.0)
    assert elite_log_likelihood(with_elite) > elite_log_likelihood(without) + 2, \
        (elite_log_likelihood(with_elite), elite_log_likelihood(without))
    logps = [s["elite_logp"] for s in with_elite.update_stats]
    assert logps[-1] > logps[0] and all(s["elite_logp"] == 0 for s in without.update_stats)


@pytest.mark.parametrize("kwargs, message", [({"advantage": "mean"}, "advantage must be one of ema"),
                                             ({"elite_size": -1}, "elite_size and elite_weight must be >= 0")])
def test_bad_advantage_or_elite_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        PpoRnn(**kwargs)
    assert "\n" not in str(err.value)


def test_duplicates_are_never_retrained_and_feed_their_cached_reward(tmp_path):
    recorder = Recorder(k=3)
    strategy = PpoRnn(batch_size=4, max_duplicate_resamples=2, seed=3)
    run(strategy, recorder, 9, tmp_path, n=2, k=3)  # 9 architectures in the space
    keys = [tuple(c.values()) for c in recorder.calls]
    assert len(keys) == len(set(keys)) == strategy.counters["trials"]
    assert strategy.counters["cached"] > 0
    assert strategy.counters["dropped"] >= 2 * strategy.counters["cached"]
    updates = len(strategy.update_stats)
    assert updates * 4 + len(strategy._batch) == strategy.counters["trials"] + strategy.counters["cached"]


def test_search_stops_when_the_space_is_exhausted(tmp_path):
    recorder = Recorder(k=2)
    strategy = PpoRnn(batch_size=2, seed=0)
    run(strategy, recorder, 50, tmp_path, n=2, k=2)
    assert sorted(tuple(c.values()) for c in recorder.calls) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_failed_and_silent_trials_get_the_failure_reward_and_the_search_goes_on(tmp_path):
    recorder = Recorder(k=3, fail_on={"d0": 0}, silent_on={"d0": 1})
    strategy = PpoRnn(batch_size=4, failure_reward=-1.0, seed=0)
    run(strategy, recorder, 12, tmp_path, n=3, k=3, continue_on_failure=True)
    assert strategy.counters["trials"] == len(recorder.calls) == 12
    rewards = {tuple(s.values()): r for s, r in strategy.history}
    assert any(key[0] == 0 for key in rewards) and any(key[0] == 1 for key in rewards)
    for key, reward in rewards.items():
        if key[0] in (0, 1):
            assert reward == -1.0
        else:
            assert reward == sum(key) / 6


def test_reward_key_selects_the_reward_from_a_dict_metric(tmp_path):
    strategy = PpoRnn(batch_size=5, reward_key="reward", seed=0)
    run(strategy, Recorder(), 10, tmp_path)
    for sample, reward in strategy.history:
        assert reward == pytest.approx(2 * sum(sample.values()) / 18)


@pytest.mark.parametrize("local_search", [{}, {"mutate_duplicates": True, "mutation_share": 0.5, "mutation_pool": 2,
                                               "mutation_radius": 2, "answer_share": 0.5, "target_ms": 1.0,
                                               "latency_filter": 1.1}])
def test_resume_continues_exactly_where_it_stopped(tmp_path, local_search):
    # 7 does not divide 30: a batch pends; with local search, the answers meeting T and the latencies behind the
    # latency filter's estimate (it starts after 25 trials) are in the checkpoint too
    kwargs = {"batch_size": 7, "learning_rate": 0.01, "seed": 11, **local_search}
    whole = Recorder()
    run(PpoRnn(**kwargs), whole, 60, tmp_path / "whole")

    first, second = Recorder(), Recorder()
    a = PpoRnn(**kwargs)
    run(a, first, 30, tmp_path / "a")
    assert a._batch, "the checkpoint should hold a pending batch"
    torch.save(a.state_dict(), tmp_path / "state.pt")
    b = PpoRnn(**kwargs)
    b.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))  # before initialize: deferred
    run(b, second, 30, tmp_path / "b")

    assert first.calls + second.calls == whole.calls
    assert len(b.update_stats) > len(a.update_stats)


def test_load_state_dict_rejects_another_space(tmp_path):
    a = PpoRnn(batch_size=4, seed=0)
    run(a, Recorder(), 4, tmp_path / "a")
    b = PpoRnn(batch_size=4, seed=0)
    b.load_state_dict(a.state_dict())
    config = NasExperimentConfig("sequential", "simplified")
    config.max_trial_number = 2
    config.experiment_working_directory = str(tmp_path / "nni-experiments")
    exp = NasExperiment(GridSpace(5, 4), FunctionalEvaluator(Recorder()), b, config, id=uuid.uuid4().hex[:8])
    with pytest.raises(ConfigError, match="different search space"):
        exp.run(port=8090, wait_completion=True, debug=False)
    exp.stop()


def test_on_update_gets_the_statistics(tmp_path, caplog):
    seen: list[dict] = []
    strategy = PpoRnn(batch_size=5, learning_rate=0.01, seed=0, on_update=seen.append)
    with caplog.at_level(logging.INFO, logger="strategies.ppo_rnn"):
        run(strategy, Recorder(), 20, tmp_path)
    assert len(seen) == len(strategy.update_stats) == 4
    # the log file keeps each update's statistics; the terminal shows the app's line (mnas_nni.tracking.console)
    logged = [r for r in caplog.records if r.getMessage().startswith("[PPO update")]
    assert len(logged) == 4 and all(getattr(r, "log_file_only", False) for r in logged)
    assert [s["update"] for s in seen] == [0, 1, 2, 3]
    keys = {"update", "trials", "reward_mean", "reward_max", "baseline", "entropy", "policy_loss", "approx_kl",
            "clip_fraction", "elite_logp"}
    for s in seen:
        assert keys <= s.keys()
        assert 0 <= s["clip_fraction"] <= 1 and s["approx_kl"] >= -1e-6 and s["entropy"] > 0
    assert seen[0]["trials"] == 5 and seen[-1]["trials"] == 20


def test_yaml_has_every_argument_with_the_paper_values():
    # failure_reward comes from search.failure_reward, as in the composed config
    cfg = OmegaConf.create({"search": {"failure_reward": 0.0}, "strategy": OmegaConf.load(CONF / "ppo_rnn.yaml")}).strategy
    params = set(inspect.signature(PpoRnn.__init__).parameters) - {"self"}
    assert params == set(cfg) - {"_target_"}
    strategy = instantiate(cfg)
    assert isinstance(strategy, PpoRnn)
    assert (strategy.batch_size, strategy.learning_rate, strategy.entropy_weight, strategy.baseline_decay,
            strategy.hidden_size, strategy.init_range, strategy.clip) == (20, 0.00035, 0.00001, 0.95, 100, 0.1, 0.2)
    assert (strategy.advantage, strategy.elite_size) == ("ema", 0)  # the paper has neither extension
    assert (strategy.mutate_duplicates, strategy.mutation_share) == (False, 0.0)  # nor local search
    assert (strategy.mutation_radius, strategy.answer_share) == (1, 0.0)


def test_non_categorical_decisions_are_rejected(tmp_path):
    class Continuous(ModelSpace):
        def __init__(self):
            super().__init__()
            self.x = ensure_frozen(self.add_mutable(nni.uniform("x", 0, 1)))

    config = NasExperimentConfig("sequential", "simplified")
    config.max_trial_number = 1
    config.experiment_working_directory = str(tmp_path / "nni-experiments")
    exp = NasExperiment(Continuous(), FunctionalEvaluator(Recorder()), PpoRnn(), config, id=uuid.uuid4().hex[:8])
    with pytest.raises(ConfigError, match="categorical"):
        exp.run(port=8090, wait_completion=True, debug=False)
    exp.stop()


class SlowFirstDecision(Recorder):
    """accuracy = reward = mean choice; latency 1 ms + d0 ms: only d0 = 0 meets T = 1.5 ms, the best reward does not."""

    def __call__(self, model):
        sample = dict(model.sample)
        self.calls.append(sample)
        accuracy = sum(sample.values()) / (len(sample) * (self.k - 1))
        nni.report_final_result({"default": accuracy, "accuracy": accuracy, "latency_ms": 1.0 + sample["d0"]})


@pytest.mark.parametrize("answer_share", [0.0, 1.0])
def test_answer_share_walks_near_the_most_accurate_architecture_meeting_t(tmp_path, answer_share):
    recorder = SlowFirstDecision(k=3)
    strategy = PpoRnn(batch_size=5, mutation_share=1.0, mutation_pool=1, answer_share=answer_share, target_ms=1.5,
                      seed=0)
    run(strategy, recorder, 30, tmp_path, n=4, k=3)
    late = recorder.calls[10:]
    meeting = sum(call["d0"] == 0 for call in late)
    if answer_share:  # mutants of the best architecture meeting T: most keep d0 = 0, and T's optimum is found
        assert meeting > len(late) / 2 and {"d0": 0, "d1": 2, "d2": 2, "d3": 2} in recorder.calls
        assert strategy._answers and all(key[0] == 0 for key in strategy._answers)
    else:  # mutants of the best by reward, which lies over T
        assert meeting < len(late) / 2


@pytest.mark.parametrize("latency_filter", [None, 1.1])
def test_latency_filter_keeps_mutants_from_walking_far_above_t(tmp_path, latency_filter):
    # the best reward has d0 = 2 (3 ms); mutants around it are over T = 1.5 ms unless they change d0 to 0, which the
    # estimate (exact here: latency is additive) tells apart once 1 + 4 * 3 = 13 trials came back
    recorder = SlowFirstDecision(k=3)
    strategy = PpoRnn(batch_size=5, mutation_share=1.0, mutation_pool=1, target_ms=1.5, latency_filter=latency_filter,
                      seed=0)
    run(strategy, recorder, 40, tmp_path, n=4, k=3)
    late = recorder.calls[15:]
    meeting = sum(call["d0"] == 0 for call in late)
    if latency_filter:
        assert meeting > len(late) / 2
        assert strategy._filter.model.predict((1, 0, 0, 0)) == pytest.approx(2.0, abs=0.01)
    else:
        assert meeting < len(late) / 2


def test_a_bad_latency_filter_is_a_one_line_error():
    with pytest.raises(ConfigError, match="latency_filter must be a positive factor of T"):
        PpoRnn(latency_filter=0)


@pytest.mark.parametrize("latency_filter", [None, 1.1])
def test_latency_filter_replaces_the_policys_draws_far_above_t_with_mutants(tmp_path, latency_filter):
    # no mutation share: only the policy draws; two in three of its (near uniform) draws have d0 > 0, over T
    recorder = SlowFirstDecision(k=3)
    strategy = PpoRnn(batch_size=5, mutate_duplicates=True, mutation_pool=1, target_ms=1.5,
                      latency_filter=latency_filter, seed=0)
    run(strategy, recorder, 40, tmp_path, n=4, k=3)
    late = recorder.calls[15:]
    over = sum(call["d0"] > 0 for call in late)
    if latency_filter:  # estimated too slow, they are replaced by mutants near the best meeting the filter
        assert over < len(late) / 4 and strategy.counters["mutants"] >= len(late) / 2
    else:
        assert over > len(late) / 2
