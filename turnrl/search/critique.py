"""Agent Q's AI self-critique (Putta et al. 2024, §5.1, Fig. 4): the policy's own model ranks the K actions
proposed at a node.

The critic is asked for the best of the candidates, the best is removed and it is asked again, until one is
left: K - 1 questions give a full ranking. The rank becomes the critic's value Q̂(h_t, aⁱ), which the tree
blends with its empirical value (Eq. 10, `mcts.blended_value`). The paper gives no mapping from rank to Q̂;
`RANK_VALUES` offers two, linear (the default: 1 for the best down to 0 for the worst, the range of the
outcome reward R ∈ {0, 1}) and reciprocal 1 / (rank + 1) (the third-party reimplementation's `fast_reward`).

The critic's reply is free text from a model that may be small or untrained: `parse_choice` reads the number
inside `<best>N</best>`, else the first whole number in range, and never raises. A reply it cannot read picks
the first remaining candidate; candidates are listed in the order of the policy's mean token log-prob, so that
fallback is the policy's own preference.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator

CRITIC_SYSTEM_PROMPT = "You judge which next action of an agent in a text environment is most useful for its task."
CRITIC_STOP = ("</best>",)
_BEST = re.compile(r"<best>\s*#?\s*([0-9]{1,4})\s*</best>", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![0-9])([0-9]{1,4})(?![0-9])")


def linear_rank_value(rank: int, n: int) -> float:
    """Q̂ of the candidate ranked `rank` (0 = best) of `n`: 1 - rank / (n - 1); a lone candidate gets 1."""
    return 1.0 if n <= 1 else 1.0 - rank / (n - 1)


def reciprocal_rank_value(rank: int, n: int) -> float:
    """Q̂ = 1 / (rank + 1): 1, 1/2, 1/3, ... (the third-party reimplementation's score)."""
    return 1.0 / (rank + 1)


RANK_VALUES: dict[str, Callable[[int, int], float]] = {"linear": linear_rank_value,
                                                        "reciprocal": reciprocal_rank_value}


def parse_choice(text, n: int) -> int | None:
    """The 0-based index of the candidate a critic's reply names among `n` candidates numbered 1..n, or None.
    Reads `<best>N</best>` first, then the first whole number from 1 to n anywhere in the reply."""
    if not isinstance(text, str) or n < 1:
        return None
    for pattern in (_BEST, _NUMBER):
        for match in pattern.finditer(text):
            number = int(match.group(1))
            if 1 <= number <= n:
                return number - 1
    return None


def critique_messages(instructions: str, task_observation: str, past_actions: list[str], observation: str,
                      candidates: list[str]) -> list[dict]:
    """The critic's chat prompt: the task, the history as Agent Q defines it (the past actions and the current
    observation, h_t = (a_1, …, a_{t-1}, o_t)), and the numbered candidates."""
    lines = [instructions.strip()] if instructions.strip() else []
    lines.append(f"Task: {task_observation}")
    lines.append(f"Actions taken so far: {'; '.join(past_actions) if past_actions else 'none'}")
    if past_actions:
        lines.append(f"Current observation: {observation}")
    lines.append("Candidate next actions:")
    lines += [f"{i}. {candidate}" for i, candidate in enumerate(candidates, start=1)]
    lines.append("Which candidate is most likely to lead to completing the task? Reply with its number inside "
                 "<best> </best>.")
    return [{"role": "system", "content": CRITIC_SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def ranking_dialogue(instructions: str, task_observation: str, past_actions: list[str], observation: str,
                     candidates: list[str]) -> Generator[list[dict], str, tuple[list[int], int]]:
    """Rank `candidates` by asking for the best, removing it and asking again (Fig. 4). A generator: it yields
    the critic's chat messages and is sent the critic's reply text; it returns (ranking as candidate indices,
    best first; how many replies could not be read). The tree search drives it with the model, tests with
    scripted replies."""
    remaining, order, unread = list(range(len(candidates))), [], 0
    while len(remaining) > 1:
        reply = yield critique_messages(instructions, task_observation, past_actions, observation,
                                        [candidates[i] for i in remaining])
        pick = parse_choice(reply, len(remaining))
        if pick is None:
            pick, unread = 0, unread + 1
        order.append(remaining.pop(pick))
    return order + remaining, unread
