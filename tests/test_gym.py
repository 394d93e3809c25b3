"""The gymnasium adapter, on small text environments written and registered here."""

from __future__ import annotations

from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

gymnasium = pytest.importorskip("gymnasium")
from gymnasium import spaces

from turnrl.environments import make_env
from turnrl.environments.gym import GymEnvironment


class CorridorEnv(gymnasium.Env):
    """Walk right from 0 to the end (4 + seed % 3) of a corridor; discrete named actions, text observations."""

    action_names: ClassVar[list[str]] = ["left", "right", "wait"]

    def __init__(self, max_steps: int = 20):
        self.action_space = spaces.Discrete(3)
        self.observation_space = spaces.Text(200)
        self.max_steps = max_steps

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position, self.end, self.steps = 0, 4 + (seed or 0) % 3, 0
        return f"You are at 0 in a corridor that ends at {self.end}.", {}

    def step(self, action):
        assert self.action_space.contains(action), f"{action!r} is not an action"
        self.position = max(0, self.position + {0: -1, 1: 1, 2: 0}[int(action)])
        self.steps += 1
        terminated = self.position == self.end
        return (f"You are at {self.position}.", 1.0 if terminated else 0.0, terminated,
                self.steps >= self.max_steps, {})


class EchoWordEnv(gymnasium.Env):
    """Say the secret word (from the seed); a Text action space; rejects digits by raising."""

    WORDS: ClassVar[list[str]] = ["apple", "river", "stone"]

    def __init__(self):
        self.action_space = spaces.Text(min_length=1, max_length=12)
        self.observation_space = spaces.Text(200)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.word = self.WORDS[(seed or 0) % 3]
        return f"Say the word '{self.word}'.", {}

    def step(self, action):
        if any(ch.isdigit() for ch in action):
            raise ValueError("digits are not words")
        said = action.strip().lower() == self.word
        return ("Correct." if said else "Try again."), float(said), said, False, {"score": float(said)}


class CounterEnv(gymnasium.Env):
    """Observations are ints: needs render_text."""

    def __init__(self):
        self.action_space = spaces.Discrete(2)
        self.observation_space = spaces.Discrete(10)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.value = 0
        return self.value, {}

    def step(self, action):
        self.value += int(action)
        return self.value, 0.0, self.value >= 3, False, {"success": self.value >= 3}


def render_counter(observation, info) -> str:
    return f"The counter shows {observation}."


# The passive checker would warn that a Text space's default charset lacks punctuation; the texts are fine.
gymnasium.register("TurnrlTest/Corridor-v0", entry_point=CorridorEnv, disable_env_checker=True)
gymnasium.register("TurnrlTest/EchoWord-v0", entry_point=EchoWordEnv, disable_env_checker=True)


def test_discrete_named_actions_round_trip():
    env = make_env("gym", env_id="TurnrlTest/Corridor-v0")
    assert isinstance(env, GymEnvironment)
    assert env.admissible_actions() == ["left", "right", "wait"]
    assert env.reset(task=2) == "You are at 0 in a corridor that ends at 6."
    result = env.step(" Right ")
    assert (result.observation, result.reward, result.done, result.info) == \
        ("You are at 1.", 0.0, False, {"success": False, "invalid": False})
    for _ in range(5):
        result = env.step("right")
    assert result.done and result.reward == 1.0 and result.info["success"]
    assert env.step("right").info["invalid"]  # after the end


def test_unknown_action_names_are_invalid_turns():
    env = make_env("gym", env_id="TurnrlTest/Corridor-v0")
    env.reset(task=0)
    result = env.step("jump")
    assert result.info["invalid"] and not result.done and "left, right, wait" in result.observation
    assert env.step("right").observation == "You are at 1."  # the episode went on


def test_truncation_ends_the_episode_without_success():
    env = make_env("gym", env_id="TurnrlTest/Corridor-v0", make_kwargs={"max_steps": 2})
    env.reset(task=0)
    env.step("wait")
    result = env.step("wait")
    assert result.done and not result.info["success"]


def test_text_action_space():
    env = make_env("gym", env_id="TurnrlTest/EchoWord-v0")
    assert env.admissible_actions() is None
    assert env.reset(task=1) == "Say the word 'river'."
    assert env.step("stone").observation == "Try again."
    for bad in ["", "x" * 13, "r1ver"]:  # outside the space, or rejected by the environment
        result = env.step(bad)
        assert result.info["invalid"] and not result.done, bad
    assert "digits are not words" in env.step("r1ver").observation
    result = env.step("river")
    assert result.done and result.reward == 1.0 and result.info == {"success": True, "invalid": False, "score": 1.0}


def test_render_text_for_non_text_observations_and_env_instances():
    with pytest.raises(TypeError, match="render_text"):
        GymEnvironment(env=CounterEnv(), action_names=["stay", "add"]).reset(task=0)
    env = GymEnvironment(env=CounterEnv(), action_names=["stay", "add"],
                         render_text=f"{__name__}:render_counter")
    assert env.reset(task=0) == "The counter shows 0."
    for _ in range(3):
        result = env.step("add")
    assert result.done and result.info["success"] and result.observation == "The counter shows 3."


def test_misconfiguration_is_an_error_that_names_the_fix():
    with pytest.raises(ValueError, match="action names"):
        GymEnvironment(env=CounterEnv())
    with pytest.raises(ValueError, match="env_id"):
        GymEnvironment()
    with pytest.raises(TypeError, match="Text or Discrete"):
        GymEnvironment(env=type("BoxEnv", (gymnasium.Env,), {"action_space": spaces.Box(0, 1)})())


def test_tasks_are_disjoint_seeds_and_snapshots_replay():
    env = make_env("gym", env_id="TurnrlTest/Corridor-v0", train_tasks=5, test_tasks=3)
    assert env.tasks("train") == [0, 1, 2, 3, 4] and len(env.tasks("test")) == 3
    assert not set(env.tasks("train")) & set(env.tasks("test"))
    with pytest.raises(ValueError, match="valid splits"):
        env.tasks("dev")
    env.reset(task=1)
    env.step("right")
    snap = env.snapshot()
    key = env.state_key()
    env.step("right")
    assert env.restore(snap) == "You are at 1." and env.state_key() == key


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=30))
def test_arbitrary_text_never_raises(text):
    for env_id in ("TurnrlTest/Corridor-v0", "TurnrlTest/EchoWord-v0"):
        env = make_env("gym", env_id=env_id)
        env.reset(task=0)
        result = env.step(text)
        assert isinstance(result.observation, str) and isinstance(result.info["invalid"], bool)
