"""NNI 3.0's PolicyBasedRL (tianshou PPO) behind a lazy import, so ``strategy=policy_rl`` fails with one line."""

from __future__ import annotations

from typing import Any

from mnas_core.errors import ConfigError

__all__ = ["policy_rl"]


def policy_rl(*, samples_per_update: int = 20, replay_buffer_size: int | None = None,
              reward_for_invalid: float | None = None, update_kwargs: dict | None = None,
              seed: int | None = None, **kwargs: Any):
    """Build ``nni.nas.strategy.PolicyBasedRL``.

    It has no seed of its own (tianshou draws from torch's and numpy's global generators): ``seed`` seeds those.
    """
    try:
        import gym  # noqa: F401
        import tianshou  # noqa: F401
    except ImportError as err:
        raise ConfigError("strategy=policy_rl needs the 'rl' extra: pip install 'mnas-nni[rl]'") from err
    from nni.nas.strategy import PolicyBasedRL

    if seed is not None:
        import numpy as np
        import torch

        torch.manual_seed(seed)
        np.random.seed(seed)
    if update_kwargs is not None:
        update_kwargs = dict(update_kwargs)  # an OmegaConf node would reach tianshou otherwise
    return PolicyBasedRL(samples_per_update=samples_per_update, replay_buffer_size=replay_buffer_size,
                         reward_for_invalid=reward_for_invalid, update_kwargs=update_kwargs, **kwargs)
