"""Turn- and sequence-level log importance ratios: values against hand computations, segmentation by turn
index (observation tokens between turns, adjacent turns, rows of several turns), and gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from turnrl.algorithms.objectives import ppo_clip_loss, sequence_log_ratio, turn_log_ratio


def test_turn_ratio_by_hand():
    log_ratio = torch.tensor([[9.0, 0.2, 0.4, 9.0, 1.0, 3.0, 0.5, 9.0]])
    turns = torch.tensor([[-1, 0, 0, -1, 1, 1, 2, -1]])     # turns 1 and 2 are adjacent
    expected = torch.tensor([[0.0, 0.3, 0.3, 0.0, 2.0, 2.0, 0.5, 0.0]])
    assert torch.allclose(turn_log_ratio(log_ratio, turns), expected)


def test_rows_are_separate_and_sequence_ratio_by_hand():
    log_ratio = torch.tensor([[1.0, 2.0, 3.0], [4.0, 6.0, 0.0]])
    turns = torch.tensor([[0, 0, 0], [0, 0, -1]])            # the same turn index in two rows
    assert torch.allclose(turn_log_ratio(log_ratio, turns), torch.tensor([[2.0, 2.0, 2.0], [5.0, 5.0, 0.0]]))
    mask = (turns >= 0).float()
    assert torch.allclose(sequence_log_ratio(log_ratio, mask), torch.tensor([[2.0, 2.0, 2.0], [5.0, 5.0, 0.0]]))
    assert torch.equal(sequence_log_ratio(log_ratio, torch.zeros_like(mask)), torch.zeros_like(log_ratio))


def test_one_token_turns_give_the_token_ratio():
    log_ratio = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    turns = torch.tensor([[0, 1, 2, 3, 4, 5], [-1, 0, -1, 1, -1, 2], [0, 1, -1, -1, 2, 3]])
    assert torch.allclose(turn_log_ratio(log_ratio, turns), log_ratio * (turns >= 0))


def test_gradient_flows_token_wise_through_the_turn_mean():
    log_ratio = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5]], requires_grad=True)
    turns = torch.tensor([[0, 0, -1, 1, 1]])
    out = turn_log_ratio(log_ratio, turns)
    weights = torch.tensor([[1.0, 0.0, 5.0, 0.0, 3.0]])      # a loss reading one token of each turn
    (out * weights).sum().backward()
    assert torch.allclose(log_ratio.grad, torch.tensor([[0.5, 0.5, 0.0, 1.5, 1.5]]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(-1, 3), min_size=1, max_size=12), min_size=1, max_size=4).filter(
    lambda rows: len({len(r) for r in rows}) == 1))
def test_turn_ratio_matches_a_loop_over_runs(rows):
    turns = torch.tensor(rows)
    log_ratio = torch.arange(turns.numel(), dtype=torch.float64).view_as(turns).sin()
    expected = torch.zeros_like(log_ratio)
    for b, row in enumerate(rows):
        start = 0
        while start < len(row):
            end = start
            while end + 1 < len(row) and row[end + 1] == row[start]:
                end += 1
            if row[start] >= 0:
                expected[b, start:end + 1] = log_ratio[b, start:end + 1].mean()
            start = end + 1
    assert torch.allclose(turn_log_ratio(log_ratio, turns), expected)


def test_dual_clip_bounds_negative_advantages():
    ratio = torch.tensor([5.0, 5.0, 0.5, 1.1])
    adv = torch.tensor([-1.0, 1.0, -1.0, -1.0])
    loss, clipped = ppo_clip_loss(ratio, adv, clip_low=0.2, dual_clip=3.0)
    # A < 0 with a huge ratio: -max(min(rA, clip(r)A), cA) = 3; A > 0 unaffected (clipped at 1.2);
    # ratio below the range with A < 0 keeps the clipped value 0.8; inside the range: r * A
    assert torch.allclose(loss, torch.tensor([3.0, -1.2, 0.8, 1.1]))
    assert clipped.tolist() == [1.0, 1.0, 1.0, 0.0]
    plain, _ = ppo_clip_loss(ratio, adv, clip_low=0.2)
    assert plain[0] == 5.0 and torch.equal(plain[1:], loss[1:])


def test_turn_gae_by_hand():
    from turnrl.algorithms.advantages import turn_gae

    # gamma 0.9, lambda 0.5; V = (0.5, 0.2, 0.4), rewards (0, 0, 1), episode ended (V_3 = 0)
    advantages, targets = turn_gae([0.0, 0.0, 1.0], [0.5, 0.2, 0.4], gamma=0.9, lam=0.5)
    d2 = 1.0 - 0.4
    d1 = 0.0 + 0.9 * 0.4 - 0.2
    d0 = 0.0 + 0.9 * 0.2 - 0.5
    a2 = d2
    a1 = d1 + 0.45 * a2
    a0 = d0 + 0.45 * a1
    assert advantages == pytest.approx([a0, a1, a2])
    assert targets == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.4])
    # lambda 1, gamma 1: the advantage is the return to go minus the value
    adv, _ = turn_gae([1.0, 2.0], [0.5, 0.25], last_value=1.0)
    assert adv == pytest.approx([1 + 2 + 1 - 0.5, 2 + 1 - 0.25])
    with pytest.raises(ValueError, match="2 rewards for 1 values"):
        turn_gae([1.0, 2.0], [0.5])
