"""A turn-level critic for PPO on multi-turn episodes, and GAE over turns.

The value of a turn is the critic's value of the state the agent acts from: read at the position whose output
predicts the turn's first token (the last token of the observation before it), i.e. "the value at the first token
of the turn" in the aligned indexing of `TrainBatch`, where position i describes token i + 1. Per episode, GAE
runs over turns (`turn_gae`, δ_k = r_k + γ V_{k+1} − V_k with r_k the turn's reward minus its penalty), and the
turn's advantage is spread over all its tokens, as in the turn-level GAE of the public code the ST-PPO notes name
(research notes §1.5, §1.7). An episode cut by `max_turns` is treated as ended (no bootstrap), as verl-agent does.

Two critics, chosen by `critic:`:
- `head`: a linear value head on the policy's last hidden states (shared trunk). The value loss trains the trunk
  too (with LoRA: the adapter), as in TRL's PPO with a shared backbone.
- `model`: a separate value model, a copy of the starting weights with its own head, fully trained (verl's
  separate critic).

The value loss is PPO's clipped value loss (Schulman et al. 2017 as implemented in baselines' ppo2):
    ½ · max((V − R)², (V_old + clip(V − V_old, −c, c) − R)²)
averaged over the turns of a minibatch, with R the GAE value target and V_old the value at rollout.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from turnrl.agents.policy import at_least_float32, compute_dtype
from turnrl.algorithms.advantages import turn_gae


def turn_starts(turn_index: torch.Tensor) -> torch.Tensor:
    """[B, L] bool: where a turn begins (a turn index >= 0 that differs from the previous position's), in the
    aligned indexing of `TrainBatch`. Two adjacent turns are two starts."""
    starts = turn_index >= 0
    starts[:, 1:] &= turn_index[:, 1:] != turn_index[:, :-1]
    return starts


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float) -> torch.Tensor:
    """Per-position clipped value loss ½ · max((V − R)², (V_old + clip(V − V_old, ±c) − R)²)."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)


def advantage_moments(advantages: list[list[float]]) -> dict[str, float]:
    """The count, sum and sum of squares of every turn's advantage (summed over processes before `whiten`)."""
    flat = [a for adv in advantages for a in adv]
    return {"n": float(len(flat)), "sum": math.fsum(flat), "squares": math.fsum(a * a for a in flat)}


def whiten(advantages: list[list[float]], norm: str | None, moments: dict[str, float] | None = None
           ) -> list[list[float]]:
    """Advantages centred (`norm` mean) or whitened (mean_std, population std, as verl whitens GAE advantages)
    over all turns; `moments` (default: these advantages') may cover more turns, e.g. every process's."""
    moments = moments or advantage_moments(advantages)
    if not norm or moments["n"] < 2:
        return advantages
    mean = moments["sum"] / moments["n"]
    if norm != "mean_std":
        return [[a - mean for a in adv] for adv in advantages]
    std = math.sqrt(max(moments["squares"] / moments["n"] - mean * mean, 0.0))
    return [[(a - mean) / (std + 1e-8) for a in adv] for adv in advantages]


def episode_gae(rewards: list[list[float]], values: list[list[float]], *, gamma: float, lam: float,
                norm: str | None = "mean_std") -> tuple[list[list[float]], list[list[float]]]:
    """GAE over the turns of each episode, then (`norm`) the advantages whitened over all turns of the batch
    (`whiten`); value targets are the raw A + V. Returns (advantages, value targets), one list per episode, one
    number per turn."""
    per_episode = [turn_gae(r, v, gamma=gamma, lam=lam) for r, v in zip(rewards, values)]
    return whiten([a for a, _ in per_episode], norm), [t for _, t in per_episode]


class Critic(nn.Module):
    """Values of states from a shared trunk (`head`) or a separate value model (`model`); `values(...)` returns
    one value per aligned position, [B, L-1]."""

    def __init__(self, kind: str, policy: nn.Module):
        super().__init__()
        self.kind = kind
        config = policy.config if hasattr(policy, "config") else policy.get_base_model().config
        hidden = getattr(config, "hidden_size", None) or config.n_embd
        self.head = nn.Linear(hidden, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)   # TRL's value head init scale
        nn.init.zeros_(self.head.bias)
        self.trunk = None
        if kind == "model":
            # The backbone without the LM head (with LoRA, the adapted backbone as it is now), all of it trained.
            base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
            self.trunk = copy.deepcopy(base.base_model).requires_grad_(True)
        weight = next(policy.parameters())
        self.head.to(weight.device, dtype=compute_dtype(weight.dtype))

    @property
    def needs_policy_hidden(self) -> bool:
        return self.trunk is None

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
               policy_hidden: torch.Tensor | None = None) -> torch.Tensor:
        if self.trunk is None:
            hidden = policy_hidden
        else:
            hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                use_cache=False).last_hidden_state
        return self.head(at_least_float32(hidden[:, :-1])).squeeze(-1)
