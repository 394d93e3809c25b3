"""`turnrl play`: a person plays an environment in the terminal. Driven through a pseudo-terminal to the end
of a lights episode by following hints, through a pipe with a bad action and end of input, and in process
with an environment that has neither an expert nor an action list."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from turnrl.cli import app
from turnrl.environments import Environment, StepResult, make_env
from turnrl.play import default_output, play_episode, resolve_action, save_episode

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
COMMAND = [sys.executable, "-m", "turnrl.cli", "play", "lights"]


def trajectory(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- parsing what the player types -------------------------------------------------------------------

@given(st.text(max_size=20), st.lists(st.text(min_size=1, max_size=10), max_size=5))
def test_a_number_picks_from_the_list_and_other_text_goes_as_typed(typed, actions):
    picked = resolve_action(typed, actions)
    text = typed.strip()
    if text.isdecimal() and 1 <= int(text) <= len(actions):
        assert picked == actions[int(text) - 1]
    else:
        assert picked == text


def test_resolve_action_examples():
    actions = ["toggle 1", "toggle 2"]
    assert resolve_action(" 2 ", actions) == "toggle 2"
    assert resolve_action("3", actions) == "3"          # out of the list: the environment judges it
    assert resolve_action("0", actions) == "0"
    assert resolve_action("1", None) == "1"
    assert resolve_action("  toggle 4 ", actions) == "toggle 4"


def test_default_output_is_a_plain_file_name():
    assert default_output("guess-number") == Path("play_guess-number.jsonl")
    assert default_output("my env/v2") == Path("play_my_env_v2.jsonl")


# -- through a pseudo-terminal ---------------------------------------------------------------------------

class Terminal:
    """A child process on a pseudo-terminal; `expect` reads its output until a pattern appears."""

    def __init__(self, argv: list[str], cwd: Path):
        pid, fd = pty.fork()
        if pid == 0:   # the child: become the command
            try:
                os.chdir(cwd)
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        self.pid, self.fd, self.output = pid, fd, ""
        import fcntl
        import termios

        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))   # 40 rows, 100 columns

    def expect(self, pattern: str, since: int) -> re.Match:
        """The first match of `pattern` in the output after position `since` (clean of terminal codes)."""
        # A generous limit, only so that a broken build fails instead of hanging the suite.
        limit = time.monotonic() + 120
        while True:
            match = re.compile(pattern).search(self.output, since)
            if match:
                return match
            remaining = limit - time.monotonic()
            assert remaining > 0, f"no {pattern!r} in:\n{self.output[since:]}"
            ready, _, _ = select.select([self.fd], [], [], min(remaining, 1.0))
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:   # the child closed the terminal
                    chunk = b""
                if not chunk:
                    match = re.compile(pattern).search(self.output, since)
                    assert match, f"the program ended without {pattern!r}:\n{self.output[since:]}"
                    return match
                self.output += ANSI.sub("", chunk.decode(errors="replace")).replace("\r\n", "\n")

    def send(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_play_lights_in_a_pseudo_terminal_following_hints(tmp_path):
    """Ask for a hint, play it, until the episode ends: it is won, and saved in `turnrl eval`'s format."""
    terminal = Terminal([*COMMAND, "--task-index", "3"], tmp_path)
    try:
        position, hints = 0, []
        while True:
            match = terminal.expect(r"action> |episode saved to (\S+)", position)
            position = match.end()
            if match.group(0).startswith("episode saved"):
                saved = match.group(1)
                break
            assert len(hints) < 10, "the expert should win lights in a few moves"
            terminal.send("hint")
            hint = terminal.expect(r"expert: (toggle \d+)", position)
            position = hint.end()
            hints.append(hint.group(1))
            terminal.expect(r"action> ", position)
            terminal.send(hint.group(1))
            step = terminal.expect(r"reward (\S+) · done (True|False)", position)
            position = step.end()
        assert terminal.wait() == 0
    finally:
        terminal.kill()
    output = terminal.output
    assert "1. toggle 1" in output and "4. toggle 4" in output   # the admissible actions, numbered
    assert "reward 1 · done True" in output and "success · return 1" in output
    assert saved == "play_lights.jsonl"
    [episode] = trajectory(tmp_path / saved)
    env = make_env("lights")
    task = env.tasks("test")[3]
    assert episode["env"] == "lights" and episode["task"] == task and episode["context"] == "human"
    assert episode["success"] is True and episode["stop_reason"] == "done" and episode["total_reward"] == 1.0
    assert [t["action"] for t in episode["turns"]] == [t["response"] for t in episode["turns"]] == hints
    # The same moves replayed on a fresh environment give the recorded observations.
    observation = env.reset(task=task, seed=0)
    for recorded in episode["turns"]:
        assert recorded["observation"] == observation
        result = env.step(recorded["action"])
        assert recorded["next_observation"] == result.observation and recorded["reward"] == result.reward
        assert recorded["completion_ids"] == [] and recorded["logprobs"] == []
        observation = result.observation


# -- through a pipe -----------------------------------------------------------------------------------------

def test_play_through_a_pipe_with_a_bad_action_and_end_of_input(tmp_path):
    out = tmp_path / "played" / "lights.jsonl"
    result = subprocess.run([*COMMAND, "--output", str(out)], check=False, input="flip everything\n\nhint\n2\n",
                            text=True, capture_output=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "reward 0 · done False · invalid action" in text
    assert "Invalid action (N is a lamp from 1 to 4)" in text   # the environment's observation, shown
    assert "end of input: stopping" in text
    assert f"episodesavedto{out}" in "".join(result.stdout.split())   # rich may wrap a long path
    [episode] = trajectory(out)
    assert episode["stop_reason"] == "quit" and len(episode["turns"]) == 2
    bad, good = episode["turns"]
    assert bad["action"] == "flip everything" and bad["info"]["invalid"] is True
    assert bad["next_observation"].startswith("Invalid action")
    assert good["action"] == "toggle 2" and good["info"]["invalid"] is False


def test_quit_saves_and_a_second_episode_is_appended(tmp_path):
    out = tmp_path / "t.jsonl"
    for _ in range(2):
        result = subprocess.run([*COMMAND, "--output", str(out)], check=False, input="1\nquit\nnever read\n",
                                text=True, capture_output=True, cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr
    episodes = trajectory(out)
    assert len(episodes) == 2 and all(len(e["turns"]) == 1 and e["stop_reason"] == "quit" for e in episodes)


# -- in process ------------------------------------------------------------------------------------------------

class Echo(Environment):
    """No expert and no action list: says back what it got; `stop` ends."""

    def tasks(self, split="train"):
        return [0]

    def reset(self, task=None, seed=None):
        return "Say something. [bold]not markup[/bold]"

    def step(self, action):
        return StepResult(f"You said {action!r}.", 0.5, action == "stop", {"invalid": False})


def test_no_expert_and_no_action_list(tmp_path):
    lines = iter(["hint", "hello there", "stop", "unused"])
    buffer = io.StringIO()
    console = Console(file=buffer, width=100)
    episode = play_episode(Echo(), "echo", 0, console=console, read=lambda prompt: next(lines))
    shown = buffer.getvalue()
    assert "no expert for this environment" in shown
    assert "this environment lists no actions" in shown
    assert "[bold]not markup[/bold]" in shown   # observations print as text, never as rich markup
    assert [t.action for t in episode.turns] == ["hello there", "stop"]
    assert episode.stop_reason == "done" and episode.total_reward == 1.0
    path = save_episode(episode, tmp_path / "echo.jsonl")
    assert trajectory(path)[0]["turns"][0]["next_observation"] == "You said 'hello there'."


def test_max_turns_ends_the_episode():
    episode = play_episode(Echo(), "echo", 0, max_turns=2, console=Console(file=io.StringIO()),
                           read=lambda prompt: "again")
    assert len(episode.turns) == 2 and episode.stop_reason == "max_turns"


@pytest.mark.parametrize(("args", "message"), [
    (["play", "no-such-env"], "unknown environment 'no-such-env'; registered:"),
    (["play", "lights", "--task-index", "100"], "--task-index must be in 0..99 for split 'test'"),
    (["play", "lights", "--split", "dev"], "unknown split 'dev'; valid splits: train, test"),
    (["play", "lights", "--env-kwargs", "[1]"], "--env-kwargs must be a JSON object"),
])
def test_bad_arguments_are_clear_errors(args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
