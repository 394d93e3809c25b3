"""The bad-input probe of issue 14, each finding a test: config values, YAML, contexts, model names, user modules
and oversized answers fail (or are handled) with a clear message before any work."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from turnrl.agents.models import ModelNotFoundError, _hub_reachable, check_model_name
from turnrl.agents.prompts import parse_context
from turnrl.algorithms.config import ConfigError, load_config
from turnrl.cli import app
from turnrl.environments import load_env_module, make_env


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("overrides, message", [
    ({"temperature": float("nan")}, "temperature must be a finite number"),
    ({"learning_rate": float("inf")}, "learning_rate must be a finite number"),
    ({"invalid_penalty": -0.1}, "invalid_penalty must be >= 0"),
    ({"max_grad_norm": -1.0}, "max_grad_norm must be >= 0"),
    ({"weight_decay": -3.0}, "weight_decay must be >= 0"),
    ({"context": "window:²"}, "non-negative integer"),
])
def test_bad_values_fail_before_any_work(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_malformed_yaml_names_the_place(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("iterations: [1\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML \(line 2, column 1\)"):
        load_config(path)


@given(st.text(max_size=12))
def test_parse_context_never_crashes(text):
    try:
        parse_context(text)
    except ValueError as err:
        assert "context must be" in str(err)


def test_model_names_fail_fast_with_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="no model folder"):
        check_model_name(str(tmp_path / "missing"))
    with pytest.raises(ModelNotFoundError, match="is not a model folder"):
        check_model_name(str(tmp_path))
    import socket

    def unreachable(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _hub_reachable.cache_clear()   # asked once per process: forget any earlier answer
    with pytest.raises(ModelNotFoundError, match="hub cannot be reached"):
        check_model_name("Qwen/Qwen2.5-0.5B-Instruct")
    _hub_reachable.cache_clear()
    result = CliRunner().invoke(app, ["eval", "--env", "lights", "--model", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no model folder" in _flat(result.output)


def test_a_wrong_env_kwarg_is_a_message(tmp_path):
    result = CliRunner().invoke(app, ["train", "--env", "lights", "--env_kwargs", "{n_lampz: 2}",
                                      "--output_dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "cannot be made with env_kwargs" in _flat(result.output)


def test_a_missing_import_inside_a_user_module_is_named(tmp_path):
    path = tmp_path / "user_env.py"
    path.write_text("import no_such_package_for_turnrl_tests\n")
    with pytest.raises(ModuleNotFoundError, match="the file exists, but importing it failed"):
        load_env_module(str(path))
    with pytest.raises(ModuleNotFoundError, match="neither a .py file nor an importable module"):
        load_env_module("no_such_module_for_turnrl_tests")


def test_searchqa_does_not_echo_a_huge_answer():
    env = make_env("searchqa")
    env.reset(task=env.tasks("test")[0])
    result = env.step("<answer>" + "x" * 100_000 + "</answer>")
    assert len(result.observation) < 500 and "(100000 characters)" in result.observation
