"""A run killed with SIGKILL mid-iteration, or in the middle of writing a checkpoint, resumes from its last intact
checkpoint to the same final weights, bit for bit, as an uninterrupted run, and metrics.jsonl holds each iteration
exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def _command(model, out, *extra):
    return [sys.executable, "-m", "turnrl.cli", "train", "--env", "lights", "--env_kwargs", "{n_lamps: 2}",
            "--model", str(model), "--iterations", "5", "--tasks_per_iteration", "2", "--group_size", "4",
            "--max_turns", "2", "--max_new_tokens", "8", "--learning_rate", "1e-3", "--algorithm", "st-ppo",
            "--max_staleness", "1", "--checkpoint_every", "1", "--output_dir", str(out), *extra]


def _iterations(out):
    path = out / "metrics.jsonl"
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []


def test_sigkill_mid_iteration_resumes_bit_identically(tmp_path, nudged_tiny):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = tmp_path / "whole"
    subprocess.run(_command(nudged_tiny, whole), check=True, capture_output=True, env=env, timeout=600)
    killed = tmp_path / "killed"
    process = subprocess.Popen(_command(nudged_tiny, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env)
    deadline = time.time() + 300
    while len(_iterations(killed)) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)   # into iteration 3 (its rollout or update)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 2 <= len(_iterations(killed)) < 5, "the kill should land before the run ends"
    subprocess.run(_command(nudged_tiny, killed, "--resume"), check=True, capture_output=True, env=env, timeout=600)
    assert _iterations(killed) == [1, 2, 3, 4, 5]
    a, b = load_file(str(whole / "final" / "model.safetensors")), load_file(str(killed / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ca, cb = torch.load(whole / "final" / "critic.pt"), torch.load(killed / "final" / "critic.pt")
    assert all(torch.equal(ca[k], cb[k]) for k in ca)


# The run of the checkpoint-write test: the CLI with write_manifest held up at iteration 3's checkpoint, after the
# model and trainer state are in the temporary folder and before the manifest (which makes it a checkpoint) exists.
_HELD_WRITE = """
import sys, time, pathlib
import turnrl.algorithms.trainer as trainer
from turnrl.cli import main
original, marker = trainer.write_manifest, pathlib.Path(sys.argv[1])
def held(folder):
    if folder.name.startswith("iter-000003"):
        state = folder / "trainer_state.pt"
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])   # and one file half written
        marker.write_text(str(folder))
        time.sleep(120)
    original(folder)
trainer.write_manifest = held
sys.argv = ["turnrl", *sys.argv[2:]]
sys.exit(main())
"""


def test_sigkill_mid_checkpoint_write_resumes_bit_identically(tmp_path, nudged_tiny):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = tmp_path / "whole"
    subprocess.run(_command(nudged_tiny, whole), check=True, capture_output=True, env=env, timeout=600)
    killed, marker = tmp_path / "killed", tmp_path / "writing"
    process = subprocess.Popen([sys.executable, "-c", _HELD_WRITE, str(marker), *_command(nudged_tiny, killed)[3:]],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), "the run never reached iteration 3's checkpoint"
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = killed / "checkpoints" / "iter-000003.tmp"
    assert partial.is_dir() and not (partial / "manifest.json").exists()   # killed mid-write
    assert _iterations(killed) == [1, 2, 3]   # iteration 3 was logged before its checkpoint
    result = subprocess.run(_command(nudged_tiny, killed, "--resume"), check=True, capture_output=True, text=True,
                            env=env, timeout=600)
    assert "after iteration 2" in result.stdout
    assert _iterations(killed) == [1, 2, 3, 4, 5]
    a, b = load_file(str(whole / "final" / "model.safetensors")), load_file(str(killed / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
