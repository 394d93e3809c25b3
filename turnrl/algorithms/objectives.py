"""Policy-gradient objectives on per-token tensors.

Token-level PPO (Schulman et al. 2017, Eq. 7) as used by GRPO: per agent token,
    ratio = exp(log π_θ − log π_behaviour),
    loss  = −min(ratio · A, clip(ratio, 1 − ε_low, 1 + ε_high) · A),
summed over agent tokens and divided by the number of agent tokens in the minibatch (token mean,
so long and short responses weigh the same per token). KL to the reference uses the k3 estimator
exp(ref − new) − (ref − new) − 1 (Schulman, "Approximating KL divergence"), which is non-negative and
unbiased for KL(π_θ || π_ref).
"""

from __future__ import annotations

import torch


def token_ratio(new_logprobs: torch.Tensor, old_logprobs: torch.Tensor) -> torch.Tensor:
    return torch.exp(new_logprobs - old_logprobs)


def ppo_clip_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip_low: float = 0.2,
                  clip_high: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate loss and a 0/1 tensor marking tokens where the clip was active."""
    clip_high = clip_low if clip_high is None else clip_high
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    was_clipped = (clipped < unclipped).float()
    return loss, was_clipped


def kl_k3(new_logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_θ || π_ref)."""
    delta = ref_logprobs - new_logprobs
    return torch.exp(delta) - delta - 1.0


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)
