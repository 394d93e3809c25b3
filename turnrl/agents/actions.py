"""Action extraction from a model's response: `<think>…</think><action>…</action>`.

The action is the text inside the first complete `<action>…</action>` pair (tags matched
case-insensitively, surrounding whitespace stripped). `<think>` is optional. A response with no
complete pair, or an empty one, has no action: the rollout treats that turn as an invalid action
with the configured penalty and does not pass anything to the environment (unlike verl-agent, which
forwards the response's last characters, a guess that only makes the environment's job harder).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ACTION = re.compile(r"<action>(.*?)</action>", re.IGNORECASE | re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>", re.IGNORECASE | re.DOTALL)

FORMAT_HINT = "Reply with <think>your reasoning</think> then <action>your action</action>."


@dataclass(frozen=True)
class ParsedResponse:
    action: str | None      # None when the response holds no usable action
    think: str | None
    error: str | None       # why there is no action; None when there is one

    @property
    def valid(self) -> bool:
        return self.action is not None


def parse_response(text: str) -> ParsedResponse:
    """Extract the action (and reasoning) from one model response."""
    think_match = _THINK.search(text)
    think = think_match.group(1).strip() if think_match else None
    match = _ACTION.search(text)
    if match is None:
        return ParsedResponse(None, think, "no <action>…</action> in the response")
    action = match.group(1).strip()
    if not action:
        return ParsedResponse(None, think, "the <action></action> tags are empty")
    return ParsedResponse(action, think, None)


def without_think(text: str) -> str:
    """A response with its `<think>…</think>` reasoning removed (what a window prompt remembers of it)."""
    return _THINK.sub("", text).strip()


def invalid_response_observation(error: str) -> str:
    """The observation the agent gets after a response without an action."""
    return f"Invalid response: {error}. {FORMAT_HINT}"
