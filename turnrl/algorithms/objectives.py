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
                  clip_high: float | None = None, dual_clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate loss and a 0/1 tensor marking tokens where a clip was active.

    `dual_clip` c > 1 (Ye et al. 2020, "Mastering Complex Control in MOBA Games", Eq. 5): for negative
    advantages the objective is also bounded below by c * A, so a huge ratio on a bad action cannot
    dominate the gradient."""
    clip_high = clip_low if clip_high is None else clip_high
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    objective = torch.minimum(unclipped, clipped)
    was_clipped = clipped < unclipped
    if dual_clip is not None:
        floor = dual_clip * advantages
        lower = (advantages < 0) & (objective < floor)
        objective = torch.where(lower, floor, objective)
        was_clipped = was_clipped | lower
    return -objective, was_clipped.float()


def token_log_ratio(log_ratio: torch.Tensor, turn_index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-level PPO: each token's own log ratio (the signature every ratio level shares)."""
    return log_ratio * mask


def turn_log_ratio(log_ratio: torch.Tensor, turn_index: torch.Tensor) -> torch.Tensor:
    """Turn-level log importance ratio (ST-PPO's turn-level IS, its Eq. 4 as described in the research notes):
    every token of a turn holds the mean of `log_ratio` over that turn's tokens, so exp of it is the geometric
    mean of the turn's token ratios; 0 off agent tokens. Shapes [B, L]; `turn_index` is a long tensor, -1 off
    agent tokens. A turn is a maximal run of tokens with the same turn index (two turns may be adjacent).
    Differentiable through the mean: each token's gradient is 1/|turn| of the turn's."""
    agent = turn_index >= 0
    starts = torch.ones_like(agent)
    starts[:, 1:] = turn_index[:, 1:] != turn_index[:, :-1]
    segment = torch.cumsum(starts.long().flatten(), 0) - 1          # one id per maximal run, over all rows
    segment = segment.view_as(turn_index)
    n = int(segment.max()) + 1 if segment.numel() else 0
    weights = agent.to(log_ratio.dtype)
    sums = torch.zeros(n, dtype=log_ratio.dtype, device=log_ratio.device).scatter_add(
        0, segment.flatten(), (log_ratio * weights).flatten())
    counts = torch.zeros(n, dtype=log_ratio.dtype, device=log_ratio.device).scatter_add(
        0, segment.flatten(), weights.flatten())
    means = sums / counts.clamp(min=1)
    return means[segment] * weights


def sequence_log_ratio(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sequence-level log importance ratio (GSPO's length-normalised ratio): every agent token of a row holds
    the row's mean of `log_ratio` over its agent tokens (`mask` 1), 0 elsewhere. Shapes [B, L]."""
    weights = mask.to(log_ratio.dtype)
    means = (log_ratio * weights).sum(-1, keepdim=True) / weights.sum(-1, keepdim=True).clamp(min=1)
    return means * weights


# `ratio_level` -> f(log_ratio, turn_index, mask): the per-token log ratio the clipped surrogate sees.
RATIO_LEVELS = {
    "token": token_log_ratio,
    "turn": lambda log_ratio, turn_index, mask: turn_log_ratio(log_ratio, turn_index),
    "sequence": lambda log_ratio, turn_index, mask: sequence_log_ratio(log_ratio, mask),
}


def clip_bias_loss(ratio: torch.Tensor, advantages: torch.Tensor, clipped: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """L_C with ∇L_C = C(θ), ST-PPO's clipping bias (Lemma 4.2 as described in the research notes): the part of
    the importance-sampled policy gradient that clipping zeroes out, Σ 1{clipped} · w · sg(Â) · weight. Since
    ∇w = w ∇log π, its gradient is Σ 1{clipped} w Â ∇log π. The clip mask and advantages are constants."""
    return (clipped.detach() * ratio * advantages.detach() * weights).sum()


def clip_bias_scale(c_norm: float, tau: float = 1.0) -> float:
    """The factor applied to the policy gradient given ‖C(θ)‖: 1 / max(1, ‖C‖ / τ).

    ST-PPO's Eq. 7-8 divide the gradient by a function of ‖C‖ that could not be read (research notes §1.4);
    this is the reconstruction the notes call safe: nothing changes until the clipping bias exceeds τ, then the
    gradient is scaled down in proportion ("clipping-triggered normalisation" in the paper's v2)."""
    return 1.0 / max(1.0, c_norm / tau)


def kl_k3(new_logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_θ || π_ref)."""
    delta = ref_logprobs - new_logprobs
    return torch.exp(delta) - delta - 1.0


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)
