"""Lights: switch on every lamp in a row, one `toggle N` at a time.

The easiest learning check turnrl has: the right action is readable from the current observation
alone (toggle any lamp that is off), and every observation has the same short, regular form, so a
tiny randomly initialised model can learn it in a few minutes on a CPU.

Task ids are integers; which lamps start off (1 to 3 of them) is drawn by
`random.Random("lights-{task}-{seed}")`, which seeds from a SHA-512 of the string, so it is the same
in every process and on every machine.
"""

from __future__ import annotations

import random

from turnrl.environments.base import Environment, StepResult
from turnrl.environments.toy.common import parse_numbered_action, task_id


class LightsEnv(Environment):
    """A row of `n_lamps` lamps, some off; win by having all of them on within `max_turns` steps.

    Actions: `toggle N` (or a bare `N`) flips lamp N, 1-based; toggling a lamp that is on turns it
    off, a mistake but a valid action. Every step, invalid ones included, uses one turn.
    `state_key()` is the lamp pattern, the turn and the outcome.
    """

    instructions = "Lamps are on or off. Reply with `toggle N` to flip lamp N. Turn every lamp on."
    state_attributes = ("_on", "_turn", "_done", "_won")  # snapshot by copy (base.py)

    def __init__(self, n_lamps: int = 4, max_turns: int = 6, n_train: int = 200, n_test: int = 100):
        if n_lamps < 1:
            raise ValueError(f"LightsEnv: n_lamps must be at least 1, got {n_lamps}")
        if max_turns < 1:
            raise ValueError(f"LightsEnv: max_turns must be at least 1, got {max_turns}")
        if n_train < 1 or n_test < 1:
            raise ValueError(f"LightsEnv: n_train and n_test must be at least 1, got {n_train} and {n_test}")
        self.n_lamps, self.max_turns = n_lamps, max_turns
        self.n_train, self.n_test = n_train, n_test
        self._on: list[bool] | None = None  # None until the first reset

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
        rng = random.Random(f"lights-{task}-{seed}")
        off = set(rng.sample(range(self.n_lamps), rng.randint(1, min(3, self.n_lamps))))
        self._on = [lamp not in off for lamp in range(self.n_lamps)]
        self._turn = 0
        self._done = self._won = False
        return self._board() + " Turn every lamp on. Reply with `toggle N`."

    def step(self, action: str) -> StepResult:
        self._require_reset()
        if self._done:
            return StepResult("The episode is over.", 0.0, True, {"success": self._won, "invalid": True})
        self._turn += 1
        lamp = parse_numbered_action("toggle", action, 1, self.n_lamps)
        prefix = ""
        if lamp is None:
            prefix = f"Invalid action (N is a lamp from 1 to {self.n_lamps}). "
        else:
            self._on[lamp - 1] = not self._on[lamp - 1]
        info = {"success": False, "invalid": lamp is None}
        if all(self._on):
            self._done = self._won = True
            return StepResult(
                prefix + self._board() + " All lamps are on.", 1.0, True, {**info, "success": True}
            )
        if self._turn >= self.max_turns:
            self._done = True
            return StepResult(prefix + self._board() + " Out of turns.", 0.0, True, info)
        return StepResult(
            prefix + self._board() + " Turn every lamp on. Reply with `toggle N`.", 0.0, False, info
        )

    def admissible_actions(self) -> list[str]:
        self._require_reset()
        return [f"toggle {n}" for n in range(1, self.n_lamps + 1)]

    def expert_action(self) -> str:
        """Toggle the lowest-numbered lamp that is off."""
        self._require_reset()
        off = [n for n, on in enumerate(self._on, start=1) if not on]
        return f"toggle {off[0] if off else 1}"

    def state_key(self) -> str:
        self._require_reset()
        outcome = (" won" if self._won else " lost") if self._done else ""
        lamps = "".join("1" if on else "0" for on in self._on)
        return f"lamps {lamps}, turn {self._turn}{outcome}"

    def _board(self) -> str:
        return (
            "Lamps: "
            + ", ".join(f"{n} {'on' if on else 'off'}" for n, on in enumerate(self._on, start=1))
            + "."
        )

    def _require_reset(self) -> None:
        if self._on is None:
            raise RuntimeError("LightsEnv: call reset() before step() or the other episode methods")

