"""Advantage estimators: pure functions on plain Python data.

GRPO (Shao et al. 2024, "DeepSeekMath", Eq. 3 of the outcome-supervision variant): the G rollouts of
one task form a group; an episode's advantage is its return normalised within its group,
(R − mean) / (population std + 1e-6) with `norm="mean_std"`, or R − mean with `norm="mean"`
(Dr. GRPO's unbiased variant). A group of one member, or whose members all have the same return,
carries no learning signal and contributes 0.
"""

from __future__ import annotations

import math
from collections import defaultdict

NORMS = ("mean_std", "mean")
EPS = 1e-6


def _normalise(values: list[float], norm: str) -> list[float]:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if len(values) < 2 or max(values) == min(values):
        return [0.0] * len(values)
    mean = sum(values) / len(values)
    if norm == "mean":
        return [v - mean for v in values]
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / (std + EPS) for v in values]


def grpo_advantages(returns: list[float], group_ids: list, *, norm: str = "mean_std") -> list[float]:
    """One advantage per episode: its return normalised within its group."""
    if len(returns) != len(group_ids):
        raise ValueError(f"{len(returns)} returns for {len(group_ids)} group ids")
    members: dict = defaultdict(list)
    for index, group in enumerate(group_ids):
        members[group].append(index)
    advantages = [0.0] * len(returns)
    for indices in members.values():
        for index, adv in zip(indices, _normalise([returns[i] for i in indices], norm)):
            advantages[index] = adv
    return advantages
