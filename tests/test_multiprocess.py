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


def _train(model, out, processes: int):
    args = ["-m", "turnrl.cli", "train", "--env", "lights", "--env_kwargs", "{n_lamps: 2}", "--model", str(model),
            "--iterations", "2", "--tasks_per_iteration", "2", "--group_size", "4", "--max_turns", "2",
            "--max_new_tokens", "8", "--learning_rate", "2e-4", "--minibatch_size", "4", "--micro_batch_size", "2",
            "--epochs", "2", "--kl_coef", "0.05", "--checkpoint_every", "0", "--output_dir", str(out)]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_port", str(_free_port())] if processes > 1 else [sys.executable]
    result = subprocess.run(launcher + args, check=False, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_equal_one(tmp_path, nudged_tiny):
    one = _train(nudged_tiny, tmp_path / "one", 1)
    two = _train(nudged_tiny, tmp_path / "two", 2)
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


@pytest.mark.parametrize("switch, name", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_a_sharded_launch_is_refused_before_any_work(tmp_path, monkeypatch, switch, name):
    """`accelerate launch` with an FSDP or DeepSpeed config sets these; on a CPU accelerate would quietly run plain
    data parallelism instead, so the trainer refuses them itself, before loading a model."""
    from turnrl.algorithms.config import load_config
    from turnrl.algorithms.trainer import RunError, train

    monkeypatch.setenv(switch, "true")
    config = load_config(None, {"env": "lights", "model": "/nonexistent/model", "output_dir": str(tmp_path / "run")})
    with pytest.raises(RunError, match=rf"{name} is not supported by turnrl's trainer .*configs/accelerate/ddp.yaml"):
        train(config, progress=False)
    assert not (tmp_path / "run" / "config.yaml").exists()
