"""Search strategies: the MnasNet PPO-RNN controller and bridges to NNI's and Optuna's searchers."""

from strategies.nni_rl import policy_rl
from strategies.optuna_bridge import OptunaStrategy
from strategies.ppo_rnn import PpoRnn

__all__ = ["OptunaStrategy", "PpoRnn", "policy_rl"]
