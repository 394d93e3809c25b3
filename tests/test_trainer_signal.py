"""Where the trainer spends compute: samples without signal are skipped with the loss and the update
unchanged, dynamic sampling keeps informative groups only and stops at its cap, the behaviour-cloning
warm start is cached by its settings, and the held-out evaluation phases are written to eval.json."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from turnrl.algorithms.config import ConfigError, TrainConfig, load_config
from turnrl.algorithms.trainer import Trainer, train
from turnrl.environments import Environment, StepResult, register_env, registry
from turnrl.episode import Sample

pytestmark = pytest.mark.usefixtures("one_thread")

_SLOTS = itertools.count()


class Parity(Environment):
    """One turn. On tasks below 100 the reward is the parity of the environment instance's creation number,
    so a group's members (different instances) get different returns; tasks from 100 on always pay 0."""

    parses_responses = True

    def __init__(self):
        self.slot = next(_SLOTS)

    def tasks(self, split="train"):
        return list(range(2)) + list(range(100, 110)) if split == "train" else [0, 100]

    def reset(self, task=None, seed=None):
        self.task = int(task or 0)
        return "Say anything."

    def step(self, action):
        reward = float(self.slot % 2) if self.task < 100 else 0.0
        return StepResult("Done.", reward, True, {"success": reward > 0, "invalid": False})


class FlatParity(Parity):
    def tasks(self, split="train"):
        return list(range(100, 104))


@pytest.fixture
def parity_envs(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    register_env("parity", Parity)
    register_env("flat-parity", FlatParity)


def _config(tmp_path, **overrides) -> TrainConfig:
    values = {"env": "lights", "env_kwargs": {"n_lamps": 1}, "model": "tiny", "tasks_per_iteration": 2,
              "group_size": 2, "max_turns": 2, "max_new_tokens": 6, "minibatch_size": 4, "micro_batch_size": 2,
              "output_dir": str(tmp_path / "run"), "learning_rate": 1e-3}
    values.update(overrides)
    return load_config(None, values)


def _samples(advantages: list[float], length: int = 12) -> list[Sample]:
    samples = []
    for i, adv in enumerate(advantages):
        ids = [(7 * i + 3 * t) % 50 + 5 for t in range(length)]
        half = length // 2
        samples.append(Sample(ids, [0] * half + [1] * half, [-1] * half + [0] * half, [0.0] * half + [-3.0] * half,
                              [0.0] * half + [adv] * half, i, half))
    return samples


def _weights(trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])


@pytest.mark.parametrize("aggregation", ["episode", "token"])
def test_zero_signal_samples_are_skipped_and_change_nothing(tmp_path, aggregation):
    mixed = _samples([0.0, 1.0, 0.0, 0.0, -1.0, 0.0, 0.5, 0.0])
    results = {}
    for skip in (True, False):   # one minibatch of 8: an all-zero minibatch would take no step at all (below)
        trainer = Trainer(_config(tmp_path, loss_aggregation=aggregation, minibatch_size=8), progress=False)
        trainer.skip_zero_signal = skip
        stats = trainer.update(mixed, iteration=1)
        results[skip] = (stats, _weights(trainer))
    (skipped, w_skipped), (computed, w_computed) = results[True], results[False]
    assert skipped["skipped_samples"] == 5 and computed["skipped_samples"] == 0
    assert skipped["train_tokens"] < computed["train_tokens"]
    assert skipped["loss"] == pytest.approx(computed["loss"], abs=1e-7)
    assert skipped["optimizer_steps"] == computed["optimizer_steps"] == 1
    assert torch.allclose(w_skipped, w_computed, atol=1e-6)
    untouched = _weights(Trainer(_config(tmp_path, loss_aggregation=aggregation, minibatch_size=8), progress=False))
    assert not torch.allclose(w_skipped, untouched)


def test_an_update_without_signal_does_no_work(tmp_path):
    trainer = Trainer(_config(tmp_path), progress=False)
    before = _weights(trainer)
    stats = trainer.update(_samples([0.0] * 6), iteration=1)
    assert stats["train_tokens"] == 0 and stats["optimizer_steps"] == 0 and stats["skipped_samples"] == 6
    assert stats["logprob_max_abs_diff"] is None   # nothing computed, nothing claimed
    assert torch.equal(before, _weights(trainer))


def test_kl_gives_zero_advantage_samples_a_signal(tmp_path):
    trainer = Trainer(_config(tmp_path, kl_coef=0.1), progress=False)
    stats = trainer.update(_samples([0.0] * 4), iteration=1)
    assert stats["skipped_samples"] == 0 and stats["optimizer_steps"] == 1


def test_dynamic_sampling_keeps_informative_groups(tmp_path, parity_envs):
    trainer = Trainer(_config(tmp_path, env="parity", env_kwargs={}, tasks_per_iteration=3, group_size=2,
                              filter_groups=True, filter_groups_max_draws=6), progress=False)
    episodes, counts = trainer.collect(1)
    assert counts["groups_kept"] == 3
    # every drawn group was kept or dropped; informative groups beyond the 3 asked for are not used
    assert counts["groups_drawn"] >= counts["groups_kept"] + counts["groups_dropped"]
    assert counts["groups_dropped"] >= 1 and counts["groups_drawn"] % 3 == 0
    groups = {}
    for episode in episodes:
        groups.setdefault(episode.group_id, []).append(episode.total_reward)
    assert sorted(groups) == [(1, 0, 0), (1, 0, 1), (1, 0, 2)]   # (iteration, process, index)
    assert {e.policy_version for e in episodes} == {0}
    assert all(len(set(returns)) > 1 and len(returns) == 2 for returns in groups.values())
    assert all(e.task < 100 for e in episodes)


def test_dynamic_sampling_stops_at_its_cap(tmp_path, parity_envs):
    trainer = Trainer(_config(tmp_path, env="flat-parity", env_kwargs={}, tasks_per_iteration=2, group_size=2,
                              filter_groups=True, filter_groups_max_draws=3), progress=False)
    episodes, counts = trainer.collect(1)
    assert counts == {"groups_drawn": 6, "groups_kept": 0, "groups_dropped": 6, "drawn_episodes": 12,
                      "drawn_successes": 0}
    assert episodes == []
    stats = trainer.update([], iteration=1)
    assert stats["optimizer_steps"] == 0


def test_dynamic_sampling_settings_are_checked():
    with pytest.raises(ConfigError, match="filter_groups_max_draws applies with filter_groups"):
        load_config(None, {"filter_groups_max_draws": 3})
    with pytest.raises(ConfigError, match="must be >= 1"):
        load_config(None, {"filter_groups": True, "filter_groups_max_draws": 0})
    assert load_config(None, {"filter_groups": True}).filter_groups_max_draws == 4


def test_warm_start_settings_are_checked():
    with pytest.raises(ConfigError, match="warm_start_epochs applies with warm_start_episodes"):
        load_config(None, {"warm_start_epochs": 2})
    resolved = load_config(None, {"warm_start_episodes": 4})
    assert (resolved.warm_start_epochs, resolved.warm_start_learning_rate, resolved.warm_start_batch_size) == (
        1.0, 1e-4, 8)
    with pytest.raises(ConfigError, match="cross_turn_cache applies to context full"):
        load_config(None, {"context": "window:1", "cross_turn_cache": False})


@pytest.mark.slow
def test_warm_start_is_cached_by_its_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path / "cache"))
    settings = {"warm_start_episodes": 4, "warm_start_learning_rate": 1e-3, "warm_start_batch_size": 2}
    first = Trainer(_config(tmp_path, **settings), progress=False)
    start = _weights(first)
    assert first.warm_start() == "trained"
    trained = _weights(first)
    assert not torch.allclose(start, trained)
    second = Trainer(_config(tmp_path, **settings), progress=False)
    assert second.warm_start() == "cached"
    assert torch.equal(_weights(second), trained)
    changed = Trainer(_config(tmp_path, **{**settings, "warm_start_learning_rate": 2e-3}), progress=False)
    assert changed.warm_start() == "trained"
    other_prompts = Trainer(_config(tmp_path, **settings, show_admissible_actions=False), progress=False)
    assert other_prompts.warm_start() == "trained"
    assert len(list((tmp_path / "cache" / "warm_start").iterdir())) == 3


@pytest.mark.slow
def test_before_and_after_evaluation_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("TURNRL_CACHE", str(tmp_path / "cache"))
    config = _config(tmp_path, iterations=1, eval_episodes=3, warm_start_episodes=4, warm_start_batch_size=2,
                     checkpoint_every=0)
    run_dir = train(config, progress=False)
    evals = json.loads((run_dir / "eval.json").read_text())
    assert list(evals) == ["zero_shot", "warm_start", "after_rl"]
    for summary in evals.values():
        assert summary["episodes"] == 3 and summary["split"] == "test" and summary["policy"] == "model"
        assert {"success_rate", "mean_score", "mean_turns", "invalid_action_rate"} <= set(summary)
    for phase in evals:
        assert len((run_dir / f"eval_{phase}.jsonl").read_text().splitlines()) == 3
    assert (run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"

    plain = train(_config(tmp_path, iterations=1, eval_episodes=2, checkpoint_every=0,
                          output_dir=str(tmp_path / "plain")), progress=False)
    assert list(json.loads((plain / "eval.json").read_text())) == ["zero_shot", "after_rl"]
