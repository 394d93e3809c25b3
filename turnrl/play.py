"""`turnrl play ENV`: a person plays one episode of an environment in the terminal.

Each step shows the observation and the environment's `admissible_actions()` numbered from 1. The player
types a number (that action), or any other text, which is sent to `step` as typed (so a bad action gets
the environment's own invalid-action observation, as an agent would). Three words are commands, not
actions: `hint` prints `expert_action()` ("no expert" where there is none), `quit` ends the episode, and an
empty line asks again. End of input (a pipe that runs dry, Ctrl-D) or Ctrl-C ends the episode like `quit`.

The episode is recorded as `turnrl eval --policy expert` records a scripted one (`scripted_rollout`): one
`Turn` per action with the action as the response, no tokens or log-probs, context "human", and
`stop_reason` "done", "max_turns" or "quit" (ended by the player). Input is read with plain `input()`, so
play works the same through a terminal, a pseudo-terminal or a pipe; display goes through rich.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from turnrl.environments import Environment
from turnrl.episode import Episode, Turn

PROMPT = "action> "


def resolve_action(typed: str, actions: list[str] | None) -> str:
    """The action a player's line stands for: a number 1..len(actions) picks from the list, anything else
    is sent as typed (without surrounding whitespace)."""
    text = typed.strip()
    if actions and text.isdecimal() and 1 <= int(text) <= len(actions):
        return actions[int(text) - 1]
    return text


def _show_state(console: Console, turn: int, observation: str, actions: list[str] | None) -> None:
    # Text objects, never markup strings: an observation holding "[red]" must print as it is.
    console.print(Panel(Text(observation), title=f"turn {turn}", title_align="left"))
    if actions:
        for i, action in enumerate(actions, start=1):
            console.print(Text(f"  {i}. {action}"))
    else:
        console.print(Text("  (this environment lists no actions: type one)"))
    console.print(Text("type a number or an action; `hint` for the expert's move, `quit` to stop"), style="dim")


def play_episode(env: Environment, env_name: str, task, *, seed=0, max_turns: int = 50,
                 console: Console | None = None, read: Callable[[str], str] = input) -> Episode:
    """Play one episode of `task` with actions read by `read` (default `input`); returns the Episode."""
    console = console or Console()
    # Through a pipe the terminal does not echo what is read: print it, so the transcript reads as played.
    echo = read is input and not sys.stdin.isatty()
    observation = env.reset(task=task, seed=seed)
    episode = Episode(env_name, task, seed, 0, context="human")
    while not episode.stop_reason:
        actions = env.admissible_actions()
        _show_state(console, len(episode.turns) + 1, observation, actions)
        action = None
        while action is None and not episode.stop_reason:   # commands and empty lines ask again
            try:
                typed = read(PROMPT)
            except (EOFError, KeyboardInterrupt):
                console.print(Text("\nend of input: stopping"))
                episode.stop_reason = "quit"
                break
            if echo:
                console.print(Text(typed))
            command = typed.strip().lower()
            if command == "quit":
                episode.stop_reason = "quit"
            elif command == "hint":
                expert = env.expert_action()
                console.print(Text(f"expert: {expert}" if expert is not None else "no expert for this environment"))
            elif command:
                action = resolve_action(typed, actions)
        if action is None:
            break
        result = env.step(action)
        episode.turns.append(Turn(
            observation=observation, response=action, action=action, completion_ids=[], logprobs=[],
            reward=float(result.reward), done=bool(result.done), info=dict(result.info),
            next_observation=result.observation,
        ))
        invalid = " · invalid action" if result.info.get("invalid") else ""
        console.print(Text(f"reward {result.reward:g} · done {bool(result.done)}{invalid}"), style="bold")
        observation = result.observation
        if result.done:
            episode.stop_reason = "done"
        elif len(episode.turns) >= max_turns:
            episode.stop_reason = "max_turns"
    if episode.stop_reason != "quit":
        console.print(Panel(Text(observation), title="end", title_align="left"))
    outcome = "success" if episode.success else "no success"
    console.print(Text(f"{outcome} · return {episode.total_reward:g} · {len(episode.turns)} turns "
                       f"({episode.stop_reason})"), style="bold")
    env.close()
    return episode


def default_output(env_name: str) -> Path:
    """play_ENV.jsonl in the current folder, ENV with anything but letters, digits, - and _ replaced."""
    return Path(f"play_{re.sub(r'[^A-Za-z0-9_-]', '_', env_name)}.jsonl")


def save_episode(episode: Episode, path: Path) -> Path:
    """Append the episode to a trajectory JSONL file (the format `turnrl eval` writes); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(episode.to_json(), default=str) + "\n")
    return path
