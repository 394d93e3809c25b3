"""RLOO, GiGPO and HGPO advantages with hand-computed numbers, and their properties (hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnrl.algorithms.advantages import (
    EPS,
    discounted_step_returns,
    gigpo_advantages,
    grpo_advantages,
    grpo_step_advantages,
    hgpo_advantages,
    hgpo_level_stats,
    rloo_advantages,
)

# ------------------------------------------------------------------------------------------ RLOO


def test_rloo_hand_cases():
    # each member minus the mean of the other three: 1 - 1/3, 0 - 2/3
    assert rloo_advantages([1, 0, 0, 1], [0] * 4) == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    # two groups interleaved; a singleton gets 0; equal returns give 0
    assert rloo_advantages([3.0, 5.0, 1.0, 2.0, 2.0, 9.0], ["a", "b", "a", "b", "b", "c"]) == pytest.approx(
        [2.0, 3.0, -2.0, -1.5, -1.5, 0.0])
    assert rloo_advantages([0.4, 0.4], [1, 1]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="2 returns for 1 group ids"):
        rloo_advantages([1, 2], [0])


# ------------------------------------------------------------------------------- step returns


def test_discounted_step_returns_subtract_penalties_after_discounting():
    assert discounted_step_returns([0, 0, 1], 0.9) == pytest.approx([0.81, 0.9, 1.0])
    # the penalty of step 0 stays on step 0; the one of step 1 does not reach step 0 either
    assert discounted_step_returns([0, 0, 1], 0.9, [0.1, 0.2, 0.0]) == pytest.approx([0.71, 0.7, 1.0])
    assert discounted_step_returns([], 0.9) == []


# ------------------------------------------------------------------------------------------ GiGPO

# Task group "a": three episodes that share the first observation S; group "b" is a singleton that
# shares the observation strings but is a different task, so it is never pooled with "a".
OBS = [["S", "X"], ["S", "Y"], ["S"], ["S", "X"]]
REWARDS = [[0, 1], [0, 0], [0], [0, 1]]
GROUPS = ["a", "a", "a", "b"]


def test_gigpo_hand_example_mean_std():
    # episode returns in "a": 1, 0, 0 -> mean 1/3, population std sqrt(2/9)
    std_e = math.sqrt(2 / 9)
    ep = [(2 / 3) / (std_e + EPS), (-1 / 3) / (std_e + EPS), (-1 / 3) / (std_e + EPS)]
    # gamma 0.5: step returns e0 = [0.5, 1], e1 = [0, 0], e2 = [0]; anchor S holds 0.5, 0, 0
    std_s = math.sqrt(1 / 18)
    s = [(1 / 3) / (std_s + EPS), (-1 / 6) / (std_s + EPS), (-1 / 6) / (std_s + EPS)]
    # X and Y are singletons in "a": no step advantage there; "b" is a singleton group: all 0
    expected = [[ep[0] + s[0], ep[0]], [ep[1] + s[1], ep[1]], [ep[2] + s[2]], [0.0, 0.0]]
    got = gigpo_advantages(OBS, REWARDS, GROUPS, gamma=0.5)
    for row, want in zip(got, expected):
        assert row == pytest.approx(want, abs=1e-9)


def test_gigpo_hand_example_mean_norm_and_omega():
    got = gigpo_advantages(OBS, REWARDS, GROUPS, gamma=0.5, norm="mean", omega=2.0)
    # episode: 2/3, -1/3, -1/3; anchor S: 1/3, -1/6, -1/6 (times omega 2)
    expected = [[2 / 3 + 2 / 3, 2 / 3], [-1 / 3 - 1 / 3, -1 / 3], [-1 / 3 - 1 / 3], [0.0, 0.0]]
    for row, want in zip(got, expected):
        assert row == pytest.approx(want, abs=1e-12)


def test_gigpo_penalties_enter_the_step_term_only():
    penalties = [[0, 0], [0, 0.25], [0], [0, 0]]
    plain = gigpo_advantages(OBS, REWARDS, GROUPS, gamma=0.5, norm="mean")
    with_penalty = gigpo_advantages(OBS, REWARDS, GROUPS, gamma=0.5, norm="mean", penalties=penalties)
    # the penalised step (Y) is a singleton anchor, and the penalty is not discounted back to S: no change
    assert with_penalty == plain
    # a penalty on the shared first observation does change the anchor group S
    penalties = [[0, 0], [0.3, 0], [0], [0, 0]]
    got = gigpo_advantages(OBS, REWARDS, GROUPS, gamma=0.5, norm="mean", penalties=penalties, omega=1.0)
    # S now holds 0.5, -0.3, 0 -> mean 0.2/3
    mean = 0.2 / 3
    assert got[1][0] == pytest.approx(-1 / 3 + (-0.3 - mean))
    assert got[0][0] == pytest.approx(2 / 3 + (0.5 - mean))


def test_gigpo_anchor_groups_pool_steps_at_different_depths():
    # the same observation "R" at step 0 of one episode and step 1 of another falls in one anchor group
    obs = [["R", "Q"], ["Q", "R"]]
    rewards = [[1, 0], [0, 0]]
    got = gigpo_advantages(obs, rewards, [0, 0], gamma=1.0, norm="mean", omega=1.0)
    # episode: 1, 0 -> +-0.5; R holds 1 (e0,t0) and 0 (e1,t1); Q holds 0 (e0,t1) and 0 (e1,t0): equal, no signal
    assert got == [pytest.approx([0.5 + 0.5, 0.5]), pytest.approx([-0.5, -0.5 - 0.5])]


def test_gigpo_errors():
    with pytest.raises(ValueError, match="one of each per episode"):
        gigpo_advantages([["a"]], [[0], [1]], [0, 0])
    with pytest.raises(ValueError, match="episode 0: 2 observations for 1 rewards"):
        gigpo_advantages([["a", "b"]], [[0]], [0])
    with pytest.raises(ValueError, match="norm must be one of"):
        gigpo_advantages([["a"], ["a"]], [[0], [1]], [0, 0], norm="z")


# ------------------------------------------------------------------------------------------ HGPO

# One task group, gamma 1, K = 1. Returns: e0 [1, 1, 1], e1 [0, 0, 0], e2 [1, 1, 1].
# Level 0: A {e0,e1,e2} -> 1/3, -2/3, 1/3 (mean norm); B {e0t1, e1t1} -> +-0.5; D {e2t1} single;
#          C {e0t2, e1t2, e2t2} -> 1/3, -2/3, 1/3.
# Level 1: (A,B) {e0t1, e1t1} -> +-0.5; (A,D) single; (B,C) {e0t2, e1t2} -> +-0.5; (D,C) single.
H_OBS = [["A", "B", "C"], ["A", "B", "C"], ["A", "D", "C"]]
H_REWARDS = [[0, 0, 1], [0, 0, 0], [0, 0, 1]]


def test_hgpo_hand_example_weights_follow_the_paper():
    got = hgpo_advantages(H_OBS, H_REWARDS, [7, 7, 7], history_length=1, gamma=1.0, norm="mean", alpha=1.0)
    # weights (k+1)^1: level 0 -> 1, level 1 -> 2; the first step has a single level
    expected = [
        [1 / 3, (0.5 + 2 * 0.5) / 3, (1 / 3 + 2 * 0.5) / 3],
        [-2 / 3, (-0.5 - 2 * 0.5) / 3, (-2 / 3 - 2 * 0.5) / 3],
        [1 / 3, 0.0, 1 / 3],   # step 1: both of its groups are singletons; step 2: only level 0 is valid
    ]
    for row, want in zip(got, expected):
        assert row == pytest.approx(want, abs=1e-12)


def test_hgpo_alpha_zero_gives_equal_weights():
    got = hgpo_advantages(H_OBS, H_REWARDS, [7, 7, 7], history_length=1, gamma=1.0, norm="mean", alpha=0.0)
    assert got[0][2] == pytest.approx((1 / 3 + 0.5) / 2)
    assert got[1][2] == pytest.approx((-2 / 3 - 0.5) / 2)
    assert got[0][0] == pytest.approx(1 / 3)


def test_hgpo_base_group_adds_the_episode_advantage_with_weight_one():
    got = hgpo_advantages(H_OBS, H_REWARDS, [7, 7, 7], history_length=1, gamma=1.0, norm="mean", base_group=True)
    # episode returns 1, 0, 1 -> 1/3, -2/3, 1/3 with weight 1
    assert got[0][0] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert got[0][2] == pytest.approx((1 / 3 + 1 / 3 + 2 * 0.5) / 4)
    assert got[2][1] == pytest.approx(1 / 3)         # only the base level is valid here
    assert got[1][1] == pytest.approx((-2 / 3 - 0.5 - 2 * 0.5) / 4)


def test_hgpo_mean_std_norm():
    got = hgpo_advantages(H_OBS, H_REWARDS, [7, 7, 7], history_length=1, gamma=1.0)
    # A {1, 0, 1}: mean 2/3, population std sqrt(2)/3; (A,B) {1, 0}: +-0.5 / 0.5
    std3 = math.sqrt(2) / 3
    assert got[0][0] == pytest.approx((1 / 3) / (std3 + EPS))
    assert got[1][1] == pytest.approx((-0.5 / (0.5 + EPS) - 2 * 0.5 / (0.5 + EPS)) / 3)


def test_hgpo_penalty_after_discounting():
    penalties = [[0, 0, 0], [0, 0.5, 0], [0, 0, 0]]
    got = hgpo_advantages(H_OBS, H_REWARDS, [7, 7, 7], history_length=0, gamma=1.0, norm="mean", penalties=penalties)
    # e1's return at step 1 becomes -0.5; step 0 is unchanged (the penalty is not discounted back)
    assert got[1][0] == pytest.approx(-2 / 3)
    assert got[1][1] == pytest.approx(-0.5 - 0.25)   # B {1, -0.5}: mean 0.25


def test_hgpo_with_no_history_is_gigpos_step_term():
    obs = [["s", "t", "s"], ["s", "s", "u"], ["t", "s"], ["s"]]
    rewards = [[0, 1, 0.5], [0.2, 0, 1], [0, 0], [1]]
    groups = [0, 0, 0, 1]
    full = gigpo_advantages(obs, rewards, groups, omega=1.0)
    episode_only = gigpo_advantages(obs, rewards, groups, omega=0.0)
    step_only = hgpo_advantages(obs, rewards, groups, history_length=0)
    for f, e, s in zip(full, episode_only, step_only):
        assert [a - b for a, b in zip(f, e)] == pytest.approx(s, abs=1e-12)


def test_hgpo_level_stats():
    stats = hgpo_level_stats(H_OBS, H_REWARDS, [7, 7, 7], history_length=1, gamma=1.0)
    assert stats["level0_group_size"] == pytest.approx((3 * 3 + 2 * 2 + 1 + 3 * 3) / 9)
    assert stats["level1_group_size"] == pytest.approx((2 * 2 + 1 + 2 * 2 + 1) / 6)
    assert stats["steps_with_0_valid_levels"] == pytest.approx(1 / 9)
    assert stats["steps_with_1_valid_levels"] == pytest.approx(4 / 9)
    assert stats["steps_with_2_valid_levels"] == pytest.approx(4 / 9)


def test_hgpo_errors():
    with pytest.raises(ValueError, match="history_length must be >= 0"):
        hgpo_advantages([["a"]], [[0]], [0], history_length=-1)
    with pytest.raises(ValueError, match="1 penalty lists for 2 episodes"):
        hgpo_advantages([["a"], ["b"]], [[0], [0]], [0, 0], penalties=[[0]])


# ------------------------------------------------------------------------------------ properties

OBSERVATION = st.sampled_from(["a", "b", "c"])


@st.composite
def batches(draw):
    n = draw(st.integers(1, 6))
    observations = [draw(st.lists(OBSERVATION, min_size=1, max_size=5)) for _ in range(n)]
    rewards = [draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 10.0]), min_size=len(o), max_size=len(o)))
               for o in observations]
    penalties = [draw(st.lists(st.sampled_from([0.0, 0.1]), min_size=len(o), max_size=len(o))) for o in observations]
    groups = [draw(st.integers(0, 2)) for _ in range(n)]
    return observations, rewards, penalties, groups


ESTIMATORS = {
    "gigpo": lambda o, r, g, p, norm: gigpo_advantages(o, r, g, penalties=p, norm=norm),
    "hgpo": lambda o, r, g, p, norm: hgpo_advantages(o, r, g, penalties=p, norm=norm, history_length=2),
    "hgpo_base": lambda o, r, g, p, norm: hgpo_advantages(o, r, g, penalties=p, norm=norm, base_group=True),
}


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("norm", ["mean_std", "mean"])
@settings(max_examples=60, deadline=None)
@given(batch=batches(), permutation_seed=st.randoms(use_true_random=False))
def test_step_estimators_are_finite_shaped_and_permutation_equivariant(name, norm, batch, permutation_seed):
    assert_finite_shaped_and_permutation_equivariant(ESTIMATORS[name], norm, batch, permutation_seed)


def assert_finite_shaped_and_permutation_equivariant(fn, norm, batch, permutation_seed):
    """One advantage per step, all finite, and reordering the episodes reorders the advantages only."""
    observations, rewards, penalties, groups = batch
    got = fn(observations, rewards, groups, penalties, norm)
    assert [len(row) for row in got] == [len(o) for o in observations]
    assert all(math.isfinite(a) for row in got for a in row)
    order = list(range(len(observations)))
    permutation_seed.shuffle(order)
    permuted = fn([observations[i] for i in order], [rewards[i] for i in order], [groups[i] for i in order],
                  [penalties[i] for i in order], norm)
    for new_index, old_index in enumerate(order):
        assert permuted[new_index] == pytest.approx(got[old_index], abs=1e-9)


@pytest.mark.parametrize("name", ESTIMATORS)
@settings(max_examples=40, deadline=None)
@given(batch=batches(), value=st.sampled_from([0.0, 1.0]))
def test_all_equal_returns_give_zeros(name, batch, value):
    observations, _, _, groups = batch
    # only the last step pays, and every episode pays the same: every group holds equal returns at any
    # depth only if all episodes also have the same length, so give them one step each
    observations = [o[:1] for o in observations]
    rewards = [[value] for _ in observations]
    got = ESTIMATORS[name](observations, rewards, groups, None, "mean_std")
    assert all(a == 0.0 for row in got for a in row)


@settings(max_examples=60, deadline=None)
@given(returns=st.lists(st.sampled_from([0.0, 1.0, 2.5]), min_size=1, max_size=8), data=st.data())
def test_rloo_properties(returns, data):
    groups = data.draw(st.lists(st.integers(0, 2), min_size=len(returns), max_size=len(returns)))
    got = rloo_advantages(returns, groups)
    assert all(math.isfinite(a) for a in got)
    for group in set(groups):   # leave-one-out advantages of a group sum to zero
        assert sum(a for a, g in zip(got, groups) if g == group) == pytest.approx(0.0, abs=1e-9)
    assert rloo_advantages([returns[0]] * len(returns), groups) == [0.0] * len(returns)


# ------------------------------------------------------------------------- conventions: paper | verl-agent

VERL = {"conventions": "verl-agent"}
HALF_SAMPLE_STD = math.sqrt(0.5)   # sample std of [1, 0]: sqrt(((0.5)^2 + (0.5)^2) / 1)


def approx_rows(rows, **tolerance):
    """Per-step advantages compared row by row (pytest.approx takes flat sequences only)."""
    return [pytest.approx(row, **tolerance) for row in rows]


def test_grpo_sample_std_and_lone_groups():
    # [1, 0]: population std 0.5 gives +-1; sample std sqrt(0.5) gives +-0.7071
    assert grpo_advantages([1, 0], [0, 0]) == pytest.approx([0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS)])
    assert grpo_advantages([1, 0], [0, 0], **VERL) == pytest.approx(
        [0.5 / (HALF_SAMPLE_STD + EPS), -0.5 / (HALF_SAMPLE_STD + EPS)])
    assert grpo_advantages([1, 0], [0, 0], **VERL)[0] == pytest.approx(0.7071, abs=1e-4)
    # a group of one: 0 under the paper; verl keeps the score (mean 0, std 1)
    assert grpo_advantages([3.0], ["a"]) == [0.0]
    assert grpo_advantages([3.0], ["a"], **VERL) == pytest.approx([3.0 / (1 + EPS)])
    assert grpo_advantages([3.0], ["a"], norm="mean", **VERL) == [3.0]
    assert grpo_advantages([2.0, 2.0], ["a", "a"], **VERL) == [0.0, 0.0]   # equal returns: no signal either way


def test_gigpo_two_one_step_episodes_rewards_one_and_zero():
    # rewards [1] and [0], one shared anchor state: A = A_episode + A_step, both +-0.5 / std
    got_paper = gigpo_advantages([["S"], ["S"]], [[1], [0]], [0, 0])
    got_verl = gigpo_advantages([["S"], ["S"]], [[1], [0]], [0, 0], **VERL)
    assert got_paper == approx_rows([[2 * 0.5 / (0.5 + EPS)], [-2 * 0.5 / (0.5 + EPS)]])
    assert got_verl == approx_rows([[2 * 0.5 / (HALF_SAMPLE_STD + EPS)], [-2 * 0.5 / (HALF_SAMPLE_STD + EPS)]])
    assert got_paper[0][0] == pytest.approx(2.0, abs=1e-4) and got_verl[0][0] == pytest.approx(1.4142, abs=1e-4)


def test_gigpo_penalty_enters_the_episode_score_under_verl_agent():
    # e0 rewards [0, 1]; e1 rewards [0, 0] with an invalid first step (penalty 0.1); omega 0: episode term only.
    obs, rewards, penalties = [["S", "A"], ["S", "B"]], [[0, 1], [0, 0]], [[0, 0], [0.1, 0]]
    # paper: episode scores 1 and 0 (penalty left out), mean 0.5
    assert gigpo_advantages(obs, rewards, [0, 0], omega=0, norm="mean", penalties=penalties) == approx_rows(
        [[0.5, 0.5], [-0.5, -0.5]])
    # verl-agent: step-sample scores 1, 1, -0.1, 0 (the reward sum minus that step's penalty), mean 0.475
    assert gigpo_advantages(obs, rewards, [0, 0], omega=0, norm="mean", penalties=penalties, **VERL) == approx_rows(
        [[0.525, 0.525], [-0.575, -0.475]])


def test_gigpo_episode_statistics_over_step_samples_under_verl_agent():
    # a two-step success and a one-step failure: over episodes the mean is 1/2; over the three step samples
    # (scores 1, 1, 0) it is 2/3, so the long episode weighs more
    obs, rewards = [["S", "A"], ["S"]], [[0, 1], [0]]
    assert gigpo_advantages(obs, rewards, [0, 0], omega=0, norm="mean") == approx_rows([[0.5, 0.5], [-0.5]])
    assert gigpo_advantages(obs, rewards, [0, 0], omega=0, norm="mean", **VERL) == approx_rows(
        [[1 / 3, 1 / 3], [-2 / 3]])
    # with std: sample std of [1, 1, 0] is sqrt((1/9 + 1/9 + 4/9) / 2) = sqrt(1/3)
    std = math.sqrt(1 / 3)
    assert gigpo_advantages(obs, rewards, [0, 0], omega=0, **VERL) == approx_rows(
        [[(1 / 3) / (std + EPS)] * 2, [(-2 / 3) / (std + EPS)]])


def test_gigpo_step_term_uses_the_sample_std_under_verl_agent():
    # gamma 0.5: step returns e0 [0.5, 1], e1 [0, 0]; anchor S holds 0.5 and 0: +-0.25 / std
    obs, rewards = [["S", "A"], ["S", "B"]], [[0, 1], [0, 0]]
    paper = gigpo_advantages(obs, rewards, [0, 0], gamma=0.5)
    verl = gigpo_advantages(obs, rewards, [0, 0], gamma=0.5, **VERL)
    # episode term: paper over the two episodes (1, 0); verl-agent over the four step samples (1, 1, 0, 0),
    # sample std sqrt(4 * 0.25 / 3) = sqrt(1/3)
    episode_paper, episode_verl = 0.5 / (0.5 + EPS), 0.5 / (math.sqrt(1 / 3) + EPS)
    sample_std = math.sqrt(2 * 0.25 ** 2)   # step returns 0.5 and 0 at S: sqrt(2 * 0.25^2 / 1)
    assert paper == approx_rows([[episode_paper + 0.25 / (0.25 + EPS), episode_paper],
                                   [-episode_paper - 0.25 / (0.25 + EPS), -episode_paper]])
    assert verl == approx_rows([[episode_verl + 0.25 / (sample_std + EPS), episode_verl],
                                  [-episode_verl - 0.25 / (sample_std + EPS), -episode_verl]])


def test_multi_turn_grpo_per_step_penalty():
    rewards, penalties = [[0, 1], [0, 0]], [[0, 0], [0.1, 0]]
    # paper: returns 1 and -0.1 (total reward minus total penalty), mean 0.45, on every turn
    paper = grpo_step_advantages(rewards, [0, 0], norm="mean", penalties=penalties)
    assert paper == approx_rows([[0.55, 0.55], [-0.55, -0.55]])
    assert paper == [[a] * 2 for a in grpo_advantages([1.0, -0.1], [0, 0], norm="mean")]
    # verl-agent: each step sample scores 1 - its own penalty: 1, 1, -0.1, 0; mean 0.475
    assert grpo_step_advantages(rewards, [0, 0], norm="mean", penalties=penalties, **VERL) == approx_rows(
        [[0.525, 0.525], [-0.575, -0.475]])
    assert grpo_step_advantages([[1.0]], ["lone"], **VERL) == approx_rows([[1 / (1 + EPS)]])
    with pytest.raises(ValueError, match="1 penalty lists for 2 episodes"):
        grpo_step_advantages(rewards, [0, 0], penalties=[[0, 0]])


# HGPO, K = 2, gamma 1, mean norm: four episodes of three steps; only step 2 pays (e0 1, e3 0.5).
# e0 and e1 share all three observations, e3 shares the last two, e2 only the last one.
LEVEL_OBS = [["s0", "s1", "s2"], ["s0", "s1", "s2"], ["x0", "x1", "s2"], ["y0", "s1", "s2"]]
LEVEL_REWARDS = [[0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0.5]]


def test_hgpo_level_weights_under_both_conventions():
    # e0 at step 2: level 0 (s2: 1, 0, 0, 0.5; mean 0.375) 0.625; level 1 (s1 s2: 1, 0, 0.5) 0.5;
    # level 2 (s0 s1 s2: 1, 0) 0.5. Paper weights 1:2:3, verl-agent 2:3:4 over (9 + eps).
    paper = hgpo_advantages(LEVEL_OBS, LEVEL_REWARDS, [0] * 4, gamma=1.0, norm="mean")
    verl = hgpo_advantages(LEVEL_OBS, LEVEL_REWARDS, [0] * 4, gamma=1.0, norm="mean", **VERL)
    assert paper[0][2] == pytest.approx((1 * 0.625 + 2 * 0.5 + 3 * 0.5) / 6)
    assert verl[0][2] == pytest.approx((2 * 0.625 + 3 * 0.5 + 4 * 0.5) / (9 + EPS), rel=1e-12)


def test_hgpo_drops_exactly_zero_members_under_verl_agent():
    # e3 at step 2: level 0 gives 0.5 - 0.375 = 0.125; level 1 gives 0.5 - 0.5 = 0 exactly; level 2 is a
    # group of one. Paper: the zero counts, (1 * 0.125 + 2 * 0) / 3; verl-agent drops it: 2 * 0.125 / (2 + eps).
    paper = hgpo_advantages(LEVEL_OBS, LEVEL_REWARDS, [0] * 4, gamma=1.0, norm="mean")
    verl = hgpo_advantages(LEVEL_OBS, LEVEL_REWARDS, [0] * 4, gamma=1.0, norm="mean", **VERL)
    assert paper[3][2] == pytest.approx(0.125 / 3)
    assert verl[3][2] == pytest.approx(2 * 0.125 / (2 + EPS), rel=1e-12)


def test_hgpo_base_group_under_verl_agent_is_the_step_sample_episode_term():
    # one step each, rewards [1] and [0], shared state: the level-0 term is +-0.5/(0.5 + eps) (population
    # std, as the HGPO code), the base term +-0.5/(sqrt(0.5) + eps) (verl-agent's GiGPO episode term)
    level, base = 0.5 / (0.5 + EPS), 0.5 / (HALF_SAMPLE_STD + EPS)
    got = hgpo_advantages([["S"], ["S"]], [[1], [0]], [0, 0], base_group=True, **VERL)
    assert got == approx_rows([[(2 * level + base) / (3 + EPS)], [-(2 * level + base) / (3 + EPS)]])


@pytest.mark.parametrize("call", [
    lambda c: grpo_advantages([1, 0], [0, 0], conventions=c),
    lambda c: grpo_step_advantages([[1], [0]], [0, 0], conventions=c),
    lambda c: gigpo_advantages([["S"], ["S"]], [[1], [0]], [0, 0], conventions=c),
    lambda c: hgpo_advantages([["S"], ["S"]], [[1], [0]], [0, 0], conventions=c),
])
def test_unknown_conventions_name_the_choices(call):
    with pytest.raises(ValueError, match="'paper', 'verl-agent'"):
        call("verl")


VERL_ESTIMATORS = {
    "grpo_step": lambda o, r, g, p, norm: grpo_step_advantages(r, g, penalties=p, norm=norm, **VERL),
    "gigpo": lambda o, r, g, p, norm: gigpo_advantages(o, r, g, penalties=p, norm=norm, **VERL),
    "hgpo_base": lambda o, r, g, p, norm: hgpo_advantages(o, r, g, penalties=p, norm=norm, base_group=True, **VERL),
}


@pytest.mark.parametrize("name", VERL_ESTIMATORS)
@pytest.mark.parametrize("norm", ["mean_std", "mean"])
@settings(max_examples=40, deadline=None)
@given(batch=batches(), permutation_seed=st.randoms(use_true_random=False))
def test_verl_agent_estimators_are_finite_shaped_and_permutation_equivariant(name, norm, batch, permutation_seed):
    assert_finite_shaped_and_permutation_equivariant(VERL_ESTIMATORS[name], norm, batch, permutation_seed)
