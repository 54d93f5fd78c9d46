import pytest

from evaluators.reward import MnasReward
from mnas_core.errors import ConfigError


def test_soft_reward_trades_two_x_latency_for_five_percent():
    reward = MnasReward.soft(target_ms=80)
    # Paper, Fig. 3: ACC 0.5, T 80 ms; soft constraint: 2x latency costs about 5% relative accuracy.
    assert reward(0.5, 80) == pytest.approx(0.5)
    assert reward(0.5, 160) / reward(0.5, 80) == pytest.approx(2 ** -0.07)
    assert reward(0.5, 40) > reward(0.5, 80)


def test_hard_reward_ignores_speed_below_target_and_penalises_above():
    reward = MnasReward.hard(target_ms=75)
    assert reward(0.7, 10) == reward(0.7, 75) == pytest.approx(0.7)
    assert reward(0.7, 150) == pytest.approx(0.35)


@pytest.mark.parametrize("kwargs", [{"target_ms": 0}, {"target_ms": -1}, {"target_ms": 10, "alpha": 0.1},
                                    {"target_ms": 10, "beta": 1.0}, {"target_ms": float("nan")}])
def test_invalid_settings_are_clear_errors(kwargs):
    with pytest.raises(ConfigError) as err:
        MnasReward(**kwargs)
    assert "\n" not in str(err.value)
