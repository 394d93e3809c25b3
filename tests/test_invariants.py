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
    "grpo": [(0.071187, 0.209292, 0.181818, 6.334926, None), (0.013919, 0.33497, 0.115741, 7.018184, None)],
    "gigpo": [(-0.128674, 0.206298, 0.215517, 6.494046, None), (-0.065109, 0.33041, 0.103306, 4.715509, None)],
    "hgpo": [(-0.051162, 0.161293, 0.228448, 5.691142, None), (-0.018631, 0.173299, 0.192, 4.062077, None)],
    "ppo": [(0.27974, 0.687573, 0.19697, 14.184324, 0.190152), (-0.048566, 0.121389, 0.080808, 7.389275, 0.031338)],
    "turn-ppo": [(0.218571, 0.805156, 0.449495, 16.662446, 0.190112), (-0.119286, 0.274402, 0.139785, 10.040326, 0.030424)],
    "s-ppo": [(0.281273, 0.740251, 0.20202, 3.66528, 0.190141), (-0.098015, 0.15238, 0.117978, 6.967673, 0.024268)],
    "st-ppo": [(0.220155, 0.894307, 0.484848, 3.002424, 0.190394), (-0.165204, 0.140856, 0.173913, 4.206629, 0.02001)],
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
