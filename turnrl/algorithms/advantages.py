"""Advantage estimators: pure functions on plain Python data (lists of floats, observation strings).

- GRPO (Shao et al. 2024, "DeepSeekMath", Eq. 3 of the outcome-supervision variant): the G rollouts of
  one task form a group; an episode's advantage is its return normalised within its group,
  (R − mean) / (population std + 1e-6) with `norm="mean_std"`, or R − mean with `norm="mean"`
  (Dr. GRPO's unbiased variant).
- RLOO: the return minus the mean of the other members' returns.
- GiGPO: episode advantage plus ω times a step advantage within anchor-state groups.
- HGPO: step advantages within a hierarchy of groups of growing history, weighted by depth.

Everywhere, a group of one member, or whose members all have the same return, carries no learning
signal and contributes 0. GiGPO and HGPO discount step returns, R_t = r_t + γ R_{t+1}, and subtract
an invalid-action penalty from R_t after discounting.
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


def _episode_groups(returns: list[float], group_ids: list) -> list[list[int]]:
    """The episode indices of each group, in order of first appearance."""
    if len(returns) != len(group_ids):
        raise ValueError(f"{len(returns)} returns for {len(group_ids)} group ids")
    members: dict = defaultdict(list)
    for index, group in enumerate(group_ids):
        members[group].append(index)
    return list(members.values())


def grpo_advantages(returns: list[float], group_ids: list, *, norm: str = "mean_std") -> list[float]:
    """One advantage per episode: its return normalised within its group."""
    advantages = [0.0] * len(returns)
    for indices in _episode_groups(returns, group_ids):
        for index, adv in zip(indices, _normalise([returns[i] for i in indices], norm)):
            advantages[index] = adv
    return advantages


def rloo_advantages(returns: list[float], group_ids: list) -> list[float]:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): an episode's return minus the mean return of the
    other members of its group. A group of one has no baseline and contributes 0."""
    advantages = [0.0] * len(returns)
    for indices in _episode_groups(returns, group_ids):
        if len(indices) < 2:
            continue
        total = sum(returns[i] for i in indices)
        for i in indices:
            advantages[i] = returns[i] - (total - returns[i]) / (len(indices) - 1)
    return advantages


def discounted_step_returns(rewards: list[float], gamma: float, penalties: list[float] | None = None) -> list[float]:
    """R_t = r_t + γ R_{t+1} over one episode, then minus the step's penalty (after discounting, so an
    invalid action's penalty stays on that step and is not propagated to earlier ones, as verl-agent does)."""
    returns = [0.0] * len(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    if penalties is not None:
        if len(penalties) != len(rewards):
            raise ValueError(f"{len(penalties)} penalties for {len(rewards)} rewards")
        returns = [r - p for r, p in zip(returns, penalties)]
    return returns


def turn_gae(rewards: list[float], values: list[float], *, gamma: float = 1.0, lam: float = 1.0,
             last_value: float = 0.0) -> tuple[list[float], list[float]]:
    """GAE over the turns of one episode (Schulman et al. 2016, Eq. 16, with turns as the time steps, as the
    ST-PPO notes describe their turn-level critic): δ_k = r_k + γ V_{k+1} − V_k with V_K = `last_value` (0 for an
    episode that ended, the critic's value of the next state for one that was cut), A_k = Σ_j (γλ)^j δ_{k+j}.
    Returns (advantages, value targets A_k + V_k), one per turn."""
    if len(rewards) != len(values):
        raise ValueError(f"{len(rewards)} rewards for {len(values)} values")
    advantages = [0.0] * len(rewards)
    running, next_value = 0.0, last_value
    for k in reversed(range(len(rewards))):
        delta = rewards[k] + gamma * next_value - values[k]
        running = delta + gamma * lam * running
        advantages[k] = running
        next_value = values[k]
    return advantages, [a + v for a, v in zip(advantages, values)]


def _check_episodes(observations: list[list], rewards: list[list[float]], group_ids: list,
                    penalties: list[list[float]] | None) -> None:
    if not len(observations) == len(rewards) == len(group_ids):
        raise ValueError(f"{len(observations)} observation lists, {len(rewards)} reward lists and {len(group_ids)} "
                         "group ids: one of each per episode")
    if penalties is not None and len(penalties) != len(rewards):
        raise ValueError(f"{len(penalties)} penalty lists for {len(rewards)} episodes")
    for e, (obs, rew) in enumerate(zip(observations, rewards)):
        if len(obs) != len(rew):
            raise ValueError(f"episode {e}: {len(obs)} observations for {len(rew)} rewards")


def _step_returns(rewards, gamma, penalties) -> list[list[float]]:
    return [discounted_step_returns(rew, gamma, penalties[e] if penalties is not None else None)
            for e, rew in enumerate(rewards)]


def _normalise_in_groups(keys: dict, values: dict, norm: str) -> dict:
    """{member: advantage} for every member of a group with a learning signal (>= 2 members, not all
    equal); members of other groups are left out."""
    out = {}
    for members in keys.values():
        scores = [values[m] for m in members]
        if len(members) < 2 or max(scores) == min(scores):
            continue
        for member, adv in zip(members, _normalise(scores, norm)):
            out[member] = adv
    return out


def _episode_level(rewards: list[list[float]], group_ids: list, norm: str) -> list[float]:
    """GiGPO's episode advantage: the undiscounted sum of an episode's rewards normalised within its task
    group (over episodes; verl-agent takes the statistics over all step samples of the group instead,
    which weighs long episodes more)."""
    return grpo_advantages([float(sum(rew)) for rew in rewards], group_ids, norm=norm)


def gigpo_advantages(observations: list[list], rewards: list[list[float]], group_ids: list, *, gamma: float = 0.95,
                     omega: float = 1.0, norm: str = "mean_std",
                     penalties: list[list[float]] | None = None) -> list[list[float]]:
    """GiGPO (Feng et al. 2025, "Group-in-Group Policy Optimization", Eq. 3-8): A = A_episode + ω·A_step.

    A_episode normalises the episode return (the undiscounted sum of its rewards) within its task group.
    A_step normalises the discounted step return R_t (penalty subtracted after discounting) within the
    step's anchor-state group: every step of the same task group whose current observation is identical,
    wherever it occurs in its episode. Groups of one, or whose members are all equal, contribute 0.
    Returns one advantage per step of each episode.
    """
    _check_episodes(observations, rewards, group_ids, penalties)
    step_returns = _step_returns(rewards, gamma, penalties)
    anchors: dict = defaultdict(list)
    for e, obs in enumerate(observations):
        for t, observation in enumerate(obs):
            anchors[(group_ids[e], observation)].append((e, t))
    step_values = {(e, t): step_returns[e][t] for e in range(len(observations)) for t in range(len(observations[e]))}
    step_adv = _normalise_in_groups(anchors, step_values, norm)
    episode_adv = _episode_level(rewards, group_ids, norm)
    return [[episode_adv[e] + omega * step_adv.get((e, t), 0.0) for t in range(len(obs))]
            for e, obs in enumerate(observations)]


def _hierarchy(observations: list[list], group_ids: list, history_length: int) -> dict:
    """{(task group, k, last k+1 observations): [(episode, step), ...]} for k = 0..K and k <= step."""
    groups: dict = defaultdict(list)
    for e, obs in enumerate(observations):
        for t in range(len(obs)):
            for k in range(min(history_length, t) + 1):
                groups[(group_ids[e], k, tuple(obs[t - k: t + 1]))].append((e, t))
    return groups


def hgpo_advantages(observations: list[list], rewards: list[list[float]], group_ids: list, *,
                    history_length: int = 2, gamma: float = 0.95, alpha: float = 1.0, norm: str = "mean_std",
                    base_group: bool = False, penalties: list[list[float]] | None = None) -> list[list[float]]:
    """HGPO (He et al. 2026, "Hierarchy-of-Groups Policy Optimization for Long-Horizon Agentic Tasks").

    For each step and each level k = 0..K (K = `history_length`), the level-k group is every step of the
    same task group whose last k+1 observations (the current one and the k before it) are identical; the
    levels nest, level 0 being GiGPO's anchor-state group. The level-k advantage normalises the discounted
    step return R_t (penalty subtracted after discounting) within that group. The step's advantage is the
    weighted mean of its valid levels, weight (k+1)^α renormalised over them. A level is valid for a step
    when the step has that much history (a step at position t has at most t+1 levels) and its group
    carries a signal (at least two members, not all equal); a step with no valid level gets 0.
    `base_group=True` adds GiGPO's episode advantage (see `gigpo_advantages`) as one more level of weight 1.

    Paper and code: the weights follow the paper's Eq. 7, (k+1)^α with k = 0 for the state-only group,
    so 1 : 2 : 3 for K = 2 and α = 1. The public code (verl-agent, recipe/hgpo) indexes levels from 1 and
    weighs (k+1)^α from there, i.e. 2 : 3 : 4, which flattens the preference for deeper, more consistent
    groups; we take the paper's weights, which are what the method is described and ablated with (α = 0
    gives equal weights either way). The code also drops any single member whose normalised advantage is
    exactly 0 (its return equals the group mean); here a level is valid or not for a whole group, so a
    step at its group's mean counts as a valid level with advantage 0 and still pulls the mean towards 0.
    """
    if history_length < 0:
        raise ValueError(f"history_length must be >= 0, got {history_length}")
    _check_episodes(observations, rewards, group_ids, penalties)
    step_returns = _step_returns(rewards, gamma, penalties)
    values = {(e, t): step_returns[e][t] for e in range(len(observations)) for t in range(len(observations[e]))}
    groups = _hierarchy(observations, group_ids, history_length)
    per_step: dict = defaultdict(list)    # (e, t) -> [(weight, advantage), ...]
    for (_, k, _), members in groups.items():
        scores = [values[m] for m in members]
        if len(members) < 2 or max(scores) == min(scores):
            continue
        weight = float(k + 1) ** alpha
        for member, adv in zip(members, _normalise(scores, norm)):
            per_step[member].append((weight, adv))
    if base_group:
        episode_adv = _episode_level(rewards, group_ids, norm)
        episode_valid = _groups_with_signal([float(sum(rew)) for rew in rewards], group_ids)
        for e, obs in enumerate(observations):
            if episode_valid[e]:
                for t in range(len(obs)):
                    per_step[(e, t)].append((1.0, episode_adv[e]))
    advantages = []
    for e, obs in enumerate(observations):
        row = []
        for t in range(len(obs)):
            items = per_step.get((e, t), [])
            total = sum(w for w, _ in items)
            row.append(sum(w * a for w, a in items) / total if items else 0.0)
        advantages.append(row)
    return advantages


def _groups_with_signal(values: list[float], group_ids: list) -> list[bool]:
    """Per entry: whether its group has at least two members that are not all equal."""
    members: dict = defaultdict(list)
    for index, group in enumerate(group_ids):
        members[group].append(values[index])
    return [len(members[g]) >= 2 and max(members[g]) != min(members[g]) for g in group_ids]


def hgpo_level_stats(observations: list[list], rewards: list[list[float]], group_ids: list, *,
                     history_length: int = 2, gamma: float = 0.95,
                     penalties: list[list[float]] | None = None) -> dict[str, float]:
    """What the hierarchy does on a batch: for each level k, the mean size of the level-k group over the
    steps that have that level (`level{k}_group_size`), and the share of steps with n valid levels
    (`steps_with_{n}_valid_levels`, n = 0..K+1), valid meaning a group of >= 2 members not all equal.
    With history_length 0 this describes GiGPO's anchor-state groups."""
    _check_episodes(observations, rewards, group_ids, penalties)
    step_returns = _step_returns(rewards, gamma, penalties)
    groups = _hierarchy(observations, group_ids, history_length)
    sizes: dict = defaultdict(list)
    valid_levels: dict = defaultdict(int)
    for (_, k, _), members in groups.items():
        scores = [step_returns[e][t] for e, t in members]
        sizes[k] += [len(members)] * len(members)
        if len(members) >= 2 and max(scores) != min(scores):
            for member in members:
                valid_levels[member] += 1
    steps = sum(len(obs) for obs in observations)
    stats = {f"level{k}_group_size": sum(sizes[k]) / len(sizes[k]) if sizes[k] else 0.0
             for k in range(history_length + 1)}
    counts = [0] * (history_length + 2)
    for e, obs in enumerate(observations):
        for t in range(len(obs)):
            counts[valid_levels[(e, t)]] += 1
    for n, count in enumerate(counts):
        stats[f"steps_with_{n}_valid_levels"] = count / steps if steps else 0.0
    return stats
