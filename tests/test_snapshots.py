"""Snapshots for tree search: every registered environment returns to a snapshot exactly, the shipped ones by
copying their state (no replay), and a snapshot never changes after it is taken.

The contract test in test_environments.py draws arbitrary actions; these play the expert, restore at every
depth into the same and into a fresh instance, and check the cost model (copy, not replay)."""

from __future__ import annotations

import pytest

from turnrl.environments import (
    ADAPTER_ENVS,
    Environment,
    ReplaySnapshot,
    StateSnapshot,
    StepResult,
    list_envs,
    make_env,
    register_env,
)

ENV_NAMES = [name for name in list_envs() if name not in ADAPTER_ENVS]
COPYING = {"guess-number", "lights", "traffic", "corridor", "webshop", "searchqa"}
_CACHE: dict = {}


def env_pair(name: str) -> tuple[Environment, Environment]:
    if name not in _CACHE:
        _CACHE[name] = (make_env(name), make_env(name))
    return _CACHE[name]


def expert_actions(env: Environment, task, limit: int = 6) -> list[str]:
    env.reset(task=task, seed=1)
    actions = []
    for _ in range(limit):
        action = env.expert_action() or (env.admissible_actions() or ["look"])[0]
        actions.append(action)
        if env.step(action).done:
            break
    return actions


def as_tuple(result: StepResult):
    return result.observation, result.reward, result.done, result.info


@pytest.mark.parametrize("name", ENV_NAMES)
def test_restore_then_step_equals_step_at_every_depth(name):
    env, fresh = env_pair(name)
    task = env.tasks("train")[1]
    actions = expert_actions(env, task)
    env.reset(task=task, seed=1)
    snaps, keys, results = [env.snapshot()], [env.state_key()], []
    for action in actions:
        results.append(as_tuple(env.step(action)))
        snaps.append(env.snapshot())
        keys.append(env.state_key())
    for depth in range(len(actions) + 1):
        for target in (env, fresh):
            target.restore(snaps[depth])
            assert target.state_key() == keys[depth]
            assert [as_tuple(target.step(a)) for a in actions[depth:]] == results[depth:]
            # The snapshot survived the steps taken after restoring it: restoring again gives the same state.
            target.restore(snaps[depth])
            assert target.state_key() == keys[depth]


@pytest.mark.parametrize("name", sorted(COPYING & set(ENV_NAMES)))
def test_shipped_environments_copy_state_instead_of_replaying(name, monkeypatch):
    env, fresh = env_pair(name)
    task = env.tasks("train")[2]
    actions = expert_actions(env, task, limit=3)
    env.reset(task=task, seed=0)
    for action in actions[:2]:
        env.step(action)
    snap = env.snapshot()
    assert isinstance(snap, StateSnapshot) and snap.replay.actions == tuple(actions[:2])
    calls = []
    monkeypatch.setattr(type(fresh), "reset", lambda self, task=None, seed=None: calls.append("reset"))
    fresh.restore(snap)
    assert calls == []          # nothing was replayed
    assert fresh.snapshot().replay == snap.replay   # and the replay record travels with the state


def test_a_snapshot_is_not_changed_by_later_in_place_changes():
    env = make_env("lights", n_lamps=4)
    env.reset(task=3)
    snap, key = env.snapshot(), env.state_key()
    env.step("toggle 1")       # flips an element of the lamp list in place
    env.step("toggle 2")
    assert env.state_key() != key
    env.restore(snap)
    assert env.state_key() == key
    env.step("toggle 1")       # restoring copies too: the snapshot still holds the original lamps
    env.restore(snap)
    assert env.state_key() == key


def test_webshop_options_are_copied():
    env = make_env("webshop")
    env.reset(task=0)
    while env.page != "item":
        env.step(env.expert_action())
    snap = env.snapshot()
    chosen = dict(env.options)
    value = next(v for values in env.products[env.asin].options.values() for v in values)
    env.step(f"click[{value}]")
    env.restore(snap)
    assert env.options == chosen


def test_a_snapshot_of_another_environment_type_is_refused():
    lights, traffic = make_env("lights"), make_env("traffic")
    lights.reset(task=0)
    traffic.reset(task=0)
    with pytest.raises(TypeError, match="LightsEnv"):
        traffic.restore(lights.snapshot())


class _ReplayOnly(Environment):
    """A user's environment with no state_attributes: the default replay snapshot."""

    def tasks(self, split="train"):
        return [0, 1]

    def reset(self, task=None, seed=None):
        self.total = task or 0
        return f"total {self.total}"

    def step(self, action):
        self.total += len(action)
        return StepResult(f"total {self.total}", float(self.total > 6), self.total > 6, {"invalid": False})


def test_a_users_environment_with_only_the_default_replay():
    register_env("replay-only", _ReplayOnly, overwrite=True)
    env, fresh = make_env("replay-only"), make_env("replay-only")
    env.reset(task=1)
    env.step("ab")
    snap = env.snapshot()
    assert isinstance(snap, ReplaySnapshot)
    future = [as_tuple(env.step(a)) for a in ("abc", "d")]
    for target in (env, fresh):
        assert target.restore(snap) == "total 3"
        assert [as_tuple(target.step(a)) for a in ("abc", "d")] == future


def test_tool_environment_copies_state_and_does_not_call_tools_again():
    from turnrl.environments import ToolEnvironment

    calls = []

    def add(a: int, b: int) -> int:
        """Add two integers."""
        calls.append((a, b))
        return a + b

    def make():
        return ToolEnvironment(tools=[add], tasks=[{"prompt": "2 + 3?", "answer": "5"}],
                               reward=lambda task, answer: float(answer.strip() == task["answer"]))

    env, fresh = make(), make()
    env.reset(task=0)
    env.step('<tool>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool>')
    snap = env.snapshot()
    assert isinstance(snap, StateSnapshot)
    final = as_tuple(env.step("<answer>5</answer>"))
    assert fresh.restore(snap) == "<tool_response>5</tool_response>"
    assert as_tuple(fresh.step("<answer>5</answer>")) == final
    assert calls == [(2, 3)]
