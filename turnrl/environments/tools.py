"""ToolEnvironment: typed, documented Python functions become a tool-use environment.

```python
def add(a: int, b: int) -> int:
    \"\"\"Add two integers.

    Args:
        a: the first number.
        b: the second number.
    \"\"\"
    return a + b

env = ToolEnvironment(tools=[add], tasks=[{"prompt": "What is 2 + 3?", "answer": "5"}],
                      test_tasks=[{"prompt": "What is 7 + 8?", "answer": "15"}],
                      reward=lambda task, answer: float(answer.strip() == task["answer"]))
```

- **Tools.** Each function becomes a tool named after it, described by an OpenAI-style schema
  (`tool_schemas`) built from its signature and docstring: the docstring's text before its sections is the
  description; `Args:` (Google style) or `:param x:` lines describe the parameters; type hints give the JSON
  schema (str, int, float, bool, list[...], dict[str, ...], Optional/unions, Literal, Any) and defaults
  make a parameter optional. The prompt builder hands the schemas to the chat template (`tools=`) or
  writes them into the first message; this environment does not repeat them.
- **Turns.** The agent writes `<tool>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool>` (parsed with
  `json.loads`, never evaluated) and gets `<tool_response>5</tool_response>`, or writes `<answer>…</answer>`,
  which ends the episode with `reward(task, answer)`. When a response holds several complete elements, the
  one that closes last counts. A response with neither, bad JSON, an unknown tool, missing, unexpected or
  wrongly typed arguments (validated against the signature; a bool is not an int), an exception inside the
  tool, and a tool that runs past `timeout` seconds each give an error observation that says what went
  wrong; the step is invalid (reward 0) and the episode goes on. Every response uses one of `max_turns`
  turns; out of turns, the episode ends with reward 0.
- **Tools run** in a fresh daemon thread each call; an `async def` tool runs there under `asyncio.wait_for`,
  so a timeout cancels it. A timed-out *sync* tool cannot be killed: its thread keeps running in the
  background until the function returns. Results that are not strings are shown as JSON; results longer
  than `max_result_chars` are cut.
- **Tasks and splits.** A task is a dict with at least "prompt". Task ids are positions in
  `tasks + test_tasks`. `test_tasks` are the "test" split; a task in `tasks` goes to its own "split" key,
  "train" by default. The valid splits are the ones that have tasks.
- **Success and score.** `info["score"]` is the reward; `info["success"]` is reward >= 1.0.
- **Expert** (for `--policy expert` and `turnrl sft`): a task's "expert" list of whole responses, played in
  order, or `expert(task, history) -> response` where history is the list of (response, observation) pairs
  so far.
- **Determinism.** The same task gives the same episode only if the tools are deterministic: snapshot and
  restore replay the responses, so a tool that reads the clock, the network or a random source breaks them.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re
import threading
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

from turnrl.environments.base import Environment, StepResult

FORMAT_HINT = ('Think inside <think> </think>, then either call a tool with <tool>{"name": "tool name", '
               '"arguments": {...}}</tool> or give the final answer inside <answer> </answer>.')
_ELEMENTS = {name: re.compile(rf"<{name}>((?:(?!<{name}>).)*?)</{name}>", re.IGNORECASE | re.DOTALL)
             for name in ("tool", "answer")}
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?):\s*$")
_GOOGLE_PARAM = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_PARAM = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_SCALARS = {str: ("string", "a string"), int: ("integer", "an integer"), float: ("number", "a number"),
            bool: ("boolean", "true or false")}


# --- describing a function as a tool ---------------------------------------------------------------


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def json_schema(annotation, where: str) -> dict:
    """The JSON schema of a type hint. Unsupported hints raise TypeError naming `where`."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return {}
    if annotation is type(None):
        return {"type": "null"}
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation][0]}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is list or origin is list:
        return {"type": "array", **({"items": json_schema(args[0], where)} if args else {})}
    if annotation is dict or origin is dict:
        if args and args[0] is not str:
            raise TypeError(f"{where}: dict keys must be str (JSON object keys), got {annotation!r}")
        return {"type": "object", **({"additionalProperties": json_schema(args[1], where)} if args else {})}
    if origin is Literal:
        kinds = sorted({_SCALARS[type(a)][0] for a in args if type(a) in _SCALARS})
        return {"type": kinds[0] if len(kinds) == 1 else kinds, "enum": list(args)}
    if _is_union(annotation):
        return {"anyOf": [json_schema(a, where) for a in args]}
    raise TypeError(f"{where}: unsupported type hint {annotation!r}; use str, int, float, bool, list[...], "
                    "dict[str, ...], Optional[...], a union, Literal[...] or Any")


def _docstring_parts(fn: Callable) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a Google- or Sphinx-style docstring."""
    lines = (inspect.getdoc(fn) or "").splitlines()
    description, params, section, current = [], {}, None, None
    for line in lines:
        header = _SECTION.match(line)
        sphinx = _SPHINX_PARAM.match(line)
        if header:
            section, current = header.group(1), None
        elif sphinx:
            current = sphinx.group(1)
            params[current] = sphinx.group(2).strip()
        elif section in ("Args", "Arguments", "Parameters") and line.strip():
            google = _GOOGLE_PARAM.match(line)
            if google and len(line) - len(line.lstrip()) <= 4:
                current = google.group(1)
                params[current] = google.group(2).strip()
            elif current:
                params[current] = f"{params[current]} {line.strip()}".strip()
        elif section is None and not line.lstrip().startswith(":"):
            description.append(line.strip())
    return " ".join(" ".join(description).split()), params


def tool_schema(fn: Callable) -> dict:
    """The OpenAI-style description of `fn`: {"type": "function", "function": {name, description, parameters}}."""
    name = getattr(fn, "__name__", "")
    if not name.isidentifier():
        raise TypeError(f"a tool must be a named function (def), got {fn!r}")
    hints = typing.get_type_hints(fn)
    description, documented = _docstring_parts(fn)
    properties, required = {}, []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(f"tool {name}: parameter {param.name!r} must be a plain or keyword parameter "
                            "(no *args, **kwargs or positional-only parameters)")
        schema = json_schema(hints.get(param.name, param.empty), f"tool {name}, parameter {param.name!r}")
        if param.name in documented:
            schema["description"] = documented[param.name]
        if param.default is param.empty:
            required.append(param.name)
        else:
            try:
                json.dumps(param.default)
                schema["default"] = param.default
            except (TypeError, ValueError):
                pass
        properties[param.name] = schema
    return {"type": "function", "function": {
        "name": name, "description": description or f"The tool {name}.",
        "parameters": {"type": "object", "properties": properties, "required": required}}}


def _describe(value) -> str:
    kind = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)
    text = json.dumps(value) if isinstance(value, str | int | float | bool | type(None)) else kind
    return f"{text[:60]} ({kind})"


def check_argument(value, annotation) -> str | None:
    """None when `value` (decoded from JSON) fits the type hint, else what is wrong."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return None
    if annotation is type(None):
        return None if value is None else f"must be null, got {_describe(value)}"
    if annotation in _SCALARS:
        fits = isinstance(value, annotation) and not (annotation is not bool and isinstance(value, bool))
        if annotation is float:
            fits = isinstance(value, int | float) and not isinstance(value, bool)
        return None if fits else f"must be {_SCALARS[annotation][1]}, got {_describe(value)}"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is list or origin is list:
        if not isinstance(value, list):
            return f"must be a list, got {_describe(value)}"
        for i, item in enumerate(value):
            error = check_argument(item, args[0]) if args else None
            if error:
                return f"item {i} {error}"
        return None
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            return f"must be an object, got {_describe(value)}"
        for key, item in value.items():
            error = check_argument(item, args[1]) if args else None
            if error:
                return f"entry {key!r} {error}"
        return None
    if origin is Literal:
        if any(value == option and type(value) is type(option) for option in args):
            return None
        return f"must be one of {', '.join(json.dumps(a) for a in args)}, got {_describe(value)}"
    if _is_union(annotation):
        errors = [check_argument(value, a) for a in args]
        return None if any(e is None for e in errors) else "; or ".join(errors)
    return None


class _Tool:
    def __init__(self, fn: Callable):
        self.fn = fn
        self.schema = tool_schema(fn)
        self.name = self.schema["function"]["name"]
        self.hints = typing.get_type_hints(fn)
        self.parameters = inspect.signature(fn).parameters
        self.is_async = inspect.iscoroutinefunction(fn)

    def check(self, arguments: dict) -> str | None:
        unexpected = [key for key in arguments if key not in self.parameters]
        if unexpected:
            return (f"unexpected argument {unexpected[0]!r} for {self.name}; it takes: "
                    f"{', '.join(self.parameters) or 'no arguments'}")
        missing = [p.name for p in self.parameters.values() if p.default is p.empty and p.name not in arguments]
        if missing:
            return f"missing argument {missing[0]!r} for {self.name}"
        for key, value in arguments.items():
            error = check_argument(value, self.hints.get(key, inspect.Parameter.empty))
            if error:
                return f"argument {key!r} of {self.name} {error}"
        return None

    def call(self, arguments: dict, timeout: float) -> tuple[Any, str | None]:
        """(result, None) or (None, error text). Runs in a fresh daemon thread with a timeout."""
        outcome: dict = {}

        async def run_async():
            try:
                return await asyncio.wait_for(self.fn(**arguments), timeout)
            except asyncio.TimeoutError:
                outcome["timeout"] = True

        def target():
            try:
                outcome["result"] = asyncio.run(run_async()) if self.is_async else self.fn(**arguments)
            except BaseException as err:  # noqa: BLE001 - any failure of the user's tool becomes an observation
                outcome["error"] = err

        thread = threading.Thread(target=target, name=f"turnrl-tool-{self.name}", daemon=True)
        thread.start()
        thread.join(timeout + (0.5 if self.is_async else 0.0))  # an async tool cancels itself at `timeout`
        if thread.is_alive() or outcome.get("timeout"):
            return None, f"the tool {self.name} did not finish within {timeout:g} s"
        if "error" in outcome:
            err = outcome["error"]
            return None, f"the tool {self.name} raised {type(err).__name__}: {err}"
        return outcome.get("result"), None


# --- the environment ------------------------------------------------------------------------------


class ToolEnvironment(Environment):
    """A tool-use environment from Python functions, tasks and a reward function (see the module docstring)."""

    parses_responses = True
    stop_strings = ("</tool>", "</answer>")
    format_hint = FORMAT_HINT
    # Snapshots copy the episode state (base.py); the tools are not replayed, so restoring is cheap even for slow
    # tools, but a tool with side effects outside the environment is not undone by a restore.
    state_attributes = ("_task", "_turn", "_done", "_success", "_history")

    def __init__(self, tools: list[Callable], tasks: list[dict], reward: Callable[[dict, str], float], *,
                 test_tasks: list[dict] | None = None, max_turns: int = 8, timeout: float = 10.0,
                 instructions: str = "", expert: Callable[[dict, list], str | None] | None = None,
                 max_result_chars: int = 4_000):
        if not callable(reward):
            raise TypeError(f"ToolEnvironment: reward must be a function reward(task, answer) -> float, got {reward!r}")
        if max_turns < 1 or not timeout > 0:
            raise ValueError(f"ToolEnvironment: max_turns must be >= 1 and timeout > 0, got {max_turns}, {timeout}")
        self.tools: dict[str, _Tool] = {}
        for fn in tools:
            tool = _Tool(fn)
            if tool.name in self.tools:
                raise ValueError(f"ToolEnvironment: two tools are named {tool.name!r}")
            self.tools[tool.name] = tool
        self.tool_schemas = [tool.schema for tool in self.tools.values()]
        self.task_list: list[dict] = []
        self._splits: dict[str, list[int]] = {}
        for task, test in [(task, False) for task in tasks] + [(task, True) for task in test_tasks or []]:
            if not isinstance(task, dict) or not isinstance(task.get("prompt"), str):
                raise TypeError(f"ToolEnvironment: a task must be a dict with a 'prompt' string, got {task!r}")
            split = "test" if test else str(task.get("split", "train"))
            self._splits.setdefault(split, []).append(len(self.task_list))
            self.task_list.append(task)
        if not self._splits:
            raise ValueError("ToolEnvironment: give at least one task")
        self.reward, self.expert, self.max_turns, self.timeout = reward, expert, max_turns, timeout
        self.max_result_chars = max_result_chars
        names = ", ".join(self.tools) or "none"
        self.instructions = (
            f"{instructions.strip()}\n" if instructions.strip() else ""
        ) + (f"You can call the tools you were given ({names}). To call one, write "
             '<tool>{"name": "tool name", "arguments": {"parameter": value}}</tool> with the arguments as JSON; '
             "the result comes back inside <tool_response> </tool_response>. When you have the final answer, "
             f"write it inside <answer> </answer>. You have {max_turns} turns.")
        self._task: dict | None = None

    def tasks(self, split: str = "train") -> list:
        if split not in self._splits:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(sorted(self._splits))} "
                             "(tasks go to 'train' unless they carry a 'split' key; test_tasks= are 'test')")
        return list(self._splits[split])

    def reset(self, task=None, seed=None) -> str:
        if task is None:
            task = self._splits.get("train", next(iter(self._splits.values())))[0]
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < len(self.task_list):
            raise ValueError(f"ToolEnvironment: task ids are integers 0..{len(self.task_list) - 1}, got {task!r}")
        self._task = self.task_list[task]
        self._turn, self._done, self._success = 0, False, False
        self._history: list[tuple[str, str]] = []
        return self._task["prompt"]

    def step(self, action: str) -> StepResult:
        if self._task is None:
            raise RuntimeError("ToolEnvironment: call reset() before step()")
        if self._done:
            return StepResult("The episode is over.", 0.0, True, {"success": self._success, "invalid": True})
        self._turn += 1
        kind, content = self._parse(action)
        if kind == "answer":
            result = self._answer(content)
        elif kind == "tool":
            result = self._call(content)
        else:
            result = self._error(content)
        if not result.done and self._turn >= self.max_turns:
            self._done = True
            result = StepResult(result.observation + "\nNo turns left: the episode ends without an answer.", 0.0,
                                True, result.info)
        self._history.append((action if isinstance(action, str) else repr(action), result.observation))
        return result

    @staticmethod
    def _parse(response) -> tuple[str, str]:
        if not isinstance(response, str):
            return "error", "the response is not text"
        last = None
        for kind, pattern in _ELEMENTS.items():
            for match in pattern.finditer(response):
                if last is None or match.end() > last[0]:
                    last = (match.end(), kind, match.group(1).strip())
        if last is None:
            return "error", "no complete <tool>…</tool> or <answer>…</answer> in the response"
        return last[1], last[2]

    def _error(self, message: str) -> StepResult:
        return StepResult(f"Error: {message}. {FORMAT_HINT}", 0.0, False, {"success": False, "invalid": True})

    def _call(self, content: str) -> StepResult:
        try:
            call = json.loads(content)
        except (ValueError, RecursionError) as err:  # ValueError: also numbers past Python's digit limit
            return self._error(f"the <tool> content is not valid JSON ({err})")
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return self._error('a tool call is a JSON object {"name": "tool name", "arguments": {...}}')
        tool = self.tools.get(call["name"])
        if tool is None:
            return self._error(f"unknown tool {call['name'][:80]!r}; the tools are: {', '.join(self.tools) or 'none'}")
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):  # some models write the arguments as a JSON string, as OpenAI's API does
            try:
                arguments = json.loads(arguments)
            except (ValueError, RecursionError) as err:
                return self._error(f"the arguments of {tool.name} are a string that is not valid JSON ({err})")
        if not isinstance(arguments, dict):
            return self._error(f'"arguments" must be a JSON object, got {_describe(arguments)}')
        problem = tool.check(arguments)
        if problem:
            return self._error(problem)
        result, problem = tool.call(arguments, self.timeout)
        if problem:
            return self._error(problem)
        text = result if isinstance(result, str) else json.dumps(result, default=str, ensure_ascii=False)
        if len(text) > self.max_result_chars:
            text = text[: self.max_result_chars] + f"… [cut: {len(text):,} characters in all]"
        return StepResult(f"<tool_response>{text}</tool_response>", 0.0, False, {"success": False, "invalid": False})

    def _answer(self, answer: str) -> StepResult:
        if not answer:
            return self._error("the <answer></answer> tags are empty")
        reward = self.reward(self._task, answer)
        if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
            raise TypeError(f"ToolEnvironment: reward(task, answer) must return a finite number, got {reward!r}")
        self._done, self._success = True, reward >= 1.0
        info = {"success": self._success, "invalid": False, "score": float(reward)}
        return StepResult(f"Final answer: {answer}", float(reward), True, info)

    def expert_action(self) -> str | None:
        if self._task is None:
            raise RuntimeError("ToolEnvironment: call reset() before expert_action()")
        if self._done:
            return None
        if "expert" in self._task:
            script = self._task["expert"]
            return script[len(self._history)] if len(self._history) < len(script) else None
        return self.expert(self._task, list(self._history)) if self.expert else None
