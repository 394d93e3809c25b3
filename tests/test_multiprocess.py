"""Two processes equal one: `torchrun --nproc_per_node 2 -m turnrl.cli train ...` (accelerate on gloo, CPU) and a
single process on the same global batch log the same per-iteration numbers and end with the same weights. Each
episode samples from its own generator (seeded by its group's index over all processes), minibatches are drawn
over all processes' samples, and loss normalisers and statistics are global, so nothing depends on how the
groups are dealt."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SHARDING = {"replicated": {}, "fsdp": {"ACCELERATE_USE_FSDP": "true"},
            "zero2": {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"},
            "zero3": {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}}
BANNER = {"replicated": None, "fsdp": "FSDP: ", "zero2": "DeepSpeed: ZeRO-2", "zero3": "DeepSpeed: ZeRO-3"}


def _needs(mode: str) -> None:
    if mode.startswith("zero"):
        pytest.importorskip("deepspeed")


def _train(model, out, processes: int, *, mode: str = "replicated", extra: tuple = (), cache=None):
    args = ["-m", "turnrl.cli", "train", "--env", "lights", "--env_kwargs", "{n_lamps: 2}", "--model", str(model),
            "--iterations", "2", "--tasks_per_iteration", "2", "--group_size", "4", "--max_turns", "2",
            "--max_new_tokens", "8", "--learning_rate", "2e-4", "--minibatch_size", "4", "--micro_batch_size", "2",
            "--epochs", "2", "--kl_coef", "0.05", "--checkpoint_every", "0", "--output_dir", str(out), *extra]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_port", str(_free_port())] if processes > 1 else [sys.executable]
    result = subprocess.run(launcher + args, check=False, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true",
                                 **SHARDING[mode],
                                 **({"TURNRL_CACHE": str(cache)} if cache else {})})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for name, banner in BANNER.items():
        if banner:
            assert (banner in result.stdout) == (name == mode), result.stdout[-2000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["replicated", "fsdp", "zero2", "zero3"])
def test_two_processes_equal_one(tmp_path, nudged_tiny, mode):
    """Replicated (each process the whole model, gradients averaged by the trainer), FSDP2 (each process half of
    every parameter, gradient and optimizer state; the frozen KL reference sharded too) and DeepSpeed ZeRO-2 and
    ZeRO-3 (the engine's backward and step) against one plain process."""
    _needs(mode)
    one = _train(nudged_tiny, tmp_path / "one", 1)
    two = _train(nudged_tiny, tmp_path / "two", 2, mode=mode)
    assert [r["iteration"] for r in two] == [1, 2]
    assert any(r["train_tokens"] > 0 for r in one), "the runs should train on something"
    for a, b in zip(one, two):
        for key in ("success_rate", "mean_return", "samples", "train_tokens", "skipped_samples", "optimizer_steps"):
            assert a[key] == b[key], key
        # summed gradients differ from averaged halves in float rounding (about 1e-7 in the weights): means agree to
        # 1e-5, the extreme ratios (exp of a log-prob difference at one token) to 1e-4
        for key, tolerance in (("loss", 1e-5), ("kl", 1e-5), ("clip_fraction", 1e-5), ("ratio_mean", 1e-5),
                               ("grad_norm", 1e-5), ("ratio_min", 1e-4), ("ratio_max", 1e-4)):
            if a[key] is None:
                assert b[key] is None, key
            else:
                assert b[key] == pytest.approx(a[key], rel=tolerance, abs=tolerance), key
    w1, w2 = load_file(str(tmp_path / "one" / "final" / "model.safetensors")), \
        load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for name in w1:
        assert torch.allclose(w1[name], w2[name], atol=1e-5), name


@pytest.mark.parametrize("switch, name", [("ACCELERATE_USE_MEGATRON_LM", "Megatron-LM")])
def test_a_megatron_launch_is_refused_before_any_work(tmp_path, monkeypatch, switch, name):
    """`accelerate launch` with a Megatron-LM config sets this; the trainer does not split its rollouts and updates
    by tensor or pipeline, so it refuses the launch itself, before loading a model."""
    from turnrl.algorithms.config import load_config
    from turnrl.algorithms.trainer import RunError, train

    monkeypatch.setenv(switch, "true")
    config = load_config(None, {"env": "lights", "model": "/nonexistent/model", "output_dir": str(tmp_path / "run")})
    with pytest.raises(RunError, match=rf"{name} is not supported by turnrl's trainer .*configs/accelerate/fsdp.yaml"):
        train(config, progress=False)
    assert not (tmp_path / "run" / "config.yaml").exists()


def _weights(folder):
    return {k: v for file in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(file)).items()}


@pytest.mark.parametrize("mode", ["fsdp", "zero3"])
def test_sharded_lora_warm_start_and_resume(tmp_path, nudged_tiny, mode):
    """Sharded with LoRA: two processes equal one plain process. With a warm start (FSDP: behaviour cloning on a
    whole copy, loaded back into the shards; DeepSpeed: before the engine is built), a run stopped after iteration 1
    and resumed (the gathered adapter and each process's optimizer shard, or DeepSpeed's own checkpoint) ends
    bit-identical to the uninterrupted run."""
    _needs(mode)
    lora = ("--lora", "true", "--learning_rate", "2e-3")
    one = _train(nudged_tiny, tmp_path / "one", 1, extra=lora)
    two = _train(nudged_tiny, tmp_path / "two", 2, mode=mode, extra=lora)
    assert any(r["train_tokens"] > 0 and r["grad_norm"] for r in one), "the runs should train on something"
    for a, b in zip(one, two):
        for key in ("success_rate", "train_tokens", "optimizer_steps"):
            assert a[key] == b[key], key
        for key in ("loss", "kl", "grad_norm", "ratio_mean"):   # float rounding of sharded sums, grown by the steps
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    w1, w2 = _weights(tmp_path / "one" / "final"), _weights(tmp_path / "two" / "final")
    assert w1.keys() == w2.keys() and any("lora" in k for k in w1)
    for name in w1:
        assert torch.allclose(w1[name], w2[name], atol=1e-5), name

    warm = (*lora, "--warm_start_episodes", "4", "--checkpoint_every", "1")
    # each run its own (empty) warm-start cache, so that every run trains the warm start under FSDP
    full = _train(nudged_tiny, tmp_path / "full", 2, mode=mode, extra=warm, cache=tmp_path / "c1")
    part = _train(nudged_tiny, tmp_path / "part", 2, mode=mode, extra=(*warm, "--iterations", "1"),
                  cache=tmp_path / "c2")
    resumed = _train(nudged_tiny, tmp_path / "part", 2, mode=mode, extra=(*warm, "--resume"), cache=tmp_path / "c3")
    assert [r["iteration"] for r in part] == [1] and [r["iteration"] for r in resumed] == [1, 2]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full]
    w3, w4 = _weights(tmp_path / "full" / "final"), _weights(tmp_path / "part" / "final")
    assert w3.keys() == w4.keys() == w1.keys()
    for name in w3:
        assert torch.equal(w3[name], w4[name]), name
    assert any(not torch.equal(w3[name], w2[name]) for name in w3)


def _accelerate_launch(config: str, out, tmp_path):
    args = ["-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", "2",
            "--main_process_port", str(_free_port()), "-m", "turnrl.cli", "train", "--env", "lights", "--model",
            "tiny", "--iterations", "1", "--tasks_per_iteration", "2", "--group_size", "2", "--max_turns", "2",
            "--max_new_tokens", "8", "--kl_coef", "0.05", "--output_dir", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    return subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          env={**env, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})


@pytest.mark.parametrize("config, banner", [
    ("fsdp.yaml", "FSDP: 6 units sharded over 2 processes"),
    ("deepspeed_zero2.yaml", "DeepSpeed: ZeRO-2 over 2 processes"),
    ("deepspeed_zero3.yaml", "DeepSpeed: ZeRO-3 over 2 processes"),
])
def test_the_shipped_sharded_configs_run_on_two_cpu_processes(tmp_path, config, banner):
    """configs/accelerate/*.yaml through `accelerate launch` on a machine without a GPU: two processes join over
    gloo, the policy is sharded, and one run is written."""
    _needs("zero" if "deepspeed" in config else "fsdp")
    result = _accelerate_launch(f"configs/accelerate/{config}", tmp_path / "run", tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert banner in result.stdout
    assert [json.loads(line)["iteration"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] \
        == [1]


def test_processes_that_do_not_join_are_refused(tmp_path):
    """The GPU config (configs/accelerate/ddp.yaml) on a machine without a GPU: accelerate starts two processes that
    each see a world of one. They would train two runs into one folder; the trainer stops them, saying why."""
    result = _accelerate_launch("configs/accelerate/ddp.yaml", tmp_path / "run", tmp_path)
    assert result.returncode != 0
    assert "2 processes were launched (WORLD_SIZE) but accelerate joined 1" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.parametrize("env, overrides, message", [
    ({"FSDP_VERSION": "1"}, {}, "FSDP version 1 is not supported: turnrl shards with FSDP2"),
    ({"FSDP_OFFLOAD_PARAMS": "true"}, {}, "FSDP parameter offloading is not supported"),
    ({"FSDP_SHARDING_STRATEGY": "HYBRID_SHARD"}, {}, "choose FULL_SHARD or SHARD_GRAD_OP"),
    ({}, {"algorithm": "st-ppo"}, "clip_bias_norm is not supported under FSDP"),
    ({"DS": "1", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "1"}, {}, "DeepSpeed ZeRO stage 1 is not supported"),
    ({"DS": "1", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu"}, {}, "DeepSpeed offloading is not supported"),
    ({"DS": "1", "ACCELERATE_DEEPSPEED_CONFIG_FILE": "ds.json"}, {}, "a DeepSpeed config file"),
    ({"DS": "1"}, {"algorithm": "st-ppo"}, "clip_bias_norm is not supported under DeepSpeed"),
])
def test_sharding_settings_turnrl_cannot_follow_fail_before_any_work(tmp_path, monkeypatch, env, overrides,
                                                                     message):
    from turnrl.algorithms.config import load_config
    from turnrl.algorithms.trainer import RunError, train

    env = dict(env)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED" if env.pop("DS", None) else "ACCELERATE_USE_FSDP", "true")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = load_config(None, {"env": "lights", "model": "/nonexistent/model", "output_dir": str(tmp_path / "run"),
                                **overrides})
    with pytest.raises(RunError, match=message):
        train(config, progress=False)
    assert not (tmp_path / "run" / "config.yaml").exists()
