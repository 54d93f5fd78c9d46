"""The MnasNet/NASNet controller network: a one-layer LSTM that emits one token per decision.

One LSTM layer (100 hidden units in the paper), weights uniform in [-0.1, 0.1], the embedding of the previous token
as the next input (a learned start token first) and one softmax head per decision. `sample` draws architectures
in one batched pass without autograd; `evaluate` scores given architectures with teacher forcing (for PPO).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_NEG = -1e9  # logit of a padded (non-existent) choice: probability exactly 0, entropy term exactly 0


class Controller(nn.Module):
    """One-layer LSTM over the decisions; decision t has its own embedding rows and softmax head.

    Token ids: 0 is the start token; choice k of decision t is ``1 + offset[t] + k``.
    """

    def __init__(self, num_choices: Sequence[int], hidden_size: int = 100, embedding_dim: int = 100,
                 init_range: float = 0.1, generator: torch.Generator | None = None):
        super().__init__()
        steps, width = len(num_choices), max(num_choices)
        self.num_choices = list(num_choices)
        self.embedding = nn.Embedding(1 + sum(num_choices), embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size)
        self.head_weight = nn.Parameter(torch.empty(steps, width, hidden_size))
        self.head_bias = nn.Parameter(torch.empty(steps, width))
        offsets = torch.tensor([0] + self.num_choices[:-1]).cumsum(0) + 1
        self.register_buffer("offsets", offsets, persistent=False)
        valid = torch.arange(width)[None, :] < torch.tensor(self.num_choices)[:, None]
        self.register_buffer("valid", valid, persistent=False)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range, generator=generator)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """Masked logits [T, B, C] of every decision for hidden states ``h`` [T, B, H]."""
        logits = torch.einsum("tbh,tch->tbc", h, self.head_weight) + self.head_bias[:, None, :]
        return logits.masked_fill(~self.valid[:, None, :], _NEG)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` architectures. Returns choice indices [n, T] and the log-probability of each choice [n, T]."""
        steps = len(self.num_choices)
        w_hh = self.lstm.weight_hh_l0.t()
        # Input projection of every token at once: embedding @ W_ih + both biases.
        table = torch.addmm(self.lstm.bias_ih_l0 + self.lstm.bias_hh_l0, self.embedding.weight,
                            self.lstm.weight_ih_l0.t())
        bias = self.head_bias.masked_fill(~self.valid, _NEG)
        uniform = torch.rand(steps, n, 1, generator=generator)  # inverse-CDF sampling (multinomial is slow)
        h = table.new_zeros(n, self.lstm.hidden_size)
        c = torch.zeros_like(h)
        token = torch.zeros(n, dtype=torch.long)
        choices, logp = [], []
        for t in range(steps):
            i, f, g, o = torch.addmm(table.index_select(0, token), h, w_hh).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            log_probs = torch.log_softmax(torch.addmm(bias[t], h, self.head_weight[t].t()), -1)
            a = (log_probs.exp().cumsum(1) < uniform[t]).sum(1, keepdim=True).clamp_(max=self.num_choices[t] - 1)
            logp.append(log_probs.gather(1, a).squeeze(1))
            a = a.squeeze(1)
            choices.append(a)
            token = a + self.offsets[t]
        return torch.stack(choices, 1), torch.stack(logp, 1)

    def evaluate(self, choices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of each choice [B, T] and summed per-decision entropy [B] of architectures [B, T]."""
        start = torch.zeros(choices.shape[0], 1, dtype=torch.long)
        tokens = torch.cat([start, choices[:, :-1] + self.offsets[:-1]], 1)
        h, _ = self.lstm(self.embedding(tokens.t()))  # [T, B, H]
        log_probs = torch.log_softmax(self._logits(h), -1)  # [T, B, C]
        logp = log_probs.gather(2, choices.t().unsqueeze(2)).squeeze(2).t()
        entropy = -(log_probs.exp() * log_probs).sum(2).sum(0)
        return logp, entropy


def centred_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks of ``values`` scaled to [-0.5, 0.5] (lowest -0.5, highest 0.5); equal values share their mean rank."""
    n = len(values)
    if n < 2:
        return torch.zeros(n)
    _, group, counts = values.unique(return_inverse=True, return_counts=True)  # groups of equal values, ascending
    mean_rank = counts.cumsum(0) - (counts + 1) / 2  # 0-based mean position of each group in sorted order
    return mean_rank[group] / (n - 1) - 0.5
