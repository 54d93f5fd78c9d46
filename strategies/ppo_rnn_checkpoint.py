"""The checkpoint of a PpoRnn search: what its `state_dict` writes and its `load_state_dict` reads - the policy,
its optimizer and generator, the history and the pending minibatch - so that a resumed search samples exactly what
the uninterrupted one would have. It reads the strategy's own fields: strategies/ppo_rnn.py is its only caller."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mnas_core.errors import ConfigError

if TYPE_CHECKING:
    from strategies.ppo_rnn import PpoRnn

_logger = logging.getLogger("strategies.ppo_rnn")


def checkpoint(strategy: PpoRnn) -> dict:
    """The search's state as plain tensors, lists and numbers (loads with ``torch.load(weights_only=True)``)."""
    s = strategy
    if s.controller is None:
        return {"seed": s.seed}
    if s._running:
        _logger.warning("%d running trials are not in the checkpoint; they will be sampled anew.", len(s._running))
    pool = None if s._pool is None else (s._pool[0][s._pool_pos:], s._pool[1][s._pool_pos:])
    latency = s._filter.state() if s._filter is not None else {"latencies": [], "fitted_at": 0}
    return {
        "seed": s.seed,
        "decisions": [label for label, _ in s._decisions],
        "controller": s.controller.state_dict(),
        "optimizer": s._optimizer.state_dict(),
        "baseline": s._baseline,
        "rng": {"torch": s._generator.get_state()},
        "pool": pool,
        "batch": [(list(k), None if lp is None else list(lp), r) for k, lp, r in s._batch],
        "history": [(list(k), r) for k, r in s._history.items()],
        "answers": [(list(k), a) for k, a in s._answers.items()],
        "latencies": latency["latencies"],
        "latency_fitted_at": latency["fitted_at"],
        "update_stats": [dict(stats) for stats in s.update_stats],
        "counters": {**s.counters, "dup_streak": s._dup_streak, "stall": s._stall, "dup_rate": s._dup_rate},
        "timing": dict(s.timing),
    }


def restore(strategy: PpoRnn, state: dict) -> None:
    """Put `state` (a `checkpoint`) back into an initialized strategy; one of another space is a one-line error."""
    s = strategy
    if "controller" not in state:
        return
    if state["decisions"] != [label for label, _ in s._decisions]:
        raise ConfigError("ppo_rnn: the checkpoint was made on a different search space (decisions differ)")
    s.seed = state["seed"]
    s.controller.load_state_dict(state["controller"])
    s._optimizer.load_state_dict(state["optimizer"])
    s._baseline = state["baseline"]
    s._generator.set_state(state["rng"]["torch"])
    s._pool, s._pool_pos = state["pool"], 0
    s._batch = [(tuple(k), None if lp is None else tuple(lp), r) for k, lp, r in state["batch"]]
    s._history = {tuple(k): r for k, r in state["history"]}
    s._answers = {tuple(k): a for k, a in state.get("answers", [])}  # none in an older checkpoint
    if s._filter is not None:  # none in an older checkpoint
        s._filter.load(state.get("latencies", []), state.get("latency_fitted_at", 0))
    s.update_stats = [dict(stats) for stats in state["update_stats"]]
    counters = dict(state["counters"])
    s._dup_streak, s._stall = counters.pop("dup_streak"), counters.pop("stall")
    s._dup_rate = counters.pop("dup_rate", 0.0)
    s.counters = {"mutants": 0, **counters}  # a checkpoint from before mutants were counted
    s.timing = dict(state["timing"])
