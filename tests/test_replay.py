"""Stale rollouts trained on again: the buffer's staleness bookkeeping, group identity under mixing, and a
run that mixes earlier iterations' episodes with fresh ones (agreement checked on fresh samples only)."""

from __future__ import annotations

import json

import pytest

from turnrl.algorithms.config import ConfigError, load_config
from turnrl.algorithms.replay import ReplayBuffer
from turnrl.algorithms.trainer import train
from turnrl.episode import Episode

pytestmark = pytest.mark.usefixtures("one_thread")


def _episode(version: int, index: int = 0) -> Episode:
    return Episode("lights", 0, 0, (version + 1, 0, index), "full", policy_version=version)


def test_the_buffer_keeps_the_last_max_staleness_versions():
    buffer = ReplayBuffer(max_staleness=2)
    assert buffer.stale(0) == []
    buffer.add([_episode(0), _episode(0, 1)])
    assert [e.policy_version for e in buffer.stale(1)] == [0, 0]
    buffer.add([_episode(1)])
    assert [e.policy_version for e in buffer.stale(2)] == [0, 0, 1]
    buffer.add([_episode(2)])
    assert [e.policy_version for e in buffer.stale(3)] == [1, 2]      # version 0 is 3 behind: dropped
    assert [e.policy_version for e in buffer.stale(3)] == [1, 2]      # asking again changes nothing
    assert ReplayBuffer(0).stale(5) == []
    with pytest.raises(ValueError, match="max_staleness must be >= 0"):
        ReplayBuffer(-1)


def test_a_negative_staleness_is_a_config_error():
    with pytest.raises(ConfigError, match="max_staleness must be >= 0"):
        load_config(None, {"max_staleness": -1})


@pytest.mark.slow
def test_a_run_trains_on_stale_and_fresh_rollouts(tmp_path, nudged_lights):
    config = load_config(None, {
        "env": "lights", "env_kwargs": {"n_lamps": 2}, "model": str(nudged_lights), "tasks_per_iteration": 2,
        "group_size": 4, "max_turns": 2, "max_new_tokens": 8, "iterations": 3, "max_staleness": 1,
        "learning_rate": 1e-2, "checkpoint_every": 0, "output_dir": str(tmp_path / "run")})
    rows = [json.loads(line) for line in (train(config, progress=False) / "metrics.jsonl").read_text().splitlines()]
    fresh = [row["samples"] - row["stale_samples"] for row in rows]
    assert rows[0]["stale_samples"] == 0
    assert rows[1]["stale_samples"] == fresh[0] and rows[2]["stale_samples"] == fresh[1]   # one iteration back
    for row in rows:
        if row["logprob_max_abs_diff"] is not None:   # measured on fresh samples only, before the first step
            assert row["logprob_max_abs_diff"] <= 1e-4
    assert any("clip_fraction_staleness1" in row for row in rows[1:])


@pytest.fixture(scope="module")
def nudged_lights(tmp_path_factory, train_on_turn_ends):
    """`tiny` nudged towards writing valid actions, so that episodes differ in return and updates compute."""
    from turnrl.agents.models import load_model, save_model
    from turnrl.algorithms.sft import expert_demonstrations

    model, tokenizer = load_model("tiny")
    demos = expert_demonstrations(tokenizer, "lights", list(range(8)), env_kwargs={"n_lamps": 1}, context="window:0")
    train_on_turn_ends(model, tokenizer, demos)
    folder = tmp_path_factory.mktemp("nudged") / "model"
    save_model(model, tokenizer, folder, "tiny")
    return folder
