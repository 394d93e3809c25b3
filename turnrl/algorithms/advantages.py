"""Advantage estimators: pure functions on plain Python data (lists of floats, observation strings).

- GRPO (Shao et al. 2024, "DeepSeekMath", Eq. 3 of the outcome-supervision variant): the G rollouts of
  one task form a group; an episode's advantage is its return normalised within its group,
  (R − mean) / (std + 1e-6) with `norm="mean_std"`, or R − mean with `norm="mean"`
  (Dr. GRPO's unbiased variant).
- RLOO: the return minus the mean of the other members' returns.
- GiGPO: episode advantage plus ω times a step advantage within anchor-state groups.
- HGPO: step advantages within a hierarchy of groups of growing history, weighted by depth.

Everywhere, a group whose members all have the same return carries no learning signal and contributes 0.
GiGPO and HGPO discount step returns, R_t = r_t + γ R_{t+1}, and subtract an invalid-action penalty from
R_t after discounting (as the GiGPO and HGPO code do).

Conventions (`conventions=` on `grpo_advantages`, `grpo_step_advantages`, `gigpo_advantages`,
`hgpo_advantages`; the config key `conventions`). Each point: "paper" (the default) | "verl-agent" (the
public code: verl's `core_algos.compute_grpo_outcome_advantage`, verl-agent's `gigpo/core_gigpo.py` and
`recipe/hgpo/core_hgpo.py`).

1. Standard deviation of episode-level and GiGPO step-level groups: population (n) | sample (n − 1,
   `torch.std`, as verl-agent and TRL). HGPO's levels use the population std under both: its code does
   (`unbiased=False`).
2. A group of one: advantage 0 (no baseline) | verl's episode level gives it mean 0 and std 1, so its
   advantage is its score (divided by 1 + 1e-6 with std); GiGPO step groups and HGPO levels of one give 0 in
   both.
3. The episode-level score of GiGPO (and HGPO's `base_group`): the sum of the episode's rewards, penalties
   left out, one score per episode | per step sample: the sum of the episode's rewards minus that step's
   penalty (verl-agent puts the episode reward on every step sample and subtracts the penalty there).
4. Episode-level statistics: over episodes | over all step samples of the group
   (`compute_mean_std_cross_steps=True`), so long episodes weigh more in the mean and std.
5. Multi-turn GRPO (`grpo_step_advantages`): one advantage per episode from its total reward minus its
   total penalty, on every turn | per step sample, points 1-4: the episode reward minus that step's penalty,
   normalised over the group's step samples.
6. HGPO level weights: (k+1)^α with k = 0 for the state-only level, 1 : 2 : 3 for K = 2 (the paper's Eq. 7)
   | (k+2)^α, 2 : 3 : 4 (the code indexes levels from 1), renormalised as Σ w / (Σ w + 1e-6).
7. HGPO levels that count for a step: a level counts when its group has a signal (>= 2 members, not all
   equal), a member at its group's mean counting with advantage 0 | every member advantage that is exactly
   0 is dropped (the code's `advs != 0` mask), the base group's too.

What stays the same under both: ε = 1e-6 added to the std; the penalty subtracted from discounted step
returns after discounting; GiGPO's A = A_episode + ω·A_step; HGPO's nested levels keyed by the last k+1
observations of the same task group. A group whose members are all equal gives exactly 0 here where
floating-point rounding of the mean can leave ±1e-11 in verl-agent.
"""

from __future__ import annotations

import math
from collections import defaultdict

NORMS = ("mean_std", "mean")
CONVENTIONS = ("paper", "verl-agent")
EPS = 1e-6


def _check_conventions(conventions: str) -> bool:
    """Whether `conventions` is verl-agent's (see the module docstring); an unknown value is an error."""
    if conventions not in CONVENTIONS:
        raise ValueError(f"conventions must be one of {CONVENTIONS}, got {conventions!r}")
    return conventions == "verl-agent"


def _normalise(values: list[float], norm: str, ddof: int = 0) -> list[float]:
    """(v − mean) / (std + ε) or v − mean; std with `ddof` (0: population, 1: sample). Groups of one or of
    equal values give 0."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if len(values) < 2 or max(values) == min(values):
        return [0.0] * len(values)
    mean = sum(values) / len(values)
    if norm == "mean":
        return [v - mean for v in values]
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - ddof))
    return [(v - mean) / (std + EPS) for v in values]


def _normalise_verl(values: list[float], norm: str) -> list[float]:
    """verl's episode-level normalisation: a group of one has mean 0 and std 1 (its advantage is its score),
    larger groups the sample std (module docstring, points 1 and 2)."""
    if len(values) == 1:
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        return [values[0] / (1.0 + EPS)] if norm == "mean_std" else [values[0]]
    return _normalise(values, norm, ddof=1)


def _episode_groups(returns: list[float], group_ids: list) -> list[list[int]]:
    """The episode indices of each group, in order of first appearance."""
    if len(returns) != len(group_ids):
        raise ValueError(f"{len(returns)} returns for {len(group_ids)} group ids")
    members: dict = defaultdict(list)
    for index, group in enumerate(group_ids):
        members[group].append(index)
    return list(members.values())


def grpo_advantages(returns: list[float], group_ids: list, *, norm: str = "mean_std",
                    conventions: str = "paper") -> list[float]:
    """One advantage per episode: its return normalised within its group. `conventions="verl-agent"`: the
    sample std, and a group of one keeps its return as its advantage (module docstring, points 1-2)."""
    verl = _check_conventions(conventions)
    advantages = [0.0] * len(returns)
    for indices in _episode_groups(returns, group_ids):
        values = [returns[i] for i in indices]
        for index, adv in zip(indices, _normalise_verl(values, norm) if verl else _normalise(values, norm)):
            advantages[index] = adv
    return advantages


def _step_scores_verl(rewards: list[list[float]], group_ids: list, norm: str,
                      penalties: list[list[float]] | None) -> list[list[float]]:
    """verl-agent's episode-level advantage of every step sample: the episode's reward sum minus the step's
    penalty, normalised over all step samples of its group (module docstring, points 1-4)."""
    members: dict = defaultdict(list)
    for e, rew in enumerate(rewards):
        for t in range(len(rew)):
            members[group_ids[e]].append((e, t))
    totals = [float(sum(rew)) for rew in rewards]
    out = [[0.0] * len(rew) for rew in rewards]
    for steps in members.values():
        scores = [totals[e] - (penalties[e][t] if penalties is not None else 0.0) for e, t in steps]
        for (e, t), adv in zip(steps, _normalise_verl(scores, norm)):
            out[e][t] = adv
    return out


def grpo_step_advantages(rewards: list[list[float]], group_ids: list, *, norm: str = "mean_std",
                         penalties: list[list[float]] | None = None,
                         conventions: str = "paper") -> list[list[float]]:
    """GRPO for multi-turn episodes: one advantage per step of each episode.

    "paper": the episode's return, its rewards' sum minus its penalties' sum, normalised within its group
    by `grpo_advantages`, on every step. "verl-agent": each step sample scores the episode's reward sum
    minus that step's own penalty, normalised over all step samples of the group with the sample std
    (verl's GRPO run on verl-agent's step samples; module docstring, point 5).
    """
    if penalties is not None and len(penalties) != len(rewards):
        raise ValueError(f"{len(penalties)} penalty lists for {len(rewards)} episodes")
    for e, rew in enumerate(rewards):
        if penalties is not None and len(penalties[e]) != len(rew):
            raise ValueError(f"episode {e}: {len(penalties[e])} penalties for {len(rew)} rewards")
    _episode_groups(rewards, group_ids)   # checks one group id per episode
    if _check_conventions(conventions):
        return _step_scores_verl(rewards, group_ids, norm, penalties)
    returns = [float(sum(rew)) - (float(sum(penalties[e])) if penalties is not None else 0.0)
               for e, rew in enumerate(rewards)]
    per_episode = grpo_advantages(returns, group_ids, norm=norm)
    return [[adv] * len(rew) for adv, rew in zip(per_episode, rewards)]


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


def _normalise_in_groups(keys: dict, values: dict, norm: str, ddof: int = 0) -> dict:
    """{member: advantage} for every member of a group with a learning signal (>= 2 members, not all
    equal); members of other groups are left out."""
    out = {}
    for members in keys.values():
        scores = [values[m] for m in members]
        if len(members) < 2 or max(scores) == min(scores):
            continue
        for member, adv in zip(members, _normalise(scores, norm, ddof)):
            out[member] = adv
    return out


def _episode_level(rewards: list[list[float]], group_ids: list, norm: str) -> list[float]:
    """GiGPO's episode advantage under "paper": the undiscounted sum of an episode's rewards normalised
    within its task group over episodes (population std, penalties left out; `_step_scores_verl` is the
    "verl-agent" counterpart)."""
    return grpo_advantages([float(sum(rew)) for rew in rewards], group_ids, norm=norm)


def gigpo_advantages(observations: list[list], rewards: list[list[float]], group_ids: list, *, gamma: float = 0.95,
                     omega: float = 1.0, norm: str = "mean_std",
                     penalties: list[list[float]] | None = None, conventions: str = "paper") -> list[list[float]]:
    """GiGPO (Feng et al. 2025, "Group-in-Group Policy Optimization", Eq. 3-8): A = A_episode + ω·A_step.

    A_episode normalises the episode return (the undiscounted sum of its rewards) within its task group.
    A_step normalises the discounted step return R_t (penalty subtracted after discounting) within the
    step's anchor-state group: every step of the same task group whose current observation is identical,
    wherever it occurs in its episode. Groups whose members are all equal, and anchor groups of one,
    contribute 0. Returns one advantage per step of each episode.

    Against the paper and verl-agent (`conventions`, module docstring): "paper" uses the population std,
    one episode score per episode over episodes, penalties only in A_step, and 0 for a task group of one;
    "verl-agent" (`core_gigpo.episode_norm_reward` with `compute_mean_std_cross_steps=True` and
    `step_norm_reward`) uses the sample std in both terms, scores each step sample's A_episode as the
    episode reward minus that step's penalty over all step samples of the group, and keeps a lone task
    group's score as its A_episode. The paper's Eq. 3 and 7 use population statistics of episodes.
    """
    verl = _check_conventions(conventions)
    _check_episodes(observations, rewards, group_ids, penalties)
    step_returns = _step_returns(rewards, gamma, penalties)
    anchors: dict = defaultdict(list)
    for e, obs in enumerate(observations):
        for t, observation in enumerate(obs):
            anchors[(group_ids[e], observation)].append((e, t))
    step_values = {(e, t): step_returns[e][t] for e in range(len(observations)) for t in range(len(observations[e]))}
    step_adv = _normalise_in_groups(anchors, step_values, norm, ddof=1 if verl else 0)
    if verl:
        episode_steps = _step_scores_verl(rewards, group_ids, norm, penalties)
    else:
        episode_steps = [[adv] * len(obs) for adv, obs in zip(_episode_level(rewards, group_ids, norm), observations)]
    return [[episode_steps[e][t] + omega * step_adv.get((e, t), 0.0) for t in range(len(obs))]
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
                    base_group: bool = False, penalties: list[list[float]] | None = None,
                    conventions: str = "paper") -> list[list[float]]:
    """HGPO (He et al. 2026, "Hierarchy-of-Groups Policy Optimization for Long-Horizon Agentic Tasks").

    For each step and each level k = 0..K (K = `history_length`), the level-k group is every step of the
    same task group whose last k+1 observations (the current one and the k before it) are identical; the
    levels nest, level 0 being GiGPO's anchor-state group. The level-k advantage normalises the discounted
    step return R_t (penalty subtracted after discounting) within that group (population std, as the code
    does). The step's advantage is the weighted mean of its valid levels. A level is valid for a step
    when the step has that much history (a step at position t has at most t+1 levels) and its group
    carries a signal (at least two members, not all equal); a step with no valid level gets 0.
    `base_group=True` adds GiGPO's episode advantage (see `gigpo_advantages`) as one more level of weight 1.

    Paper and code (`conventions`, module docstring points 6-7): "paper" weighs level k by (k+1)^α, k = 0
    for the state-only group, so 1 : 2 : 3 for K = 2 and α = 1 (Eq. 7, what the method is described and
    ablated with), and a member at its group's mean counts as a valid level with advantage 0. "verl-agent"
    (recipe/hgpo `aggregate_items`) indexes levels from 1 and weighs (k+1)^α from there, i.e. 2 : 3 : 4,
    which flattens the preference for deeper, more consistent groups, divides by Σw + 1e-6, and drops every
    member advantage that is exactly 0 before weighting; its base group is verl-agent's GiGPO episode term
    (per step sample, sample std; points 1-4). α = 0 gives equal weights either way.
    """
    verl = _check_conventions(conventions)
    if history_length < 0:
        raise ValueError(f"history_length must be >= 0, got {history_length}")
    _check_episodes(observations, rewards, group_ids, penalties)
    step_returns = _step_returns(rewards, gamma, penalties)
    values = {(e, t): step_returns[e][t] for e in range(len(observations)) for t in range(len(observations[e]))}
    groups = _hierarchy(observations, group_ids, history_length)
    level_offset = 2 if verl else 1          # the weight of level k is (k + offset)^α
    per_step: dict = defaultdict(list)    # (e, t) -> [(weight, advantage), ...]
    for (_, k, _), members in groups.items():
        scores = [values[m] for m in members]
        if len(members) < 2 or max(scores) == min(scores):
            continue
        weight = float(k + level_offset) ** alpha
        for member, adv in zip(members, _normalise(scores, norm)):
            per_step[member].append((weight, adv))
    if base_group:
        if verl:
            base = _step_scores_verl(rewards, group_ids, norm, penalties)
            for e, obs in enumerate(observations):
                for t in range(len(obs)):
                    per_step[(e, t)].append((1.0, base[e][t]))
        else:
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
            if verl:
                items = [(w, a) for w, a in items if a != 0.0]
            total = sum(w for w, _ in items)
            if not items:
                row.append(0.0)
            else:
                row.append(sum(w * a for w, a in items) / (total + EPS if verl else total))
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
