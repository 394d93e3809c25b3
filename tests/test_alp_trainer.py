"""ALP inside the trainer (perturbation: alp, preset alp): the noise acts in the update's forward only (never in
rollouts, evaluation, the reference or the log-prob agreement check), σ learns with its own rate beside a LoRA
adapter, and σ is saved with checkpoints and restored exactly on resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from turnrl.algorithms.alp import NO_NOISE, LayerwiseNoise
from turnrl.algorithms.config import ConfigError, load_config
from turnrl.algorithms.trainer import Trainer, train

pytestmark = pytest.mark.usefixtures("one_thread")


def _values(tmp_path, model, **overrides):
    values = {"env": "lights", "env_kwargs": {"n_lamps": 1}, "model": str(model), "algorithm": "alp",
              "tasks_per_iteration": 2, "group_size": 4, "max_turns": 2, "max_new_tokens": 8, "iterations": 2,
              "learning_rate": 1e-3, "lora": True, "checkpoint_every": 1, "eval_episodes": 2,
              "output_dir": str(tmp_path / "run")}
    values.update(overrides)
    return values


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_preset_and_its_settings():
    config = load_config(None, {"algorithm": "alp"})
    assert (config.perturbation, config.ratio_level, config.clip_eps, config.clip_eps_high, config.dual_clip) == \
        ("alp", "sequence", 0.5, 3.0, 3.0)
    assert load_config(None, {"algorithm": "st-ppo", "perturbation": "alp"}).clip_eps == 0.2   # composes
    with pytest.raises(ConfigError, match="alp_sigma applies with perturbation: alp only"):
        load_config(None, {"alp_sigma": 0.1})
    with pytest.raises(ConfigError, match="perturbation: 'gauss' is not one of none, alp"):
        load_config(None, {"perturbation": "gauss"})


def test_noise_is_only_in_the_update_forward(tmp_path, nudged_tiny):
    """With a large fixed σ the update's losses differ from σ ≈ 0, but rollouts and the agreement check see the
    unperturbed model: the recorded behaviour log-probs agree with it to 1e-4."""
    loud = train(load_config(None, _values(tmp_path, nudged_tiny, alp_sigma=0.5, alp_learnable=False, iterations=1,
                                           output_dir=str(tmp_path / "loud"))), progress=False)
    quiet = train(load_config(None, _values(tmp_path, nudged_tiny, alp_sigma=1e-9, alp_learnable=False,
                                            iterations=1, output_dir=str(tmp_path / "quiet"))), progress=False)
    [a], [b] = _rows(loud), _rows(quiet)
    assert a["train_tokens"] > 0
    assert a["logprob_max_abs_diff"] <= 1e-4 and b["logprob_max_abs_diff"] <= 1e-4
    assert a["success_rate"] == b["success_rate"] and a["mean_turns"] == b["mean_turns"]   # same rollouts
    assert a["ratio_mean"] != pytest.approx(b["ratio_mean"], abs=1e-4)                    # noisy numerator
    assert a["alp_sigma_mean"] == pytest.approx(0.5) and len(a["sigma_per_layer"]) == 2
    # zero-shot and after-RL evaluation ran greedy on the same (unperturbed) weights
    evals = json.loads((loud / "eval.json").read_text())
    assert evals["zero_shot"] == json.loads((quiet / "eval.json").read_text())["zero_shot"]


def test_sigma_learns_and_resumes_exactly(tmp_path, nudged_tiny):
    values = _values(tmp_path, nudged_tiny, eval_episodes=0)
    whole = train(load_config(None, {**values, "output_dir": str(tmp_path / "whole")}), progress=False)
    rows = _rows(whole)
    assert rows[-1]["alp_sigma_mean"] != pytest.approx(1e-3, rel=1e-6)    # σ moved with its own learning rate
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "final")
    shutil.rmtree(cut / "checkpoints" / "iter-000002")
    (cut / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
    train(load_config(None, {**values, "output_dir": str(cut)}), resume=True, progress=False)
    assert _rows(cut)[1]["sigma_per_layer"] == rows[1]["sigma_per_layer"]
    assert _rows(cut)[1]["loss"] == pytest.approx(rows[1]["loss"], abs=1e-6)
    a, b = torch.load(whole / "final" / "alp_sigma.pt"), torch.load(cut / "final" / "alp_sigma.pt")
    assert torch.equal(a["log_sigma"], b["log_sigma"])
    assert (whole / "final" / "adapter_model.safetensors").exists()


def test_the_trainer_builds_the_noise_once(tmp_path):
    plain = Trainer(load_config(None, {"env": "lights", "model": "tiny", "output_dir": str(tmp_path / "a")}),
                    progress=False)
    assert plain.noise is NO_NOISE
    alp = Trainer(load_config(None, {"env": "lights", "model": "tiny", "algorithm": "alp", "alp_layers": [1],
                                     "output_dir": str(tmp_path / "b")}), progress=False)
    assert isinstance(alp.noise, LayerwiseNoise) and alp.noise.layer_indices == [1]
    assert any(group["lr"] == 1e-2 for group in alp.optimizer.param_groups)   # σ's own learning rate
