"""End-to-end: the `turnrl` command line as a user runs it (in process through typer's CliRunner, and
once as `python -m turnrl.cli`), with the `tiny` model and tiny sizes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors.torch import load_file
from typer.testing import CliRunner

from turnrl.agents import models
from turnrl.agents.models import load_model
from turnrl.cli import app
from turnrl.environments import registry

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--tasks_per_iteration", "2", "--group_size", "2", "--max_turns", "2", "--max_new_tokens", "8"]
METRIC_KEYS = {"success_rate", "mean_return", "mean_turns", "invalid_action_rate", "clip_fraction", "kl",
               "ratio_mean", "ratio_min", "ratio_max", "logprob_max_abs_diff", "rollout_tokens_per_s"}


def assert_logprobs_agree(row: dict) -> None:
    """Generation and training log-probs agree wherever the update computed anything; an update whose samples
    all lacked signal computed none and says so (None)."""
    if row["skipped_samples"] < row["samples"]:
        assert row["logprob_max_abs_diff"] <= 1e-4
    else:
        assert row["logprob_max_abs_diff"] is None and row["train_tokens"] == 0


SUMMARY_KEYS = {"success_rate", "mean_score", "mean_turns", "invalid_action_rate", "episodes"}

USER_ENV = '''
from turnrl.environments import Environment, StepResult, register_env


class CountdownEnv(Environment):
    """Bring a counter down to zero with `down` (`up` is valid but unhelpful)."""

    instructions = "Reply with `down` until the counter is 0."

    def __init__(self, start=2):
        self.start = start

    def tasks(self, split="train"):
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; valid splits: train, test")
        return list(range(4)) if split == "train" else list(range(4, 6))

    def reset(self, task=None, seed=None):
        self.count = self.start + (task or 0) % 2
        return f"Counter: {self.count}."

    def step(self, action):
        if action not in ("up", "down"):
            return StepResult(f"Invalid action {action!r}. Counter: {self.count}.", 0.0, False,
                              {"success": False, "invalid": True})
        self.count += 1 if action == "up" else -1
        won = self.count == 0
        return StepResult(f"Counter: {self.count}.", float(won), won, {"success": won, "invalid": False})

    def admissible_actions(self):
        return ["down", "up"]

    def expert_action(self):
        return "down"


register_env("countdown", CountdownEnv)
'''


def run(*args: str, ok: bool = True):
    """Invoke `turnrl ARGS`; check the exit code; return the result with its output."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok and result.exit_code != 0:
        raise AssertionError(f"turnrl {' '.join(map(str, args))} exited {result.exit_code}:\n{result.output}"
                             ) from result.exception
    if not ok:
        assert result.exit_code != 0, result.output
    return result


def flat(text: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(text.split())


def metrics_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """`turnrl train` with tiny on lights for 2 iterations, a checkpoint after each."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    run("train", "--env", "lights", "--model", "tiny", "--iterations", "2", "--checkpoint_every", "1", *SMALL,
        "--output_dir", run_dir)
    return run_dir


@pytest.fixture(scope="module")
def nudged_model(nudged_tiny):
    """`tiny` nudged towards valid actions (conftest's `nudged_tiny`): episodes differ in return and training has
    a non-zero gradient."""
    return nudged_tiny


@pytest.fixture
def user_env_file(tmp_path, monkeypatch):
    """A user's environment file; what it registers and imports is forgotten after the test."""
    path = tmp_path / "countdown_env.py"
    path.write_text(USER_ENV)
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    before = set(sys.modules)
    yield path
    for name in set(sys.modules) - before:
        if name.startswith("turnrl_user_env_"):
            del sys.modules[name]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if anything tries to load a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the command failed")

    monkeypatch.setattr(models, "resolve_model_path", refuse)


# ------------------------------------------------------------------------------------ envs, doctor


def test_envs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "turnrl.cli", "envs"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    names = done.stdout.split()
    assert "guess-number" in names and "lights" in names


def test_envs_with_a_user_module(user_env_file):
    names = run("envs", "--env-module", user_env_file).output.split()
    assert {"countdown", "guess-number", "lights"} <= set(names)
    result = run("envs", "--env-module", user_env_file.with_name("missing.py"), ok=False)
    assert "no such file" in flat(result.output)


@pytest.mark.slow
def test_doctor_tiny():
    result = run("doctor", "--model", "tiny")
    match = re.search(r"^logprob max abs diff: (\S+)$", result.output, re.MULTILINE)
    assert match, result.output
    assert float(match.group(1)) <= 1e-4
    assert "prefix-preserving: yes" in result.output and "OK" in result.output


# ------------------------------------------------------------------------------------------ train


@pytest.mark.slow
def test_train_writes_the_run_folder(trained_run):
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["env"] == "lights" and config["iterations"] == 2 and config["group_size"] == 2
    assert config["max_new_tokens"] == 8 and config["output_dir"] == str(trained_run)
    rows = metrics_of(trained_run)
    assert [row["iteration"] for row in rows] == [1, 2]
    for row in rows:
        assert METRIC_KEYS <= set(row), METRIC_KEYS - set(row)
        assert_logprobs_agree(row)
        assert row["mean_turns"] <= 2 and 0 <= row["invalid_action_rate"] <= 1
    assert (trained_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, tokenizer = load_model(str(trained_run / "final"))
    assert not isinstance(model, PeftModel) and tokenizer.chat_template
    assert (trained_run / "final" / "turnrl_model.json").is_file()
    # every checkpoint_every iterations and at the last one, so a finished run resumes to nothing left to do
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == ["iter-000001", "iter-000002"]


@pytest.mark.slow
def test_train_into_a_used_folder_needs_resume(trained_run):
    before = (trained_run / "metrics.jsonl").read_text()
    result = run("train", "--env", "lights", "--iterations", "2", *SMALL, "--output_dir", trained_run, ok=False)
    assert "already holds a run" in flat(result.output) and "--resume" in result.output
    assert (trained_run / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, nudged_model):
    """Run 2 iterations (checkpoint after the first), then resume to 3: the resumed iteration 2 redoes the
    uninterrupted one from the checkpoint's weights and optimizer state, so it ends with the same weights."""
    run_dir = tmp_path / "run"
    args = ["train", "--env", "lights", "--model", nudged_model, *SMALL, "--learning_rate", "1e-2",
            "--checkpoint_every", "1", "--output_dir", run_dir]
    run(*args, "--iterations", "2")
    first = metrics_of(run_dir)
    assert first[0]["zero_advantage_fraction"] < 1, "the first iteration should change the weights"
    final_weights = load_file(str(run_dir / "final" / "model.safetensors"))

    run(*args, "--iterations", "3", "--resume")
    rows = metrics_of(run_dir)
    assert [row["iteration"] for row in rows] == [1, 2, 3]
    assert rows[0] == first[0]                       # lines up to the checkpoint are kept as they were
    same = ("success_rate", "mean_return", "mean_turns", "invalid_action_rate", "train_tokens", "loss")
    assert {k: rows[1][k] for k in same} == pytest.approx({k: first[1][k] for k in same}, abs=1e-6)
    resumed = load_file(str(run_dir / "checkpoints" / "iter-000002" / "model" / "model.safetensors"))
    assert resumed.keys() == final_weights.keys()
    for name, tensor in final_weights.items():
        assert torch.allclose(resumed[name], tensor, atol=1e-6), name
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["iterations"] == 3


@pytest.mark.slow
def test_train_lora_writes_an_adapter(tmp_path):
    run_dir = tmp_path / "lora"
    run("train", "--env", "lights", "--iterations", "1", "--lora", "true", "--lora_rank", "4",
        "--checkpoint_every", "0", *SMALL, "--output_dir", run_dir)
    final = run_dir / "final"
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["r"] == 4
    assert not (final / "model.safetensors").exists()       # only the adapter is saved
    model, _ = load_model(str(final))
    assert isinstance(model, PeftModel)
    assert not (run_dir / "checkpoints").exists()


def test_train_unknown_key_fails_before_loading_a_model(tmp_path, no_model_loading):
    result = run("train", "--iteratons", "3", "--output_dir", tmp_path / "x", ok=False)
    message = flat(result.output)
    assert "iteratons" in message and "Valid keys" in message
    for key in ("iterations", "group_size", "learning_rate", "context", "output_dir"):
        assert key in message
    config = tmp_path / "typo.yaml"
    config.write_text("env: lights\ngroup_sise: 2\n")
    result = run("train", "--config", config, ok=False)
    assert "group_sise" in flat(result.output) and "group_size" in flat(result.output)
    assert not (tmp_path / "x").exists()


def test_error_messages_are_printed_verbatim(tmp_path, no_model_loading):
    config = tmp_path / "odd.yaml"
    config.write_text('"x[/b]": 1\n"[bold]y": 2\n')     # text that rich would read as markup
    result = run("train", "--config", config, ok=False)
    assert result.exit_code == 2
    assert "x[/b]" in flat(result.output) and "[bold]y" in flat(result.output)


@pytest.mark.parametrize(("args", "message"), [
    (["--context", "window:x"], "window:k"),
    (["--algorithm", "trpo"], "st-ppo"),
    (["--minibatch_size", "6"], "multiple of micro_batch_size"),
    (["--iterations"], "needs a value"),
    (["--env", "no-such-env"], "lights"),
    (["--split", "validation"], "valid splits: train, test"),
    (["--env_module", "missing_user_env.py"], "no such file"),
])
def test_train_bad_settings_fail_before_loading_a_model(tmp_path, no_model_loading, args, message):
    result = run("train", "--output_dir", tmp_path / "x", *args, ok=False)
    assert result.exit_code == 2
    assert message in flat(result.output)


def test_train_help_config_lists_every_key():
    output = run("train", "--help-config").output
    assert "learning_rate = 1e-05" in output and "context = 'full'" in output and "env_module = None" in output


# ------------------------------------------------------------------------------------------- eval


def test_eval_expert(tmp_path):
    output = tmp_path / "tmp" / "e.json"
    result = run("eval", "--env", "lights", "--policy", "expert", "--episodes", "5", "--output", output)
    summary = json.loads(output.read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["success_rate"] == 1.0 and summary["episodes"] == 5 and summary["invalid_action_rate"] == 0
    assert summary["policy"] == "expert" and summary["split"] == "test"
    lines = output.with_suffix(".jsonl").read_text().splitlines()
    assert len(lines) == 5
    episodes = [json.loads(line) for line in lines]
    assert all(e["success"] and e["turns"] for e in episodes)
    assert [e["task"] for e in episodes] == [200, 201, 202, 203, 204]   # the start of the test split
    assert '"success_rate": 1.0' in result.output


def test_eval_random(tmp_path):
    output = tmp_path / "r.json"
    run("eval", "--env", "guess-number", "--policy", "random", "--episodes", "4", "--max-turns", "3",
        "--output", output)
    summary = json.loads(output.read_text())
    assert SUMMARY_KEYS <= set(summary) and summary["episodes"] == 4 and 0 <= summary["success_rate"] <= 1
    assert summary["mean_turns"] <= 3
    again = tmp_path / "again.json"
    run("eval", "--env", "guess-number", "--policy", "random", "--episodes", "4", "--max-turns", "3",
        "--output", again)
    assert again.with_suffix(".jsonl").read_text() == output.with_suffix(".jsonl").read_text()   # seeded


@pytest.mark.parametrize(("args", "message"), [
    (["--policy", "expert", "--model", "tiny"], "exactly one of"),
    ([], "exactly one of"),
    (["--policy", "greedy"], "expert, random"),
    (["--policy", "expert", "--split", "dev"], "valid splits"),
    (["--model", "tiny", "--context", "window:x"], "window:k"),
    (["--policy", "expert", "--env-kwargs", "[1]"], "JSON object"),
])
def test_eval_bad_arguments(tmp_path, no_model_loading, args, message):
    result = run("eval", "--env", "lights", *args, "--output", tmp_path / "e.json", ok=False)
    assert message in flat(result.output)
    assert not (tmp_path / "e.json").exists()


@pytest.mark.slow
def test_eval_a_trained_model(trained_run, tmp_path):
    output = tmp_path / "model.json"
    run("eval", "--env", "lights", "--model", trained_run / "final", "--episodes", "3", "--max-turns", "2",
        "--max-new-tokens", "8", "--output", output)
    summary = json.loads(output.read_text())
    assert summary["episodes"] == 3 and summary["model"] == str(trained_run / "final")
    assert summary["mean_turns"] <= 2
    episodes = [json.loads(line) for line in output.with_suffix(".jsonl").read_text().splitlines()]
    assert len(episodes) == 3 and all(e["context"] == "full" and e["token_ids"] for e in episodes)


# -------------------------------------------------------------------------------------------- sft


@pytest.mark.slow
def test_sft_writes_a_loadable_model(tmp_path):
    run("sft", "--env", "lights", "--model", "tiny", "--episodes", "20", "--output-dir", tmp_path)
    model, tokenizer = load_model(str(tmp_path / "final"))
    base, _ = load_model("tiny")
    changed = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    assert changed and tokenizer.chat_template


# ----------------------------------------------------------------------------- a user environment


def test_eval_a_user_environment(user_env_file, tmp_path):
    output = tmp_path / "countdown.json"
    run("eval", "--env", "countdown", "--env-module", user_env_file, "--policy", "expert", "--episodes", "2",
        "--output", output)
    summary = json.loads(output.read_text())
    assert summary["success_rate"] == 1.0 and summary["mean_turns"] == 2.5   # tasks 4 and 5: 2 and 3 steps
    assert summary["episodes"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("spelling", ["--env_module", "--env-module"])
def test_train_a_user_environment(user_env_file, tmp_path, spelling):
    run_dir = tmp_path / "run"
    run("train", "--env", "countdown", spelling, user_env_file, "--iterations", "1", "--checkpoint_every", "0",
        *SMALL, "--output_dir", run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["env"] == "countdown" and config["env_module"] == str(user_env_file)
    assert [row["iteration"] for row in metrics_of(run_dir)] == [1]
    assert (run_dir / "final" / "model.safetensors").is_file()


def test_unknown_env_without_module_names_the_flag(tmp_path, no_model_loading):
    result = run("train", "--env", "countdown", "--output_dir", tmp_path / "x", ok=False)
    assert "unknown environment 'countdown'" in flat(result.output) and "--env-module" in flat(result.output)
    result = run("eval", "--env", "countdown", "--policy", "expert", "--output", tmp_path / "e.json", ok=False)
    assert "--env-module" in flat(result.output)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["grpo", "gigpo", "hgpo", "ppo", "turn-ppo", "s-ppo", "st-ppo", "alp"])
def test_train_each_preset_on_the_corridor(tmp_path, preset):
    run_dir = tmp_path / preset
    run("train", "--env", "corridor", "--model", "tiny", "--algorithm", preset, "--iterations", "1",
        "--tasks_per_iteration", "2", "--group_size", "3", "--max_turns", "4", "--max_new_tokens", "8",
        "--output_dir", run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    [row] = metrics_of(run_dir)
    assert METRIC_KEYS <= set(row)
    assert_logprobs_agree(row)
    if preset == "alp":   # Seq-ALP: GRPO advantages, the sequence ratio, σ per layer logged and saved
        assert (config["advantage"], config["ratio_level"], config["perturbation"]) == ("grpo", "sequence", "alp")
        assert len(row["sigma_per_layer"]) == 2 and (run_dir / "final" / "alp_sigma.pt").exists()
        return
    if preset.endswith("ppo"):   # the ST-PPO family: a turn-level critic with GAE, the preset's ratio and norm
        assert (config["advantage"], config["critic"]) == ("gae", "head")
        assert config["ratio_level"] == ("turn" if preset.startswith(("turn", "st")) else "token")
        assert config["clip_bias_norm"] == preset.startswith(("s-", "st-"))
        assert row["value_loss"] > 0 and (run_dir / "final" / "critic.pt").exists()
        assert ("clip_bias_norm_mean" in row) == config["clip_bias_norm"]
        return
    assert config["advantage"] == preset
    levels = {"grpo": 0, "gigpo": 1, "hgpo": 3}[preset]    # hgpo: window:2 -> levels 0, 1, 2
    assert {k for k in row if k.startswith("level")} == {f"level{k}_group_size" for k in range(levels)}
    shares = [row[f"steps_with_{n}_valid_levels"] for n in range(levels + 1)] if levels else []
    assert not shares or sum(shares) == pytest.approx(1.0)
    if levels:
        assert row["level0_group_size"] >= 3     # the first steps of a group of 3 share their observation
