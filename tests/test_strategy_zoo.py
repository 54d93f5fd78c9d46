"""Every `conf/strategy/<word>.yaml` instantiates with Hydra and runs real trials through NNI 3.0."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import nni
import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from nni.mutable import ensure_frozen
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.strategy.base import Strategy
from omegaconf import OmegaConf

from mnas_core.errors import ConfigError
from strategies.nni_rl import policy_rl

CONF = Path(__file__).resolve().parents[1] / "conf" / "strategy"
WORDS = ["ppo_rnn", "random", "evolution", "tpe", "policy_rl", "optuna_nsga2"]


class ToySpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.sample = {
            "width": ensure_frozen(self.add_mutable(nni.choice("width", [8, 16, 32]))),
            "kernel": ensure_frozen(self.add_mutable(nni.choice("kernel", [3, 5]))),
            "op": ensure_frozen(self.add_mutable(nni.choice("op", ["conv", "mbconv3", "mbconv6"]))),
            "depth": ensure_frozen(self.add_mutable(nni.choice("depth", [1, 2, 3]))),
        }

    def forward(self, x):
        return x


class Toy:
    """Accuracy grows with size, latency too: a real trade-off; reports the project's dict metric."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, model):
        s = dict(model.sample)
        self.calls.append(s)
        size = s["width"] / 32 + s["depth"] / 3 + {"conv": 0.2, "mbconv3": 0.5, "mbconv6": 1.0}[s["op"]]
        accuracy = 0.5 + 0.15 * size + (0.02 if s["kernel"] == 5 else 0.0)
        latency = 10.0 * size * (1.3 if s["kernel"] == 5 else 1.0)
        reward = accuracy * (latency / 20.0) ** -0.07
        nni.report_final_result({"default": reward, "reward": reward, "accuracy": accuracy,
                                 "latency_ms": latency, "params": 1000, "macs": 10000})


@pytest.fixture(autouse=True)
def nni_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))


def run(strategy: Strategy, tmp: Path, trials: int = 4) -> Toy:
    toy = Toy()
    config = NasExperimentConfig("sequential", "simplified")
    config.max_trial_number = trials
    config.experiment_working_directory = str(tmp / "nni-experiments")
    exp = NasExperiment(ToySpace(), FunctionalEvaluator(toy), strategy, config, id=uuid.uuid4().hex[:8])
    assert exp.run(port=8091, wait_completion=True, debug=False) is not False
    exp.stop()
    return toy


def load(word: str, **overrides):
    # a word's yaml may read search.failure_reward, as it does in the composed config
    cfg = OmegaConf.create({"search": {"failure_reward": 0.0}, "strategy": OmegaConf.load(CONF / f"{word}.yaml")}).strategy
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    return instantiate(cfg)


def test_every_word_has_a_config():
    assert set(WORDS) <= {p.stem for p in CONF.glob("*.yaml")}


@pytest.mark.parametrize("word", WORDS)
def test_word_instantiates_and_runs_four_trials(word, tmp_path):
    strategy = load(word)
    assert isinstance(strategy, Strategy)
    toy = run(strategy, tmp_path)
    assert len(toy.calls) == 4
    models = list(strategy.list_models(sort=True))
    assert len(models) == 4 and all(m.metric is not None for m in models)
    assert models[0].metric == max(m.metric for m in models)


def test_optuna_nsga2_optimises_accuracy_and_latency_from_the_dict_metric(tmp_path):
    strategy = load("optuna_nsga2", seed=0, **{"sampler_kwargs.population_size": 4})
    toy = run(strategy, tmp_path, trials=12)
    study = strategy.study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    finished = [t for t in study.trials if t.values is not None]
    assert len(finished) >= 12
    by_params = {tuple(sorted(c.items())): c for c in toy.calls}
    for t in finished:
        s = by_params[tuple(sorted(t.params.items()))]
        size = s["width"] / 32 + s["depth"] / 3 + {"conv": 0.2, "mbconv3": 0.5, "mbconv6": 1.0}[s["op"]]
        assert t.values[0] == pytest.approx(0.5 + 0.15 * size + (0.02 if s["kernel"] == 5 else 0.0))
    assert len(study.best_trials) >= 2  # a Pareto front, not a single optimum


def test_optuna_bridge_runs_a_scalar_sampler_by_config(tmp_path):
    strategy = load("optuna_nsga2", sampler="tpe", sampler_kwargs={"n_startup_trials": 3}, seed=0,
                    objectives={"default": "maximize"})
    toy = run(strategy, tmp_path, trials=8)
    assert len(toy.calls) == 8
    assert [d.name for d in strategy.study.directions] == ["MAXIMIZE"]
    assert strategy.study.best_value == max(m.metric for m in strategy.list_models())


def test_optuna_state_dict_round_trip(tmp_path):
    a = load("optuna_nsga2", sampler="random", sampler_kwargs={}, seed=0, objectives={"default": "maximize"})
    run(a, tmp_path / "a", trials=5)
    b = load("optuna_nsga2", sampler="random", sampler_kwargs={}, seed=1, objectives={"default": "maximize"})
    b.load_state_dict(a.state_dict())  # before initialize: applied once the space is known
    toy = run(b, tmp_path / "b", trials=3)
    assert len(toy.calls) == 3 and len(b.study.trials) >= 8
    old = {tuple(sorted(t.params.items())) for t in a.study.trials}
    assert not old & {tuple(sorted(c.items())) for c in toy.calls}  # known architectures are not retrained


def test_tpe_word_is_nni_tpe_and_does_not_walk_a_grid_after_repeats():
    """NNI 3.0's TpeTuner replaces a repeated suggestion by the next grid point (from the first value of every
    decision); on a problem whose optimum is the last values that ruins it. The tuner behind `tpe` does not."""
    from nni.algorithms.hpo.tpe_tuner import TpeTuner
    from nni.nas.strategy import TPE

    strategy = load("tpe", seed=0)
    assert isinstance(strategy, TPE) and strategy.tuner.optimize_mode.value == "maximize"

    def late_mean(tuner) -> float:
        tuner.update_search_space({f"p{i}": {"_type": "choice", "_value": [0, 1, 2, 3]} for i in range(10)})
        rewards = []
        for k in range(200):
            params = tuner.generate_parameters(k)
            rewards.append(sum(params.values()))
            tuner.receive_trial_result(k, params, rewards[-1])
        return sum(rewards[-100:]) / 100

    assert late_mean(TpeTuner(optimize_mode="maximize", seed=0)) < 10  # NNI as shipped: far below random (15)
    assert late_mean(strategy.tuner) > 13


class FirstChoices(Strategy):
    """A user's own strategy: walks the space in order, one trial per sample."""

    def _run(self) -> None:
        space = self.model_space.simplify()
        labels = list(space)
        values = [list(space[label].values) for label in labels]
        i = 0
        while self.wait_for_resource():
            sample = {label: v[(i // (1 + j)) % len(v)] for j, (label, v) in enumerate(zip(labels, values))}
            self.engine.submit_models(self.model_space.freeze(sample))
            i += 1


def test_a_user_strategy_works_by_target_alone(tmp_path):
    cfg = OmegaConf.create({"_target_": f"{__name__}.FirstChoices"})
    strategy = instantiate(cfg)
    toy = run(strategy, tmp_path, trials=4)
    assert [c["width"] for c in toy.calls] == [8, 16, 32, 8]


def _config_error_of(word: str) -> ConfigError:
    """Hydra wraps a target's exception; the CLI shows its cause, our one-line ConfigError."""
    with pytest.raises(InstantiationException) as err:
        load(word)
    assert isinstance(err.value.__cause__, ConfigError)
    return err.value.__cause__


def test_policy_rl_without_the_rl_extra_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tianshou", None)  # what a missing package looks like to `import`
    error = _config_error_of("policy_rl")
    assert str(error) == "strategy=policy_rl needs the 'rl' extra: pip install 'mnas-nni[rl]'"
    with pytest.raises(ConfigError):
        policy_rl()


def test_optuna_without_the_extra_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    error = _config_error_of("optuna_nsga2")
    assert str(error).endswith("the 'optuna' extra: pip install 'mnas-nni[optuna]'")
    assert "\n" not in str(error)
