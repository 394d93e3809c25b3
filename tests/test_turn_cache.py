"""Cross-turn KV cache in `full` context: the same tokens and log-probs as prefilling the whole
conversation every turn, for batches whose prompts differ in length and whose rows finish at different
turns, on `tiny` and on random models of other shapes; a clear error for caches that cannot be kept."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from turnrl.agents.models import load_model
from turnrl.agents.policy import CacheUnsupportedError, Policy, TurnCache
from turnrl.agents.rollout import EpisodeSpec, rollout
from turnrl.environments import Environment, StepResult

pytestmark = pytest.mark.usefixtures("one_thread")


class Countdown(Environment):
    """Ends after `task` turns whatever the agent says; observations of task-dependent length."""

    parses_responses = True   # every response is a turn, so episodes end by task, not by luck

    def tasks(self, split="train"):
        return [1, 2, 3, 4, 5]

    def reset(self, task=None, seed=None):
        self.left = int(task or 1)
        return "Count down. " + "tick " * (3 * self.left) + f"{self.left} to go."

    def step(self, action):
        self.left -= 1
        done = self.left <= 0
        return StepResult("word " * (1 + self.left % 3) + f"{self.left} left.", float(done), done,
                          {"success": done, "invalid": False})


@pytest.fixture(scope="module")
def tiny(one_thread):
    return load_model("tiny")


def _random_model(kind: str, tokenizer):
    torch.manual_seed(0)
    shape = {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                 "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**shape)).eval()


def _play(policy, cached: bool, tasks=(1, 3, 5, 2, 4, 1, 5, 3), seed=0, max_turns=5):
    specs = [EpisodeSpec(task, seed, g) for g, task in enumerate(tasks)]
    generator = torch.Generator().manual_seed(seed)
    return rollout(policy, [Countdown() for _ in specs], specs, env_name="countdown", context="full",
                   max_turns=max_turns, generator=generator, cross_turn_cache=cached)


def _assert_same(with_cache, without_cache):
    lengths = set()
    for a, b in zip(with_cache, without_cache):
        assert a.token_ids == b.token_ids
        assert len(a.turns) == len(b.turns)
        lengths.add(len(a.turns))
        for ta, tb in zip(a.turns, b.turns):
            assert ta.completion_ids == tb.completion_ids
            assert max(abs(x - y) for x, y in zip(ta.logprobs, tb.logprobs)) < 1e-5
    assert len(lengths) > 2   # rows left the batch at different turns


@pytest.mark.parametrize("kind", ["tiny", "llama", "qwen2"])
def test_cache_gives_the_same_tokens_and_logprobs(tiny, kind):
    model, tokenizer = tiny
    if kind != "tiny":
        model = _random_model(kind, tokenizer)
    policy = Policy(model, tokenizer, temperature=1.0, max_new_tokens=12)
    _assert_same(_play(policy, True), _play(policy, False))


def test_cache_agrees_with_greedy_decoding_and_stop_strings(tiny):
    model, tokenizer = tiny
    policy = Policy(model, tokenizer, temperature=0.0, max_new_tokens=10, stop_strings=("e",))
    _assert_same(_play(policy, True), _play(policy, False))


def test_recorded_logprobs_match_recomputation_with_cache(tiny):
    """The behaviour log-probs from a cached rollout are what the trainer recomputes on the sequence."""
    model, tokenizer = tiny
    policy = Policy(model, tokenizer, temperature=1.0, max_new_tokens=12)
    episodes = _play(policy, True)
    scores = policy.logprobs([e.token_ids for e in episodes])
    for episode, row in zip(episodes, scores):
        for turn in episode.turns:
            start, end = turn.span
            recomputed = row[start - 1: end - 1]
            assert max(abs(x - y) for x, y in zip(recomputed, turn.logprobs)) < 1e-4


def test_cache_keeps_only_live_rows_and_their_prefixes(tiny):
    model, tokenizer = tiny
    policy = Policy(model, tokenizer, temperature=1.0, max_new_tokens=6)
    cache = TurnCache()
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    completions = policy.generate(prompts, generator=torch.Generator().manual_seed(0), cache=cache)
    for prompt, completion, held in zip(prompts, completions, cache.ids):
        assert held[: len(prompt)] == prompt
        assert held[len(prompt):] == completion.token_ids[: len(held) - len(prompt)]
    assert cache.mask.shape[1] == cache.past.get_seq_length()
    assert [int(m) for m in cache.mask.sum(1)] == [len(held) for held in cache.ids]
    cache.select([2, 0])
    assert cache.ids[0][:4] == prompts[2] and cache.ids[1][:3] == prompts[0]
    assert cache.past.layers[0].keys.shape[0] == 2
    with pytest.raises(ValueError, match="does not extend"):
        policy.generate([[1, 2], [3, 4]], cache=cache)
    with pytest.raises(ValueError, match="holds 2 rows"):
        policy.generate([[1, 2]], cache=cache)


def test_a_cache_that_cannot_be_kept_is_a_clear_error(tiny):
    _, tokenizer = tiny
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, sliding_window=8, pad_token_id=tokenizer.pad_token_id)).eval()
    policy = Policy(model, tokenizer, temperature=1.0, max_new_tokens=4)
    with pytest.raises(CacheUnsupportedError, match="cross_turn_cache: false"):
        _play(policy, True, tasks=(1, 2))
    assert len(_play(policy, False, tasks=(1, 2))) == 2
