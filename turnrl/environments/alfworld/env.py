"""ALFWorld: text household tasks played on the real alfworld/TextWorld engine (PDDL + fast-downward).

The agent reads the engine's observations (the first one ends with "Your task is to: ...") and sends one
command per turn in the alfworld 0.4.2 grammar: `go to X`, `open X`, `close X`, `take O from X`,
`move O to X` (0.4.2 has no `put O in/on X`), `use LAMP`, `heat O with MICROWAVE`, `cool O with FRIDGE`,
`clean O with SINKBASIN`, `examine O`, `examine X`, `inventory`, `look`. Entities are named "<type> <n>"
("apple 1", "sinkbasin 2"). A command the engine does not accept answers "Nothing happens." and is flagged
`info["invalid"]`; it changes nothing but uses a step. A win pays 1 and ends the episode; otherwise the
episode ends after `max_steps` steps (50, as in verl-agent and the HGPO/GiGPO papers).

Splits are ALFWorld's: train, valid_seen (in distribution), valid_unseen (out of distribution: unseen rooms
and goal combinations). `test` is valid_unseen, the split ReAct and Reflexion report as ALFWorld's test set
(`test_split="valid_seen"` selects the other). Task ids name games ("train/<game folder>"); the games have no
randomness, so a task id alone fixes the episode and `seed` only picks a task when `task` is None.

Actions (`strict_actions`): by default (True) a command must be one of the engine's command strings
exactly, after stripping whitespace at both ends, as the original TextWorld `PddlEnv.step` matches them:
"Go to fridge 1." or "go  to fridge 1" answers "Nothing happens." there and here, so a policy trained
here succeeds only with commands the benchmark accepts. `strict_actions=False` matches after collapsing
whitespace, lower-casing and dropping a final period ("Go to fridge 1." is "go to fridge 1"), a lenient
reading for small models that is not the benchmark's. `admissible_actions()` lists the engine's admissible commands
without `help` (as verl-agent's prompts do; `help` is still accepted). `expert_action()` is the planner's next
command: the stored plan of a shipped game while the agent follows it, else fast-downward replans from the
current state (a fraction of a second to a few seconds), only when asked.

After a win: the episode ends (`done`, as the original's gym wrapper reports `done = won`), and any further
step answers "The episode is over." with reward 0. The TextWorld engine itself keeps accepting commands
after a win and reports score 1 again on each later step (won stays true), which only matters to a caller
that ignores `done`; verl-agent stops stepping an environment once it is done, as turnrl does.

Snapshots (tree search) keep the base class's replay: the engine's state lives inside fast-downward's shared
library, which can apply operators and read its state but has no call to set one, so it cannot be copied. A
restore is a reset (the game's translation is cached per process) and the recorded commands played again.
"""

from __future__ import annotations

import random

from turnrl.environments.alfworld import data
from turnrl.environments.alfworld.engine import NOTHING_HAPPENS, GameEngine, load_game
from turnrl.environments.base import Environment, StepResult

# Commands whose effects (PDDL "checked" facts) cannot change a plan: a plan stays valid across them.
_PLAN_NEUTRAL = ("look", "inventory", "help", "examine ")
# Facts that change during play: the state key is made of them.
_DYNAMIC = frozenset({"atlocation", "holds", "holdsany", "inreceptacle", "objectatlocation", "opened", "isclean",
                      "ishot", "iscool", "istoggled", "ison"})
_MAX_ACTION_CHARS = 1000

INSTRUCTIONS = (
    "You are an expert agent operating in the ALFRED embodied environment (ALFWorld), a household described in "
    "text. The first observation states your task after \"Your task is to:\". Each turn, choose one of the "
    "admissible actions. Commands: go to RECEPTACLE, open RECEPTACLE, close RECEPTACLE, take OBJECT from "
    "RECEPTACLE, move OBJECT to RECEPTACLE (this is how you put something in or on a receptacle), use LAMP, "
    "heat OBJECT with MICROWAVE, cool OBJECT with FRIDGE, clean OBJECT with SINKBASIN, examine OBJECT, "
    "inventory, look. Names look like \"apple 1\". You must be at a receptacle to take from or move to it, and "
    "hold an object to heat, cool or clean it. Closed receptacles must be opened to see inside. A command that "
    "cannot be done answers \"Nothing happens.\""
)


# The same guidance for compact prompts, which list the admissible actions (less the `go to`s, derivable
# from the room the first observation describes): the command list is cut to what the list does not say.
COMPACT_INSTRUCTIONS = (
    "You are in a household described in text (ALFWorld); the first observation ends with your task. Each turn, "
    "choose one admissible action. \"move OBJECT to RECEPTACLE\" puts it in or on the receptacle. You must be at a "
    "receptacle to take from or move to it, and hold an object to heat, cool or clean it. Open closed receptacles "
    "to see inside. \"Nothing happens.\" means the command cannot be done."
)
_GO_TO = "go to "


class ALFWorldEnv(Environment):
    """One ALFWorld game at a time on the real engine. See the module docstring."""

    instructions = INSTRUCTIONS
    compact_instructions = COMPACT_INSTRUCTIONS

    def __init__(self, max_steps: int = 50, data_dir: str | None = None, test_split: str = "valid_unseen",
                 strict_actions: bool = True):
        if max_steps < 1:
            raise ValueError(f"ALFWorldEnv: max_steps must be >= 1, got {max_steps}")
        if test_split not in ("valid_seen", "valid_unseen"):
            raise ValueError(f"ALFWorldEnv: test_split must be 'valid_seen' or 'valid_unseen', got {test_split!r}")
        if not isinstance(strict_actions, bool):
            raise TypeError(f"ALFWorldEnv: strict_actions must be True (the original's exact commands) or False "
                             f"(lenient matching), got {strict_actions!r}")
        self.max_steps = max_steps
        self.strict_actions = strict_actions
        self.data_dir = data_dir
        self.test_split = test_split
        self._engine = GameEngine()
        self._games: data.GameIndex | None = None
        self._task = None
        self._entry: data.GameEntry | None = None

    # --- tasks -------------------------------------------------------------------------------------------

    def _index(self) -> data.GameIndex:
        if self._games is None:  # resolved once: an instance keeps its games
            self._games = data.game_index(self.data_dir)
        return self._games

    def tasks(self, split: str = "train") -> list:
        names = {*data.SPLITS, "test"}
        if split not in names:
            raise ValueError(f"unknown split {split!r}; valid splits: train, valid_seen, valid_unseen, test "
                             f"(= {self.test_split})")
        return list(self._index().splits[self.test_split if split == "test" else split])

    def task_type(self, task) -> str:
        """The task type of a task id ("pick_heat_then_place_in_recep", ...)."""
        return self._entry_of(task).task_type

    def _entry_of(self, task) -> data.GameEntry:
        games = self._index().games
        if not isinstance(task, str) or task not in games:
            raise ValueError(f"ALFWorldEnv: unknown task {task!r}; task ids are strings from tasks(split), "
                             f"e.g. {next(iter(games))!r}")
        return games[task]

    # --- play --------------------------------------------------------------------------------------------

    def reset(self, task=None, seed=None) -> str:
        if task is None:
            train = self.tasks("train")
            task = train[random.Random(f"alfworld-task-{seed}").randrange(len(train))] if seed is not None \
                else train[0]
        self._entry = self._entry_of(task)
        self._game = load_game(self._entry.path)
        self._task = task
        observation = self._engine.reset(self._game)
        # The receptacles the first observation lists: the `go to` targets from the middle of the room.
        self._room = {c[len(_GO_TO):] for c in self._engine.admissible_commands if c.startswith(_GO_TO)}
        self._steps = 0
        self._done = False
        self._won = False
        self._plan = list(self._game.walkthrough) if self._game.walkthrough else None
        return observation

    def _require_reset(self, what: str) -> None:
        if self._task is None:
            raise RuntimeError(f"ALFWorldEnv: call reset() before {what}()")

    @staticmethod
    def normalise(action) -> str | None:
        """The command an action text means under lenient matching (whitespace collapsed, lower case, no
        final period), or None."""
        if not isinstance(action, str) or len(action) > _MAX_ACTION_CHARS:
            return None
        command = " ".join(action.split()).lower().rstrip(".").rstrip()
        return command or None

    def command_of(self, action) -> str | None:
        """The command the engine is given for an action text: stripped only under `strict_actions` (the
        original's matching), `normalise`d otherwise; None for text that cannot be a command."""
        if not self.strict_actions:
            return self.normalise(action)
        if not isinstance(action, str) or len(action) > _MAX_ACTION_CHARS:
            return None
        return action.strip() or None

    def step(self, action: str) -> StepResult:
        self._require_reset("step")
        if self._done:
            return StepResult("The episode is over.", 0.0, True, self._info(invalid=True))
        command = self.command_of(action)
        feedback, valid = self._engine.step(command) if command is not None else (NOTHING_HAPPENS, False)
        self._steps += 1
        if valid:
            self._follow_plan(command)
        won = self._engine.won
        reward = 1.0 if won and not self._won else 0.0
        self._won = won
        self._done = won or self._steps >= self.max_steps
        return StepResult(feedback, reward, self._done, self._info(invalid=not valid))

    def _info(self, invalid: bool) -> dict:
        return {"success": self._won, "invalid": invalid, "score": 1.0 if self._won else 0.0,
                "task_type": self._entry.task_type}

    def _follow_plan(self, command: str) -> None:
        if self._plan and command == self._plan[0]:
            self._plan.pop(0)
        elif not command.startswith(_PLAN_NEUTRAL):
            self._plan = None  # off the plan: replan when the expert is next asked

    def admissible_actions(self) -> list[str] | None:
        self._require_reset("admissible_actions")
        return [command for command in self._engine.admissible_commands if command != "help"]

    def compact_actions(self) -> str | None:
        """The admissible actions with the `go to`s folded into one phrase: they name every receptacle of
        the room (which the first observation lists) but the one the agent is at."""
        actions = self.admissible_actions()
        targets = {a[len(_GO_TO):] for a in actions if a.startswith(_GO_TO)}
        left_out = sorted(self._room - targets)
        if not targets <= self._room or len(left_out) > 1:
            return None  # not the usual shape: the plain list
        others = [a for a in actions if not a.startswith(_GO_TO)]
        go = "go to any receptacle of the room" + (f" but {left_out[0]}" if left_out else "")
        return f"Actions: {', '.join(others)}{', or ' if others else ''}{go}"

    def expert_action(self) -> str | None:
        self._require_reset("expert_action")
        if self._done:
            return None
        if not self._plan or self._plan[0] not in self._engine.admissible_commands:
            self._plan = self._engine.replan()
        return self._plan[0] if self._plan else None

    def state_key(self) -> str:
        self._require_reset("state_key")
        facts = sorted(str(fact) for fact in self._engine.state.facts if fact.name in _DYNAMIC)
        return f"{self._task} | {self._steps >= self.max_steps or self._won} | " + " & ".join(facts)

    def close(self) -> None:
        self._engine.close()
