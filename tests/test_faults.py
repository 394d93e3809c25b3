"""Trust under faults: an environment that raises, returns a malformed result or hangs costs only its own
episode; too many failures stop the run clearly; NaN or infinite losses skip their step; resume refuses what it
cannot honour and falls back over a corrupt checkpoint; output files are checked before work and written whole."""

from __future__ import annotations

import json
import math
import shutil
import time
from typing import ClassVar

import pytest
import torch
from typer.testing import CliRunner

from turnrl.agents.models import load_model
from turnrl.agents.policy import Policy
from turnrl.agents.rollout import EpisodeSpec, checked_result, rollout
from turnrl.algorithms.config import load_config
from turnrl.algorithms.trainer import NonFiniteError, RunError, Trainer, train
from turnrl.cli import app
from turnrl.environments import Environment, StepResult, registry
from turnrl.episode import Sample

pytestmark = pytest.mark.usefixtures("one_thread")


class FlakyEnv(Environment):
    """Task t misbehaves as FAULTS[t] says on its first step (or reset); other tasks are one-step games."""

    parses_responses = True
    instructions = "Say anything."
    FAULTS: ClassVar[dict] = {0: None, 1: "raise", 2: "nan", 3: "not-text", 4: "hang", 5: "reset", 6: None, 7: "none-info"}

    def tasks(self, split="train"):
        return list(self.FAULTS)

    def reset(self, task=None, seed=None):
        self.task = task
        if self.FAULTS[task] == "reset":
            raise ConnectionError("the server went away")
        return "Say anything."

    def step(self, action):
        fault = self.FAULTS[self.task]
        if fault == "raise":
            raise KeyError("boom")
        if fault == "hang":
            time.sleep(3)
        reward = {"nan": math.nan}.get(fault, 1.0)
        observation = 42 if fault == "not-text" else "done"
        return StepResult(observation, reward, True, None if fault == "none-info" else {"success": True})


@pytest.fixture
def flaky(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    registry.register_env("flaky", FlakyEnv)
    return "flaky"


def test_a_failing_environment_costs_only_its_episode(flaky):
    model, tokenizer = load_model("tiny")
    policy = Policy(model, tokenizer, max_new_tokens=4)
    specs = [EpisodeSpec(task, 0, task) for task in FlakyEnv.FAULTS]
    episodes = rollout(policy, [FlakyEnv() for _ in specs], specs, env_name=flaky, max_turns=2, step_timeout=0.5,
                       generator=torch.Generator().manual_seed(0))
    causes = {e.task: e.failure_cause for e in episodes}
    assert causes == {0: None, 1: "step", 2: "malformed", 3: "malformed", 4: "timeout", 5: "reset", 6: None,
                      7: None}
    assert "KeyError: 'boom'" in episodes[1].error and "ConnectionError" in episodes[5].error
    assert "not a finite number" in episodes[2].error and "not a string" in episodes[3].error
    for task in (0, 6, 7):   # the others finished normally (info None is read as {})
        assert episodes[task].stop_reason == "done" and episodes[task].total_reward == 1.0
    assert json.dumps([e.to_json() for e in episodes], allow_nan=False)   # nothing NaN reaches a file


def test_checked_result_rejects_what_cannot_be_trained_on():
    assert checked_result(StepResult("ok", 1, 0, None)) == StepResult("ok", 1.0, False, {})
    for bad in (StepResult("ok", math.inf, False), StepResult("ok", None, False), StepResult(b"x", 0.0, False),
                StepResult("ok", True, False), StepResult("ok", 0.0, False, ["x"]), ("ok", 0.0, False)):
        with pytest.raises(Exception, match="malformed"):
            checked_result(bad)


def _values(tmp_path, env, **overrides):
    values = {"env": env, "model": "tiny", "tasks_per_iteration": 8, "group_size": 1, "max_turns": 1,
              "max_new_tokens": 4, "iterations": 1, "algorithm": "ppo", "env_step_timeout": 0.5,
              "checkpoint_every": 0, "output_dir": str(tmp_path / "run")}
    values.update(overrides)
    return values


def test_a_run_drops_failed_episodes_and_goes_on(tmp_path, flaky):
    run_dir = train(load_config(None, _values(tmp_path, flaky, max_failed_fraction=0.75)), progress=False)
    [row] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert row["failed_episodes"] == 5
    assert {k: row[f"failed_{k}"] for k in ("reset", "step", "malformed", "timeout")} == \
        {"reset": 1, "step": 1, "malformed": 2, "timeout": 1}
    assert row["samples"] == 3   # advantage gae: the three good episodes are trained on


def test_grpo_drops_the_whole_group_of_a_failed_episode(tmp_path, flaky):
    config = load_config(None, _values(tmp_path, flaky, algorithm="grpo", tasks_per_iteration=2, group_size=2,
                                       seed=1))
    trainer = Trainer(config, progress=False)
    trainer.iteration_tasks = lambda iteration, draw=0: [0, 1]   # one healthy task, one whose step raises
    episodes, counts = trainer.collect(1)
    assert {e.task for e in episodes} == {0} and len(episodes) == 2
    assert (counts["groups_kept"], counts["groups_dropped"], trainer.failures) == (1, 1, {"step": 2})


def test_too_many_failures_stop_the_run_with_a_clear_message(tmp_path, flaky):
    result = CliRunner().invoke(app, ["train", *[str(a) for kv in _values(tmp_path, flaky, max_failed_fraction=0.25)
                                                 .items() for a in (f"--{kv[0]}", kv[1])]])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "5 of 8 episodes failed" in text and "max_failed_fraction 0.25" in text


def _samples(n=4, length=10, behaviour=-2.0):
    return [Sample(list(range(5, 5 + length)), [0] * 5 + [1] * (length - 5), [-1] * 5 + [0] * (length - 5),
                   [0.0] * 5 + [behaviour] * (length - 5), [0.0] * 5 + [1.0 if i % 2 else -1.0] * (length - 5),
                   i, length - 5) for i in range(n)]


def test_a_nonfinite_loss_skips_its_step_and_repeated_ones_stop_the_run(tmp_path):
    config = load_config(None, {"env": "lights", "model": "tiny", "minibatch_size": 4, "micro_batch_size": 4,
                                "max_nonfinite_steps": 2, "output_dir": str(tmp_path / "run")})
    trainer = Trainer(config, progress=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    stats = trainer.update(_samples(behaviour=math.nan), iteration=1)
    assert stats["nonfinite_steps"] == 1 and stats["optimizer_steps"] == 0
    assert all(torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))
    assert all(p.grad is None or not p.grad.abs().sum() for p in trainer.model.parameters())
    stats = trainer.update(_samples(), iteration=2)           # a good step resets the count
    assert stats["optimizer_steps"] == 1 and trainer.nonfinite_in_a_row == 0
    trainer.update(_samples(behaviour=math.nan), iteration=3)
    with pytest.raises(NonFiniteError, match="2 optimizer steps in a row"):
        trainer.update(_samples(behaviour=math.nan), iteration=4)


def test_resume_refuses_what_it_cannot_honour_and_skips_a_corrupt_checkpoint(tmp_path):
    values = {"env": "lights", "model": "tiny", "tasks_per_iteration": 1, "group_size": 2, "max_turns": 2,
              "max_new_tokens": 4, "iterations": 2, "checkpoint_every": 1, "output_dir": str(tmp_path / "run")}
    run_dir = train(load_config(None, values), progress=False)
    with pytest.raises(RunError, match=r"differs from the run's in group_size: 2 -> 3"):
        train(load_config(None, {**values, "group_size": 3}), resume=True, progress=False)
    # the latest checkpoint corrupted: resume falls back to the one before and redoes iteration 2
    weights = run_dir / "checkpoints" / "iter-000002" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    train(load_config(None, values), resume=True, progress=False)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [1, 2]
    # no intact checkpoint at all: refused, nothing overwritten
    for folder in (run_dir / "checkpoints").iterdir():
        shutil.rmtree(folder)
    before = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(RunError, match="no intact checkpoint"):
        train(load_config(None, values), resume=True, progress=False)
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_eval_checks_its_output_before_work_and_records_failures(tmp_path, flaky):
    runner = CliRunner()
    same = runner.invoke(app, ["eval", "--env", flaky, "--policy", "expert", "--output", str(tmp_path / "x.jsonl")])
    assert same.exit_code == 2 and "would be overwritten" in " ".join(same.output.split())
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unwritable = runner.invoke(app, ["eval", "--env", flaky, "--model", "tiny", "--output",
                                     str(blocker / "eval.json")])
    assert unwritable.exit_code == 2 and "cannot write to" in " ".join(unwritable.output.split())
    bad = runner.invoke(app, ["eval", "--env", flaky, "--model", "tiny", "--episodes", "0"])
    assert bad.exit_code == 2 and "at least 1" in bad.output
    out = tmp_path / "eval.json"
    ok = runner.invoke(app, ["eval", "--env", flaky, "--model", "tiny", "--episodes", "8", "--max-new-tokens", "4",
                             "--output", str(out)])
    assert ok.exit_code == 0, ok.output
    summary = json.loads(out.read_text())
    assert summary["failed_episodes"] == 5 - 1 and summary["episodes"] == 8   # no timeout in eval: task 4 sleeps
    lines = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert sum(line["stop_reason"] == "failed" for line in lines) == 4
