"""A gymnasium environment with text observations as a turnrl `Environment`: `make_env("gym", env_id=...)`.

gymnasium (extra `turnrl[gym]`) is the general RL convention; text games such as TextArena follow it. Any
`gymnasium.Env` fits when:

- its observations are text, or `render_text(observation, info) -> str` turns them into text (a callable,
  or "module:function" from the command line);
- its action space is `spaces.Text` (the action text is passed as it is, after a `contains` check) or
  `spaces.Discrete` with named actions: `action_names=[...]`, else the environment's own `action_names`
  attribute or `get_action_meanings()`. The agent writes a name (matched ignoring case and surrounding
  space); `admissible_actions()` lists the names.

A name that is not an action, text outside the `Text` space, or an action the environment rejects by raising
`ValueError`/`AssertionError` (as gymnasium environments commonly do) is an invalid turn whose observation
is the error; the episode goes on. `terminated or truncated` is done. `info["success"]` is the environment's
own `info["success"]` where it sets one, else `terminated and reward > 0`; "invalid" and "score" pass
through from the environment's info.

Tasks are seeds: "train" is `0 .. train_tasks-1`, "test" starts at 1,000,000; task `t` is
`env.reset(seed=t)`, so the same task is the same episode (snapshot/restore replays it). turnrl's own seed
does not change an episode.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from turnrl.environments.base import Environment, StepResult

TEST_SEED_OFFSET = 1_000_000


def _resolve(function: Callable | str | None, what: str) -> Callable | None:
    if function is None or callable(function):
        return function
    module, _, name = str(function).partition(":")
    if not module or not name:
        raise ValueError(f"GymEnvironment: {what} must be a callable or 'module:function', got {function!r}")
    return getattr(importlib.import_module(module), name)


class GymEnvironment(Environment):
    """One gymnasium environment; see the module docstring."""

    def __init__(self, env_id: str | None = None, *, env: Any = None, make_kwargs: dict | None = None,
                 render_text: Callable | str | None = None, action_names: list[str] | None = None,
                 instructions: str | None = None, train_tasks: int = 1000, test_tasks: int = 100):
        import gymnasium
        from gymnasium import spaces

        if (env_id is None) == (env is None):
            raise ValueError("GymEnvironment: pass env_id= (a registered gymnasium id) or env= (a gymnasium.Env)")
        self.env = gymnasium.make(env_id, **(make_kwargs or {})) if env is None else env
        self.render_text = _resolve(render_text, "render_text")
        space = self.env.action_space
        if isinstance(space, spaces.Discrete):
            names = action_names
            base = self.env.unwrapped
            if names is None:
                names = getattr(base, "action_names", None)
            if names is None and hasattr(base, "get_action_meanings"):
                names = base.get_action_meanings()
            if names is None or len(names) != space.n:
                raise ValueError(f"GymEnvironment: a Discrete({space.n}) action space needs {space.n} action names "
                                 f"(action_names=[...], or the environment's action_names), got {names!r}")
            self.action_names = [str(name) for name in names]
            self._by_name = {name.strip().lower(): space.start + i for i, name in enumerate(self.action_names)}
            if len(self._by_name) != len(self.action_names):
                raise ValueError(f"GymEnvironment: action names must differ (ignoring case), got {self.action_names}")
        elif isinstance(space, spaces.Text):
            self.action_names = None
        else:
            raise TypeError(f"GymEnvironment: the action space must be Text or Discrete with named actions, got "
                            f"{space}")
        if instructions is not None:
            self.instructions = instructions
        self._tasks = {"train": list(range(train_tasks)),
                       "test": list(range(TEST_SEED_OFFSET, TEST_SEED_OFFSET + test_tasks))}
        self._done = False

    def _text(self, observation: Any, info: dict) -> str:
        if self.render_text is not None:
            return str(self.render_text(observation, info))
        if isinstance(observation, str):
            return observation
        raise TypeError(f"GymEnvironment: the observation is a {type(observation).__name__}, not text; pass "
                        "render_text=FUNCTION(observation, info) -> str")

    def tasks(self, split: str = "train") -> list:
        if split not in self._tasks:
            raise ValueError(f"unknown split {split!r}; valid splits: train, test")
        return list(self._tasks[split])

    def reset(self, task=None, seed=None) -> str:
        observation, info = self.env.reset(seed=None if task is None else int(task))
        self._done = False
        return self._text(observation, info)

    def _action(self, text: str) -> tuple[Any, str | None]:
        """(the environment's action, None) or (None, what is wrong)."""
        if self.action_names is not None:
            key = text.strip().lower() if isinstance(text, str) else None
            if key not in self._by_name:
                return None, f"{str(text)[:80]!r} is not an action; the actions are: {', '.join(self.action_names)}"
            return self._by_name[key], None
        if not isinstance(text, str) or not self.env.action_space.contains(text):
            space = self.env.action_space
            return None, (f"the action must be text of {space.min_length} to {space.max_length} characters from the "
                          "action space's character set")
        return text, None

    def step(self, action: str) -> StepResult:
        if self._done:
            return StepResult("The episode is over.", 0.0, True, {"success": False, "invalid": True})
        chosen, error = self._action(action)
        if error is None:
            try:
                observation, reward, terminated, truncated, info = self.env.step(chosen)
            except (ValueError, AssertionError) as err:
                error = f"the environment rejected it: {err or type(err).__name__}"
        if error is not None:
            return StepResult(f"Invalid action: {error}.", 0.0, False, {"success": False, "invalid": True})
        self._done = bool(terminated or truncated)
        reward = float(reward)
        result_info = {"success": bool(info.get("success", bool(terminated) and reward > 0)),
                       "invalid": bool(info.get("invalid", False))}
        if "score" in info:
            result_info["score"] = float(info["score"])
        return StepResult(self._text(observation, info), reward, self._done, result_info)

    def admissible_actions(self) -> list[str] | None:
        return list(self.action_names) if self.action_names is not None else None

    def close(self) -> None:
        self.env.close()
