"""Guess the number: find a hidden integer in [low, high] from "too low" / "too high" feedback.

The smallest environment where the right action depends on the history, not only on the last
observation: a policy has to remember the feedback of earlier turns. The expert is binary search,
which wins the default game (1..16, 6 guesses) in at most ceil(log2(16)) + 1 = 5 guesses.

Task ids are integers; the hidden number is drawn by `random.Random("guess-number-{task}-{seed}")`,
which seeds from a SHA-512 of the string, so it is the same in every process and on every machine.
"""

from __future__ import annotations

import random

from turnrl.environments.base import Environment, StepResult
from turnrl.environments.toy.common import parse_numbered_action, task_id


class GuessNumberEnv(Environment):
    """Guess a hidden integer in [low, high] within `max_turns` guesses.

    Actions: `guess N` or a bare `N`. Every step, invalid ones included, uses one of the
    `max_turns` turns. `admissible_actions()` lists the guesses still consistent with the feedback
    so far (the whole range at the start); guesses outside that interval but inside [low, high]
    are valid, just wasteful. `state_key()` is the interval still possible, the turn and the outcome.
    """

    instructions = (
        "Find the hidden number. Each turn reply with `guess N`; the answer says whether N is too low, "
        "too high or correct."
    )
    state_attributes = ("_target", "_lo", "_hi", "_turn", "_done", "_won")  # snapshot by copy (base.py)

    def __init__(
        self, low: int = 1, high: int = 16, max_turns: int = 6, n_train: int = 200, n_test: int = 100
    ):
        if low > high:
            raise ValueError(f"GuessNumberEnv: low ({low}) must not be above high ({high})")
        if max_turns < 1:
            raise ValueError(f"GuessNumberEnv: max_turns must be at least 1, got {max_turns}")
        if n_train < 1 or n_test < 1:
            raise ValueError(
                f"GuessNumberEnv: n_train and n_test must be at least 1, got {n_train} and {n_test}"
            )
        self.low, self.high, self.max_turns = low, high, max_turns
        self.n_train, self.n_test = n_train, n_test
        self._target: int | None = None  # None until the first reset

    def tasks(self, split: str = "train") -> list:
        splits = {
            "train": range(self.n_train),
            "test": range(self.n_train, self.n_train + self.n_test),
        }
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(splits)}")
        return list(splits[split])

    def reset(self, task=None, seed=None) -> str:
        task = task_id(task)
        seed = 0 if seed is None else seed
        self._target = random.Random(f"guess-number-{task}-{seed}").randint(self.low, self.high)
        self._lo, self._hi = self.low, self.high  # the interval still consistent with the feedback
        self._turn = 0
        self._done = self._won = False
        return (
            f"Guess the hidden number between {self.low} and {self.high}. "
            f"Reply with the action `guess N`. You have {self.max_turns} guesses."
        )

    def step(self, action: str) -> StepResult:
        self._require_reset()
        if self._done:
            return StepResult("The episode is over.", 0.0, True, {"success": self._won, "invalid": True})
        self._turn += 1
        guess = parse_numbered_action("guess", action, self.low, self.high)
        if guess is None:
            return self._miss(
                f"Invalid action: reply with `guess N`, N a whole number from {self.low} to {self.high}.",
                invalid=True,
            )
        if guess == self._target:
            self._lo = self._hi = guess
            self._done = self._won = True
            return StepResult(
                f"Correct! The number was {guess}.", 1.0, True, {"success": True, "invalid": False}
            )
        if guess < self._target:
            self._lo = max(self._lo, guess + 1)
            return self._miss(f"Your guess {guess} is too low.", invalid=False)
        self._hi = min(self._hi, guess - 1)
        return self._miss(f"Your guess {guess} is too high.", invalid=False)

    def admissible_actions(self) -> list[str]:
        self._require_reset()
        if self._done:
            return []
        return [f"guess {n}" for n in range(self._lo, self._hi + 1)]

    def expert_action(self) -> str:
        """Binary search: the midpoint of the interval still consistent with the feedback."""
        self._require_reset()
        return f"guess {(self._lo + self._hi) // 2}"

    def state_key(self) -> str:
        self._require_reset()
        outcome = (" won" if self._won else " lost") if self._done else ""
        return f"possible {self._lo}-{self._hi}, turn {self._turn}{outcome}"

    def _miss(self, text: str, invalid: bool) -> StepResult:
        """A step that did not find the number: report the turns left, or end the episode."""
        left = self.max_turns - self._turn
        if left == 0:
            self._done = True
            observation = f"{text} No guesses left: the number was {self._target}."
            return StepResult(observation, 0.0, True, {"success": False, "invalid": invalid})
        observation = f"{text} {left} {'guess' if left == 1 else 'guesses'} left."
        return StepResult(observation, 0.0, False, {"success": False, "invalid": invalid})

    def _require_reset(self) -> None:
        if self._target is None:
            raise RuntimeError("GuessNumberEnv: call reset() before step() or the other episode methods")

