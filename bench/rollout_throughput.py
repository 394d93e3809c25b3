"""Rollout throughput: one batched generation per turn over 16 environments, against the same model
stepping one environment at a time. Both play the same tasks with the same settings in one run.

    python bench/rollout_throughput.py [--model tiny] [--envs 16] [--env guess-number]

The last line printed is a JSON object with `speedup` (batched episodes/s over sequential episodes/s),
from the median of `--repeats` interleaved timings of each mode.
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

    def play(batch: int) -> tuple[float, int]:
        generator = torch.Generator().manual_seed(args.seed)
        envs = [make_env(args.env) for _ in range(batch)]
        tokens = 0
        start = time.perf_counter()
        for i in range(0, len(specs), batch):
            chunk = specs[i: i + batch]
            episodes = rollout(policy, envs[: len(chunk)], chunk, env_name=args.env, context=args.context,
                               max_turns=args.max_turns, generator=generator)
            tokens += sum(len(t.completion_ids) for e in episodes for t in e.turns)
        return time.perf_counter() - start, tokens

    play(args.envs)   # warm-up: first-call allocations and kernel selection
    # Interleaved repeats, median of each: a shared machine's noise hits both modes alike.
    batched, sequential = [], []
    for _ in range(args.repeats):
        batched.append(play(args.envs))
        sequential.append(play(1))
    batched_s, batched_tokens = sorted(batched)[len(batched) // 2]
    sequential_s, sequential_tokens = sorted(sequential)[len(sequential) // 2]
    result = {
        "model": args.model, "env": args.env, "envs": args.envs, "context": args.context,
        "batched_episodes_per_s": round(len(specs) / batched_s, 3),
        "sequential_episodes_per_s": round(len(specs) / sequential_s, 3),
        "batched_tokens_per_s": round(batched_tokens / batched_s, 1),
        "sequential_tokens_per_s": round(sequential_tokens / sequential_s, 1),
        "speedup": round(sequential_s / batched_s, 2), "repeats": args.repeats,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
