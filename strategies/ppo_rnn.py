"""MnasNet's controller as an NNI 3.0 strategy: an LSTM that emits one token per decision, trained with PPO.

The controller is the NASNet one that MnasNet reuses (Tan et al. 2019, section 4.2): one LSTM layer with 100
hidden units, weights uniform in [-0.1, 0.1], the embedding of the previous token as the next input (a learned start
token first) and one softmax head per decision. PPO (clipped surrogate, several epochs per minibatch of sampled
architectures) maximises the reward; the advantage is the reward minus an exponential moving average baseline.

Two options off by default (the paper has neither) make short searches (hundreds of trials) much more
sample-efficient: ``advantage="rank"`` replaces rewards by their centred ranks within the minibatch (fitness
shaping, as in natural evolution strategies: only the order of rewards matters, so one outlier cannot dominate an
update) and ``elite_size``/``elite_weight`` add priority-queue training (Abolafia et al. 2018): every PPO step also
raises the log-likelihood of the best architectures found so far.

Two more, also off by default, keep a search improving to the end of its budget once the policy has converged
(it then mostly re-proposes architectures already trained): ``mutate_duplicates`` replaces such a duplicate by a
mutation of the best architecture so far (one decision changed: local search, best first, the way evolution
makes progress late), and ``mutation_share`` draws that share of all candidates that way from the
start. Mutants join the PPO minibatch like the policy's own samples (their log-probabilities taken under the
policy of the update), so the controller learns from what local search finds.

Decision order: the declaration order of ``model_space.simplify()`` (the order in which the space creates its
mutables, e.g. block by block), so the LSTM sees a network the way it is built. Only ``nni.mutable.Categorical``
decisions are supported; annotations (constraints) are skipped and checked by ``freeze``.

Cost: between two updates the policy is fixed, so architectures are drawn in batches of ``batch_size`` with one
batched pass (no autograd), and the update runs the LSTM once over the whole minibatch (teacher forcing).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from nni.mutable import Sample, SampleValidationError
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy.base import Strategy

from mnas_core.errors import ConfigError
from strategies import ppo
from strategies.controller import Controller, centred_ranks
from strategies.decisions import accuracy_meeting, decisions_of, extract_reward, latency_of
from strategies.latency_model import LatencyFilter
from strategies.local_search import near_best
from strategies.ppo import ADVANTAGES
from strategies.ppo_rnn_checkpoint import checkpoint, restore

__all__ = ["Controller", "PpoRnn", "centred_ranks", "extract_reward"]

_logger = logging.getLogger(__name__)

Key = tuple[int, ...]  # an architecture as its choice indices, in decision order
LogProbs = tuple[float, ...]  # log-probability of each choice when it was sampled


class PpoRnn(Strategy):
    """PPO-trained RNN controller (NASNet/MnasNet) over the categorical decisions of any NNI model space.

    Parameters
    ----------
    batch_size
        Architectures (with their rewards) per PPO update.
    ppo_epochs
        Gradient steps over each minibatch (full batch per step).
    clip
        PPO clipping range of the probability ratio.
    per_decision_ratio
        Clip the ratio of each decision (each token is an action of the episode, as in PPO on any sequential
        task; default) or of the whole architecture (the product over decisions, one action per episode).
    learning_rate, entropy_weight, baseline_decay
        Adam learning rate, entropy bonus weight, decay of the moving-average baseline.
    hidden_size, embedding_dim, init_range
        LSTM width, token embedding width, uniform init range of every weight.
    max_grad_norm
        Optional gradient-norm clipping (None: off, as in the paper).
    advantage
        ``"ema"``: reward minus the moving-average baseline (the paper); ``"ema_normalized"``: the same divided by
        its standard deviation over the minibatch; ``"rank"``: centred ranks of the rewards in the minibatch, in
        [-0.5, 0.5], ties sharing their mean rank.
    elite_size, elite_weight
        Priority-queue training: each PPO step adds ``-elite_weight * mean log-likelihood`` of the ``elite_size``
        best architectures so far to the loss. 0 (the default) turns it off.
    mutate_duplicates, mutation_share, mutation_pool
        Local search around the best architectures: a duplicate draw is replaced by a mutant
        (``mutate_duplicates``); ``mutation_share`` of all candidates are mutants; a mutant changes one decision
        of one of the ``mutation_pool`` best architectures so far to another value (walking on while the result is
        already known).
    mutation_radius
        2: once every one-decision neighbour of the pool is known, mutants walk the two-decision neighbours (best
        pool member first) before random kicks.
    answer_share, target_ms
        That share of mutants are near the ``mutation_pool`` most accurate architectures whose latency meets
        ``target_ms`` (the search's answer for T) instead of the best by reward, which under ``abs`` or ``soft``
        may lie above T. Without a T (``target_ms`` None) every mutant is near the best by reward.
    latency_filter
        With a T: a candidate whose latency, as estimated from the trials so far (strategies/latency_model.py: one
        cost per decision value), exceeds ``latency_filter * target_ms`` is not trained: a mutant is skipped, and
        the policy's draw is replaced by a mutant as a duplicate is (with ``mutate_duplicates``), so the search
        spends its trials near T rather than far above it. None (the default) skips nothing.
    reward_key
        Key of the reward when a trial's final metric is a dict.
    failure_reward
        Reward of a failed trial, a trial without a usable metric, or a sample the space rejects.
    max_duplicate_resamples
        An already-seen architecture is never retrained; it is resampled up to this many times in a row, then fed
        to PPO with its known reward (no trial, no budget used).
    stall_limit
        Stop after this many duplicates in a row (the controller has converged or the space is exhausted).
    seed
        Seed of the controller's own generator (init, sampling). None: a random seed.
    num_threads
        torch threads for the controller's own (tiny) ops, restored afterwards; None leaves torch's setting.
        One thread is fastest: on a busy machine extra threads only spin.
    on_update
        Called with the statistics dict after every update.
    """

    def __init__(self, *, batch_size: int = 20, ppo_epochs: int = 4, clip: float = 0.2,
                 per_decision_ratio: bool = True,
                 learning_rate: float = 0.00035, entropy_weight: float = 0.00001, baseline_decay: float = 0.95,
                 hidden_size: int = 100, embedding_dim: int = 100, init_range: float = 0.1,
                 max_grad_norm: float | None = None, advantage: str = "ema",
                 elite_size: int = 0, elite_weight: float = 0.0,
                 mutate_duplicates: bool = False, mutation_share: float = 0.0, mutation_pool: int = 10,
                 mutation_radius: int = 1, answer_share: float = 0.0, target_ms: float | None = None,
                 latency_filter: float | None = None,
                 reward_key: str = "default", failure_reward: float = 0.0, max_duplicate_resamples: int = 10,
                 stall_limit: int = 1000, seed: int | None = None, num_threads: int | None = 1,
                 on_update: Callable[[dict], None] | None = None):
        super().__init__()
        if batch_size < 1 or ppo_epochs < 1 or clip <= 0 or learning_rate <= 0:
            raise ConfigError("ppo_rnn: batch_size, ppo_epochs, clip and learning_rate must be positive")
        if not 0 <= baseline_decay < 1:
            raise ConfigError(f"ppo_rnn: baseline_decay must be in [0, 1), got {baseline_decay}")
        if advantage not in ADVANTAGES:
            raise ConfigError(f"ppo_rnn: advantage must be one of {', '.join(ADVANTAGES)}, got {advantage!r}")
        if elite_size < 0 or elite_weight < 0:
            raise ConfigError("ppo_rnn: elite_size and elite_weight must be >= 0")
        if not 0 <= mutation_share <= 1 or mutation_pool < 1 or mutation_radius not in (1, 2):
            raise ConfigError(f"ppo_rnn: mutation_share must be in [0, 1], mutation_pool >= 1 and mutation_radius 1 "
                              f"or 2, got {mutation_share}, {mutation_pool} and {mutation_radius}")
        if not 0 <= answer_share <= 1:
            raise ConfigError(f"ppo_rnn: answer_share must be in [0, 1], got {answer_share}")
        if latency_filter is not None and not latency_filter > 0:
            raise ConfigError(f"ppo_rnn: latency_filter must be a positive factor of T (say 1.1) or null, got "
                              f"{latency_filter}")
        self.batch_size, self.ppo_epochs, self.clip = batch_size, ppo_epochs, clip
        self.per_decision_ratio = per_decision_ratio
        self.learning_rate, self.entropy_weight, self.baseline_decay = learning_rate, entropy_weight, baseline_decay
        self.hidden_size, self.embedding_dim, self.init_range = hidden_size, embedding_dim, init_range
        self.max_grad_norm, self.advantage = max_grad_norm, advantage
        self.elite_size, self.elite_weight = elite_size, elite_weight
        self.mutate_duplicates, self.mutation_share, self.mutation_pool = mutate_duplicates, mutation_share, mutation_pool
        self.mutation_radius, self.answer_share, self.target_ms = mutation_radius, answer_share, target_ms
        self.latency_filter = latency_filter
        self.reward_key, self.failure_reward = reward_key, failure_reward
        self.max_duplicate_resamples, self.stall_limit = max_duplicate_resamples, stall_limit
        self.seed = seed if seed is not None else int(torch.randint(2**31 - 1, ()).item())
        self.num_threads = num_threads
        self.on_update = on_update

        self.update_stats: list[dict] = []
        self.timing = {"sample_s": 0.0, "update_s": 0.0, "sampled": 0}  # the controller's own cost
        self._generator = torch.Generator().manual_seed(self.seed)
        self._decisions: list[tuple[str, list]] = []
        self.controller: Controller | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._baseline: float | None = None
        self._pool: tuple[torch.Tensor, torch.Tensor] | None = None  # drawn, not yet used: choices, log-probs
        self._pool_pos = 0
        self._batch: list[tuple[Key, LogProbs | None, float]] = []  # (architecture, old log-probs, reward); None:
        # a mutant, whose log-probabilities are taken under the policy of the update
        self._history: dict[Key, float] = {}  # every finished architecture -> its reward
        self._answers: dict[Key, float] = {}  # every finished architecture meeting target_ms -> its accuracy
        self._filter: LatencyFilter | None = None  # the trials' latencies, and which candidates are too slow
        self._pending: dict[Key, list[LogProbs | None]] = {}  # running architecture -> log-probs waiting for its reward
        self._running: dict[ExecutableModelSpace, Key] = {}
        self._raw_metrics: dict[ExecutableModelSpace, Any] = {}
        # (architecture, reward, latency or None), filled by engine callbacks
        self._finished: collections.deque[tuple[Key, float, float | None]] = collections.deque()
        self._lock = threading.Lock()
        # The policy (controller, minibatch, history) changes in the engine's trial-end callback, which the
        # training-service engine calls from its own thread: sampling and updates take turns.
        self._policy_lock = threading.RLock()
        self._dup_streak = 0  # duplicates drawn in a row since the last feed
        self._dup_rate = 0.0  # moving average of the fraction of draws that are duplicates (sizes the draws)
        self._stall = 0  # duplicates drawn in a row since the last new trial
        # trials submitted, duplicates fed with their cached reward, duplicates dropped (resampled)
        self.counters = {"trials": 0, "cached": 0, "dropped": 0, "mutants": 0}
        self._deferred_state: dict | None = None

    def extra_repr(self) -> str:
        return (f"batch_size={self.batch_size}, ppo_epochs={self.ppo_epochs}, clip={self.clip}, "
                f"learning_rate={self.learning_rate}, entropy_weight={self.entropy_weight}, "
                f"advantage={self.advantage}, elite_size={self.elite_size}, elite_weight={self.elite_weight}")

    # ----------------------------------------------------------------- NNI surface

    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        self._decisions = decisions_of(model_space)
        self.controller = Controller([len(v) for _, v in self._decisions], self.hidden_size, self.embedding_dim,
                                     self.init_range, self._generator)
        self._filter = LatencyFilter([len(v) for _, v in self._decisions], self.latency_filter, self.target_ms,
                                     refit_every=self.batch_size)
        # fused: one kernel for the whole step; about half the time of the default on CPU for this tiny model
        self._optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.learning_rate, fused=True)
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_metric)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_end)
        if self._deferred_state is not None:
            self.load_state_dict(self._deferred_state)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_metric)
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_end)

    def _run(self) -> None:
        space_size = math.prod(len(v) for _, v in self._decisions)
        while True:
            with self._policy_lock:
                self._drain()
                if len(self._history) + len(self._pending) >= space_size:
                    _logger.info("Every architecture of the space has been tried. Stop.")
                    break
                if self._stall >= self.stall_limit:
                    _logger.warning("%d duplicates in a row: the controller has converged; the search stops after "
                                    "%d trials (raise strategy.entropy_weight or strategy.stall_limit to go on).",
                                    self._stall, self.counters["trials"])
                    break
            if not self.wait_for_resource():
                break
            with self._policy_lock:
                self._step()
        self.engine.wait_models(*list(self._running))
        with self._policy_lock:
            self._drain()

    # ----------------------------------------------------------------- sampling

    def _step(self) -> None:
        """Draw one architecture: submit it, feed its known reward, or drop it as a duplicate."""
        key, logp = self._next_candidate()
        duplicate = key in self._history or key in self._pending
        self._dup_rate = 0.9 * self._dup_rate + 0.1 * duplicate
        slow = False
        if not duplicate and logp is not None:  # the policy's draw: far above T, it is replaced like a duplicate
            with self._threads():  # the estimate's refit is a torch solve
                slow = self._too_slow(key)
        if (duplicate or slow) and self.mutate_duplicates and (mutant := self._mutant()) is not None:
            key, logp, duplicate = mutant, None, False
        if duplicate:
            self._stall += 1
            self._dup_streak += 1
            if self._dup_streak <= self.max_duplicate_resamples:
                self.counters["dropped"] += 1
                return
            self._dup_streak = 0
            self.counters["cached"] += 1
            if key in self._history:
                self._feed(key, logp, self._history[key])
            else:
                self._pending[key].append(logp)  # gets the reward of the running twin
            return
        self._dup_streak = self._stall = 0
        try:
            model = self.model_space.freeze(self.to_sample(key))
        except SampleValidationError as err:
            _logger.info("Sample rejected by the space (%s); reward %s.", err, self.failure_reward)
            self._history[key] = self.failure_reward
            self._feed(key, logp, self.failure_reward)
            return
        with self._lock:
            self._pending[key] = [logp]
            self._running[model] = key
        self.counters["trials"] += 1
        self.engine.submit_models(model)

    def _uniform_int(self, n: int) -> int:
        return int(torch.randint(n, (1,), generator=self._generator))

    def _mutant(self) -> Key | None:
        """A new architecture near the best so far (strategies/local_search.py); None when there is no history.
        With `answer_share`, that share of mutants are near the most accurate architectures meeting T instead."""
        if not self._history:
            return None
        around = self._history  # by reward; or, with answer_share, by accuracy among those meeting T
        if self.answer_share and self._answers and \
                float(torch.rand((), generator=self._generator)) < self.answer_share:
            around = self._answers
        sizes, tries = [len(values) for _, values in self._decisions], 8 * (self.max_duplicate_resamples + 1)
        tried = lambda key: key in self._history or key in self._pending
        rejected = 0

        def skipped(key: Key) -> bool:
            nonlocal rejected
            if tried(key):
                return True
            slow = self._too_slow(key)
            rejected += slow
            return slow

        with self._threads():  # the latency estimate's refit is a torch solve
            key = near_best(around, sizes, skipped, self._uniform_int, self.mutation_pool, kick_tries=tries,
                            radius=self.mutation_radius)
        if key is None and rejected:  # everything near is estimated too slow: walk on (better than a duplicate)
            key = near_best(around, sizes, tried, self._uniform_int, self.mutation_pool, kick_tries=tries,
                            radius=self.mutation_radius)
        if key is not None:
            self.counters["mutants"] += 1
        return key

    def _too_slow(self, key: Key) -> bool:
        return self._filter is not None and self._filter.too_slow(key)

    def _next_candidate(self) -> tuple[Key, LogProbs | None]:
        assert self.controller is not None
        if self.mutation_share and self._history and float(torch.rand((), generator=self._generator)) < \
                self.mutation_share and (mutant := self._mutant()) is not None:
            return mutant, None
        if self._pool is None or self._pool_pos >= len(self._pool[0]):
            start = time.perf_counter()
            with self._threads():
                # A draw of 20 or 80 architectures costs about the same (the LSTM's steps are sequential either
                # way): when duplicates are frequent, draw enough for a whole batch of new ones at once (<= 4x).
                size = self.batch_size * (4 if self._dup_streak else 1)
                size = max(size, math.ceil(self.batch_size / max(0.25, 1 - self._dup_rate)))
                self._pool = self.controller.sample(size, self._generator)
            self._pool_pos = 0
            self.timing["sample_s"] += time.perf_counter() - start
        choices, logp = self._pool
        i = self._pool_pos
        self._pool_pos += 1
        self.timing["sampled"] += 1
        return tuple(choices[i].tolist()), tuple(logp[i].tolist())

    def to_sample(self, key: Key) -> Sample:
        """The NNI sample (label -> value) of an architecture given as choice indices."""
        return {label: values[k] for (label, values), k in zip(self._decisions, key)}

    # ----------------------------------------------------------------- results

    def _on_metric(self, event: FinalMetricEvent) -> None:
        with self._lock:
            if event.model in self._running:
                self._raw_metrics[event.model] = event.metric

    def _on_end(self, event: TrainingEndEvent) -> None:
        with self._lock:
            key = self._running.pop(event.model, None)
            if key is None:
                return
            raw = self._raw_metrics.pop(event.model, None)
            reward = extract_reward(raw, self.reward_key) if event.status == ModelStatus.Trained else None
            if reward is not None and (accuracy := accuracy_meeting(raw, self.target_ms)) is not None:
                self._answers[key] = accuracy
            if reward is None:
                _logger.info("Trial %s failed or reported no usable %r; reward %s.", key, self.reward_key,
                             self.failure_reward)
                reward = self.failure_reward
            self._finished.append((key, reward, latency_of(raw)))
        # Into the history (and the minibatch) at once, so the checkpoint taken after this trial has it.
        with self._policy_lock:
            self._drain()

    def _drain(self) -> None:
        """Move finished trials into the history and the PPO minibatch (under the policy lock)."""
        while self._finished:
            key, reward, latency = self._finished.popleft()
            with self._lock:
                waiting = self._pending.pop(key, [])
            self._history[key] = reward
            if latency is not None and self._filter is not None:
                self._filter.add(key, latency)
            for logp in waiting:
                self._feed(key, logp, reward)

    def _feed(self, key: Key, logp: LogProbs | None, reward: float) -> None:
        self._batch.append((key, logp, reward))
        if len(self._batch) >= self.batch_size:
            batch, self._batch = self._batch[:self.batch_size], self._batch[self.batch_size:]
            self._update(batch)

    # ----------------------------------------------------------------- PPO

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        before = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _update(self, batch: list[tuple[Key, LogProbs | None, float]]) -> None:
        assert self.controller is not None and self._optimizer is not None
        start = time.perf_counter()
        choices = torch.tensor([k for k, _, _ in batch])
        rewards = [r for _, _, r in batch]
        adv, self._baseline = ppo.advantages(rewards, self._baseline, self.baseline_decay, self.advantage)
        with self._threads():
            old_logp = ppo.old_log_probs(self.controller, choices, [lp for _, lp, _ in batch])
            stats = ppo.clipped_steps(
                self.controller, self._optimizer, choices, old_logp, adv,
                ppo.elite(self._history, self.elite_size, self.elite_weight), epochs=self.ppo_epochs, clip=self.clip,
                per_decision_ratio=self.per_decision_ratio, entropy_weight=self.entropy_weight,
                elite_weight=self.elite_weight, max_grad_norm=self.max_grad_norm)
        stats = {"update": len(self.update_stats), "trials": self.counters["trials"],
                 "reward_mean": sum(rewards) / len(rewards), "reward_max": max(rewards),
                 "baseline": float(self._baseline), **stats}
        self._pool = None  # the policy changed: draw fresh architectures
        self.timing["update_s"] += time.perf_counter() - start
        self.update_stats.append(stats)
        # every statistic for the run's log file; a terminal gets the app's own line from `on_update` instead
        _logger.info("[PPO update %d] %s", stats["update"], stats, extra={"log_file_only": True})
        if self.on_update is not None:
            self.on_update(stats)

    # ----------------------------------------------------------------- checkpoint

    def state_dict(self) -> dict:
        """Everything needed to continue the search (loads with ``torch.load(weights_only=True)``)."""
        return checkpoint(self)

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a search. May be called before ``initialize`` (applied when the space is known)."""
        if self.controller is None:
            self._deferred_state = state_dict
            return
        self._deferred_state = None
        restore(self, state_dict)

    @property
    def history(self) -> list[tuple[Sample, float]]:
        """Every finished architecture (as an NNI sample) with its reward, in order of completion."""
        return [(self.to_sample(k), r) for k, r in self._history.items()]
