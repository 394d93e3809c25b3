"""Serve any registered turnrl environment as an OpenEnv server (`turnrl serve`), for other trainers.

OpenEnv (the `openenv` package) is the environment protocol TRL, SkyRL, ART and torchforge consume: a
FastAPI app whose `/ws` WebSocket holds one session per connection (`reset`, `step`, `state`, `close`),
plus `/schema`, `/health` and the Task API routes. This module builds that app with the package's own
server (`openenv.core.env_server.create_fastapi_app`) around `TurnrlOpenEnv`, an OpenEnv `Environment`
that holds one turnrl environment per session:

- action: `{"message": "<the action text>"}`; for an environment that reads its own tags (search-QA,
  tool environments) the message is the agent's whole response;
- observation: `text` (what a turnrl agent reads), `admissible_actions` (where the environment lists them),
  `info` ("success", "invalid", "score"), and OpenEnv's `reward` and `done`. A bad action is an ordinary
  observation with `info["invalid"]` set, exactly as in process; an action that does not fit the schema is
  answered by the server with a validation error and the session goes on;
- state: `task`, `state_key` (for GiGPO/HGPO step groups), `expert_action` (upper bounds and
  `--policy expert` through `make_env("openenv", ...)`: never show the state to the agent) and the step count;
- tasks: `reset(task=ID)` or, with the Task API, `reset(split="test", index=3)`; `list_splits`,
  `num_tasks`, `get_task` come from the environment's `tasks(split)`.

Sessions: each WebSocket gets its own environment (`SUPPORTS_CONCURRENT_SESSIONS`); at most
`max_sessions` exist at once (a further connection is refused with `CAPACITY_REACHED`), and a session with
no message for `idle_timeout` seconds is closed by the package's reaper (it checks every
max(idle_timeout/4, 5) s), so leaked connections cannot exhaust the server. A message on a reaped session
is answered with an error that says so.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

from openenv.core.env_server import Action, ConcurrencyConfig, Observation, State, create_fastapi_app
from openenv.core.env_server import Environment as OpenEnvBase
from pydantic import Field

from turnrl.environments.registry import make_env

SPLIT_NAMES = ("train", "test", "dev", "valid", "validation")


class TurnrlAction(Action):
    """One turn of the agent."""

    message: str = Field(description="the action text; for environments that read their own tags (<search>, "
                                     "<answer>, <tool>), the agent's whole response")


class TurnrlObservation(Observation):
    """What the environment answered."""

    text: str = Field(default="", description="the observation a turnrl agent reads")
    admissible_actions: list[str] | None = Field(default=None, description="actions valid now, where listed")
    info: dict[str, Any] = Field(default_factory=dict, description='"success", "invalid" and "score"')


class TurnrlState(State):
    """The session's episode, for the trainer (not for the agent's prompt)."""

    task: Any = Field(default=None, description="the task id of the episode")
    state_key: str | None = Field(default=None, description="hashable key of the current state")
    expert_action: str | None = Field(default=None, description="the expert's next action, where there is one")


class TurnrlOpenEnv(OpenEnvBase):
    """An OpenEnv environment holding one turnrl environment (`make_env(env_name, **env_kwargs)`)."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, env_name: str, env_kwargs: dict | None = None, idle_timeout: float | None = None):
        super().__init__()
        self.env_name = env_name
        self.env = make_env(env_name, **(env_kwargs or {}))
        self.idle_timeout = idle_timeout
        self._task = None
        self._started = False
        self._closed = False
        self._steps = 0
        self._episode_id: str | None = None

    # --- OpenEnv's interface ----------------------------------------------------------------------

    def reset(self, seed: int | None = None, episode_id: str | None = None, task: Any = None,
              split: str | None = None, index: int | None = None, **kwargs: Any) -> TurnrlObservation:
        self._check_open()
        if task is None and (split is not None or index is not None):
            task = self.get_task(split or "train", 0 if index is None else index)
        observation = self.env.reset(task=task, seed=seed)
        self._task, self._started, self._steps, self._episode_id = task, True, 0, episode_id
        return TurnrlObservation(text=observation, admissible_actions=self.env.admissible_actions(),
                                 info={"success": False, "invalid": False})

    def step(self, action: TurnrlAction, timeout_s: float | None = None, **kwargs: Any) -> TurnrlObservation:
        self._check_open()
        if not self._started:
            raise RuntimeError("step before reset: send a reset message first")
        result = self.env.step(action.message)
        self._steps += 1
        info = {key: value for key, value in result.info.items() if isinstance(value, str | int | float | bool)}
        info.setdefault("success", False)
        info.setdefault("invalid", False)
        admissible = None if result.done else self.env.admissible_actions()
        return TurnrlObservation(text=result.observation, reward=float(result.reward), done=bool(result.done),
                                 admissible_actions=admissible, info=info)

    @property
    def state(self) -> TurnrlState:
        if not self._started or self._closed:
            return TurnrlState(episode_id=self._episode_id, step_count=self._steps)
        return TurnrlState(episode_id=self._episode_id, step_count=self._steps, task=self._task,
                           state_key=str(self.env.state_key()), expert_action=self.env.expert_action())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.env.close()

    def _check_open(self) -> None:
        if self._closed:
            after = f" after {self.idle_timeout:g} s without a message" if self.idle_timeout else ""
            raise RuntimeError(f"this session was closed{after}; open a new connection")

    # --- the Task API (OpenEnv's TaskProvider) ----------------------------------------------------

    def list_splits(self) -> list[str]:
        splits = []
        for split in SPLIT_NAMES:
            try:
                self.env.tasks(split)
            except ValueError:
                continue
            splits.append(split)
        return splits

    def list_tasks(self, split: str) -> list[Any]:
        return [{"id": task, "index": i} for i, task in enumerate(self.env.tasks(split))]

    def num_tasks(self, split: str) -> int:
        return len(self.env.tasks(split))

    def get_task(self, split: str, index: int) -> Any:
        tasks = self.env.tasks(split)
        position = operator.index(index)
        if not 0 <= position < len(tasks):
            raise IndexError(f"task index {position} is out of range for split {split!r} (0..{len(tasks) - 1})")
        return tasks[position]

    def get_task_range(self, split: str, start: int | None = None, stop: int | None = None) -> list[Any]:
        return list(self.env.tasks(split)[start:stop])


def create_app(env_name: str, env_kwargs: dict | None = None, *, max_sessions: int = 64,
               idle_timeout: float | None = 600.0):
    """The OpenEnv FastAPI app serving `make_env(env_name, **env_kwargs)`, one environment per session.

    The environment is built once here, so a wrong name or argument fails before the server starts.
    """
    if max_sessions < 1:
        raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
    if idle_timeout is not None and idle_timeout <= 0:
        raise ValueError(f"idle_timeout must be > 0 seconds (or None for none), got {idle_timeout}")
    TurnrlOpenEnv(env_name, env_kwargs).close()
    factory = functools.partial(TurnrlOpenEnv, env_name, dict(env_kwargs or {}), idle_timeout)
    concurrency = ConcurrencyConfig(max_concurrent_envs=max_sessions, session_timeout=idle_timeout)
    return create_fastapi_app(factory, TurnrlAction, TurnrlObservation, concurrency_config=concurrency,
                              env_name=env_name, state_cls=TurnrlState, mode="simulation")


def serve(env_name: str, env_kwargs: dict | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          max_sessions: int = 64, idle_timeout: float | None = 600.0, log_level: str = "info") -> None:
    """Run the server until interrupted (`turnrl serve`)."""
    import uvicorn

    app = create_app(env_name, env_kwargs, max_sessions=max_sessions, idle_timeout=idle_timeout)
    uvicorn.run(app, host=host, port=port, log_level=log_level, ws_max_size=16 * 1024 * 1024)
