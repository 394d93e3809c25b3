"""The turn-level critic and GAE over turns (advantage gae): turn starts, GAE and the clipped value loss by
hand, values read at each turn's first token, both critic kinds, the value loss kept out of the clip-bias
scale, presets, and checkpoint/resume of the critic and the replay buffer."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from turnrl.agents.policy import positions_from_mask, token_logprobs
from turnrl.algorithms.config import ConfigError, load_config
from turnrl.algorithms.critic import clipped_value_loss, episode_gae, turn_starts
from turnrl.algorithms.trainer import ClipBiasNormaliser, Trainer, make_batch, train
from turnrl.episode import Sample

pytestmark = pytest.mark.usefixtures("one_thread")


def test_turn_starts_from_turn_indices():
    turn_index = torch.tensor([
        [-1, 0, 0, -1, -1, 1, 1, 1],     # observation tokens between two turns
        [0, 0, 1, 1, 2, -1, -1, -1],     # adjacent turns: three starts
        [-1, -1, -1, -1, 3, 3, 3, 3],    # window mode: one turn per sample, cut at the end by max tokens
    ])
    expected = [[0, 1, 0, 0, 0, 1, 0, 0], [1, 0, 1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0]]
    assert turn_starts(turn_index).int().tolist() == expected


def test_gae_over_turns_by_hand():
    # rewards [0, 1], values [0.5, 0.2], gamma 0.9, lambda 0.8:
    # delta_1 = 1 - 0.2 = 0.8 -> A_1 = 0.8; delta_0 = 0.9 * 0.2 - 0.5 = -0.32 -> A_0 = -0.32 + 0.72 * 0.8 = 0.256
    advantages, targets = episode_gae([[0.0, 1.0]], [[0.5, 0.2]], gamma=0.9, lam=0.8, norm=None)
    assert advantages[0] == pytest.approx([0.256, 0.8])
    assert targets[0] == pytest.approx([0.756, 1.0])
    whitened, same_targets = episode_gae([[0.0, 1.0], [1.0]], [[0.5, 0.2], [0.0]], gamma=0.9, lam=0.8)
    flat = torch.tensor([a for adv in whitened for a in adv])
    assert float(flat.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(flat.std(unbiased=False)) == pytest.approx(1.0, abs=1e-6)
    assert same_targets == [pytest.approx([0.756, 1.0]), pytest.approx([1.0])]   # targets are not whitened


def test_clipped_value_loss_by_hand():
    values, old, returns = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.0, 0.0, 0.4]), torch.tensor([2.0, 1.0, 0.0])
    # row 0: unclipped (1-2)^2 = 1, clipped 0.2 -> (0.2-2)^2 = 3.24 -> 1.62; row 1: 1 -> 0.5;
    # row 2: unclipped 0.25, clipped 0.5 (within 0.2 of 0.4) -> 0.25 -> 0.125
    assert clipped_value_loss(values, old, returns, 0.2).tolist() == pytest.approx([1.62, 0.5, 0.125])


def _config(tmp_path, **overrides):
    values = {"env": "lights", "env_kwargs": {"n_lamps": 1}, "model": "tiny", "algorithm": "ppo",
              "tasks_per_iteration": 1, "group_size": 2, "minibatch_size": 4, "micro_batch_size": 2,
              "learning_rate": 1e-3, "output_dir": str(tmp_path / "run")}
    values.update(overrides)
    return load_config(None, values)


def _samples(n: int = 4, length: int = 16) -> list[Sample]:
    """Full-context-like samples: prompt, turn 0, observation, turn 1."""
    samples = []
    for i in range(n):
        ids = [(3 * i + 5 * t) % 60 + 5 for t in range(length)]
        turn = [-1] * 4 + [0] * 4 + [-1] * 3 + [1] * (length - 11)
        mask = [int(t >= 0) for t in turn]
        behaviour = [-3.0 if m else 0.0 for m in mask]
        samples.append(Sample(ids, mask, turn, behaviour, [0.5 * m for m in mask], i, sum(mask)))
    return samples


@pytest.mark.parametrize("kind", ["head", "model"])
def test_values_are_read_at_the_first_token_of_each_turn(tmp_path, kind):
    trainer = Trainer(_config(tmp_path, critic=kind), progress=False)
    samples = _samples()
    values = trainer.turn_values(samples)
    assert set(values) == {(i, t) for i in range(4) for t in (0, 1)}
    batch = make_batch(samples, [1.0] * 4, trainer.policy.pad_id, "cpu")
    with torch.no_grad():
        if kind == "head":
            _, hidden = token_logprobs(trainer.model, batch.input_ids, batch.attention_mask, return_hidden=True)
        else:
            hidden = trainer.critic.trunk(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                          position_ids=positions_from_mask(batch.attention_mask)).last_hidden_state
        by_hand = trainer.critic.head(hidden).squeeze(-1)
    for i in range(4):
        # turn 0's first token is token 4: its state is the hidden state after token 3; turn 1's is token 11
        assert values[(i, 0)] == pytest.approx(float(by_hand[i, 3]), abs=1e-6)
        assert values[(i, 1)] == pytest.approx(float(by_hand[i, 10]), abs=1e-6)


def test_the_value_loss_trains_the_shared_trunk_or_only_the_value_model(tmp_path):
    samples = _samples()
    for sample in samples:   # no policy signal: only the value loss moves anything
        sample.advantages = [0.0] * len(sample.advantages)
        sample.old_values = [0.0] * len(sample.turn_index)
        sample.value_targets = [1.0 if t >= 0 else 0.0 for t in sample.turn_index]
    for kind, policy_moves in (("head", True), ("model", False)):
        trainer = Trainer(_config(tmp_path, critic=kind, vf_coef=1.0), progress=False)
        policy_before = [p.detach().clone() for p in trainer.model.parameters()]
        critic_before = [p.detach().clone() for p in trainer.critic.parameters()]
        stats = trainer.update(samples, iteration=1)
        assert stats["value_loss"] > 0 and stats["optimizer_steps"] == 1
        moved = any(not torch.equal(a, p) for a, p in zip(policy_before, trainer.model.parameters()))
        assert moved == policy_moves
        assert any(not torch.equal(a, p) for a, p in zip(critic_before, trainer.critic.parameters()))


class _OneProcess:
    num_processes = 1


def test_the_clip_bias_scale_leaves_the_value_gradient_alone():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 1)
    x = torch.randn(5, 3)
    out = layer(x).squeeze(-1)
    ratio = torch.exp(out)
    advantages = torch.ones(5)
    clipped = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0])
    policy_loss = -(ratio * advantages).sum()
    value_loss = (out ** 2).sum()
    params = list(layer.parameters())
    g_policy = torch.autograd.grad(policy_loss, params, retain_graph=True)
    g_value = torch.autograd.grad(value_loss, params, retain_graph=True)
    normaliser = ClipBiasNormaliser(params, tau=1e-3, accelerator=_OneProcess())
    normaliser.accumulate(ratio, advantages, clipped, torch.ones(5), 1.0, unscaled_loss=value_loss)
    (policy_loss + value_loss).backward()
    c_norm = normaliser.scale_gradients()
    scale = 1e-3 / c_norm
    assert scale < 0.01
    for p, gp, gv in zip(params, g_policy, g_value):
        assert torch.allclose(p.grad, scale * gp + gv, atol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    ({"algorithm": "grpo", "vf_coef": 0.5}, "vf_coef applies to advantage gae only"),
    ({"algorithm": "grpo", "critic": "model"}, "critic applies to advantage gae only"),
    ({"algorithm": "st-ppo", "ratio_level": "token"}, "use algorithm s-ppo"),
    ({"algorithm": "turn-ppo", "clip_bias_norm": True}, "use algorithm st-ppo"),
    ({"algorithm": "ppo", "critic": "both"}, "critic: 'both' is not one of head, model"),
    ({"algorithm": "ppo", "gae_lambda": 1.5}, "gae_lambda must be in [0, 1]"),
    ({"algorithm": "sppo"}, "is not one of grpo, gigpo, hgpo, ppo, turn-ppo, s-ppo, st-ppo"),
])
def test_critic_and_preset_settings_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, overrides)


def test_presets_compose_with_group_advantages():
    config = load_config(None, {"algorithm": "st-ppo", "advantage": "hgpo"})
    assert (config.ratio_level, config.clip_bias_norm, config.advantage, config.context) == \
        ("turn", True, "hgpo", "window:2")
    assert config.critic is None and config.vf_coef is None       # no critic without gae
    ppo = load_config(None, {"algorithm": "ppo"})
    assert (ppo.advantage, ppo.critic, ppo.gamma, ppo.gae_lambda, ppo.ratio_level, ppo.clip_bias_norm) == \
        ("gae", "head", 1.0, 1.0, "token", False)
    assert ppo.critic_learning_rate == pytest.approx(10 * ppo.learning_rate)


@pytest.mark.slow
def test_resume_restores_the_critic_and_the_replay_buffer(tmp_path, nudged_tiny):
    """Iterations 1-2 uninterrupted vs stopped after iteration 1 and resumed: iteration 2 trains on the same
    stale rollouts with the same critic, so its numbers and the final critic are the same."""
    values = {"env": "lights", "env_kwargs": {"n_lamps": 1}, "model": str(nudged_tiny), "algorithm": "st-ppo",
              "tasks_per_iteration": 2, "group_size": 2, "max_turns": 2, "max_new_tokens": 8, "iterations": 2,
              "max_staleness": 1, "learning_rate": 1e-2, "checkpoint_every": 1}
    whole = train(load_config(None, {**values, "output_dir": str(tmp_path / "whole")}), progress=False)
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "final")
    shutil.rmtree(cut / "checkpoints" / "iter-000002")   # as if stopped after iteration 1
    lines = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text(lines[0] + "\n")
    train(load_config(None, {**values, "output_dir": str(cut)}), resume=True, progress=False)
    rows = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in lines]
    assert rows[1]["stale_samples"] == expected[1]["stale_samples"] > 0
    for key in ("loss", "value_loss", "clip_fraction", "grad_norm", "clip_bias_norm_mean"):
        assert rows[1][key] == pytest.approx(expected[1][key], rel=1e-5, abs=1e-7), key
    a, b = torch.load(whole / "final" / "critic.pt"), torch.load(cut / "final" / "critic.pt")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_search_episodes_join_training_as_off_policy_data(tmp_path, nudged_tiny):
    """Episodes recorded elsewhere (here: a rollout of the same model, as `turnrl search` writes them) train beside
    fresh rollouts with their behaviour log-probs; the settings are checked before any work."""
    values = {"env": "lights", "env_kwargs": {"n_lamps": 1}, "model": str(nudged_tiny), "algorithm": "st-ppo",
              "tasks_per_iteration": 2, "group_size": 2, "max_turns": 2, "max_new_tokens": 8, "iterations": 2,
              "learning_rate": 1e-3, "checkpoint_every": 0}
    recorder = Trainer(load_config(None, {**values, "output_dir": str(tmp_path / "rec")}), progress=False)
    episodes = recorder.play(recorder.iteration_tasks(1), 1)
    path = tmp_path / "episodes.jsonl"
    path.write_text("".join(json.dumps(e.to_json()) + "\n" for e in episodes[:3]))
    config = load_config(None, {**values, "search_episodes": str(path), "output_dir": str(tmp_path / "run")})
    assert config.search_episodes_per_iteration == 2
    rows = [json.loads(line) for line in (train(config, progress=False) / "metrics.jsonl").read_text().splitlines()]
    per_sample = 1   # full context: one sample per episode
    assert [row["search_samples"] for row in rows] == [2 * per_sample, 2 * per_sample]
    assert all(row["samples"] == 4 + 2 for row in rows)
    with pytest.raises(ConfigError, match="search_episodes needs advantage gae"):
        load_config(None, {**values, "algorithm": "grpo", "search_episodes": str(path)})
    with pytest.raises(ConfigError, match="applies with search_episodes only"):
        load_config(None, {**values, "search_episodes_per_iteration": 3})
    window = load_config(None, {**values, "context": "window:1", "search_episodes": str(path),
                                "output_dir": str(tmp_path / "w")})
    with pytest.raises(ValueError, match="recorded with context full"):
        Trainer(window, progress=False)
