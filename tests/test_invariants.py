"""Training invariants in the manner of TRL's: a short run of each preset on a toy environment with `tiny`,
pinning each iteration's loss, KL, clip fraction and gradient norm (and the value loss where there is a critic),
so that a refactor that changes what a preset computes fails here. A deliberate change of behaviour updates the
numbers in the same commit and says why in its message.

The runs: the `lights` toy environment, `tiny` nudged towards valid actions (so episodes differ and updates
have a gradient), two iterations of 2 tasks x 4 rollouts, two epochs, KL to the reference on, one thread."""

from __future__ import annotations

import json

import pytest

from turnrl.algorithms.config import ALGORITHMS, load_config
from turnrl.algorithms.trainer import train

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

KEYS = ("loss", "kl", "clip_fraction", "grad_norm", "value_loss")

# preset -> per iteration (loss, kl, clip_fraction, grad_norm, value_loss or None)
PINNED = {
    "grpo": [(-0.007955, 0.463375, 0.08, 5.967832, None), (-0.019446, 0.199197, 0.06383, 2.838091, None)],
    "gigpo": [(-0.089275, 0.162123, 0.219298, 8.116994, None), (-0.077547, 0.090794, 0.108871, 3.323249, None)],
    "hgpo": [(-0.002684, 0.191428, 0.201754, 4.123783, None), (-0.056759, 0.246463, 0.142857, 10.021986, None)],
    "ppo": [(0.17281, 0.055706, 0.135, 7.46112, 0.137592), (-0.020361, 0.087328, 0.075, 6.576876, 0.071446)],
    "turn-ppo": [(0.137984, 0.168534, 0.18, 5.713784, 0.134083), (0.363853, 0.259448, 0.063158, 5.980228, 0.113731)],
    "s-ppo": [(0.172771, 0.056968, 0.135, 1.898058, 0.135699), (0.098808, 0.106822, 0.075, 3.92552, 0.062126)],
    "alp": [(-0.199556, 0.789655, 0.175, 9.82176, None), (-0.146272, 0.214014, 0.175532, 2.058583, None)],
    "st-ppo": [(0.137984, 0.168534, 0.18, 4.664805, 0.134083), (0.366091, 0.272618, 0.063158, 2.978962, 0.112841)],
}


def short_run(tmp_path, model, preset: str) -> list[dict]:
    config = load_config(None, {
        "env": "lights", "env_kwargs": {"n_lamps": 2}, "model": str(model), "algorithm": preset,
        "tasks_per_iteration": 2, "group_size": 4, "max_turns": 3, "max_new_tokens": 8, "iterations": 2,
        "epochs": 2, "minibatch_size": 4, "micro_batch_size": 2, "learning_rate": 2e-4, "kl_coef": 0.05,
        "checkpoint_every": 0, "seed": 3, "output_dir": str(tmp_path / preset)})
    run_dir = train(config, progress=False)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("preset", ALGORITHMS)
def test_preset_short_run_is_pinned(tmp_path, nudged_tiny, preset):
    rows = short_run(tmp_path, nudged_tiny, preset)
    got = [tuple(row.get(k) for k in KEYS) for row in rows]
    assert preset in PINNED, f"no pinned numbers for {preset}: {got}"
    for iteration, (measured, pinned) in enumerate(zip(got, PINNED[preset]), start=1):
        for key, m, p in zip(KEYS, measured, pinned):
            if p is None:
                assert m is None, (preset, iteration, key)
            else:
                assert m == pytest.approx(p, rel=1e-4, abs=1e-7), (preset, iteration, key)
