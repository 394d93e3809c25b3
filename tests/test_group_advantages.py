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
    observations, rewards, penalties, groups = batch
    fn = ESTIMATORS[name]
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
