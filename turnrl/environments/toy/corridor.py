"""Corridor: a row of doors, each with a coloured lamp; open a red door with `push`, a yellow one with
`knock`, a green one with `pull`. A wrong move sends the agent back to the first door.

Built for comparing advantage estimators on long horizons (`bench/advantages.py`):
- the reward is sparse: 1 for leaving through the last door, nothing else, so an episode's return says
  little about which of its steps were good;
- the observation is only the lamp in front of the agent, so the same observation recurs at different
  depths (the third door may look like the first, and a fall back to the start looks like the start),
  which is what GiGPO's anchor-state groups and HGPO's history groups pool;
- an episode ends on the exit or after `max_steps` moves, so a failed episode is long.

Task ids are integers; the lamps are drawn by `random.Random("corridor-{task}-{seed}")`, identical in
every process.
"""

from __future__ import annotations

import random

from turnrl.environments.base import Environment, StepResult

MOVES = {"red": "push", "yellow": "knock", "green": "pull"}


class CorridorEnv(Environment):
    """`n_doors` doors in a row and at most `max_steps` moves; reward 1 for getting through the last one."""

    instructions = ("You walk down a corridor of doors. A red lamp means `push`, a yellow lamp `knock`, a green "
                    "lamp `pull`. A wrong move sends you back to the first door.")
    state_attributes = ("_lamps", "_door", "_steps", "_done")  # snapshot by copy (base.py)

    def __init__(self, n_doors: int = 4, max_steps: int = 8, n_train: int = 200, n_test: int = 100):
        if n_doors < 1 or max_steps < n_doors or n_train < 1 or n_test < 1:
            raise ValueError(f"CorridorEnv: need n_doors >= 1, max_steps >= n_doors, n_train and n_test >= 1; got "
                             f"{n_doors}, {max_steps}, {n_train}, {n_test}")
        self.n_doors, self.max_steps, self.n_train, self.n_test = n_doors, max_steps, n_train, n_test
        self._lamps: list[str] | None = None

    def tasks(self, split: str = "train") -> list:
        splits = {"train": range(self.n_train), "test": range(self.n_train, self.n_train + self.n_test)}
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(splits)}")
        return list(splits[split])

    def reset(self, task=None, seed=None) -> str:
        if task is not None and (isinstance(task, bool) or not isinstance(task, int)):
            raise ValueError(f"CorridorEnv: task ids are integers, got {task!r}")
        rng = random.Random(f"corridor-{task or 0}-{seed or 0}")
        self._lamps = [rng.choice(sorted(MOVES)) for _ in range(self.n_doors)]
        self._door, self._steps, self._done = 0, 0, False
        return self._show()

    def _show(self) -> str:
        return f"A door with a {self._lamps[self._door]} lamp."

    def _started(self) -> None:
        if self._lamps is None:
            raise RuntimeError("CorridorEnv: call reset() first")

    def step(self, action: str) -> StepResult:
        self._started()
        if self._done:
            return StepResult("The episode is over.", 0.0, True, {"success": False, "invalid": True})
        move = action.strip().strip(".").lower() if isinstance(action, str) else ""
        invalid = move not in MOVES.values()
        self._steps += 1
        if move == MOVES[self._lamps[self._door]]:
            self._door += 1
        elif not invalid:
            self._door = 0
        won = self._door == self.n_doors
        self._done = won or self._steps >= self.max_steps
        if won:
            observation = "You are through the last door."
        elif invalid:
            observation = f"Not a move: push, knock or pull. {self._show()}"
        else:
            observation = f"Out of moves. {self._show()}" if self._done else self._show()
        return StepResult(observation, 1.0 if won else 0.0, self._done, {"success": won, "invalid": invalid})

    def admissible_actions(self) -> list[str] | None:
        self._started()
        return sorted(MOVES.values())

    def expert_action(self) -> str | None:
        self._started()
        return None if self._done else MOVES[self._lamps[self._door]]
