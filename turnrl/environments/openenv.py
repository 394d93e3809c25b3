"""A running OpenEnv environment server as a turnrl `Environment`: `make_env("openenv", base_url=...)`.

OpenEnv (the `openenv` package, extra `turnrl[openenv]`) serves an environment over a WebSocket session
(`reset` / `step` / `state`) with typed, JSON-schema'd actions and observations. This adapter holds one
session through the package's own client (`GenericEnvClient`) and translates:

- observation -> text: the `observation_field` if named, else the observation's only text field, else its
  fields as JSON (OpenEnv's `done`, `reward`, `metadata`, `info` and the admissible-actions field
  left out);
- action text -> the server's action (`action_to_payload`): with a text field (`action_field`, or the
  action schema's only field when it is a string) the text fills it; otherwise the agent writes
  the action as a JSON object, checked against the action schema (the server's `/schema`, or
  `action_schema=`) before it is sent. An action that does not parse or fit, or that the server rejects, is
  an invalid turn whose observation is the error, never an exception;
- with MCP tools (the server answers `tools/list`), `tool_schemas` lists them in OpenAI's function format
  and the agent calls one with `{"name": ..., "arguments": {...}}`, sent as OpenEnv's `call_tool` action;
- reward and done come from the server; `state_key` from the server's state (its `state_key` field, else
  its fields other than `episode_id`/`step_count`, else the last observation); `expert_action` and
  `admissible_actions` where the server gives them (a `turnrl serve` server does).

Tasks: a server with OpenEnv's Task API gives its splits, and task `i` of a split is
`reset(split=..., index=i)` (task ids `"split/i"`); otherwise tasks are seeds, `train_tasks` for "train"
and `test_tasks` from 1,000,000 for "test", and task `t` is `reset(seed=t)`.

A lost connection, a refused session or a message time-out ends the episode (done, reward 0,
`info["error"]` says what happened, and a line goes to stderr); the next `reset` opens a new session, so a
training run goes on.
"""

from __future__ import annotations

import contextlib
import json
import sys

from turnrl.environments.base import Environment, StepResult

TEST_SEED_OFFSET = 1_000_000
OPENENV_FIELDS = ("done", "reward", "metadata", "info")  # not shown to the agent ("info": a turnrl server's flags)
ACTIONS_FIELDS = ("admissible_actions", "legal_actions", "available_actions", "valid_actions")
MAX_ACTION_CHARS = 100_000


class ServerError(RuntimeError):
    """An error message from the server (the session itself is still up)."""

    def __init__(self, data: dict):
        self.code = str(data.get("code", "UNKNOWN"))
        self.data = data
        message = str(data.get("message", "unknown error"))
        details = "; ".join(_describe_validation_error(e) for e in data.get("errors") or [] if isinstance(e, dict))
        super().__init__(f"{message} ({self.code})" + (f": {details}" if details else ""))


def _describe_validation_error(error: dict) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()))
    return f"{location}: {error.get('msg', 'invalid')}" if location else str(error.get("msg", "invalid"))


def _client_class():
    from openenv.core import GenericEnvClient

    class SessionClient(GenericEnvClient):
        """OpenEnv's generic client, with the server's whole error (validation details included) raised
        as `ServerError`, and MCP's `tools/list` over the session's WebSocket."""

        async def _send_and_receive(self, message: dict) -> dict:
            from websockets.exceptions import ConnectionClosed

            try:
                await self._send(message)
            except ConnectionClosed:
                pass  # a refused session sends its error, then closes: read the error below
            response = await self._receive()
            if response.get("type") == "error":
                raise ServerError(response.get("data") or {})
            return response

        async def _list_tools_async(self) -> list[dict]:
            request = {"jsonrpc": "2.0", "method": "tools/list", "params": {}, "id": 1}
            response = await self._send_and_receive({"type": "mcp", "data": request})
            result = (response.get("data") or {}).get("result") or {}
            return list(result.get("tools") or [])

        def list_tools(self) -> list[dict]:
            return self._dispatch(self._list_tools_async)

    return SessionClient


# --- pure translation functions -------------------------------------------------------------------------


def text_field_of(schema: dict) -> str | None:
    """The action's text field, if the action has exactly one field besides OpenEnv's `metadata` and it
    is a string (an action with more fields is written as JSON)."""
    properties = {name: spec for name, spec in (schema.get("properties") or {}).items() if name != "metadata"}
    if len(properties) != 1:
        return None
    name, spec = next(iter(properties.items()))
    return name if (spec or {}).get("type") == "string" else None


def is_tool_call_schema(schema: dict) -> bool:
    """Whether the action schema is OpenEnv's MCP `call_tool` action (or a union that contains it)."""
    variants = [schema, *(schema.get("$defs") or {}).values(), *(schema.get("anyOf") or schema.get("oneOf") or [])]
    return any({"tool_name", "arguments"} <= set((v or {}).get("properties") or {}) for v in variants)


def action_to_payload(text: str, *, text_field: str | None = None, schema: dict | None = None,
                      tool_calls: bool = False) -> tuple[dict | None, str | None]:
    """(the server's action as a dict, None), or (None, what is wrong) for text that cannot be one.

    `text_field`: the text fills that field. Otherwise the text must be a JSON object (a ```json fence
    around it is allowed); with `tool_calls`, `{"name": ..., "arguments": {...}}` becomes OpenEnv's
    `call_tool` action. With a `schema` the object is checked against it.
    """
    if not isinstance(text, str):
        return None, f"the action must be text, got {type(text).__name__}"
    if len(text) > MAX_ACTION_CHARS:
        return None, f"the action is {len(text):,} characters long; at most {MAX_ACTION_CHARS:,} are sent"
    if text_field is not None:
        return {text_field: text}, None
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").strip()
        body = body[4:].lstrip() if body[:4].lower() == "json" else body
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as err:
        return None, f"the action must be a JSON object: {err}"
    if not isinstance(payload, dict):
        return None, f"the action must be a JSON object, got {type(payload).__name__}"
    if tool_calls and "tool_name" not in payload and "type" not in payload:
        if not isinstance(payload.get("name"), str):
            return None, 'a tool call is {"name": TOOL, "arguments": {...}}: "name" (text) is missing'
        arguments = payload.get("arguments", {})
        if not isinstance(arguments, dict):
            return None, 'a tool call\'s "arguments" must be a JSON object'
        payload = {"type": "call_tool", "tool_name": payload["name"], "arguments": arguments}
    if schema:
        import jsonschema

        try:
            errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(payload), key=lambda e: list(e.path))
        except (jsonschema.exceptions.SchemaError, jsonschema.exceptions.RefResolutionError, RecursionError):
            errors = []  # a schema the validator cannot read: the server still validates
        if errors:
            described = [f"{'.'.join(str(p) for p in e.path) or 'action'}: {e.message}" for e in errors[:3]]
            return None, "the action does not fit the schema: " + "; ".join(described)
    return payload, None


def observation_text(observation: dict, field: str | None = None) -> str:
    """The observation as the agent reads it (see the module docstring)."""
    if field is not None:
        value = observation.get(field, "")
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    rest = {k: v for k, v in observation.items() if k not in OPENENV_FIELDS and k not in ACTIONS_FIELDS}
    texts = [k for k, v in rest.items() if isinstance(v, str)]
    if len(texts) == 1 and all(v in (None, {}, []) or k == texts[0] for k, v in rest.items()):
        return rest[texts[0]]
    return json.dumps(rest, ensure_ascii=False, default=str)


def openai_tool(tool: dict) -> dict:
    """An MCP tool description as an OpenAI function schema."""
    parameters = tool.get("inputSchema") or tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": {"name": str(tool.get("name", "")),
                                             "description": str(tool.get("description") or ""),
                                             "parameters": parameters}}


# --- the environment ---------------------------------------------------------------------------------------


class OpenEnvEnvironment(Environment):
    """One session of an OpenEnv server; see the module docstring."""

    def __init__(self, base_url: str, *, action_field: str | None = None, action_schema: dict | None = None,
                 observation_field: str | None = None, actions_field: str | None = None,
                 instructions: str | None = None, train_tasks: int = 1000, test_tasks: int = 100,
                 connect_timeout_s: float = 10.0, message_timeout_s: float = 60.0):
        import httpx

        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError(f"OpenEnvEnvironment: base_url must be an http(s):// or ws(s):// URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        http_url = "http" + self.base_url[2:] if self.base_url.startswith("ws") else self.base_url
        try:
            response = httpx.get(f"{http_url}/schema", timeout=connect_timeout_s)
            response.raise_for_status()
            schemas = response.json()
        except (httpx.HTTPError, ValueError) as err:
            raise ConnectionError(f"OpenEnvEnvironment: no OpenEnv server answers at {self.base_url} ({err}); "
                                  "start it first (e.g. `turnrl serve --env NAME --port P`)") from err
        self.action_schema = action_schema if action_schema is not None else schemas.get("action") or {}
        self.action_field = action_field if action_field is not None else text_field_of(self.action_schema)
        self.observation_field, self.actions_field = observation_field, actions_field
        self._timeouts = (connect_timeout_s, message_timeout_s)
        self._client_class = _client_class()  # here, so a missing package is an error now, not a failed episode
        self._client = None
        self._splits = self._task_api(httpx, http_url, connect_timeout_s)
        self._seed_tasks = {"train": list(range(train_tasks)),
                            "test": list(range(TEST_SEED_OFFSET, TEST_SEED_OFFSET + test_tasks))}
        self._observation: dict = {}
        self._failed: str | None = None
        self._done = False
        tools = self._list_tools() if is_tool_call_schema(self.action_schema) else []
        self.tool_schemas = [openai_tool(tool) for tool in tools] or None
        if instructions is not None:
            self.instructions = instructions
        elif self.tool_schemas:
            self.instructions = ('Your action calls one of the tools: a JSON object {"name": TOOL, "arguments": '
                                 '{...}} inside <action> </action>.')
        elif self.action_field is None:
            self.instructions = ("Your action is a JSON object that fits this schema: "
                                 + json.dumps(self.action_schema, separators=(",", ":")))

    # --- the session -----------------------------------------------------------------------------

    def _session(self):
        if self._client is None:
            connect, message = self._timeouts
            self._client = self._client_class(base_url=self.base_url, connect_timeout_s=connect,
                                              message_timeout_s=message).sync()
        return self._client

    def _drop_session(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken connection can fail in many ways; it is gone
                client.close()

    def _fail(self, what: str, err: BaseException) -> str:
        self._drop_session()
        reason = str(err) or type(err).__name__
        self._failed = f"the OpenEnv server at {self.base_url} failed during {what}: {reason}"
        print(f"turnrl openenv: {self._failed}; the episode ends", file=sys.stderr)
        return f"The episode failed: {self._failed}."

    def _task_api(self, httpx, http_url: str, timeout: float) -> dict[str, int] | None:
        """{split: number of tasks} from the Task API, or None where the server has none."""
        try:
            names = httpx.get(f"{http_url}/list_environments", timeout=timeout).json()
            if not isinstance(names, list) or len(names) != 1:
                return None
            base = f"{http_url}/{names[0]}"
            response = httpx.get(f"{base}/splits", timeout=timeout)
            if response.status_code != 200:
                return None
            splits = {}
            for split in response.json():
                name = split.get("name") if isinstance(split, dict) else split
                count = httpx.post(f"{base}/num_tasks", json={"split": name}, timeout=timeout).json()
                splits[str(name)] = int(count if isinstance(count, int) else count.get("num_tasks", 0))
            return splits or None
        except (httpx.HTTPError, ValueError, TypeError, AttributeError):
            return None

    def _list_tools(self) -> list[dict]:
        try:
            return self._session().list_tools()
        except ServerError:
            return []

    # --- the contract ----------------------------------------------------------------------------

    def tasks(self, split: str = "train") -> list:
        if self._splits is not None:
            if split not in self._splits:
                raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(sorted(self._splits))}")
            return [f"{split}/{i}" for i in range(self._splits[split])]
        if split not in self._seed_tasks:
            raise ValueError(f"unknown split {split!r}; valid splits: train, test")
        return list(self._seed_tasks[split])

    def _reset_arguments(self, task, seed) -> dict:
        if task is None:
            return {} if seed is None else {"seed": seed}
        if self._splits is not None:
            split, _, index = str(task).rpartition("/")
            if split not in self._splits or not index.isdigit():
                raise ValueError(f"OpenEnvEnvironment: task ids are 'split/index' (see tasks()), got {task!r}")
            return {"split": split, "index": int(index), **({"seed": seed} if seed is not None else {})}
        return {"seed": int(task)}

    def reset(self, task=None, seed=None) -> str:
        arguments = self._reset_arguments(task, seed)
        self._failed, self._done, self._observation = None, False, {}
        try:
            result = self._session().reset(**arguments)
        except Exception:  # noqa: BLE001 - a session the server closed (idle time-out) or lost: try a new one
            self._drop_session()
            try:
                result = self._session().reset(**arguments)
            except Exception as err:  # noqa: BLE001 - connection errors of every kind end the episode, not the run
                return self._fail("reset", err)
        self._observation = dict(result.observation or {})
        self._done = bool(result.done)
        return observation_text(self._observation, self.observation_field)

    def step(self, action: str) -> StepResult:
        if self._failed is not None:
            return StepResult(f"The episode failed: {self._failed}.", 0.0, True,
                              {"success": False, "invalid": False, "error": self._failed})
        if self._done:
            return StepResult("The episode is over.", 0.0, True, {"success": False, "invalid": True})
        payload, error = action_to_payload(action, text_field=self.action_field, schema=self.action_schema,
                                           tool_calls=bool(self.tool_schemas))
        if payload is None:
            return StepResult(f"Invalid action: {error}.", 0.0, False, {"success": False, "invalid": True})
        try:
            result = self._session().step(payload)
        except ServerError as err:
            if err.code in ("EXECUTION_ERROR", "VALIDATION_ERROR", "INVALID_JSON"):
                return StepResult(f"Invalid action: the server answered {err}", 0.0, False,
                                  {"success": False, "invalid": True, "server_error": err.code})
            observation = self._fail("step", err)
            return StepResult(observation, 0.0, True, {"success": False, "invalid": False, "error": self._failed})
        except Exception as err:  # noqa: BLE001 - see reset
            observation = self._fail("step", err)
            return StepResult(observation, 0.0, True, {"success": False, "invalid": False, "error": self._failed})
        self._observation = dict(result.observation or {})
        self._done = bool(result.done)
        reward = float(result.reward or 0.0)
        info = {"success": self._done and reward > 0, "invalid": False}
        served = self._observation.get("info")
        if isinstance(served, dict):  # a turnrl server's own flags
            info.update({k: served[k] for k in ("success", "invalid", "score") if k in served})
        return StepResult(observation_text(self._observation, self.observation_field), reward, self._done, info)

    def admissible_actions(self) -> list[str] | None:
        for name in (self.actions_field,) if self.actions_field else ACTIONS_FIELDS:
            actions = self._observation.get(name)
            if isinstance(actions, list) and all(isinstance(a, str) for a in actions):
                return list(actions)
        return None

    def _state(self) -> dict:
        if self._failed is not None or self._client is None:
            return {}
        try:
            state = self._session().state()
        except Exception:  # noqa: BLE001 - the next step reports a lost connection; a state is optional
            return {}
        return state if isinstance(state, dict) else {}

    def state_key(self) -> str:
        state = self._state()
        if isinstance(state.get("state_key"), str):
            return state["state_key"]
        extra = {k: v for k, v in state.items() if k not in ("episode_id", "step_count", "expert_action")}
        if extra:
            return json.dumps(extra, sort_keys=True, default=str)
        return super().state_key()

    def expert_action(self) -> str | None:
        if self._done or self._failed is not None:
            return None
        expert = self._state().get("expert_action")
        return expert if isinstance(expert, str) else None

    def close(self) -> None:
        self._drop_session()

    def __del__(self):
        with contextlib.suppress(Exception):  # at interpreter shutdown
            self._drop_session()
