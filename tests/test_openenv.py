"""OpenEnv both ways, against real servers on localhost.

Client: an environment written here with the `openenv` package's server API, served by uvicorn in a
thread, driven through `make_env("openenv", base_url=...)`. Server: `turnrl serve` in a subprocess, driven
by the `openenv` package's own client (and by the adapter, and by `turnrl train`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("openenv")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from openenv.core import GenericEnvClient
from openenv.core.env_server import Action, Observation, State, create_fastapi_app
from openenv.core.env_server import Environment as OpenEnvBase
from pydantic import Field

from turnrl.environments import make_env
from turnrl.environments.openenv import (
    OpenEnvEnvironment,
    action_to_payload,
    observation_text,
    text_field_of,
)

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 60  # bound on every wait for a server, so a broken one fails the test instead of hanging it


# --- an OpenEnv environment written with the package's server API ------------------------------------------


class MoveAction(Action):
    direction: Literal["left", "right"]
    steps: int = Field(default=1, ge=1, le=3)


class ReachObservation(Observation):
    message: str = ""
    position: int = 0


class ReachState(State):
    position: int = 0
    target: int = 0


class ReachEnv(OpenEnvBase):
    """Walk from 0 to the target (the seed mod 5, plus 2); a wall at -3 (stepping past it raises)."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self):
        super().__init__()
        self._state = ReachState()

    def reset(self, seed=None, episode_id=None, **kwargs) -> ReachObservation:
        self._state = ReachState(episode_id=episode_id, position=0, target=2 + (seed or 0) % 5)
        return ReachObservation(message=f"Reach position {self._state.target}; you are at 0.", position=0)

    def step(self, action: MoveAction, timeout_s=None, **kwargs) -> ReachObservation:
        delta = action.steps if action.direction == "right" else -action.steps
        if self._state.position + delta < -3:
            raise ValueError("there is a wall at -3")
        self._state.position += delta
        self._state.step_count += 1
        done = self._state.position == self._state.target
        return ReachObservation(message=f"You are at {self._state.position}.", position=self._state.position,
                                done=done, reward=1.0 if done else 0.0)

    @property
    def state(self) -> ReachState:
        return self._state


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadServer:
    """uvicorn serving `app` in a background thread on a free localhost port."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + WAIT_S
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.02)
        return self

    def stop(self):
        self.server.should_exit = True
        self.thread.join(WAIT_S)

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture(scope="module")
def reach_server():
    app = create_fastapi_app(ReachEnv, MoveAction, ReachObservation, max_concurrent_envs=8, state_cls=ReachState)
    with ThreadServer(app) as server:
        yield server


def move(direction: str, steps: int = 1) -> str:
    return json.dumps({"direction": direction, "steps": steps})


# --- the client adapter -----------------------------------------------------------------------------------------


def test_round_trip_with_json_actions(reach_server):
    env = make_env("openenv", base_url=reach_server.url)
    assert isinstance(env, OpenEnvEnvironment)
    assert env.action_field is None  # two fields: the agent writes JSON
    assert "direction" in env.instructions and "JSON" in env.instructions
    first = env.reset(task=3)  # tasks are seeds: target 2 + 3 % 5 = 5
    assert json.loads(first) == {"message": "Reach position 5; you are at 0.", "position": 0}
    start_key = env.state_key()
    assert "target" in start_key and "episode_id" not in start_key
    result = env.step(move("right", 3))
    assert (result.reward, result.done, result.info["invalid"]) == (0.0, False, False)
    assert json.loads(result.observation)["position"] == 3
    assert env.state_key() != start_key
    result = env.step(move("right", 2))
    assert (result.reward, result.done, result.info["success"]) == (1.0, True, True)
    assert env.step(move("left")).info["invalid"]  # after the end
    assert env.tasks("test")[0] == 1_000_000 and not set(env.tasks("train")) & set(env.tasks("test"))
    with pytest.raises(ValueError, match="valid splits"):
        env.tasks("nope")
    env.close()


def test_same_state_in_two_sessions_has_the_same_key(reach_server):
    a, b = (make_env("openenv", base_url=reach_server.url) for _ in range(2))
    a.reset(task=1)
    b.reset(task=1)
    a.step(move("right", 2))
    b.step(move("right", 1))
    assert a.state_key() != b.state_key()
    b.step(move("right", 1))
    assert a.state_key() == b.state_key()  # GiGPO/HGPO step groups work across sessions
    a.close()
    b.close()


def test_bad_actions_are_invalid_turns_with_the_error(reach_server):
    env = make_env("openenv", base_url=reach_server.url)
    env.reset(task=0)
    for bad, expected in [("go right", "JSON object"), ("[1, 2]", "JSON object"),
                          (move("up"), "direction"), (json.dumps({"direction": "left", "steps": 9}), "steps"),
                          (json.dumps({"direction": "left", "extra": 1}), "extra")]:
        result = env.step(bad)
        assert result.info["invalid"] and not result.done and result.reward == 0.0, bad
        assert expected in result.observation, (bad, result.observation)
    env.step(move("left", 3))
    result = env.step(move("left", 1))  # the server's environment raises: its message comes back
    assert result.info["invalid"] and not result.done
    assert "wall at -3" in result.observation
    assert not env.step(move("right")).info["invalid"]  # the session goes on
    env.close()


def test_server_side_validation_errors_come_back_as_observations(reach_server):
    env = make_env("openenv", base_url=reach_server.url, action_schema={})  # no local check: the server judges
    env.reset(task=0)
    result = env.step(json.dumps({"direction": "up"}))
    assert result.info["invalid"] and not result.done
    assert "VALIDATION_ERROR" in result.observation and "direction" in result.observation
    assert not env.step(move("right")).info["invalid"]
    env.close()


def test_server_that_stops_mid_episode_fails_the_episode_not_the_run(capfd):
    app = create_fastapi_app(ReachEnv, MoveAction, ReachObservation, max_concurrent_envs=2, state_cls=ReachState)
    server = ThreadServer(app).__enter__()
    env = make_env("openenv", base_url=server.url, message_timeout_s=5.0, connect_timeout_s=2.0)
    env.reset(task=0)
    assert not env.step(move("right")).done
    server.stop()
    result = env.step(move("right"))
    assert result.done and result.reward == 0.0 and not result.info["success"]
    assert server.url in result.info["error"] and "The episode failed" in result.observation
    assert "turnrl openenv:" in capfd.readouterr().err
    first = env.reset(task=1)  # the next episode tries a new session; with no server it fails the same way
    assert "The episode failed" in first
    assert env.step(move("right")).done
    assert env.expert_action() is None


def test_no_server_at_the_url_says_so():
    with pytest.raises(ConnectionError, match="no OpenEnv server answers"):
        make_env("openenv", base_url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=2.0)
    with pytest.raises(ValueError, match="base_url"):
        make_env("openenv", base_url="localhost:8000")


# --- the pure translation functions, on arbitrary text -----------------------------------------------------------

SCHEMA = MoveAction.model_json_schema()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_action_parser_never_raises_and_only_passes_what_fits(text):
    payload, error = action_to_payload(text, schema=SCHEMA)
    assert (payload is None) != (error is None)
    if payload is not None:
        assert payload["direction"] in ("left", "right")
        MoveAction(**payload)  # what the parser lets through, the server accepts
    as_field, error = action_to_payload(text, text_field="message")
    assert as_field == {"message": text} and error is None


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4), st.booleans())
def test_json_objects_round_trip_and_observations_render(obj, fenced):
    text = json.dumps(obj)
    if fenced:
        text = f"```json\n{text}\n```"
    assert action_to_payload(text) == (obj, None)
    rendered = observation_text(obj)
    assert isinstance(rendered, str)


def test_text_field_is_found_only_when_unambiguous():
    assert text_field_of({"properties": {"message": {"type": "string"}, "metadata": {}}, "required": ["message"]}) \
        == "message"
    assert text_field_of(SCHEMA) is None
    assert text_field_of({"properties": {"a": {"type": "string"}, "b": {"type": "string"}}}) is None
    assert text_field_of({"properties": {"n": {"type": "integer"}}, "required": ["n"]}) is None
    assert text_field_of({"properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a"]}) \
        is None


def test_tool_calls_become_call_tool_actions():
    payload, error = action_to_payload('{"name": "add", "arguments": {"a": 1}}', tool_calls=True)
    assert error is None and payload == {"type": "call_tool", "tool_name": "add", "arguments": {"a": 1}}
    assert action_to_payload('{"arguments": {}}', tool_calls=True)[0] is None
    assert action_to_payload('{"name": "add", "arguments": 3}', tool_calls=True)[0] is None


# --- `turnrl serve`, driven by openenv's own client --------------------------------------------------------------


class ServeProcess:
    """`turnrl serve` in a subprocess on a free port; killed at the end."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "turnrl.cli", "serve", "--port", str(self.port), *args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + WAIT_S
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"turnrl serve exited: {self.process.stdout.read()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "turnrl serve did not start"
            time.sleep(0.1)

    def client(self):
        return GenericEnvClient(base_url=self.url, message_timeout_s=30.0).sync()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT_S)


@pytest.fixture(scope="module")
def webshop_server():
    server = ServeProcess("--env", "webshop", "--max-sessions", "8")
    yield server
    server.kill()


def test_serve_plays_an_expert_webshop_episode_with_openenvs_client(webshop_server):
    expert = make_env("webshop")
    task = expert.tasks("test")[0]
    with webshop_server.client() as client:
        result = client.reset(task=task, seed=0)
        assert result.observation["text"] == expert.reset(task=task, seed=0)
        assert result.observation["admissible_actions"] == expert.admissible_actions()
        for _ in range(20):
            action = client.state()["expert_action"]
            assert action == expert.expert_action()
            result = client.step({"message": action})
            assert result.observation["text"] == expert.step(action).observation
            if result.done:
                break
        assert result.done and result.reward == 1.0 and result.observation["info"]["success"]


def test_serve_answers_malformed_actions_and_the_session_goes_on(webshop_server):
    with webshop_server.client() as client:
        client.reset(task=0)
        for malformed in ({"wrong": 1}, {"message": 3}, {"message": "click[x]", "extra": True}):
            with pytest.raises(RuntimeError, match="VALIDATION_ERROR"):
                client.step(malformed)
        result = client.step({"message": "click[no such button]"})  # well formed, not admissible
        assert result.observation["info"]["invalid"] and not result.done and result.reward == 0.0
        assert client.step({"message": client.state()["expert_action"]}).observation["info"]["invalid"] is False


def test_serve_task_api_and_the_adapter(webshop_server):
    splits = httpx.get(f"{webshop_server.url}/webshop/splits", timeout=10).json()
    assert {s["name"] for s in splits} >= {"train", "test"}
    env = make_env("openenv", base_url=webshop_server.url)
    assert env.action_field == "message"
    test_tasks = env.tasks("test")
    assert len(test_tasks) == len(make_env("webshop").tasks("test")) and test_tasks[0] == "test/0"
    env.reset(task=test_tasks[0], seed=0)
    for _ in range(20):
        result = env.step(env.expert_action())
        if result.done:
            break
    assert result.reward == 1.0 and result.info["success"] and result.info["score"] == 1.0
    env.close()


def test_serve_session_limit_and_idle_timeout():
    server = ServeProcess("--env", "guess-number", "--max-sessions", "2", "--idle-timeout", "1")
    try:
        first, second = server.client(), server.client()
        first.reset()
        second.reset()
        with pytest.raises((RuntimeError, ConnectionError), match="CAPACITY_REACHED|capacity|Failed to connect"):
            server.client().reset()
        # The two sessions are left idle (leaked): the reaper closes them and new sessions can start.
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                with server.client() as third:
                    assert third.reset().observation["text"]
                break
            except (RuntimeError, ConnectionError):
                assert time.monotonic() < deadline, "idle sessions were never closed"
                time.sleep(0.5)
        with pytest.raises(RuntimeError, match="closed after 1 s without a message"):
            first.step({"message": "guess 1"})
    finally:
        server.kill()


def test_serve_killed_mid_episode_fails_the_adapters_episode():
    server = ServeProcess("--env", "guess-number")
    env = make_env("openenv", base_url=server.url, message_timeout_s=5.0, connect_timeout_s=2.0)
    env.reset(task=env.tasks("train")[0])
    assert not env.step("guess 1").done
    server.kill()
    result = env.step("guess 2")
    assert result.done and "error" in result.info and not result.info["success"]


@pytest.mark.slow
def test_train_end_to_end_on_an_openenv_served_environment(webshop_server, tmp_path):
    out = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "turnrl.cli", "train", "--env", "openenv", "--env-kwargs",
         json.dumps({"base_url": webshop_server.url}), "--model", "tiny", "--iterations", "1",
         "--tasks-per-iteration", "1", "--group-size", "2", "--max-turns", "2", "--output-dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert metrics and metrics[-1]["iteration"] >= 0
