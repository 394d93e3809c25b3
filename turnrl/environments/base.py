"""The environment contract: one episode at a time, text in, text out.

A subclass implements `reset`, `step` and `tasks`; everything else has a default. The defaults for
`snapshot`/`restore` replay the episode (reset with the same task and seed, then the same actions),
so any deterministic environment supports tree search without extra code. To make that possible the
base class records, around every subclass's `reset` and `step`, the task, seed, actions taken and the
last observation. A subclass whose state is a few attributes names them in `state_attributes`: its
snapshot is then a copy of those attributes (`StateSnapshot`, microseconds) instead of a replay, which is
what tree search (`turnrl.search`) restores at every node. A subclass with other state (an engine in a
C library) overrides `snapshot`/`restore` itself, or keeps the replay.

A bad action never raises: it returns an observation that says what was wrong, reward 0 (the rollout
adds the configured penalty) and `info["invalid"] = True`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepResult:
    """What `Environment.step` returns.

    `info` carries "success" (bool) when the episode is won, "invalid" (bool) for a rejected action,
    and "score" (float) where the environment has a graded score beside the reward.
    """

    observation: str
    reward: float
    done: bool
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReplaySnapshot:
    """The default snapshot: enough to rebuild the state by replaying the episode."""

    task: Any
    seed: Any
    actions: tuple[str, ...]


@dataclass(frozen=True)
class StateSnapshot:
    """The snapshot of an environment that declares `state_attributes`: a copy of each of them, and the replay
    record (so a snapshot taken after a restore still replays). Restorable into any instance of `env_type` built
    with the same arguments."""

    env_type: type
    state: tuple[tuple[str, Any], ...]
    replay: ReplaySnapshot
    last_observation: Any


_ABSENT = object()   # a state attribute the environment had not set yet (restoring it deletes the attribute)


def _copied(value):
    """A copy one container level deep: state attributes are changed by reassignment or in place one level down
    (a list of lamps, a dict of chosen options), never deeper."""
    if isinstance(value, list | dict | set | bytearray):
        return type(value)(value)
    return value


def _record_reset(reset):
    @functools.wraps(reset)
    def wrapper(self, task=None, seed=None):
        outermost = not getattr(self, "_turnrl_in_call", False)
        self._turnrl_in_call = True
        try:
            observation = reset(self, task=task, seed=seed)
        finally:
            if outermost:
                self._turnrl_in_call = False
        if outermost:
            self._turnrl_task, self._turnrl_seed = task, seed
            self._turnrl_actions = []
            self._turnrl_last_observation = observation
        return observation

    wrapper._turnrl_recording = True
    return wrapper


def _record_step(step):
    @functools.wraps(step)
    def wrapper(self, action):
        outermost = not getattr(self, "_turnrl_in_call", False)
        self._turnrl_in_call = True
        try:
            result = step(self, action)
        finally:
            if outermost:
                self._turnrl_in_call = False
        # A step before any reset has no episode to record (the subclass chose to answer it, not raise).
        if outermost and hasattr(self, "_turnrl_actions"):
            self._turnrl_actions.append(action)
            self._turnrl_last_observation = result.observation
        return result

    wrapper._turnrl_recording = True
    return wrapper


class Environment:
    """Base class of every turnrl environment. See DESIGN.md, "The environment contract".

    Optional class attributes shape how an agent is prompted and how its responses reach `step`:

    - `instructions`: guidance shown to the agent before the first observation.
    - `parses_responses`: False (default) means the agent answers `<think>…</think><action>…</action>`,
      the rollout extracts the action and hands only that to `step` (a response without an action is an
      invalid turn that never reaches the environment). True means the environment reads its own tags
      (`<search>`, `<answer>`, `<tool>`): the rollout hands `step` the whole response, the environment
      flags a response it cannot use with `info["invalid"]`, and `expert_action()` and
      `admissible_actions()` return whole responses (the latter, candidates for `--policy random`, are
      not shown in prompts).
    - `format_hint`: the reply format the prompt asks for (default: the `<think>`/`<action>` hint).
    - `stop_strings`: generation of a turn stops once one of these is written (default `</action>`).
    - `tool_schemas`: tools in the OpenAI function format, handed to the chat template as `tools=` where
      the template renders tools, otherwise written into the system message.

    Optional hooks of the compact prompt style (`PromptBuilder(style="compact")`, the default), which
    shows the episode's first observation in full as the task and says nothing twice. Their defaults
    change nothing; they only shape prompt text, never what `reset`/`step` return:

    - `compact_instructions`: shorter `instructions` for compact prompts (None: `instructions`).
    - `compact_observation(observation)`: an observation of this episode other than the first, with the
      text the first one already gave removed (WebShop's instruction, repeated on every page).
    - `compact_actions()`: the admissible actions written shorter, for example by pointing at the
      observations in the prompt that show them, so that every action stays derivable from the prompt.
    """

    instructions: str = ""
    # The attributes that hold the whole episode state (beside what the constructor set): when given, `snapshot`
    # copies them instead of recording a replay. Containers are copied one level deep (see `_copied`).
    state_attributes: tuple[str, ...] = ()
    compact_instructions: str | None = None
    parses_responses: bool = False
    format_hint: str | None = None
    stop_strings: tuple[str, ...] | None = None
    tool_schemas: list[dict] | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Wrap the subclass's own reset/step so the replay record is kept without the subclass's help.
        # Only the outermost call records, so `super().step(...)` chains are counted once.
        for name, recorder in (("reset", _record_reset), ("step", _record_step)):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "_turnrl_recording", False):
                setattr(cls, name, recorder(method))

    def reset(self, task=None, seed=None) -> str:
        """Start an episode of `task` (None: the environment picks one) and return the first observation,
        task text included. The same task and seed always give the same episode."""
        raise NotImplementedError

    def step(self, action: str) -> StepResult:
        """Apply one action. Never raises on a bad action."""
        raise NotImplementedError

    def tasks(self, split: str = "train") -> list:
        """Task ids of a split ("train", "test", ...). Unknown splits raise ValueError naming the valid ones."""
        raise NotImplementedError

    def admissible_actions(self) -> list[str] | None:
        """The actions valid now, or None where the environment cannot list them."""
        return None

    def expert_action(self) -> str | None:
        """The expert's next action, or None where there is no expert."""
        return None

    def compact_observation(self, observation: str) -> str:
        """`observation` as a compact prompt shows it: called on every observation of the current episode
        except the first (which the prompt shows in full as the task), it removes text the first one already
        gave. It must only remove repeated text, never anything the agent cannot read elsewhere in the
        prompt. Default: the observation unchanged."""
        return observation

    def compact_actions(self) -> str | None:
        """The admissible actions of the current state as one line of a compact prompt (e.g. "Actions:
        click[X] for X a clickable of this page"), from which each action of `admissible_actions()` can
        be read given the prompt's observations; None (default): the prompt lists `admissible_actions()`."""
        return None

    def snapshot(self) -> Any:
        """A value from which `restore` rebuilds the current state: a copy of `state_attributes` where the class
        declares them (`StateSnapshot`), else the replay record (`ReplaySnapshot`). Later steps never change it."""
        self._require_started()
        replay = ReplaySnapshot(self._turnrl_task, self._turnrl_seed, tuple(self._turnrl_actions))
        if not self.state_attributes:
            return replay
        state = tuple((name, _copied(getattr(self, name, _ABSENT))) for name in self.state_attributes)
        return StateSnapshot(type(self), state, replay, self._turnrl_last_observation)

    def restore(self, snap: Any) -> str:
        """Return to a state taken with `snapshot` (by this instance or another built with the same arguments);
        returns that state's last observation."""
        if isinstance(snap, StateSnapshot):
            if snap.env_type is not type(self):
                raise TypeError(f"restore(): this snapshot was taken by a {snap.env_type.__name__}, not a "
                                f"{type(self).__name__}")
            for name, value in snap.state:
                if value is _ABSENT:
                    self.__dict__.pop(name, None)
                else:
                    setattr(self, name, _copied(value))
            self._turnrl_task, self._turnrl_seed = snap.replay.task, snap.replay.seed
            self._turnrl_actions = list(snap.replay.actions)
            self._turnrl_last_observation = snap.last_observation
            return snap.last_observation
        if not isinstance(snap, ReplaySnapshot):
            raise TypeError(f"restore() expects a snapshot taken by this environment, got {type(snap).__name__}")
        observation = self.reset(task=snap.task, seed=snap.seed)
        for action in snap.actions:
            observation = self.step(action).observation
        return observation

    def state_key(self) -> str:
        """A hashable key of the current state. Default: the last observation."""
        self._require_started()
        return self._turnrl_last_observation

    def close(self) -> None:
        """Release resources (processes, files). Default: nothing to release."""

    def _require_started(self) -> None:
        if not hasattr(self, "_turnrl_actions"):
            raise RuntimeError(f"{type(self).__name__}: call reset() before snapshot() or state_key()")
