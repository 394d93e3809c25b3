"""`TrainConfig`: defaults, YAML files, `--key value` overrides, and errors that name the valid choices."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from turnrl.algorithms.config import (
    ALGORITHMS,
    DTYPES,
    ConfigError,
    TrainConfig,
    describe_config,
    load_config,
    parse_overrides,
)

KEYS = [f.name for f in dataclasses.fields(TrainConfig)]


def test_defaults_validate():
    config = TrainConfig()
    assert config.validate() is config
    assert load_config() == config
    assert config.to_dict()["env"] == "lights" and set(config.to_dict()) == set(KEYS)


def test_every_key_is_documented():
    text = describe_config()
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"]
        assert f"{f.name} = " in text
    assert "one of: grpo" in text


def test_defaults_are_not_shared_between_instances():
    first, second = TrainConfig(), TrainConfig()
    first.env_kwargs["n_lamps"] = 3
    assert second.env_kwargs == {}


def test_load_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "env: guess-number\n"
        "env_kwargs: {high: 8}\n"
        "iterations: 3\n"
        "group_size: 2\n"
        "context: window:2\n"
        "lora: true\n"
        "temperature: 1\n"          # an int where a float is expected
        "learning_rate: 1e-3\n"     # YAML 1.1 reads this as a string
    )
    config = load_config(path, {"iterations": 5, "seed": 7})
    assert config.env == "guess-number" and config.env_kwargs == {"high": 8}
    assert config.iterations == 5 and config.seed == 7         # overrides win over the file
    assert config.group_size == 2 and config.context == "window:2" and config.lora is True
    assert config.temperature == 1.0 and isinstance(config.temperature, float)
    assert config.learning_rate == 1e-3 and isinstance(config.learning_rate, float)
    assert config.max_turns == TrainConfig().max_turns        # untouched keys keep their defaults


def test_empty_yaml_file_is_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == TrainConfig()


def test_yaml_file_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- env\n- lights\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_unknown_key_names_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"iteratons": 3})
    message = str(err.value)
    assert "iteratons" in message
    for key in KEYS:
        assert key in message
    path = tmp_path / "typo.yaml"
    path.write_text("lerning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="lerning_rate.*Valid keys: env"):
        load_config(path)


@pytest.mark.parametrize(
    ("key", "value", "choices"),
    [
        ("algorithm", "trpo", ALGORITHMS),
        ("dtype", "int8", DTYPES),
        ("advantage_norm", "std", ("mean_std", "mean")),
        ("loss_aggregation", "sum", ("episode", "token")),
    ],
)
def test_bad_choice_names_the_choices(key, value, choices):
    with pytest.raises(ConfigError) as err:
        load_config(overrides={key: value})
    message = str(err.value)
    assert key in message and repr(value) in message
    for choice in choices:
        assert choice in message


@pytest.mark.parametrize("context", ["window:x", "window:", "window:-1", "windows:2", "Full", ""])
def test_bad_context_names_the_forms(context):
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"context": context})
    assert "context" in str(err.value) and "'full'" in str(err.value) and "window:k" in str(err.value)


@pytest.mark.parametrize("context", ["full", "window:0", "window:2", "window:10"])
def test_good_contexts(context):
    assert load_config(overrides={"context": context}).context == context


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("iterations", "three", "iterations must be an? int"),
        ("iterations", 2.5, "iterations must be an? int"),
        ("iterations", True, "iterations must be an? int"),     # a bool is not an int here
        ("lora", "yes please", "lora must be a bool"),
        ("env_kwargs", [1, 2], "env_kwargs must be a dict"),
        ("temperature", "hot", "temperature must be a float"),
        ("model", 3, "model must be a str"),
        ("model", None, "model may not be empty"),
    ],
)
def test_type_errors(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides={key: value})


def test_optional_key_accepts_none():
    assert load_config(overrides={"env_module": None}).env_module is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"iterations": 0}, "iterations must be >= 1"),
        ({"group_size": -1}, "group_size must be >= 1"),
        ({"checkpoint_every": -1}, "checkpoint_every must be >= 0"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"top_p": 1.5}, "top_p must be in"),
        ({"clip_eps": 1.0}, "clip_eps must be in"),
        ({"kl_coef": -0.1}, "kl_coef must be >= 0"),
        ({"learning_rate": 0}, "learning_rate > 0"),
    ],
)
def test_value_ranges(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_minibatch_must_be_a_multiple_of_micro_batch():
    assert load_config(overrides={"minibatch_size": 8, "micro_batch_size": 2}).minibatch_size == 8
    with pytest.raises(ConfigError, match=r"minibatch_size \(6\) must be a multiple of micro_batch_size \(4\)"):
        load_config(overrides={"minibatch_size": 6, "micro_batch_size": 4})


def test_parse_overrides_forms():
    args = ["--iterations", "3", "--lora=true", "--max-new-tokens", "8", "--env-kwargs={n_lamps: 3}",
            "--learning_rate", "1e-3", "--context=window:2", "--model", "123", "--env-module", "my_env.py"]
    overrides = parse_overrides(args)
    assert overrides == {
        "iterations": 3, "lora": True, "max_new_tokens": 8, "env_kwargs": {"n_lamps": 3},
        "learning_rate": "1e-3", "context": "window:2",
        "model": "123",              # string keys keep their text: a model may be named by digits
        "env_module": "my_env.py",
    }
    config = load_config(overrides=overrides)
    assert config.learning_rate == 1e-3 and config.model == "123" and config.env_kwargs == {"n_lamps": 3}


def test_parse_overrides_value_may_contain_equals():
    assert parse_overrides(["--output_dir=runs/a=b"]) == {"output_dir": "runs/a=b"}


def test_parse_overrides_errors():
    with pytest.raises(ConfigError, match="--iterations needs a value"):
        parse_overrides(["--seed", "1", "--iterations"])
    with pytest.raises(ConfigError, match="expected --key value, got 'iterations'"):
        parse_overrides(["iterations", "3"])
    with pytest.raises(ConfigError) as err:
        parse_overrides(["--iteratons", "3"])
    assert "'iteratons'" in str(err.value) and "Valid keys" in str(err.value) and "iterations" in str(err.value)
    assert parse_overrides([]) == {}


# ------------------------------------------------------------------------- presets and advantages


def test_presets_fill_their_advantage_and_context():
    grpo, gigpo, hgpo = (load_config(overrides={"algorithm": name}) for name in ("grpo", "gigpo", "hgpo"))
    assert (grpo.advantage, grpo.context, grpo.history_length, grpo.gamma) == ("grpo", "full", None, None)
    assert (gigpo.advantage, gigpo.context, gigpo.history_length) == ("gigpo", "window:2", 2)
    assert (gigpo.gamma, gigpo.step_advantage_weight, gigpo.advantage_norm) == (0.95, 1.0, "mean_std")
    assert (hgpo.advantage, hgpo.context, hgpo.history_length) == ("hgpo", "window:2", 2)
    assert (hgpo.hgpo_alpha, hgpo.hgpo_base_group, hgpo.step_advantage_weight) == (1.0, False, None)
    assert set(ALGORITHMS) == {"grpo", "gigpo", "hgpo", "ppo", "turn-ppo", "s-ppo", "st-ppo", "alp"}
    # a resolved config resolves to itself (what config.yaml of a run holds loads back unchanged)
    for name in ALGORITHMS:
        config = load_config(overrides={"algorithm": name})
        assert load_config(overrides=config.to_dict()) == config


def test_history_length_sets_the_window_and_the_depth():
    config = load_config(overrides={"algorithm": "hgpo", "history_length": 4})
    assert config.context == "window:4" and config.history_length == 4
    assert load_config(overrides={"algorithm": "hgpo", "context": "window:3"}).history_length == 3
    assert load_config(overrides={"algorithm": "hgpo", "context": "full"}).history_length == 2
    full = load_config(overrides={"algorithm": "hgpo", "context": "full", "history_length": 4})
    assert (full.context, full.history_length) == ("full", 4)
    assert load_config(overrides={"advantage": "rloo"}).advantage_norm is None
    assert load_config(overrides={"history_length": 1}).context == "window:1"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algorithm": "hgpo", "history_length": 4, "context": "window:2"}, "history_length \\(4\\) sets the window"),
        ({"history_length": 2, "context": "full"}, "does nothing"),
        ({"gamma": 0.9}, "gamma applies to advantage gigpo or hgpo or gae only"),
        ({"algorithm": "gigpo", "hgpo_alpha": 0.5}, "hgpo_alpha applies to advantage hgpo only"),
        ({"algorithm": "hgpo", "step_advantage_weight": 0.5}, "step_advantage_weight applies to advantage gigpo"),
        ({"advantage": "rloo", "advantage_norm": "mean"}, "advantage_norm does not apply to advantage rloo"),
        ({"advantage": "td"}, "advantage: 'td' is not one of grpo, rloo, gigpo, hgpo, gae"),
        ({"algorithm": "trpo"}, "algorithm: 'trpo' is not one of grpo, gigpo, hgpo, ppo"),
        ({"algorithm": "gigpo", "gamma": 1.5}, "gamma must be in"),
        ({"algorithm": "hgpo", "history_length": -1}, "history_length must be an integer >= 0"),
    ],
)
def test_advantage_settings_that_do_nothing_or_conflict_fail(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_advantage_overrides_the_presets_estimator():
    config = load_config(overrides={"algorithm": "grpo", "advantage": "rloo"})
    assert config.advantage == "rloo" and config.context == "full"
    assert parse_overrides(["--advantage", "hgpo", "--hgpo-base-group", "true"]) == {
        "advantage": "hgpo", "hgpo_base_group": True}


CONFIGS = sorted(p for p in (Path(__file__).parent.parent / "configs").glob("*.yaml") if "agentq" not in p.name)


def test_the_agentq_config_loads():   # `turnrl agentq`'s own config (tests/test_agentq.py runs the loop)
    from turnrl.algorithms.dpo import load_agentq_config

    assert load_agentq_config(Path(__file__).parent.parent / "configs" / "webshop_agentq.yaml").env == "webshop"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    name = path.stem
    if name.endswith(("_gigpo", "_hgpo")):
        assert config.advantage == name.rsplit("_", 1)[1] and config.group_size == 8
        assert config.gamma == 0.95 and config.invalid_penalty == 0.1 and config.clip_eps == 0.2
        assert config.history_length in (2, 4) and config.context == f"window:{config.history_length}"
