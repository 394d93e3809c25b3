"""Pieces the toy environments share: integer task ids and `verb N` action parsing."""

from __future__ import annotations

import operator
import re


def task_id(task) -> int:
    """Task ids are integers; None means task 0."""
    if task is None:
        return 0
    try:
        return operator.index(task)
    except TypeError:
        raise ValueError(f"task ids are integers (see tasks('train')), got {task!r}") from None


def parse_numbered_action(verb: str, action, low: int, high: int) -> int | None:
    """N from "verb N", "Verb: N", "N" or "verb N." when low <= N <= high; None for anything else."""
    if not isinstance(action, str):
        return None
    match = re.fullmatch(rf"(?:{re.escape(verb)}\s*:?\s*)?([+-]?[0-9]+)\.?", action.strip(), re.IGNORECASE)
    # Far too many digits is out of range anyway; int() would refuse beyond 4300 digits.
    if match is None or len(match.group(1)) > 30:
        return None
    number = int(match.group(1))
    return number if low <= number <= high else None
