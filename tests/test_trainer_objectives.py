"""The objective inside `Trainer.update`: the ratio level chosen once from the config, equivalences that a
refactor must keep (turn ratio = token ratio when every turn is one token; micro-batches 1 x 8 = 8 x 1),
and the clip settings checked before any work."""

from __future__ import annotations

import pytest
import torch

from turnrl.algorithms.config import ConfigError, load_config
from turnrl.algorithms.objectives import RATIO_LEVELS, ppo_clip_loss
from turnrl.algorithms.trainer import Trainer, make_batch
from turnrl.episode import Sample

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path, **overrides):
    values = {"env": "lights", "env_kwargs": {"n_lamps": 1}, "model": "tiny", "tasks_per_iteration": 1,
              "group_size": 2, "minibatch_size": 8, "micro_batch_size": 4, "learning_rate": 1e-3,
              "output_dir": str(tmp_path / "run")}
    values.update(overrides)
    return load_config(None, values)


def _samples(one_token_turns: bool, n: int = 8, length: int = 14) -> list[Sample]:
    samples = []
    for i in range(n):
        ids = [(5 * i + 7 * t) % 60 + 5 for t in range(length)]
        prompt = 6
        agent = length - prompt
        turns = list(range(agent)) if one_token_turns else [0] * (agent // 2) + [1] * (agent - agent // 2)
        behaviour = [0.0] * prompt + [-4.0 + 0.1 * t for t in range(agent)]
        samples.append(Sample(ids, [0] * prompt + [1] * agent, [-1] * prompt + turns, behaviour,
                              [0.0] * prompt + [1.0 if i % 2 else -0.5] * agent, i, agent))
    return samples


def _update(tmp_path, samples, **overrides):
    trainer = Trainer(_config(tmp_path, **overrides), progress=False)
    stats = trainer.update(samples, iteration=1)
    return stats, torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


def test_the_ratio_level_is_chosen_once(tmp_path):
    for level in ("token", "turn", "sequence"):
        trainer = Trainer(_config(tmp_path, ratio_level=level), progress=False)
        assert trainer.log_ratio is RATIO_LEVELS[level]


def test_turn_ratio_equals_token_ratio_when_every_turn_is_one_token(tmp_path):
    samples = _samples(one_token_turns=True)
    token_stats, token_weights = _update(tmp_path, samples, ratio_level="token")
    turn_stats, turn_weights = _update(tmp_path, samples, ratio_level="turn")
    assert token_stats["loss"] == pytest.approx(turn_stats["loss"], abs=1e-7)
    assert torch.allclose(token_weights, turn_weights, atol=1e-7)
    _, seq_weights = _update(tmp_path, _samples(one_token_turns=False), ratio_level="sequence")
    _, multi_weights = _update(tmp_path, _samples(one_token_turns=False), ratio_level="turn")
    assert not torch.allclose(seq_weights, multi_weights)   # two turns per sample: the levels differ


def test_micro_batches_accumulate_to_the_same_update(tmp_path):
    samples = _samples(one_token_turns=False)
    one_stats, one = _update(tmp_path, samples, micro_batch_size=1, ratio_level="turn")
    eight_stats, eight = _update(tmp_path, samples, micro_batch_size=8, ratio_level="turn")
    assert one_stats["loss"] == pytest.approx(eight_stats["loss"], abs=1e-6)
    assert torch.allclose(one, eight, atol=1e-6)


def test_make_batch_carries_turn_index_and_weights():
    batch = make_batch(_samples(one_token_turns=False, n=2, length=8), [0.5, 2.0], pad_id=0, device="cpu")
    assert batch.turn_index.shape == batch.loss_mask.shape == (2, 7)
    assert batch.turn_index[0].tolist() == [-1] * 5 + [0, 1]
    assert batch.weights[1].tolist() == [0.0] * 5 + [2.0, 2.0]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"dual_clip": 1.0}, "dual_clip must be > 1"), ({"clip_eps_high": 0}, "clip_eps_high must be > 0"),
    ({"ratio_level": "step"}, "ratio_level: 'step' is not one of token, turn, sequence"),
    ({"clip_bias_tau": 2.0}, "clip_bias_tau applies with clip_bias_norm: true only"),
    ({"clip_bias_norm": True, "clip_bias_tau": 0.0}, "clip_bias_tau must be > 0")])
def test_clip_settings_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def _off_policy_samples(n=4, length=12):
    """Behaviour log-probs far from the model's, so that many tokens are clipped."""
    samples = _samples(one_token_turns=False, n=n, length=length)
    for i, sample in enumerate(samples):
        sample.behaviour_logprobs = [0.0 if m == 0 else (-9.0 if (i + t) % 2 else -1.0)
                                     for t, m in enumerate(sample.loss_mask)]
    return samples


def test_clip_bias_norm_with_a_huge_tau_is_plain_ppo_exactly(tmp_path):
    samples = _off_policy_samples()
    plain_stats, plain = _update(tmp_path, samples)
    on_stats, on = _update(tmp_path, samples, clip_bias_norm=True, clip_bias_tau=1e12)
    assert torch.equal(plain, on)
    assert on_stats["clip_fraction"] > 0.2 and on_stats["clip_bias_norm_max"] > 0
    assert "clip_bias_norm_max" not in plain_stats


def test_clip_bias_norm_equals_a_per_token_brute_force(tmp_path):
    """‖C‖ accumulated over micro-batches = the norm of Σ over clipped tokens of w_t Â_t weight_t ∇log π(y_t),
    each token's gradient taken on its own."""
    from turnrl.agents.policy import token_logprobs

    samples = _off_policy_samples(n=4)
    config = _config(tmp_path, clip_bias_norm=True, micro_batch_size=2, minibatch_size=4)
    trainer = Trainer(config, progress=False)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    weights = [trainer.token_weight(s) for s in samples]
    batch = make_batch(samples, weights, trainer.policy.pad_id, "cpu")
    normaliser = float(sum(w * sum(s.loss_mask) for w, s in zip(weights, samples)))
    new = token_logprobs(trainer.model, batch.input_ids, batch.attention_mask)
    ratio = torch.exp((new - batch.behaviour) * batch.loss_mask)
    _, clipped = ppo_clip_loss(ratio, batch.advantages, config.clip_eps)
    total = [torch.zeros_like(p) for p in params]
    for b, t in clipped.nonzero().tolist():
        grads = torch.autograd.grad(new[b, t], params, retain_graph=True, allow_unused=True)
        coef = float((ratio[b, t] * batch.advantages[b, t] * batch.weights[b, t]).detach()) / normaliser
        total = [acc + coef * (torch.zeros_like(p) if g is None else g) for acc, p, g in zip(total, params, grads)]
    brute = float(torch.cat([g.flatten() for g in total]).norm())
    stats = trainer.update(samples, iteration=1)
    assert stats["optimizer_steps"] == 1 and brute > 0
    assert stats["clip_bias_norm_max"] == pytest.approx(brute, rel=1e-4)


def test_the_normaliser_scales_the_gradient_by_tau_over_the_norm():
    from accelerate import Accelerator

    from turnrl.algorithms.trainer import ClipBiasNormaliser

    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    weight.grad = torch.tensor([0.5, -1.0])
    normaliser = ClipBiasNormaliser([weight], tau=1.0, accelerator=Accelerator(cpu=True))
    ones = torch.ones(2)
    normaliser.accumulate(weight, torch.tensor([3.0, 4.0]), ones, ones, 1.0)   # ratio = weight: C = (3, 4), |C| = 5
    assert normaliser.scale_gradients() == pytest.approx(5.0)
    assert torch.allclose(weight.grad, torch.tensor([0.1, -0.2]))
    assert normaliser.scale_gradients() == 0.0                            # nothing accumulated since


@pytest.mark.slow
def test_turn_ratio_with_clip_bias_norm_through_train(tmp_path):
    import json

    from turnrl.algorithms.trainer import train

    config = _config(tmp_path, ratio_level="turn", clip_bias_norm=True, iterations=2, tasks_per_iteration=2,
                     group_size=2, max_turns=2, max_new_tokens=6, checkpoint_every=0, invalid_penalty=0.3)
    rows = [json.loads(line) for line in (train(config, progress=False) / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [1, 2]
    for row in rows:
        assert row["clip_bias_norm_max"] >= row["clip_bias_norm_mean"] >= 0.0


def test_ratio_tail_statistics(tmp_path):
    from turnrl.algorithms.trainer import ratio_tail

    tail = ratio_tail(torch.tensor([0.5] + [1.0] * 98 + [4.0]))
    assert tail["ratio_p50"] == 1.0 and tail["ratio_p1"] < 1.0 < tail["ratio_p99"] <= 4.0
    assert 0.0 < tail["abs_log_ratio_p99"] <= float(torch.tensor(4.0).log())
    stats, _ = _update(tmp_path, _off_policy_samples())
    assert stats["ratio_p1"] <= stats["ratio_p50"] <= stats["ratio_p99"]
    assert stats["ratio_min"] <= stats["ratio_p1"] and stats["ratio_p99"] <= stats["ratio_max"]
    empty, _ = _update(tmp_path, [])
    assert empty["ratio_p99"] is None


def test_group_identity_and_policy_version_survive_mixing(tmp_path):
    from turnrl.algorithms.trainer import episode_turn_advantages
    from turnrl.episode import episode_samples

    trainer = Trainer(_config(tmp_path, tasks_per_iteration=2, group_size=2, max_turns=1, max_new_tokens=4),
                      progress=False)
    third, _ = trainer.collect(3)
    first, _ = trainer.collect(1)
    assert {e.group_id for e in third} == {(3, 0, 0), (3, 0, 1)} and {e.policy_version for e in third} == {2}
    mixed = third + first   # same indices, different iterations: four groups, not two
    assert len({e.group_id for e in mixed}) == 4
    advantages = episode_turn_advantages(trainer.config, mixed)
    assert len(advantages) == len(mixed) == 8
    samples = [s for i, (e, a) in enumerate(zip(mixed, advantages)) for s in episode_samples(e, a, i)]
    assert [s.policy_version for s in samples] == [2] * 4 + [0] * 4
