"""Rollout throughput: one batched generation per turn over 16 environments, against the same model
stepping one environment at a time, and (in `full` context) the batched rollout with the cross-turn KV
cache against the same rollout prefilling the whole conversation every turn. All modes play the same
tasks with the same settings and seed in one run.

    python bench/rollout_throughput.py [--model tiny] [--envs 16] [--env guess-number] [--context full]
                                       [--max-turns 10]

The last line printed is a JSON object with `speedup` (batched episodes/s over sequential episodes/s,
both with the cache where it applies) and, in full context, `cache_speedup` (batched with the cache over
batched without it) and `same_tokens` (whether both produced identical token ids), from the median of
`--repeats` interleaved timings of each mode.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--env", default="guess-number")
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--context", default="full")
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each mode (median reported)")
    args = parser.parse_args(argv)

    from turnrl.agents.models import load_model
    from turnrl.agents.policy import Policy
    from turnrl.agents.rollout import EpisodeSpec, rollout
    from turnrl.environments import make_env

    model, tokenizer = load_model(args.model, progress=False)
    policy = Policy(model, tokenizer, temperature=1.0, max_new_tokens=args.max_new_tokens)
    tasks = make_env(args.env).tasks("train")[: args.envs]
    specs = [EpisodeSpec(task, args.seed, i) for i, task in enumerate(tasks)]

    full = args.context == "full"
    played_ids: dict[bool, list] = {}

    def play(batch: int, cache: bool = True) -> tuple[float, int]:
        generator = torch.Generator().manual_seed(args.seed)
        envs = [make_env(args.env) for _ in range(batch)]
        tokens = 0
        ids = []
        start = time.perf_counter()
        for i in range(0, len(specs), batch):
            chunk = specs[i: i + batch]
            episodes = rollout(policy, envs[: len(chunk)], chunk, env_name=args.env, context=args.context,
                               max_turns=args.max_turns, generator=generator, cross_turn_cache=cache)
            tokens += sum(len(t.completion_ids) for e in episodes for t in e.turns)
            ids += [e.token_ids for e in episodes]
        if batch == args.envs:
            played_ids[cache] = ids
        return time.perf_counter() - start, tokens

    play(args.envs)   # warm-up: first-call allocations and kernel selection
    # Interleaved repeats, median of each: a shared machine's noise hits all modes alike.
    batched, sequential, uncached = [], [], []
    for _ in range(args.repeats):
        batched.append(play(args.envs))
        if full:
            uncached.append(play(args.envs, cache=False))
        sequential.append(play(1))
    batched_s, batched_tokens = sorted(batched)[len(batched) // 2]
    sequential_s, sequential_tokens = sorted(sequential)[len(sequential) // 2]
    result = {
        "model": args.model, "env": args.env, "envs": args.envs, "context": args.context,
        "batched_episodes_per_s": round(len(specs) / batched_s, 3),
        "sequential_episodes_per_s": round(len(specs) / sequential_s, 3),
        "batched_tokens_per_s": round(batched_tokens / batched_s, 1),
        "sequential_tokens_per_s": round(sequential_tokens / sequential_s, 1),
        "speedup": round(sequential_s / batched_s, 2), "repeats": args.repeats, "max_turns": args.max_turns,
        "threads": torch.get_num_threads(),
    }
    if full:
        uncached_s, _ = sorted(uncached)[len(uncached) // 2]
        result.update(uncached_episodes_per_s=round(len(specs) / uncached_s, 3),
                      cache_speedup=round(uncached_s / batched_s, 2), same_tokens=played_ids[True] == played_ids[False])
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
