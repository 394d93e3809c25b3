"""The environment contract for every registered environment, the registry, and the toy environments.

The contract tests are parametrised over `list_envs()`, so an environment registered later is checked
by them without a change here.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnrl.environments import (
    ADAPTER_ENVS,
    Environment,
    ReplaySnapshot,
    StepResult,
    list_envs,
    load_env_module,
    make_env,
    register_env,
    registry,
)
from turnrl.environments.toy import GuessNumberEnv, LightsEnv, register_toy_envs

ENV_NAMES = [name for name in list_envs() if name not in ADAPTER_ENVS]  # adapters need arguments
MAX_EPISODE_STEPS = 200  # a bound on any loop that plays an episode, so a broken env fails instead of hanging

# Arbitrary text, plus text close to the toy actions so the parsers' edges are hit often.
TEXT_ACTIONS = st.one_of(
    st.text(max_size=60),
    st.from_regex(r"\s*(guess|GUESS|toggle|Toggle)?\s*:?\s*[+-]?[0-9]{1,6}\.?\s*", fullmatch=True),
    st.sampled_from(["", " ", "\n\t", "guess", "toggle", "🙂 guess 3", "\x00", "guess 3 4", "1e3", "٣"]),
)

_ENV_CACHE: dict[tuple[str, int], Environment] = {}


def cached_env(name: str, copy: int = 0) -> Environment:
    """One instance per (name, copy), reused across hypothesis examples: building some envs is slow."""
    if (name, copy) not in _ENV_CACHE:
        _ENV_CACHE[name, copy] = make_env(name)
    return _ENV_CACHE[name, copy]


def draw_action(data, env: Environment) -> str:
    """Arbitrary text or, half of the time, an action the environment lists as admissible."""
    admissible = env.admissible_actions()
    if admissible and data.draw(st.booleans()):
        return data.draw(st.sampled_from(admissible))
    return data.draw(TEXT_ACTIONS)


def play_expert(env: Environment, task, seed=0) -> list[StepResult]:
    env.reset(task=task, seed=seed)
    results = []
    for _ in range(MAX_EPISODE_STEPS):
        results.append(env.step(env.expert_action()))
        if results[-1].done:
            return results
    raise AssertionError(f"the expert did not finish task {task!r} within {MAX_EPISODE_STEPS} steps")


def check_step_result(result) -> None:
    assert isinstance(result, StepResult)
    assert isinstance(result.observation, str)
    assert isinstance(result.reward, float) and math.isfinite(result.reward)
    assert isinstance(result.done, bool)
    assert isinstance(result.info, dict)
    assert isinstance(result.info["success"], bool)
    assert isinstance(result.info["invalid"], bool)


@pytest.fixture
def private_registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))


@pytest.fixture
def forget_user_modules():
    """User env modules imported by a test are removed from sys.modules after it."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("turnrl_user_env_"):
            del sys.modules[name]


# --- the contract, for every registered environment -------------------------------------------------


def test_the_toy_envs_are_registered():
    assert {"guess-number", "lights"} <= set(ENV_NAMES)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_reset_returns_text_and_splits_are_not_empty(name):
    env = cached_env(name)
    train, test = env.tasks("train"), env.tasks("test")
    assert train and test
    assert not set(train) & set(test)
    observation = env.reset(task=train[0], seed=0)
    assert isinstance(observation, str) and observation.strip()
    with pytest.raises(ValueError, match="train"):
        env.tasks("no-such-split")


@pytest.mark.parametrize("name", ENV_NAMES)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_arbitrary_actions_never_raise(name, data):
    env = cached_env(name)
    task = data.draw(st.sampled_from(env.tasks("train")[:20] + env.tasks("test")[:5]))
    env.reset(task=task, seed=data.draw(st.integers(0, 3)))
    done = False
    for _ in range(data.draw(st.integers(1, 10))):
        result = env.step(draw_action(data, env))
        check_step_result(result)
        if done:  # once over, an episode stays over and pays nothing more
            assert result.done and result.reward == 0.0
        done = done or result.done


@pytest.mark.parametrize("name", ENV_NAMES)
@pytest.mark.parametrize(
    "action",
    ["", "guess " + "9" * 10_000, "9" * 100_000, "toggle -0", "\u202e\U0001f600" * 1000, "\x00\n" * 50],
)
def test_extreme_actions_never_raise(name, action):
    env = cached_env(name)
    env.reset(task=env.tasks("train")[0], seed=0)
    check_step_result(env.step(action))


@pytest.mark.parametrize("name", ENV_NAMES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_same_task_and_seed_give_the_same_episode(name, data):
    first, second = cached_env(name, 0), cached_env(name, 1)
    task = data.draw(st.sampled_from(first.tasks("train")[:20]))
    seed = data.draw(st.integers(0, 5))
    assert first.reset(task=task, seed=seed) == second.reset(task=task, seed=seed)
    for _ in range(data.draw(st.integers(1, 8))):
        action = draw_action(data, first)
        assert first.step(action) == second.step(action)
        assert first.state_key() == second.state_key()


@pytest.mark.parametrize("name", ENV_NAMES)
def test_expert_succeeds(name):
    env = cached_env(name)
    env.reset(task=env.tasks("train")[0], seed=0)
    if env.expert_action() is None:
        pytest.skip(f"{name} has no expert")
    for task in env.tasks("train")[:20] + env.tasks("test")[:20]:
        results = play_expert(env, task)
        assert results[-1].info["success"], f"{name}: the expert failed task {task!r}"
        assert not any(result.info["invalid"] for result in results)


@pytest.mark.parametrize("name", ENV_NAMES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_snapshot_restore_gives_the_same_state_and_future(name, data):
    env, other = cached_env(name, 0), cached_env(name, 1)
    task, seed = data.draw(st.sampled_from(env.tasks("train")[:20])), data.draw(st.integers(0, 3))
    last_observation = env.reset(task=task, seed=seed)
    for _ in range(data.draw(st.integers(0, 4))):
        last_observation = env.step(draw_action(data, env)).observation
    snap, key = env.snapshot(), env.state_key()
    future_actions = [draw_action(data, env) for _ in range(data.draw(st.integers(0, 4)))]
    future = [env.step(action) for action in future_actions]

    for target in (env, other):  # back in the same instance, and in a fresh one
        assert target.restore(snap) == last_observation
        assert target.state_key() == key
        assert [target.step(action) for action in future_actions] == future


@pytest.mark.parametrize("name", ENV_NAMES)
def test_invalid_action_is_flagged(name):
    env = cached_env(name)
    env.reset(task=env.tasks("train")[0], seed=0)
    result = env.step("\x00\x01 certainly not an action \x02")
    check_step_result(result)
    assert result.info["invalid"] is True
    assert result.reward == 0.0


def test_episodes_are_the_same_in_other_processes():
    """The task draw must not depend on Python's per-process string hash salt."""
    script = textwrap.dedent(
        """
        import json
        from turnrl.environments import list_envs, make_env

        out = {}
        for name in ["guess-number", "lights"]:
            env = make_env(name)
            for task in env.tasks("train")[:5]:
                observations = [env.reset(task=task, seed=1)]
                for _ in range(6):
                    result = env.step(env.expert_action())
                    observations.append(result.observation)
                    if result.done:
                        break
                out[f"{name}/{task}"] = observations
        print(json.dumps(out))
        """
    )
    outputs = []
    for hash_seed in ("1", "2"):
        environ = {**os.environ, "PYTHONHASHSEED": hash_seed}
        completed = subprocess.run(
            [sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True
        )
        outputs.append(json.loads(completed.stdout))
    assert outputs[0] == outputs[1]
    here = {}
    for name in ["guess-number", "lights"]:
        env = make_env(name)
        for task in range(5):
            here[f"{name}/{task}"] = [env.reset(task=task, seed=1)] + [
                r.observation for r in play_expert(env, task, 1)
            ]
    assert here == outputs[0]


# --- the registry ------------------------------------------------------------------------------------


class _Counter(Environment):
    """A minimal user environment: count to 3. Uses every default of the base class."""

    def reset(self, task=None, seed=None):
        self.count = 0
        return "Count to 3. Reply with `inc`."

    def step(self, action):
        if action != "inc":
            return StepResult(
                f"Invalid action; count is {self.count}.", 0.0, False, {"success": False, "invalid": True}
            )
        self.count += 1
        won = self.count == 3
        return StepResult(f"count is {self.count}", float(won), won, {"success": won, "invalid": False})

    def tasks(self, split="train"):
        return [0]


def test_register_make_and_list(private_registry):
    register_env("counter", _Counter)
    assert "counter" in list_envs()
    assert isinstance(make_env("counter"), _Counter)
    assert make_env("guess-number", high=8).high == 8  # kwargs reach the factory


def test_register_twice(private_registry):
    register_env("counter", _Counter)
    register_env("counter", _Counter)  # the same factory again is fine
    with pytest.raises(ValueError, match="overwrite=True"):
        register_env("counter", lambda: _Counter())
    register_env("counter", GuessNumberEnv, overwrite=True)
    assert isinstance(make_env("counter"), GuessNumberEnv)
    with pytest.raises(TypeError, match="callable"):
        register_env("broken", "not a factory")


def test_register_toy_envs_twice(private_registry):
    register_toy_envs()
    register_toy_envs()
    assert isinstance(make_env("guess-number"), GuessNumberEnv)
    assert isinstance(make_env("lights"), LightsEnv)


def test_unknown_env_names_the_registered_ones():
    with pytest.raises(ValueError) as err:
        make_env("no-such-env")
    assert "no-such-env" in str(err.value)
    assert "guess-number" in str(err.value) and "lights" in str(err.value)


USER_ENV_FILE = '''
from turnrl.environments import Environment, StepResult, register_env


class EchoEnv(Environment):
    """Say the secret word {word!r} to win."""

    def reset(self, task=None, seed=None):
        self.said = []
        return "Say the secret word."

    def step(self, action):
        self.said.append(action)
        won = action == {word!r}
        return StepResult(f"You said {{action!r}} ({{len(self.said)}} tries).", float(won), won,
                          {{"success": won, "invalid": False}})

    def tasks(self, split="train"):
        return [0]


register_env({name!r}, EchoEnv)
'''


def test_load_env_module_from_a_users_file(tmp_path, private_registry, forget_user_modules):
    path = tmp_path / "my_env.py"
    path.write_text(USER_ENV_FILE.format(name="user-echo", word="open"))
    load_env_module(str(path))
    env = make_env("user-echo")
    assert env.reset() == "Say the secret word."
    env.step("hello")
    snap, key = env.snapshot(), env.state_key()
    assert snap == ReplaySnapshot(task=None, seed=None, actions=("hello",))
    assert key == "You said 'hello' (1 tries)."
    env.step("again")
    assert env.restore(snap) == "You said 'hello' (1 tries)."
    assert env.state_key() == key and env.said == ["hello"]
    result = env.step("open")
    assert result.done and result.info["success"]


def test_load_env_module_files_with_the_same_name(tmp_path, private_registry, forget_user_modules):
    for folder, name in (("a", "env-a"), ("b", "env-b")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "env.py").write_text(USER_ENV_FILE.format(name=name, word="x"))
        load_env_module(str(tmp_path / folder / "env.py"))
    assert {"env-a", "env-b"} <= set(list_envs())


def test_load_env_module_again_after_fixing_the_file(tmp_path, private_registry, forget_user_modules):
    path = tmp_path / "fixme.py"
    path.write_text("raise RuntimeError('typo')\n")
    with pytest.raises(RuntimeError, match="typo"):
        load_env_module(str(path))
    path.write_text(USER_ENV_FILE.format(name="user-fixed", word="x"))
    load_env_module(str(path))
    assert "user-fixed" in list_envs()


def test_load_env_module_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_env_module(str(tmp_path / "missing.py"))
    with pytest.raises(ModuleNotFoundError, match="neither a .py file"):
        load_env_module("no_such_package_for_turnrl.envs")


def test_subclass_of_subclass_records_each_action_once():
    class Louder(_Counter):
        def reset(self, task=None, seed=None):
            return super().reset(task=task, seed=seed).upper()

        def step(self, action):
            result = super().step(action)
            return StepResult(result.observation.upper(), result.reward, result.done, result.info)

    env = Louder()
    assert env.reset(task=0, seed=7) == "COUNT TO 3. REPLY WITH `INC`."
    for action in ["inc", "oops", "inc"]:
        env.step(action)
    assert env.snapshot() == ReplaySnapshot(task=0, seed=7, actions=("inc", "oops", "inc"))
    assert env.state_key() == "COUNT IS 2"
    fresh = Louder()
    assert fresh.restore(env.snapshot()) == "COUNT IS 2"
    assert fresh.count == 2
    assert fresh.step("inc").done


def test_default_snapshot_misuse():
    env = _Counter()
    with pytest.raises(RuntimeError, match="reset"):
        env.snapshot()
    with pytest.raises(RuntimeError, match="reset"):
        env.state_key()
    env.reset()
    with pytest.raises(TypeError, match="snapshot"):
        env.restore(("not", "a", "snapshot"))


def test_a_step_before_reset_that_the_env_answers_does_not_raise():
    class Patient(_Counter):
        def step(self, action):
            if not hasattr(self, "count"):
                return StepResult("Call reset first.", 0.0, False, {"success": False, "invalid": True})
            return super().step(action)

    assert Patient().step("inc").info["invalid"]


# --- guess-number ------------------------------------------------------------------------------------


def target_of(task, seed=0, low=1, high=16):
    """The hidden number, by the draw documented in guess_number.py."""
    return random.Random(f"guess-number-{task}-{seed}").randint(low, high)


def test_guess_number_first_observation_and_pinned_episode():
    env = GuessNumberEnv()
    assert env.reset(task=0, seed=0) == (
        "Guess the hidden number between 1 and 16. Reply with the action `guess N`. You have 6 guesses."
    )
    # Pins the draw: a change here changes every recorded result on this environment.
    assert [target_of(task) for task in range(5)] == [4, 3, 11, 6, 2]
    assert [r.observation for r in play_expert(env, 0)] == [
        "Your guess 8 is too high. 5 guesses left.",
        "Correct! The number was 4.",
    ]


def test_guess_number_feedback():
    task = next(task for task in range(300) if 2 < target_of(task) < 15)
    target = target_of(task)
    env = GuessNumberEnv()
    env.reset(task=task)
    assert env.admissible_actions() == [f"guess {n}" for n in range(1, 17)]

    low = env.step(f"guess {target - 2}")
    assert low == StepResult(
        f"Your guess {target - 2} is too low. 5 guesses left.",
        0.0,
        False,
        {"success": False, "invalid": False},
    )
    assert env.admissible_actions() == [f"guess {n}" for n in range(target - 1, 17)]
    high = env.step(str(target + 2))
    assert high.observation == f"Your guess {target + 2} is too high. 4 guesses left."
    assert env.admissible_actions() == [f"guess {n}" for n in range(target - 1, target + 2)]
    assert env.expert_action() == f"guess {target}"

    correct = env.step(f"  GUESS {target}. ")
    assert correct == StepResult(
        f"Correct! The number was {target}.", 1.0, True, {"success": True, "invalid": False}
    )
    over = env.step(f"guess {target}")
    assert over == StepResult("The episode is over.", 0.0, True, {"success": True, "invalid": True})


@pytest.mark.parametrize(
    "action", ["guess 7", "GUESS   7", " 7 ", "guess: 7", "Guess 7.", "guess7", "+7", "007"]
)
def test_guess_number_accepted_forms(action):
    env = GuessNumberEnv(low=7, high=7)
    env.reset()
    assert env.step(action).info == {"success": True, "invalid": False}


@pytest.mark.parametrize(
    "action", ["guess seven", "guess 0", "guess 17", "guess 3 4", "", "guess -1", "guess", "3.5"]
)
def test_guess_number_invalid_actions(action):
    env = GuessNumberEnv()
    env.reset(task=0)
    env.step("guess 8")  # too high: 1..7 remain
    before = env.admissible_actions()
    result = env.step(action)
    assert result == StepResult(
        "Invalid action: reply with `guess N`, N a whole number from 1 to 16. 4 guesses left.",
        0.0,
        False,
        {"success": False, "invalid": True},
    )
    assert env.admissible_actions() == before


def test_guess_number_runs_out_of_guesses():
    task = next(task for task in range(300) if target_of(task) != 1)
    env = GuessNumberEnv(max_turns=3)
    env.reset(task=task)
    assert env.step("guess 1").observation == "Your guess 1 is too low. 2 guesses left."
    assert env.step("hello").observation.endswith("1 guess left.")
    last = env.step("guess 1")
    assert last == StepResult(
        f"Your guess 1 is too low. No guesses left: the number was {target_of(task)}.",
        0.0,
        True,
        {"success": False, "invalid": False},
    )
    assert env.state_key().endswith("lost")
    env.reset(task=task)
    env.step("guess 1")
    env.step("guess 1")
    invalid_last = env.step("nonsense")
    assert invalid_last.done and invalid_last.info == {"success": False, "invalid": True}


def test_guess_number_expert_wins_every_task_within_five_guesses():
    env = GuessNumberEnv()
    for seed in (0, 1):
        for task in env.tasks("train") + env.tasks("test"):
            results = play_expert(env, task, seed)
            assert results[-1].info["success"] and len(results) <= 5, (task, seed)


def test_guess_number_tasks_and_arguments():
    env = GuessNumberEnv()
    assert env.tasks() == list(range(200)) and env.tasks("test") == list(range(200, 300))
    small = GuessNumberEnv(n_train=3, n_test=2)
    assert small.tasks("train") == [0, 1, 2] and small.tasks("test") == [3, 4]
    with pytest.raises(ValueError, match="train, test"):
        env.tasks("validation")
    assert env.reset() == env.reset(task=0, seed=0)
    with pytest.raises(ValueError, match="integers"):
        env.reset(task="seven")
    with pytest.raises(RuntimeError, match="reset"):
        GuessNumberEnv().step("guess 1")
    with pytest.raises(ValueError, match="low"):
        GuessNumberEnv(low=5, high=4)
    with pytest.raises(ValueError, match="max_turns"):
        GuessNumberEnv(max_turns=0)
    assert {target_of(task, 0) for task in range(300)} == set(range(1, 17))
    assert [target_of(task, 0) for task in range(20)] != [target_of(task, 1) for task in range(20)]


# --- lights ------------------------------------------------------------------------------------------


def lamps_of(observation: str) -> list[bool]:
    """Parse "Lamps: 1 on, 2 off, ..." back into on/off flags."""
    listing = observation.split("Lamps: ", 1)[1].split(".", 1)[0]
    return [part.split()[1] == "on" for part in listing.split(", ")]


def test_lights_toggle_semantics():
    env = LightsEnv()
    observation = env.reset(task=0, seed=0)
    assert observation == "Lamps: 1 off, 2 on, 3 on, 4 on. Turn every lamp on. Reply with `toggle N`."
    on_lamp = lamps_of(observation).index(True) + 1
    turned_off = env.step(f"toggle {on_lamp}")  # a mistake, but a valid action
    assert turned_off.info == {"success": False, "invalid": False} and not turned_off.done
    assert lamps_of(turned_off.observation) == [n not in (1, on_lamp) for n in range(1, 5)]
    assert env.expert_action() == "toggle 1"
    env.step("Toggle 1")
    assert (
        env.state_key() == "lamps " + "".join("0" if n == on_lamp else "1" for n in range(1, 5)) + ", turn 2"
    )
    win = env.step(f" TOGGLE {on_lamp} ")
    assert win == StepResult(
        "Lamps: 1 on, 2 on, 3 on, 4 on. All lamps are on.", 1.0, True, {"success": True, "invalid": False}
    )
    assert env.step("toggle 1") == StepResult(
        "The episode is over.", 0.0, True, {"success": True, "invalid": True}
    )


@pytest.mark.parametrize("action", ["toggle 0", "toggle 5", "toggle", "switch 1", "toggle 1 2", "toggle one"])
def test_lights_invalid_actions(action):
    env = LightsEnv()
    observation = env.reset(task=0)
    result = env.step(action)
    assert result == StepResult(
        "Invalid action (N is a lamp from 1 to 4). " + observation,
        0.0,
        False,
        {"success": False, "invalid": True},
    )


def test_lights_runs_out_of_turns():
    env = LightsEnv(max_turns=2)
    observation = env.reset(task=0)
    on_lamp = lamps_of(observation).index(True) + 1
    env.step(f"toggle {on_lamp}")
    last = env.step(f"toggle {on_lamp}")  # back where it started, and out of turns
    assert last == StepResult(
        observation.split(" Turn")[0] + " Out of turns.", 0.0, True, {"success": False, "invalid": False}
    )


def test_lights_tasks_and_expert():
    env = LightsEnv()
    assert env.tasks() == list(range(200)) and env.tasks("test") == list(range(200, 300))
    env.reset()
    assert env.admissible_actions() == ["toggle 1", "toggle 2", "toggle 3", "toggle 4"]
    patterns = set()
    for task in env.tasks("train") + env.tasks("test"):
        lamps = lamps_of(env.reset(task=task))
        assert 1 <= lamps.count(False) <= 3
        patterns.add(tuple(lamps))
        results = play_expert(env, task)
        assert results[-1].info["success"] and len(results) == lamps.count(False)
    assert len(patterns) == 14  # every pattern with 1 to 3 of 4 lamps off occurs
    assert len(lamps_of(LightsEnv(n_lamps=7).reset(task=3))) == 7
    with pytest.raises(RuntimeError, match="reset"):
        LightsEnv().step("toggle 1")
    with pytest.raises(ValueError, match="n_lamps"):
        LightsEnv(n_lamps=0)
