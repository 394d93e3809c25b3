"""Shared fixtures."""

from __future__ import annotations

import random

import pytest
import torch

from turnrl.agents.policy import pad_right, token_logprobs
from turnrl.episode import episode_samples


def _train_on_turn_ends(model, tokenizer, demos, steps: int = 40, lr: float = 3e-3):
    """Train `model` in place for a few steps on the last 40 tokens of expert turns (agent tokens only),
    so that it often writes `<action>…</action>`: episodes then differ in length and return."""
    pieces = [(s.token_ids[-40:], s.loss_mask[-40:]) for i, e in enumerate(demos)
              for s in episode_samples(e, [0.0] * len(e.turns), i)]
    rng = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = rng.choices(pieces, k=16)
        ids, mask = pad_right([p[0] for p in batch], tokenizer.pad_token_id)
        loss_mask = pad_right([p[1] for p in batch], 0)[0][:, 1:].float()
        loss = -(token_logprobs(model, ids, mask) * loss_mask).sum() / loss_mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def train_on_turn_ends():
    return _train_on_turn_ends


@pytest.fixture(scope="module")
def one_thread():
    """A 2-layer model is several times faster on one thread than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _nudged(tmp_path_factory, dtype: str):
    from turnrl.agents.models import load_model, save_model
    from turnrl.algorithms.sft import expert_demonstrations

    model, tokenizer = load_model("tiny", dtype=dtype)
    demos = (expert_demonstrations(tokenizer, "lights", list(range(8)), env_kwargs={"n_lamps": 1}, context="window:0")
             + expert_demonstrations(tokenizer, "lights", list(range(8)), context="window:0"))
    _train_on_turn_ends(model, tokenizer, demos)
    folder = tmp_path_factory.mktemp(f"nudged_tiny_{dtype}") / "model"
    save_model(model, tokenizer, folder, "tiny")
    return folder


@pytest.fixture(scope="session")
def nudged_tiny(tmp_path_factory):
    """A saved copy of `tiny` trained for a few dozen steps on the ends of expert `lights` turns, so that it often
    writes a valid action: episodes differ in return and updates have a gradient."""
    return _nudged(tmp_path_factory, "float32")


@pytest.fixture(scope="session")
def nudged_tiny64(tmp_path_factory):
    """`nudged_tiny` made and saved in float64, for the invariant tests: in float32 the last bits of a matmul
    depend on the CPU's kernels (AVX2 or AVX-512, Intel or AMD), and a few dozen AdamW steps then a sampled
    token turn that into different numbers; in float64 the differences stay far below what they pin."""
    return _nudged(tmp_path_factory, "float64")
