"""The PPO update of the controller (strategies/controller.py) on one minibatch of sampled architectures.

`advantages` turns the minibatch's rewards into advantages (reward minus an exponential moving average baseline,
optionally normalized, or centred ranks); `clipped_steps` takes the clipped-surrogate gradient steps, with the
entropy bonus and, when an `elite` is given, priority-queue training (Abolafia et al. 2018): each step also raises
the log-likelihood of the best architectures so far.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from strategies.controller import Controller, centred_ranks

ADVANTAGES = ("ema", "ema_normalized", "rank")


def advantages(rewards: list[float], baseline: float | None, decay: float,
               kind: str) -> tuple[torch.Tensor, float | None]:
    """Per-architecture advantages of a minibatch, and the baseline after it. The EMA baseline moves after each
    sample whatever `kind` (it starts at the first reward) so that it stays a readable statistic."""
    ema = []
    for r in rewards:
        if baseline is None:
            baseline = r
        ema.append(r - baseline)
        baseline = decay * baseline + (1 - decay) * r
    if kind == "rank":
        return centred_ranks(torch.tensor(rewards)), baseline
    out = torch.tensor(ema)
    if kind == "ema_normalized" and len(ema) > 1:
        out = out / (out.std() + 1e-8)
    return out, baseline


def elite(history: Mapping[tuple[int, ...], float], size: int, weight: float) -> torch.Tensor | None:
    """The `size` best architectures of `history` [K, T], or None when priority-queue training is off."""
    if not size or not weight or not history:
        return None
    best = heapq.nlargest(size, history.items(), key=lambda item: item[1])
    return torch.tensor([key for key, _ in best])


def old_log_probs(controller: Controller, choices: torch.Tensor,
                  logps: Sequence[Sequence[float] | None]) -> torch.Tensor:
    """The sampling log-probabilities [B, T]; a mutant's (None) are those of the current policy."""
    if all(lp is not None for lp in logps):
        return torch.tensor(logps)
    with torch.no_grad():
        current = controller.evaluate(choices)[0]
    return torch.stack([current[i] if lp is None else torch.tensor(lp) for i, lp in enumerate(logps)])


def clipped_steps(controller: Controller, optimizer: torch.optim.Optimizer, choices: torch.Tensor,
                  old_logp: torch.Tensor, adv: torch.Tensor, elite: torch.Tensor | None, *, epochs: int, clip: float,
                  per_decision_ratio: bool, entropy_weight: float, elite_weight: float,
                  max_grad_norm: float | None) -> dict:
    """Clipped-surrogate steps on one minibatch; statistics are those of the last epoch, before its step.

    `per_decision_ratio` clips the ratio of each decision, otherwise that of the whole architecture."""
    adv = adv[:, None]
    batch = choices if elite is None else torch.cat([choices, elite])
    elite_logp = torch.zeros(())
    for _ in range(epochs):
        logp, entropy = controller.evaluate(batch)  # one LSTM pass for the minibatch and the elite
        if elite is not None:
            elite_logp = logp[len(choices):].sum(1).mean()
            logp, entropy = logp[:len(choices)], entropy[:len(choices)]
        log_ratio = logp - old_logp  # [B, T]
        if not per_decision_ratio:
            log_ratio = log_ratio.sum(1, keepdim=True)
        ratio = torch.exp(log_ratio)
        surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).sum(1)
        policy_loss = -surrogate.mean()
        loss = policy_loss - entropy_weight * entropy.mean() - elite_weight * elite_logp
        optimizer.zero_grad()
        loss.backward()
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(controller.parameters(), max_grad_norm)
        optimizer.step()
    with torch.no_grad():
        return {
            "entropy": float(entropy.mean()),
            "policy_loss": float(policy_loss),
            "approx_kl": float(((ratio - 1) - log_ratio).sum(1).mean()),  # of the whole architecture
            "clip_fraction": float(((ratio - 1).abs() > clip).float().mean()),
            "elite_logp": float(elite_logp),  # mean log-likelihood of the elite (0 when off)
        }
