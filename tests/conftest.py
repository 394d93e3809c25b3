"""Shared fixtures."""

from __future__ import annotations

import random

import pytest
import torch

from turnrl.agents.policy import pad_right, token_logprobs
from turnrl.episode import episode_samples


def _train_on_turn_ends(model, tokenizer, demos, steps: int = 40, lr: float = 1e-2):
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
