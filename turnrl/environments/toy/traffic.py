"""Traffic lights: a fixed number of turns, each showing a light; answer red with `stop`, yellow with
`wait`, green with `go`.

The learning check of last resort: the right action depends only on one word at the end of the
latest observation, so even a randomly initialised two-layer model learns it from reward alone in a
few minutes on a CPU (`bench/learning.py`). Each correct answer earns 1 / n_steps, so the episode
return is the fraction answered correctly, and success means every answer was right.

Task ids are integers; the light sequence is drawn by `random.Random("traffic-{task}-{seed}")`,
which seeds from a SHA-512 of the string, so it is identical in every process and on every machine.
"""

from __future__ import annotations

import random

from turnrl.environments.base import Environment, StepResult

ANSWERS = {"red": "stop", "yellow": "wait", "green": "go"}


class TrafficEnv(Environment):
    """`n_steps` lights in a row; every step (invalid ones included) uses one turn."""

    instructions = "Each turn a traffic light is shown. Reply `stop` for red, `wait` for yellow, `go` for green."
    state_attributes = ("_lights", "_turn", "_correct")  # snapshot by copy (base.py)

    def __init__(self, n_steps: int = 4, n_train: int = 200, n_test: int = 100):
        if n_steps < 1 or n_train < 1 or n_test < 1:
            raise ValueError(f"TrafficEnv: n_steps, n_train and n_test must be >= 1, got {n_steps}, {n_train}, "
                             f"{n_test}")
        self.n_steps, self.n_train, self.n_test = n_steps, n_train, n_test
        self._lights: list[str] | None = None

    def tasks(self, split: str = "train") -> list:
        splits = {"train": range(self.n_train), "test": range(self.n_train, self.n_train + self.n_test)}
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(splits)}")
        return list(splits[split])

    def reset(self, task=None, seed=None) -> str:
        if task is not None and (isinstance(task, bool) or not isinstance(task, int)):
            raise ValueError(f"TrafficEnv: task ids are integers, got {task!r}")
        rng = random.Random(f"traffic-{task or 0}-{seed or 0}")
        self._lights = [rng.choice(sorted(ANSWERS)) for _ in range(self.n_steps)]
        self._turn, self._correct = 0, 0
        return self._show()

    def _show(self) -> str:
        return f"Light {self._turn + 1} of {self.n_steps}: {self._lights[self._turn]}."

    def step(self, action: str) -> StepResult:
        if self._lights is None:
            raise RuntimeError("TrafficEnv: call reset() before step()")
        if self._turn >= self.n_steps:
            return StepResult("The episode is over.", 0.0, True, {"success": False, "invalid": True})
        answer = action.strip().strip(".").lower() if isinstance(action, str) else ""
        invalid = answer not in ANSWERS.values()
        right = answer == ANSWERS[self._lights[self._turn]]
        self._correct += right
        self._turn += 1
        done = self._turn == self.n_steps
        feedback = "Invalid action: reply stop, wait or go." if invalid else ("Right." if right else "Wrong.")
        observation = f"{feedback} {'Done.' if done else self._show()}"
        info = {"success": done and self._correct == self.n_steps, "invalid": invalid,
                "score": self._correct / self.n_steps}
        return StepResult(observation, 1.0 / self.n_steps if right else 0.0, done, info)

    def admissible_actions(self) -> list[str] | None:
        if self._lights is None:
            raise RuntimeError("TrafficEnv: call reset() before admissible_actions()")
        return sorted(ANSWERS.values())

    def expert_action(self) -> str | None:
        if self._lights is None:
            raise RuntimeError("TrafficEnv: call reset() before expert_action()")
        return ANSWERS[self._lights[self._turn]] if self._turn < self.n_steps else None

    def state_key(self) -> str:
        if self._lights is None:
            raise RuntimeError("TrafficEnv: call reset() before state_key()")
        shown = self._lights[self._turn] if self._turn < self.n_steps else "none"
        return f"turn {self._turn}, light {shown}, correct {self._correct}"
