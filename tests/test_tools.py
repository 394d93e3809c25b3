"""ToolEnvironment: tool schemas from signatures and docstrings, argument checks, every error path,
timeouts, async tools, splits, experts; the examples as a user's file and as an installed entry point."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Literal, Optional

import pytest
import test_environments as contract
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from turnrl.environments import ToolEnvironment, list_envs, load_env_module, make_env, registry
from turnrl.environments.tools import check_argument, tool_schema

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def add(a: int, b: int = 2) -> int:
    """Add two integers.

    Args:
        a: the first number.
        b (int): the second number,
            two by default.

    Returns:
        The sum.
    """
    return a + b


def scale(values: list[float], factor: float, label: Optional[str] = None,  # noqa: UP045 - Optional on purpose
          mode: Literal["up", "down"] = "up", options: dict[str, bool] | None = None, extra: Any = None) -> dict:
    """Scale a list of numbers.

    :param values: the numbers.
    :param float factor: the factor.
    """
    return {"values": [v * factor for v in values], "label": label, "mode": mode}


def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"boom: {reason}")


def nap(seconds: float) -> str:
    """Sleep, then say so."""
    time.sleep(seconds)
    return "awake"


async def async_nap(seconds: float) -> str:
    """Sleep without blocking, then say so."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


def long_text() -> str:
    """A long result."""
    return "x" * 50


def reward(task, answer):
    return float(answer == task["answer"])


def make(**kwargs) -> ToolEnvironment:
    tasks = [{"prompt": "What is 2 + 3?", "answer": "5"}, {"prompt": "Warm up.", "answer": "", "split": "dev"}]
    defaults = {"tools": [add, scale, explode, nap, async_nap, long_text], "tasks": tasks, "reward": reward,
                "test_tasks": [{"prompt": "What is 7 + 8?", "answer": "15"}], "timeout": 0.3, "max_result_chars": 20}
    return ToolEnvironment(**{**defaults, **kwargs})


def call(name, **arguments) -> str:
    return f"<tool>{json.dumps({'name': name, 'arguments': arguments})}</tool>"


# --- schemas ---------------------------------------------------------------------------------------------


def test_schema_from_signature_and_google_docstring():
    assert tool_schema(add) == {"type": "function", "function": {
        "name": "add", "description": "Add two integers.",
        "parameters": {"type": "object", "required": ["a"], "properties": {
            "a": {"type": "integer", "description": "the first number."},
            "b": {"type": "integer", "description": "the second number, two by default.", "default": 2}}}}}


def test_schema_types_and_sphinx_docstring():
    function = tool_schema(scale)["function"]
    assert function["description"] == "Scale a list of numbers."
    assert function["parameters"]["required"] == ["values", "factor"]
    assert function["parameters"]["properties"] == {
        "values": {"type": "array", "items": {"type": "number"}, "description": "the numbers."},
        "factor": {"type": "number", "description": "the factor."},
        "label": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "mode": {"type": "string", "enum": ["up", "down"], "default": "up"},
        "options": {"anyOf": [{"type": "object", "additionalProperties": {"type": "boolean"}}, {"type": "null"}],
                    "default": None},
        "extra": {"default": None},
    }


def test_schema_refuses_what_json_cannot_carry():
    def tupled(pair: tuple[int, int]) -> int:
        """No tuples."""
        return 0

    def keyed(table: dict[int, str]) -> int:
        """No int keys."""
        return 0

    def starred(*values: int) -> int:
        """No *args."""
        return 0

    with pytest.raises(TypeError, match="tool tupled, parameter 'pair': unsupported type hint"):
        tool_schema(tupled)
    with pytest.raises(TypeError, match="dict keys must be str"):
        tool_schema(keyed)
    with pytest.raises(TypeError, match="no \\*args"):
        tool_schema(starred)
    with pytest.raises(TypeError, match="named function"):
        ToolEnvironment(tools=[lambda x: x], tasks=[{"prompt": "p"}], reward=reward)
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        ToolEnvironment(tools=[add, add], tasks=[{"prompt": "p"}], reward=reward)


@pytest.mark.parametrize(("value", "annotation", "error"), [
    (3, int, None), (True, int, "must be an integer, got true (a boolean)"), (3.0, int, "must be an integer"),
    (3, float, None), (2.5, float, None), (False, float, "must be a number"), (True, bool, None),
    (1, bool, "must be true or false"), ("x", str, None), (None, str, "must be a string, got null"),
    ([1, 2], list[int], None), ([1, "2"], list[int], "item 1 must be an integer"), ("12", list[int], "must be a list"),
    ({"a": True}, dict[str, bool], None), ({"a": 1}, dict[str, bool], "entry 'a' must be true or false"),
    (None, Optional[int], None), ("3", int | None, "must be an integer"),  # noqa: UP045
    ("up", Literal["up", "down"], None), ("left", Literal["up", "down"], 'must be one of "up", "down"'),
    (1, Literal[True], "must be one of true"), ({"any": [1]}, Any, None),
])
def test_check_argument(value, annotation, error):
    found = check_argument(value, annotation)
    assert found == error if error is None else (found is not None and error in found)


# --- turns and every error path ------------------------------------------------------------------


def test_a_tool_call_and_a_correct_answer():
    env = make()
    assert env.reset(task=0) == "What is 2 + 3?"
    assert env.tool_schemas[0]["function"]["name"] == "add"
    assert "<tool>" in env.instructions and "add" in env.instructions and "Add two integers" not in env.instructions
    result = env.step('<think>use add</think><tool>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool>')
    assert result.observation == "<tool_response>5</tool_response>"
    assert result.info == {"success": False, "invalid": False} and not result.done
    json_result = env.step(call("scale", values=[1, 2.5], factor=2))
    assert json_result.observation == '<tool_response>{"values": [2, 5.0],… [cut: 49 characters in all]' \
                                      "</tool_response>"
    done = env.step("<answer> 5 </answer>")
    assert done.reward == 1.0 and done.done and done.info == {"success": True, "invalid": False, "score": 1.0}
    assert env.step("<answer>5</answer>") == env.step("x")  # over: no more reward
    assert env.step("x").reward == 0.0 and env.step("x").info["invalid"]


@pytest.mark.parametrize(("response", "message"), [
    ("no tags at all", "Error: no complete <tool>…</tool> or <answer>…</answer> in the response"),
    ("<tool>{'name': 'add'}</tool>", "Error: the <tool> content is not valid JSON (Expecting property name"),
    ("<tool>" + "[" * 100_000 + "</tool>", "Error: the <tool> content is not valid JSON (maximum recursion"),
    ('<tool>{"name": "add", "arguments": {"a": ' + "9" * 5000 + "}}</tool>",
     "Error: the <tool> content is not valid JSON (Exceeds the limit"),
    ('<tool>["add", 1]</tool>', 'Error: a tool call is a JSON object {"name": "tool name", "arguments": {...}}'),
    ('<tool>{"name": "subtract", "arguments": {}}</tool>',
     "Error: unknown tool 'subtract'; the tools are: add, scale, explode, nap, async_nap, long_text"),
    ('<tool>{"name": "add", "arguments": [1, 2]}</tool>', 'Error: "arguments" must be a JSON object, got a list'),
    ('<tool>{"name": "add", "arguments": "{not json"}</tool>', "Error: the arguments of add are a string that is not valid JSON"),
    (call("add", b=1), "Error: missing argument 'a' for add"),
    (call("add", a=1, c=2), "Error: unexpected argument 'c' for add; it takes: a, b"),
    (call("add", a="1"), "Error: argument 'a' of add must be an integer, got \"1\" (a string)"),
    (call("add", a=True), "Error: argument 'a' of add must be an integer, got true (a boolean)"),
    (call("scale", values=[1, "x"], factor=1), "Error: argument 'values' of scale item 1 must be a number"),
    (call("explode", reason="testing"), "Error: the tool explode raised RuntimeError: boom: testing"),
    (call("nap", seconds=5), "Error: the tool nap did not finish within 0.3 s"),
    (call("async_nap", seconds=5), "Error: the tool async_nap did not finish within 0.3 s"),
    ("<answer></answer>", "Error: the <answer></answer> tags are empty"),
])
def test_every_error_is_an_observation_and_the_episode_goes_on(response, message):
    env = make()
    env.reset(task=0)
    started = time.monotonic()
    result = env.step(response)
    assert time.monotonic() - started < 2.0
    assert result.observation.startswith(message), result.observation
    assert result.observation.endswith("or give the final answer inside <answer> </answer>.")
    assert result.info == {"success": False, "invalid": True} and result.reward == 0.0 and not result.done
    assert env.step(call("add", a=1, b=1)).observation == "<tool_response>2</tool_response>"


def test_async_tools_and_arguments_given_as_a_json_string():
    env = make()
    env.reset(task=0)
    assert env.step(call("async_nap", seconds=0.01)).observation == "<tool_response>slept 0.01</tool_response>"
    as_string = json.dumps({"name": "add", "arguments": json.dumps({"a": 4})})
    assert env.step(f"<tool>{as_string}</tool>").observation == "<tool_response>6</tool_response>"


def test_the_element_that_closes_last_counts():
    env = make()
    env.reset(task=0)
    result = env.step(f"<answer>4</answer> wait, {call('add', a=2, b=3)}")
    assert result.observation == "<tool_response>5</tool_response>"
    assert env.step(f"{call('add', a=1)}<answer>wrong</answer><answer>5</answer>").info["success"]


def test_out_of_turns_and_a_non_numeric_reward():
    env = make(max_turns=2)
    env.reset(task=0)
    assert not env.step(call("add", a=1)).done
    last = env.step(call("add", a=1))
    assert last.done and last.reward == 0.0
    assert last.observation == "<tool_response>3</tool_response>\nNo turns left: the episode ends without an answer."
    broken = make(reward=lambda task, answer: "yes")
    broken.reset(task=0)
    with pytest.raises(TypeError, match="finite number"):
        broken.step("<answer>5</answer>")


def test_splits_and_task_ids():
    env = make()
    assert env.tasks("train") == [0] and env.tasks("dev") == [1] and env.tasks("test") == [2]
    assert env.reset(task=2) == "What is 7 + 8?" and env.reset() == "What is 2 + 3?"
    with pytest.raises(ValueError, match="valid splits: dev, test, train"):
        env.tasks("validation")
    with pytest.raises(ValueError, match="integers 0..2"):
        env.reset(task=3)
    with pytest.raises(ValueError, match="integers"):
        env.reset(task="0")
    with pytest.raises(TypeError, match="'prompt' string"):
        make(tasks=[{"question": "no prompt"}])
    with pytest.raises(ValueError, match="valid splits: dev, train"):
        make(test_tasks=None).tasks("test")
    with pytest.raises(RuntimeError, match="reset"):
        make().step("<answer>5</answer>")


def test_experts():
    scripted = make(tasks=[{"prompt": "p", "answer": "3", "expert": [call("add", a=1), "<answer>3</answer>"]}])
    scripted.reset(task=0)
    assert scripted.expert_action() == call("add", a=1)
    scripted.step(scripted.expert_action())
    assert scripted.step(scripted.expert_action()).info["success"] and scripted.expert_action() is None

    def expert(task, history):
        return call("add", a=7, b=8) if not history else f"<answer>{history[-1][1][15:-16]}</answer>"

    with_callable = make(expert=expert)
    with_callable.reset(task=2)
    with_callable.step(with_callable.expert_action())
    assert with_callable.step(with_callable.expert_action()).info == {"success": True, "invalid": False,
                                                                       "score": 1.0}
    none = make()
    none.reset(task=0)
    assert none.expert_action() is None


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(max_size=40) | st.sampled_from([
    "<tool>", "</tool>", "<answer>5</answer>", call("add", a=1), call("nap", seconds=0.0), '<tool>{"name": 1}</tool>',
    '<tool>{"name": "add", "arguments": {"a": 1e400}}</tool>', "<tool>null</tool>"]), min_size=1, max_size=5))
def test_arbitrary_responses_never_raise(responses):
    env = make()
    env.reset(task=0)
    for response in responses:
        result = env.step(response)
        assert isinstance(result.info["success"], bool) and isinstance(result.info["invalid"], bool)


# --- the examples ------------------------------------------------------------------------------------


@pytest.fixture
def example_registered(monkeypatch):
    """The example file loaded; its registration and module vanish after the test."""
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    before = set(sys.modules)
    load_env_module(str(EXAMPLES / "arithmetic_env.py"))
    yield "arithmetic"
    for name in set(sys.modules) - before:
        if name.startswith("turnrl_user_env_"):
            del sys.modules[name]
    for key in [key for key in contract._ENV_CACHE if key[0] == "arithmetic"]:
        del contract._ENV_CACHE[key]


def test_the_example_file_is_short_and_complete(example_registered):
    assert len((EXAMPLES / "arithmetic_env.py").read_text().splitlines()) < 40
    env = make_env("arithmetic")
    assert [tool["function"]["name"] for tool in env.tool_schemas] == ["add", "multiply"]
    for task in env.tasks("test"):
        results = contract.play_expert(env, task)
        assert results[-1].info["success"] and len(results) == 3


def test_the_example_passes_the_contract_tests(example_registered):
    name = example_registered
    contract.test_reset_returns_text_and_splits_are_not_empty(name)
    contract.test_expert_succeeds(name)
    contract.test_invalid_action_is_flagged(name)
    for action in ["", "9" * 100_000, "\u202e\U0001f600" * 1000, "\x00\n" * 50]:
        contract.test_extreme_actions_never_raise(name, action)
    contract.test_arbitrary_actions_never_raise(name=name)
    contract.test_same_task_and_seed_give_the_same_episode(name=name)
    contract.test_snapshot_restore_gives_the_same_state_and_future(name=name)


def test_the_packaged_example_is_found_by_its_entry_point(tmp_path, monkeypatch):
    """Install the example package's metadata (its declared entry point, read from its pyproject.toml) into
    a folder on sys.path, as pip would, and let make_env find it with no --env-module."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    package = EXAMPLES / "arithmetic_pkg"
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"]["turnrl.environments"]
    dist_info = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: "
                                        f"{project['version']}\n")
    (dist_info / "entry_points.txt").write_text(
        "[turnrl.environments]\n" + "".join(f"{name} = {target}\n" for name, target in declared.items()))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    try:
        assert "arithmetic-pkg" in list_envs()
        env = make_env("arithmetic-pkg", max_turns=4)
        assert env.max_turns == 4 and type(env).__name__ == "ToolEnvironment"
        assert contract.play_expert(env, env.tasks("test")[0])[-1].info["success"]
    finally:
        sys.modules.pop("turnrl_arithmetic", None)


# --- end to end through the CLI (need a model: slow) ---------------------------------------------------


def cli(*args):
    from turnrl.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_cli_eval_sft_and_train_on_the_example_file(tmp_path, example_registered):
    module = ["--env-module", str(EXAMPLES / "arithmetic_env.py"), "--env", "arithmetic"]
    cli("eval", *module, "--policy", "expert", "--episodes", "4", "--output", tmp_path / "expert.json")
    assert json.loads((tmp_path / "expert.json").read_text())["success_rate"] == 1.0
    cli("sft", *module, "--model", "tiny", "--episodes", "4", "--epochs", "1", "--output-dir", tmp_path / "sft")
    cli("eval", *module, "--model", tmp_path / "sft" / "final", "--episodes", "2", "--max-new-tokens", "16",
        "--output", tmp_path / "model.json")
    summary = json.loads((tmp_path / "model.json").read_text())
    assert summary["episodes"] == 2 and 0.0 <= summary["success_rate"] <= 1.0
    cli("train", "--env_module", str(EXAMPLES / "arithmetic_env.py"), "--env", "arithmetic", "--iterations", "1",
        "--tasks_per_iteration", "2", "--group_size", "2", "--max_turns", "2", "--max_new_tokens", "8",
        "--checkpoint_every", "0", "--output_dir", tmp_path / "run")
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and re.match(r"\d", str(metrics[0]["iteration"]))
