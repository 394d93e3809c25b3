"""The pure maths and data of training: GRPO advantages, PPO objectives, per-turn advantages,
training samples and summaries, with hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from turnrl.algorithms.advantages import EPS, gigpo_advantages, grpo_advantages, hgpo_advantages, rloo_advantages
from turnrl.algorithms.config import TrainConfig
from turnrl.algorithms.objectives import kl_k3, masked_mean, ppo_clip_loss, token_ratio
from turnrl.algorithms.trainer import episode_turn_advantages
from turnrl.episode import Episode, Turn, episode_samples, summarize

# ------------------------------------------------------------------------------------------ GRPO


def test_grpo_one_group_mean_std():
    # mean 0.5, population std 0.5
    expected = [0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS), 0.5 / (0.5 + EPS)]
    assert grpo_advantages([1, 0, 0, 1], [0, 0, 0, 0]) == pytest.approx(expected, abs=1e-12)


def test_grpo_uneven_returns():
    # returns 3, 1, 2: mean 2, population std sqrt(2/3)
    std = math.sqrt(2 / 3)
    expected = [1 / (std + EPS), -1 / (std + EPS), 0.0]
    assert grpo_advantages([3.0, 1.0, 2.0], ["t", "t", "t"]) == pytest.approx(expected, abs=1e-12)


def test_grpo_norm_mean():
    assert grpo_advantages([1, 0, 0, 1], [0] * 4, norm="mean") == pytest.approx([0.5, -0.5, -0.5, 0.5])
    assert grpo_advantages([3.0, 1.0, 2.0], [0] * 3, norm="mean") == pytest.approx([1.0, -1.0, 0.0])


def test_grpo_groups_without_signal_get_zero():
    assert grpo_advantages([5.0], [0]) == [0.0]                     # a group of one
    assert grpo_advantages([0.7, 0.7, 0.7], [1, 1, 1]) == [0.0] * 3  # all returns equal
    assert grpo_advantages([0.7, 0.7], [1, 1], norm="mean") == [0.0, 0.0]
    assert grpo_advantages([], []) == []


def test_grpo_interleaved_groups():
    returns = [1.0, 10.0, 0.0, 20.0, 4.0]
    groups = ["a", "b", "a", "b", "c"]
    # group a: [1, 0] -> mean .5, std .5; group b: [10, 20] -> mean 15, std 5; group c is a singleton
    expected = [0.5 / (0.5 + EPS), -5 / (5 + EPS), -0.5 / (0.5 + EPS), 5 / (5 + EPS), 0.0]
    assert grpo_advantages(returns, groups) == pytest.approx(expected, abs=1e-12)
    # each group is normalised alone: the order of the groups does not matter
    assert grpo_advantages(returns[::-1], groups[::-1]) == pytest.approx(expected[::-1], abs=1e-12)


def test_grpo_errors():
    with pytest.raises(ValueError, match="3 returns for 2 group ids"):
        grpo_advantages([1, 2, 3], [0, 0])
    with pytest.raises(ValueError) as err:
        grpo_advantages([1, 0], [0, 0], norm="std")
    assert "mean_std" in str(err.value) and "'mean'" in str(err.value) and "'std'" in str(err.value)


# ------------------------------------------------------------------------------------ objectives


def test_token_ratio():
    new, old = torch.tensor([-1.0, -2.0, 0.0]), torch.tensor([-1.0, -1.0, -0.5])
    assert torch.allclose(token_ratio(new, old), torch.tensor([1.0, math.exp(-1.0), math.exp(0.5)]))


@pytest.mark.parametrize(
    ("ratio", "advantage", "loss", "clipped"),
    [
        (1.1, 2.0, -2.2, 0.0),    # inside the clip range: plain ratio * A
        (0.9, -1.0, 0.9, 0.0),
        (1.5, 2.0, -2.4, 1.0),    # A > 0, ratio above 1 + eps: clipped to 1.2
        (0.5, 2.0, -1.0, 0.0),    # A > 0, ratio below 1 - eps: the unclipped term is the minimum
        (0.5, -1.0, 0.8, 1.0),    # A < 0, ratio below 1 - eps: clipped to 0.8
        (1.5, -1.0, 1.5, 0.0),    # A < 0, ratio above 1 + eps: the unclipped (pessimistic) term
        (1.5, 0.0, 0.0, 0.0),     # no advantage, no loss, no clip
    ],
)
def test_ppo_clip_loss_hand_cases(ratio, advantage, loss, clipped):
    got_loss, got_clipped = ppo_clip_loss(torch.tensor([ratio]), torch.tensor([advantage]), clip_low=0.2)
    assert got_loss.item() == pytest.approx(loss)
    assert got_clipped.item() == clipped


def test_ppo_clip_loss_asymmetric_range():
    ratio = torch.tensor([1.25, 1.35, 0.75])
    adv = torch.tensor([1.0, 1.0, -1.0])
    loss, clipped = ppo_clip_loss(ratio, adv, clip_low=0.2, clip_high=0.28)
    assert loss.tolist() == pytest.approx([-1.25, -1.28, 0.8])
    assert clipped.tolist() == [0.0, 1.0, 1.0]


def test_ppo_clip_loss_gradient_vanishes_when_clipped():
    ratio = torch.tensor([1.1, 1.5], requires_grad=True)
    loss, _ = ppo_clip_loss(ratio, torch.tensor([1.0, 1.0]))
    loss.sum().backward()
    assert ratio.grad.tolist() == pytest.approx([-1.0, 0.0])


def test_kl_k3():
    logprobs = torch.tensor([-0.1, -2.0, -5.0])
    assert torch.equal(kl_k3(logprobs, logprobs), torch.zeros(3))
    other = torch.tensor([-0.3, -1.0, -5.5])
    kl = kl_k3(logprobs, other)
    assert (kl > 0).all()
    delta = other - logprobs
    assert torch.allclose(kl, torch.exp(delta) - delta - 1)
    assert kl[1].item() == pytest.approx(math.exp(1.0) - 2.0)


def test_masked_mean():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    assert masked_mean(values, mask).item() == pytest.approx((1 + 3 + 4 + 5) / 4)
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0   # empty mask: 0, not NaN


# ------------------------------------------------------------------------ episodes and samples


def make_turn(reward=0.0, penalty=0.0, *, completion=(7, 8), logprobs=None, info=None, span=None, prompt=None):
    completion = list(completion)
    return Turn(observation="obs", response="resp", action="a", completion_ids=completion,
                logprobs=list(logprobs) if logprobs is not None else [-0.5] * len(completion),
                reward=reward, penalty=penalty, info=info or {}, span=span, prompt_ids=prompt)


def make_episode(turns, group_id=0, context="window:2", token_ids=None):
    return Episode(env="lights", task=0, seed=0, group_id=group_id, context=context, turns=turns,
                   token_ids=token_ids)


def test_episode_turn_advantages_subtract_penalties():
    episodes = [
        make_episode([make_turn(0.0), make_turn(1.0)], group_id=0),         # return 1
        make_episode([make_turn(0.0, penalty=0.5)], group_id=0),            # return -0.5
        make_episode([make_turn(1.0, penalty=0.1), make_turn(0.0, penalty=0.1)], group_id=1),   # 0.8
        make_episode([make_turn(1.0)], group_id=1),                         # 1
    ]
    got = episode_turn_advantages(TrainConfig(advantage_norm="mean"), episodes)
    assert [len(a) for a in got] == [2, 1, 2, 1]     # one advantage per turn
    assert got[0] == pytest.approx([0.75, 0.75])
    assert got[1] == pytest.approx([-0.75])
    assert got[2] == pytest.approx([-0.1, -0.1])
    assert got[3] == pytest.approx([0.1])
    normalised = episode_turn_advantages(TrainConfig(), episodes)
    assert normalised[0] == pytest.approx([0.75 / (0.75 + EPS)] * 2)
    assert normalised[3] == pytest.approx([0.1 / (0.1 + EPS)])


def test_penalties_alone_separate_equal_rewards():
    episodes = [make_episode([make_turn(1.0)]), make_episode([make_turn(1.0, penalty=0.2)])]
    got = episode_turn_advantages(TrainConfig(advantage_norm="mean"), episodes)
    assert got == [pytest.approx([0.1]), pytest.approx([-0.1])]


def test_episode_samples_full_context():
    # prompt 10 11 12 | turn 0: 20 21 | glue 13 14 | turn 1: 30 31 32
    turns = [make_turn(completion=(20, 21), logprobs=(-0.1, -0.2), span=(3, 5)),
             make_turn(completion=(30, 31, 32), logprobs=(-0.3, -0.4, -0.5), span=(7, 10))]
    tokens = [10, 11, 12, 20, 21, 13, 14, 30, 31, 32]
    episode = make_episode(turns, context="full", token_ids=tokens)
    [sample] = episode_samples(episode, [2.0, -1.0], episode_index=4)
    assert sample.token_ids == tokens and sample.token_ids is not episode.token_ids
    assert sample.loss_mask == [0, 0, 0, 1, 1, 0, 0, 1, 1, 1]
    assert sample.turn_index == [-1, -1, -1, 0, 0, -1, -1, 1, 1, 1]
    assert sample.behaviour_logprobs == [0, 0, 0, -0.1, -0.2, 0, 0, -0.3, -0.4, -0.5]
    assert sample.advantages == [0, 0, 0, 2.0, 2.0, 0, 0, -1.0, -1.0, -1.0]
    assert sample.episode_index == 4 and sample.episode_agent_tokens == 5


def test_episode_samples_window_context():
    turns = [make_turn(completion=(20, 21), logprobs=(-0.1, -0.2), prompt=(1, 2, 3)),
             make_turn(completion=(30,), logprobs=(-0.3,), prompt=(1, 2, 3, 4, 5))]
    first, second = episode_samples(make_episode(turns, context="window:1"), [0.5, 0.5], episode_index=1)
    assert first.token_ids == [1, 2, 3, 20, 21]
    assert first.loss_mask == [0, 0, 0, 1, 1]
    assert first.turn_index == [-1, -1, -1, 0, 0]
    assert first.behaviour_logprobs == [0, 0, 0, -0.1, -0.2]
    assert first.advantages == [0, 0, 0, 0.5, 0.5]
    assert second.token_ids == [1, 2, 3, 4, 5, 30]
    assert second.loss_mask == [0, 0, 0, 0, 0, 1]
    assert second.turn_index == [-1] * 5 + [1]
    assert second.behaviour_logprobs == [0.0] * 5 + [-0.3]
    assert first.episode_index == second.episode_index == 1
    assert first.episode_agent_tokens == second.episode_agent_tokens == 3   # the whole episode's


def test_episode_samples_advantage_count_must_match():
    episode = make_episode([make_turn(prompt=(1,)), make_turn(prompt=(1,))])
    with pytest.raises(ValueError, match="1 advantages for 2 turns"):
        episode_samples(episode, [1.0], 0)
    assert episode_samples(make_episode([]), [], 0) == []


def test_summarize():
    episodes = [
        make_episode([make_turn(0.0, info={"invalid": True}), make_turn(1.0, info={"success": True, "score": 0.9})]),
        make_episode([make_turn(0.5), make_turn(0.0), make_turn(0.0, info={"invalid": True})]),
        make_episode([make_turn(0.0, info={"success": False, "score": 0.2})]),
    ]
    summary = summarize(episodes)
    assert summary == {
        "success_rate": pytest.approx(1 / 3),
        "mean_score": pytest.approx((0.9 + 0.5 + 0.2) / 3),   # graded score where the env has one, else return
        "mean_return": pytest.approx((1.0 + 0.5 + 0.0) / 3),
        "mean_turns": pytest.approx(2.0),
        "invalid_action_rate": pytest.approx(2 / 6),
        "episodes": 3,
        "failed_episodes": 0,
    }
    assert summarize([]) == {"success_rate": 0.0, "mean_score": 0.0, "mean_return": 0.0, "mean_turns": 0.0,
                             "invalid_action_rate": 0.0, "episodes": 0, "failed_episodes": 0}
    failed = make_episode([make_turn(0.0)])
    failed.stop_reason, failed.error = "failed", "step: KeyError: 'x'"
    assert summarize([failed])["failed_episodes"] == 1 and failed.failure_cause == "step"


def test_episode_properties_and_json():
    episode = make_episode([make_turn(0.25, penalty=0.1), make_turn(0.5, info={"success": True})])
    assert episode.total_reward == 0.75 and episode.total_penalty == pytest.approx(0.1)
    assert episode.success and episode.score == 0.75
    record = episode.to_json()
    assert record["success"] is True and record["score"] == 0.75 and record["total_reward"] == 0.75
    assert len(record["turns"]) == 2 and record["turns"][1]["info"] == {"success": True}
    assert not make_episode([]).success


def test_episode_turn_advantages_for_every_estimator():
    def turn(observation, reward, penalty=0.0):
        return Turn(observation=observation, response="", action="a", completion_ids=[1], logprobs=[0.0],
                    reward=reward, penalty=penalty)

    episodes = [
        make_episode([turn("S", 0.0), turn("X", 1.0)], group_id=0),
        make_episode([turn("S", 0.0, penalty=0.1), turn("Y", 0.0)], group_id=0),
        make_episode([turn("S", 1.0)], group_id=0),
    ]
    observations = [["S", "X"], ["S", "Y"], ["S"]]
    rewards, penalties = [[0.0, 1.0], [0.0, 0.0], [1.0]], [[0.0, 0.0], [0.1, 0.0], [0.0]]
    returns = [1.0, -0.1, 1.0]
    rloo = episode_turn_advantages(TrainConfig(advantage="rloo"), episodes)
    assert rloo == [[a] * n for a, n in zip(rloo_advantages(returns, [0, 0, 0]), [2, 2, 1])]
    gigpo = episode_turn_advantages(TrainConfig(algorithm="gigpo", gamma=0.5, step_advantage_weight=2.0), episodes)
    assert gigpo == gigpo_advantages(observations, rewards, [0, 0, 0], gamma=0.5, omega=2.0, penalties=penalties)
    config = TrainConfig(algorithm="hgpo", history_length=1, hgpo_alpha=0.0, hgpo_base_group=True)
    assert episode_turn_advantages(config, episodes) == hgpo_advantages(
        observations, rewards, [0, 0, 0], history_length=1, alpha=0.0, base_group=True, penalties=penalties)
