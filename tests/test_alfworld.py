"""ALFWorld: the shipped game generator, the fast engine driver (checked against TextWorld's own PddlEnv), the
environment adapter and the loader of the original ALFWorld data layout.

These tests need the engine (`pip install 'turnrl[alfworld]'`, which CI installs): without it they fail at
import with that instruction rather than skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

try:
    import alfworld  # noqa: F401
    import fast_downward  # noqa: F401
    import textworld
except ImportError as err:  # fail loudly: CI installs the extra, so a missing engine is a broken setup
    raise ImportError(
        f"the ALFWorld tests need the alfworld engine ({err}); install it with: pip install -e '.[dev,alfworld]' "
        "(the turnrl[alfworld] extra)"
    ) from err

from turnrl.environments import make_env
from turnrl.environments.alfworld import INSTRUCTIONS, ALFWorldEnv, data, engine, generator
from turnrl.environments.alfworld.catalog import ROOM_TEMPLATES, TASK_TYPES, AlfredFacts
from turnrl.environments.alfworld.pddl import game_json

TEMPLATES = {template.name: template for template in ROOM_TEMPLATES}


@pytest.fixture(scope="module")
def bundle() -> list[dict]:
    return generator.read_bundle(data.BUNDLE)


@pytest.fixture(scope="module")
def env() -> ALFWorldEnv:
    env = ALFWorldEnv()
    yield env
    env.close()


def digest(records) -> str:
    keys = ("split", "name", "problem", "traj_data")
    return hashlib.sha256(json.dumps([{k: r[k] for k in keys} for r in records], sort_keys=True).encode()).hexdigest()


# --- the generator and the shipped games -------------------------------------------------------------


def test_generator_reproduces_the_shipped_games(bundle):
    """Sampling again (without the planner) gives the shipped games exactly, in the same order."""
    facts = AlfredFacts()
    regenerated = [record for split in generator.SPLITS
                   for record in generator.generate_records(split, facts=facts, check=False)]
    assert [r["name"] for r in regenerated] == [r["name"] for r in bundle]
    assert digest(regenerated) == digest(bundle)


def test_generator_is_the_same_in_another_process(bundle):
    """No dependence on Python's per-process hash salt or set order."""
    script = textwrap.dedent(
        """
        import hashlib, json
        from turnrl.environments.alfworld import generator
        records = list(generator.generate_records("valid_unseen", count=2, check=False))
        keys = ("split", "name", "problem", "traj_data")
        print(hashlib.sha256(json.dumps([{k: r[k] for k in keys} for r in records], sort_keys=True).encode()).hexdigest())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "7"}).stdout.split()[-1]
    unseen = [r for r in bundle if r["split"] == "valid_unseen"][: 2 * len(TASK_TYPES)]
    assert out == digest(unseen)


def test_split_and_task_type_counts(bundle):
    counts = Counter((r["split"], r["traj_data"]["task_type"]) for r in bundle)
    per_split = Counter(r["split"] for r in bundle)
    assert per_split["train"] >= 300 and per_split["valid_seen"] >= 60 and per_split["valid_unseen"] >= 60
    for task_type in TASK_TYPES:
        assert counts["train", task_type] >= 40
        assert counts["valid_seen", task_type] >= 10 and counts["valid_unseen", task_type] >= 10
    assert len({(r["split"], r["name"]) for r in bundle}) == len(bundle)


def _combo(record) -> tuple[str, str]:
    params = record["traj_data"]["pddl_params"]
    return params["object_target"], params["parent_target"]


def test_valid_unseen_shares_no_room_template_or_goal_combination_with_train(bundle):
    train = [r for r in bundle if r["split"] == "train"]
    unseen = [r for r in bundle if r["split"] == "valid_unseen"]
    train_templates = {r["traj_data"]["scene"]["floor_plan"] for r in train}
    unseen_templates = {r["traj_data"]["scene"]["floor_plan"] for r in unseen}
    assert not train_templates & unseen_templates
    assert all(TEMPLATES[name].unseen for name in unseen_templates)
    assert not {_combo(r) for r in train} & {_combo(r) for r in unseen}
    # every room kind of train appears among unseen templates too (out of distribution, not out of domain)
    assert {TEMPLATES[t].kind for t in unseen_templates} == {TEMPLATES[t].kind for t in train_templates}


def test_valid_seen_is_new_placements_in_the_train_rooms(bundle):
    train = [r for r in bundle if r["split"] == "train"]
    seen = [r for r in bundle if r["split"] == "valid_seen"]
    assert {r["traj_data"]["scene"]["floor_plan"] for r in seen} <= {r["traj_data"]["scene"]["floor_plan"]
                                                                      for r in train}
    assert not any(generator.is_unseen_combo(*_combo(r)) for r in train + seen)
    assert not {r["problem"] for r in seen} & {r["problem"] for r in train}


def test_games_vary_rooms_distractors_and_hidden_objects(bundle):
    receptacle_counts = {len([line for line in r["problem"].splitlines() if line.strip().endswith("- receptacle")])
                         for r in bundle}
    assert len(receptacle_counts) >= 8
    object_counts = {len([line for line in r["problem"].splitlines() if line.strip().endswith("- object")])
                     for r in bundle}
    assert min(object_counts) >= 4 and len(object_counts) >= 8
    kinds = {TEMPLATES[r["traj_data"]["scene"]["floor_plan"]].kind for r in bundle}
    assert kinds == {"kitchen", "bathroom", "bedroom", "livingroom"}
    # the expert must open something first in a good share of games: the object had to be found
    opened = sum(any(step.startswith("open ") for step in r["walkthrough"]) for r in bundle)
    assert 0.2 * len(bundle) < opened < 0.9 * len(bundle)


def test_every_shipped_game_is_solvable_and_a_sample_replans(bundle):
    assert all(r["walkthrough"] for r in bundle)
    facts = AlfredFacts()
    by_type = {}
    for r in bundle:
        by_type.setdefault(r["traj_data"]["task_type"], r)
    for task_type, record in by_type.items():  # one game per task type through the planner again
        index = int(record["name"].rsplit("-", 1)[1])
        spec = generator.sample_game(record["split"], task_type, index, facts)
        assert engine.solve_and_verify(spec, record["problem"]), record["name"]


# --- the engine driver -------------------------------------------------------------------------------


def test_the_driver_matches_textworlds_pddl_env(env):
    """Observations and admissible commands equal those of PddlEnv + AlfredDemangler along random walks."""
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    from textworld.envs.pddl import PddlEnv

    index = data.game_index(None)
    rng = random.Random(0)
    for task in (env.tasks("train")[1], env.tasks("test")[5]):
        reference = AlfredDemangler(PddlEnv(textworld.EnvInfos(admissible_commands=True, won=True)))
        reference.load(str(index.games[task].path))
        state = reference.reset()
        assert env.reset(task) == state.feedback
        for _ in range(12):
            assert env._engine.admissible_commands == state["admissible_commands"]
            command = rng.choice(state["admissible_commands"] + ["jump"])
            state, _, _ = reference.step(command)
            assert env.step(command).observation == state.feedback


def test_the_driver_writes_commands_as_the_grammar_does(env):
    env.reset(env.tasks("train")[2])
    engine_ = env._engine
    for command in env.expert_action(), "look":
        env.step(command)
        infos = engine_.game.entity_infos
        for action in engine_.state.all_applicable_actions():
            assert engine_._command(action, infos) == engine_.grammar_command(action, infos)


def test_loading_keeps_sys_argv():
    argv = list(sys.argv)
    engine.GameData(json.loads(next(iter(data.game_index(None).games.values())).path.read_text()))
    assert sys.argv == argv


# --- the environment ---------------------------------------------------------------------------------


def test_tasks_and_splits(env):
    train, seen, unseen = env.tasks("train"), env.tasks("valid_seen"), env.tasks("valid_unseen")
    assert len(train) >= 300 and len(seen) >= 60 and len(unseen) >= 60
    assert env.tasks("test") == unseen
    assert ALFWorldEnv(test_split="valid_seen").tasks("test") == seen
    assert all(task.startswith("train/") for task in train)
    # interleaved: the first six tasks of a split are one of each type
    assert [env.task_type(task) for task in unseen[:6]] == list(TASK_TYPES)
    with pytest.raises(ValueError, match="train"):
        env.tasks("valid")
    with pytest.raises(ValueError, match="unknown task"):
        env.reset("train/no-such-game")


def test_first_observation_and_admissible_actions(env):
    observation = env.reset(env.tasks("train")[0])
    assert "You are in the middle of a room" in observation
    assert "Your task is to: " in observation
    actions = env.admissible_actions()
    assert "help" not in actions and "look" in actions and "inventory" in actions
    assert all(a.startswith(("go to ", "look", "inventory", "examine")) for a in actions)
    assert env.instructions == INSTRUCTIONS and "move OBJECT to RECEPTACLE" in INSTRUCTIONS


def test_invalid_commands_change_nothing(env):
    env.reset(env.tasks("train")[0])
    key, actions = env.state_key(), env.admissible_actions()
    for action in ("jump around", "put apple 1 in fridge 1", "", "\x00", "🙂" * 10, "go to " + "x" * 5000, 42):
        result = env.step(action)
        assert result.observation == "Nothing happens."
        assert result.reward == 0.0 and not result.done
        assert result.info["invalid"] is True and result.info["success"] is False
        assert env.state_key() == key and env.admissible_actions() == actions


def test_commands_are_matched_loosely(env):
    lenient = ALFWorldEnv(strict_actions=False)
    lenient.reset(lenient.tasks("train")[0])
    target = lenient.admissible_actions()[0]
    result = lenient.step("  " + target.upper().replace(" ", "   ") + ". ")
    assert result.info["invalid"] is False and result.observation.startswith("You arrive at")
    lenient.close()


def test_strict_actions_is_the_default_and_matches_the_original():
    strict = ALFWorldEnv()
    assert strict.strict_actions is True
    strict.reset(strict.tasks("train")[0])
    target = strict.admissible_actions()[0]
    for variant in (target.upper(), target + ".", target.replace(" ", "  ", 1)):
        result = strict.step(variant)
        assert result.observation == "Nothing happens." and result.info["invalid"] is True
    assert strict.step(f"  {target}\n").info["invalid"] is False     # outer whitespace is stripped, as PddlEnv does
    strict.close()
    with pytest.raises(TypeError, match="strict_actions"):
        ALFWorldEnv(strict_actions="yes")


def _variant(rng: random.Random, command: str) -> str:
    """The command as a sloppy policy might write it: other case, doubled spaces, a final period."""
    return rng.choice([command.upper(), command.capitalize(), command + ".", command.replace(" ", "  "),
                       f"  {command}  "])


def test_strict_and_lenient_replay_the_same_walks():
    """The same seeded walks (admissible commands, sloppy variants of them, unknown commands) on both settings
    and on TextWorld's PddlEnv: strict answers as PddlEnv given the text; lenient answers as PddlEnv given the
    normalised text. The walks hold variants that only the lenient setting accepts."""
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    from textworld.envs.pddl import PddlEnv

    index = data.game_index(None)
    accepted_only_when_lenient = 0
    for strict_actions in (True, False):
        env = ALFWorldEnv(strict_actions=strict_actions)
        for seed, task in enumerate((env.tasks("train")[4], env.tasks("valid_seen")[2])):
            reference = AlfredDemangler(PddlEnv(textworld.EnvInfos(admissible_commands=True, won=True)))
            reference.load(str(index.games[task].path))
            state = reference.reset()
            assert env.reset(task) == state.feedback
            rng = random.Random(seed)
            for _ in range(30):
                choice = rng.random()
                exact = rng.choice(env.admissible_actions())
                action = exact if choice < 0.5 else _variant(rng, exact) if choice < 0.9 else "jump"
                state, _, done = reference.step(action if strict_actions else env.normalise(action) or "")
                result = env.step(action)
                assert result.observation == state.feedback
                assert env.admissible_actions() == [c for c in state["admissible_commands"] if c != "help"]
                assert result.info["invalid"] == (state.feedback == "Nothing happens.")
                if not strict_actions and action.strip() != exact and action != "jump":
                    accepted_only_when_lenient += not result.info["invalid"]
                if done:
                    break
        env.close()
    assert accepted_only_when_lenient > 0


def test_expert_wins_each_task_type_on_each_split(env):
    for split in ("train", "valid_seen", "valid_unseen"):
        for task in env.tasks(split)[:6]:
            env.reset(task)
            results = []
            while True:
                result = env.step(env.expert_action())
                results.append(result)
                if result.done:
                    break
            assert results[-1].info["success"] and results[-1].reward == 1.0, task
            assert sum(r.reward for r in results) == 1.0
            assert not any(r.info["invalid"] for r in results)
            assert env.expert_action() is None
            over = env.step("look")
            assert over.done and over.reward == 0.0 and over.info["success"]


def test_expert_replans_after_a_detour(env):
    task = env.tasks("train")[3]
    env.reset(task)
    plan_start = env.expert_action()
    detour = next(a for a in env.admissible_actions() if a.startswith("go to ") and a != plan_start)
    env.step(detour)
    for _ in range(40):
        result = env.step(env.expert_action())
        assert not result.info["invalid"]
        if result.done:
            break
    assert result.info["success"]


def test_step_limit():
    env = ALFWorldEnv(max_steps=3)
    env.reset(env.tasks("train")[0])
    results = [env.step("look"), env.step("jump"), env.step("inventory")]
    assert [r.done for r in results] == [False, False, True]
    assert not results[-1].info["success"] and results[-1].reward == 0.0
    after = env.step(env.admissible_actions()[0])
    assert after.done and after.reward == 0.0 and after.info["invalid"]
    env.close()
    with pytest.raises(ValueError, match="max_steps"):
        ALFWorldEnv(max_steps=0)


@settings(max_examples=40, deadline=None)
@given(text=st.one_of(st.text(max_size=80), st.sampled_from(["\x00" * 3, "🙂", "move", "go to", "take  from"])))
def test_arbitrary_text_never_raises(env, text):
    env.reset(env.tasks("valid_seen")[0])
    result = env.step(text)
    assert isinstance(result.observation, str) and isinstance(result.info["invalid"], bool)
    assert isinstance(result.info["success"], bool) and result.reward in (0.0, 1.0)


def test_many_environments_in_one_process_share_games_and_reuse_planner_copies():
    tasks = ALFWorldEnv().tasks("train")[:4]
    envs = [make_env("alfworld") for _ in range(24)]
    for i, env in enumerate(envs):
        env.reset(tasks[i % 4])
        env.step(env.admissible_actions()[i % 3])
    assert envs[0]._game is envs[4]._game  # one GameData per game file and process
    assert envs[0].state_key() != envs[1].state_key()
    for env in envs:
        env.close()
    free = len(engine._FREE_LIBS)
    assert free >= 24
    again = [make_env("alfworld") for _ in range(24)]
    for env in again:
        env.reset(tasks[0])
    assert len(engine._FREE_LIBS) == free - 24  # the copies were reused, none loaded
    for env in again:
        env.close()


# --- the original ALFWorld data layout -----------------------------------------------------------------


def _fake_original_data(root: Path, env: ALFWorldEnv) -> dict[str, str]:
    """A tiny json_2.1.1 tree built from shipped games, with the folders alfworld skips."""
    index = data.game_index(None)
    made = {}
    for split in data.SPLITS:
        for n, task in enumerate(env.tasks(split)[:2]):
            game = json.loads(index.games[task].path.read_text())
            game["walkthrough"] = None  # original files carry no plan we rely on: the expert replans
            trial = root / "json_2.1.1" / split / task.split("/", 1)[1] / f"trial_T2019_{n}"
            trial.mkdir(parents=True)
            (trial / "game.tw-pddl").write_text(json.dumps(game))
            shutil.copy(index.games[task].path.with_name("traj_data.json"), trial / "traj_data.json")
            made[split] = f"{split}/{task.split('/', 1)[1]}/trial_T2019_{n}"
    # skipped as alfworld skips them: movable and sliced tasks, unsolvable games, folders without a game
    for name, solvable in (("pick_and_place_with_movable_recep-X-Y-Z-1", True),
                           ("pick_heat_then_place_in_recep-AppleSliced-None-Fridge-1", True),
                           ("pick_and_place_simple-Mug-None-Desk-9", False)):
        trial = root / "json_2.1.1" / "train" / name / "trial_T1"
        shutil.copytree(Path(index.games[env.tasks("train")[0]].path).parent, trial)
        game = json.loads((trial / "game.tw-pddl").read_text())
        game["solvable"] = solvable
        (trial / "game.tw-pddl").write_text(json.dumps(game))
    (root / "json_2.1.1" / "train" / "empty" / "trial_T1").mkdir(parents=True)
    return made


def test_original_data_layout(tmp_path, env, monkeypatch):
    shipped_train = env.tasks("train")
    made = _fake_original_data(tmp_path / "alfworld_data", env)
    original = ALFWorldEnv(data_dir=str(tmp_path / "alfworld_data"))
    assert len(original.tasks("train")) == 2 and len(original.tasks("valid_seen")) == 2
    assert made["valid_unseen"] in original.tasks("test")
    assert all("/trial_T2019_" in task for task in original.tasks("train"))
    task = original.tasks("train")[0]
    assert original.reset(task) == env.reset(original.tasks("train")[0].rsplit("/", 1)[0])
    for _ in range(30):
        result = original.step(original.expert_action())  # planned by fast-downward: no stored plan
        if result.done:
            break
    assert result.info["success"] and not result.info["invalid"]
    original.close()

    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "alfworld_data"))
    assert ALFWorldEnv().tasks("train") == original.tasks("train")
    assert ALFWorldEnv(data_dir="generated").tasks("train") == shipped_train
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "nothing_here"))  # as importing alfworld sets it
    assert ALFWorldEnv().tasks("train") == shipped_train
    assert ALFWorldEnv(data_dir=str(tmp_path / "alfworld_data" / "json_2.1.1")).tasks("train") == \
        original.tasks("train")
    with pytest.raises(FileNotFoundError, match="json_2.1.1"):
        ALFWorldEnv(data_dir=str(tmp_path)).tasks("train")


def test_game_json_fills_the_task_sentence(bundle):
    record = bundle[0]
    spec = generator.sample_game(record["split"], record["traj_data"]["task_type"], 0, AlfredFacts())
    game = game_json(spec, record["problem"], record["walkthrough"])
    assert "UNKNOWN GOAL" not in game["grammar"] and spec.task_text in game["grammar"]


def test_episodes_are_the_same_in_other_processes(env):
    """Observations (receptacle contents are listed from sets of facts) do not depend on the hash salt."""
    script = textwrap.dedent(
        """
        import json
        from turnrl.environments.alfworld import ALFWorldEnv
        env = ALFWorldEnv()
        out = []
        for task in env.tasks("test")[:3]:
            out.append(env.reset(task))
            while True:
                result = env.step(env.expert_action())
                out.append(result.observation)
                if result.done:
                    break
        print(json.dumps(out))
        """
    )
    outputs = [json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                         env={**os.environ, "PYTHONHASHSEED": seed}).stdout.splitlines()[-1])
               for seed in ("1", "2")]
    assert outputs[0] == outputs[1]
    here = []
    for task in env.tasks("test")[:3]:
        here.append(env.reset(task))
        while True:
            result = env.step(env.expert_action())
            here.append(result.observation)
            if result.done:
                break
    assert here == outputs[0]
