"""End to end on a toy environment, through the command line: `turnrl search` writes trees, episodes and pairs;
the episodes train with `turnrl train --search_episodes`; `turnrl agentq` runs search -> DPO -> evaluation and
search -> policy gradient -> evaluation; `turnrl eval --search` acts by tree search."""

from __future__ import annotations

import json

import pytest
import yaml
from datasets import load_from_disk
from typer.testing import CliRunner

from turnrl.cli import app
from turnrl.episode import Episode

pytestmark = pytest.mark.usefixtures("one_thread")
LIGHTS = ["--env", "lights", "--env-kwargs", '{"n_lamps": 1}']
SMALL_SEARCH = ["--simulations", "6", "--branching", "2", "--max-turns", "2", "--max-new-tokens", "8",
                "--alpha", "1.0", "--exploration", "3"]


def run(args):
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def last_json(output: str) -> dict:
    """The one-line JSON summary a command prints last (stderr's progress bars share the runner's output)."""
    line = [line for line in output.splitlines() if line.strip()][-1]
    return json.loads(line[line.index('{"'):])


@pytest.fixture(scope="module")
def searched(tmp_path_factory, nudged_tiny):
    folder = tmp_path_factory.mktemp("search")
    summary = last_json(run(["search", *LIGHTS, "--model", str(nudged_tiny), "--tasks", "3", "--output-dir",
                             str(folder), *SMALL_SEARCH]))
    return folder, summary


def test_search_writes_trees_episodes_and_pairs(searched):
    folder, summary = searched
    trees = [json.loads(line) for line in (folder / "trees.jsonl").read_text().splitlines()]
    assert len(trees) == summary["tasks"] == 3
    assert all(tree["root"]["visits"] == 6 and tree["root"]["chosen"] for tree in trees)
    episodes = [Episode.from_json(json.loads(line)) for line in (folder / "episodes.jsonl").read_text().splitlines()]
    assert episodes and all(e.context == "full" and e.token_ids for e in episodes)
    assert all(len(t.logprobs) == len(t.completion_ids) > 0 for e in episodes for t in e.turns)
    pairs = load_from_disk(str(folder / "pairs"))
    assert len(pairs) == summary["pairs"]
    assert all(d > 0.1 for d in pairs["delta_q"])
    assert summary["pairs_per_task"] == pytest.approx(len(pairs) / 3)


def test_search_episodes_train_with_the_policy_gradient_trainer(searched, nudged_tiny, tmp_path):
    folder, _ = searched
    run(["train", "--env", "lights", "--env_kwargs", '{"n_lamps": 1}', "--model", str(nudged_tiny),
         "--algorithm", "st-ppo", "--iterations", "1", "--tasks_per_iteration", "2", "--group_size", "2",
         "--max_turns", "2", "--max_new_tokens", "8", "--checkpoint_every", "0",
         "--search_episodes", str(folder / "episodes.jsonl"), "--output_dir", str(tmp_path / "run")])
    [row] = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert row["search_samples"] == 2


@pytest.mark.parametrize("use", ["dpo", "policy-gradient"])
def test_agentq_loop_end_to_end(use, nudged_tiny, tmp_path):
    config = {"env": "lights", "env_kwargs": {"n_lamps": 1}, "model": str(nudged_tiny), "iterations": 1,
              "tasks_per_iteration": 3, "max_turns": 2, "max_new_tokens": 8, "simulations": 6, "branching": 2,
              "alpha": 1.0, "exploration": 3.0, "use": use, "learning_rate": 1e-3, "batch_size": 2, "eval_episodes": 2,
              "eval_simulations": 2, "output_dir": str(tmp_path / "agentq"),
              "trainer": {"tasks_per_iteration": 2, "group_size": 2, "checkpoint_every": 0}}
    path = tmp_path / "agentq.yaml"
    path.write_text(yaml.safe_dump(config))
    summary = last_json(run(["agentq", "--config", str(path)]))
    rows = summary["iterations"]
    assert [row["iteration"] for row in rows] == [0, 1]
    assert all(0.0 <= row["success_rate"] <= 1.0 and "search_success_rate" in row for row in rows)
    assert (tmp_path / "agentq" / "search" / "iter_1.jsonl").is_file()
    assert len((tmp_path / "agentq" / "agentq.jsonl").read_text().splitlines()) == 2
    if use == "dpo":
        assert rows[1]["pairs"] > 0 and rows[1]["margin_after"] > rows[1]["margin_before"]
        assert (tmp_path / "agentq" / "iter_1" / "final" / "adapter_config.json").is_file()
    else:
        assert (tmp_path / "agentq" / "iter_1" / "train" / "final").is_dir()
        assert summary["model"].endswith("final")


def test_agentq_config_errors_name_the_valid_choices(tmp_path):
    result = CliRunner().invoke(app, ["agentq", "--use", "sometimes"])
    assert result.exit_code == 2 and "dpo, policy-gradient" in result.output
    result = CliRunner().invoke(app, ["agentq", "--simulatoins", "3"])
    assert result.exit_code == 2 and "valid keys" in result.output


def test_eval_with_search(nudged_tiny, tmp_path):
    out = tmp_path / "eval.json"
    run(["eval", *LIGHTS, "--model", str(nudged_tiny), "--episodes", "2", "--max-turns", "2", "--max-new-tokens", "8",
         "--search", "--simulations", "3", "--output", str(out)])
    summary = json.loads(out.read_text())
    assert summary["search"] is True and summary["simulations"] == 3 and summary["episodes"] == 2
    assert summary["env_steps"] >= 2
    assert len(out.with_suffix(".jsonl").read_text().splitlines()) == 2
    result = CliRunner().invoke(app, ["eval", *LIGHTS, "--policy", "expert", "--search"])
    assert result.exit_code == 2 and "--model" in result.output
