"""Checks a model before training (`turnrl doctor`).

1. The chat template is prefix-preserving for an environment's turns: rendering the conversation with
   one more message only appends text, so turns can be appended token by token (`full` context).
2. Log-prob agreement: for a batch of multi-turn rollouts of mixed lengths, the per-token log-probs
   recorded during batched, left-padded, KV-cached generation equal those recomputed on the whole
   right-padded sequences (same weights, same temperature). In float32 they agree to about 1e-6;
   a gap above 1e-4 means a bookkeeping bug (positions, padding, masks, template glue) that would
   silently turn on-policy training off-policy.
"""

from __future__ import annotations

import torch

from turnrl.agents.policy import Policy
from turnrl.agents.prompts import ChatTemplateError, ChatTokens, PromptBuilder
from turnrl.agents.rollout import EpisodeSpec, rollout
from turnrl.environments import make_env
from turnrl.episode import episode_samples

TOLERANCE = 1e-4


def template_check(tokenizer, env_name: str, env_kwargs: dict | None = None) -> tuple[bool, str]:
    """Is the chat template prefix-preserving over a few of this environment's turns?"""
    env = make_env(env_name, **(env_kwargs or {}))
    builder = PromptBuilder()
    chat = ChatTokens(tokenizer)
    observation = env.reset(task=env.tasks("train")[0], seed=0)
    messages = builder.first_message(env, observation)
    try:
        for _ in range(3):
            action = env.expert_action() or "noop"
            response = f"<think>checking the template</think><action>{action}</action>"
            result = env.step(action)
            next_message = builder.observation_message(env, result.observation)
            chat.continuation_ids(messages, response, False, next_message)
            messages = messages + [{"role": "assistant", "content": response}, next_message]
            if result.done:
                break
    except ChatTemplateError as err:
        return False, str(err)
    return True, "each new message only appends to the rendered conversation"


def logprob_agreement(policy: Policy, env_name: str, *, contexts=("full", "window:2"), episodes: int = 6,
                      max_turns: int = 3, env_kwargs: dict | None = None, seed: int = 0) -> dict[str, float]:
    """Max |generation log-prob − recomputed log-prob| over agent tokens, per context mode."""
    env = make_env(env_name, **(env_kwargs or {}))
    tasks = env.tasks("train")[:episodes]
    result = {}
    for context in contexts:
        envs = [make_env(env_name, **(env_kwargs or {})) for _ in tasks]
        specs = [EpisodeSpec(task, seed, i) for i, task in enumerate(tasks)]
        generator = torch.Generator(device=policy.device).manual_seed(seed)
        played = rollout(policy, envs, specs, env_name=env_name, context=context, max_turns=max_turns,
                         generator=generator)
        samples = [s for i, e in enumerate(played) for s in episode_samples(e, [0.0] * len(e.turns), i)]
        recomputed = policy.logprobs([s.token_ids for s in samples])
        worst = 0.0
        for sample, scores in zip(samples, recomputed):
            for i in range(1, len(sample.token_ids)):
                if sample.loss_mask[i]:
                    worst = max(worst, abs(scores[i - 1] - sample.behaviour_logprobs[i]))
        result[context] = worst
    return result
