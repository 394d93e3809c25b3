"""Held-out evaluations of `turnrl train`: which phases run (`eval_phases`) and on which further splits
(`eval_extra_splits`, eval.json keys PHASE@SPLIT), and the settings that would do nothing refused up front."""

from __future__ import annotations

import json

import pytest

from turnrl.algorithms.config import ConfigError, load_config
from turnrl.algorithms.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = {"env": "lights", "model": "tiny", "iterations": 1, "tasks_per_iteration": 1, "group_size": 2, "max_turns": 2,
        "max_new_tokens": 4, "checkpoint_every": 0, "eval_episodes": 2}


def test_phases_and_extra_splits_are_evaluated_as_asked(tmp_path):
    config = load_config(None, BASE | {"eval_phases": ["after_rl"], "eval_extra_splits": ["train"],
                                       "output_dir": str(tmp_path / "run")})
    run_dir = train(config, progress=False)
    evals = json.loads((run_dir / "eval.json").read_text())
    assert list(evals) == ["after_rl", "after_rl@train"]
    assert evals["after_rl"]["split"] == "test" and evals["after_rl@train"]["split"] == "train"
    assert evals["after_rl@train"]["episodes"] == 2
    tasks = [json.loads(line)["task"] for line in (run_dir / "eval_after_rl@train.jsonl").read_text().splitlines()]
    from turnrl.environments import make_env

    assert tasks == list(make_env("lights").tasks("train"))[:2]


def test_default_phases_follow_the_warm_start():
    assert load_config(None, BASE).eval_phases == ["zero_shot", "after_rl"]
    warm = BASE | {"warm_start_episodes": 2}
    assert load_config(None, warm).eval_phases == ["zero_shot", "warm_start", "after_rl"]
    assert load_config(None, {"env": "lights"}).eval_phases is None


@pytest.mark.parametrize("overrides, message", [
    ({"eval_phases": ["after_rl", "later"]}, "eval_phases must be a non-empty list of zero_shot, warm_start, after_rl"),
    ({"eval_phases": []}, "eval_phases must be a non-empty list"),
    ({"eval_phases": ["warm_start"]}, "warm_start needs warm_start_episodes > 0"),
    ({"eval_extra_splits": ["test"]}, "other than eval_split"),
    ({"eval_extra_splits": "train"}, "eval_extra_splits must be a list"),
    ({"eval_episodes": 0, "eval_phases": ["after_rl"]}, "eval_phases applies with eval_episodes > 0 only"),
    ({"eval_episodes": 0, "eval_extra_splits": ["train"]}, "eval_extra_splits applies with eval_episodes > 0 only"),
])
def test_settings_that_would_do_nothing_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, BASE | overrides)
