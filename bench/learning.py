"""Learning check: a `tiny` model on a toy environment, a short behaviour-cloning warm start from the
expert, then GRPO. Success rate on held-out test tasks before and after GRPO, for the policy as it is
trained (sampling at temperature 1; `--eval-temperature 0` measures greedy decoding instead).

The warm start is deliberately short (160 expert episodes, 3 epochs): it teaches the answer format
but leaves most answers wrong, so what GRPO adds is visible.

    python bench/learning.py            # the full benchmark (target: after - before >= 0.3, < 10 minutes)
    python bench/learning.py --quick    # the shortened version the test suite runs

The last line printed is a JSON object: {"before": ..., "after": ..., "seconds": ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run for CI")
    parser.add_argument("--env", default="traffic")
    parser.add_argument("--context", default="full")
    parser.add_argument("--sft-episodes", type=int, default=160)
    parser.add_argument("--sft-epochs", type=float, default=3)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--tasks-per-iteration", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--minibatch-size", type=int, default=32)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--eval-temperature", type=float, default=1.0,
                        help="success is measured for the policy as trained (sampling at this temperature)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.eval_episodes = 10, 50

    from turnrl.agents.models import load_model
    from turnrl.agents.policy import Policy
    from turnrl.agents.prompts import PromptBuilder
    from turnrl.agents.rollout import evaluate
    from turnrl.algorithms.config import load_config
    from turnrl.algorithms.sft import run_sft
    from turnrl.algorithms.trainer import train
    from turnrl.environments import make_env
    from turnrl.episode import summarize

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    workdir = Path(args.output_dir or tempfile.mkdtemp(prefix="turnrl-learning-"))
    max_turns = 6

    def success(model_path: str) -> float:
        model, tokenizer = load_model(model_path, progress=False)
        policy = Policy(model, tokenizer, temperature=args.eval_temperature, max_new_tokens=16)
        tasks = make_env(args.env).tasks("test")[: args.eval_episodes]
        episodes = evaluate(policy, args.env, tasks, context=args.context, max_turns=max_turns, seed=args.seed,
                            prompt_builder=PromptBuilder())
        return summarize(episodes)["success_rate"]

    warm = run_sft(env=args.env, model="tiny", episodes=args.sft_episodes, output_dir=workdir / "sft",
                   context=args.context, max_turns=max_turns, epochs=args.sft_epochs, learning_rate=3e-3, batch_size=8,
                   seed=args.seed, progress=False)
    before = success(str(warm))

    config = load_config(overrides={
        "env": args.env, "model": str(warm), "context": args.context, "iterations": args.iterations,
        "tasks_per_iteration": args.tasks_per_iteration, "group_size": args.group_size, "max_turns": max_turns,
        "max_new_tokens": 16, "learning_rate": args.learning_rate, "minibatch_size": args.minibatch_size,
        "micro_batch_size": args.minibatch_size, "epochs": 1,
        "checkpoint_every": 0, "seed": args.seed, "output_dir": str(workdir / "grpo"),
    })
    run_dir = train(config, progress=True)
    after = success(str(run_dir / "final"))
    result = {"before": round(before, 4), "after": round(after, 4),
              "seconds": round(time.perf_counter() - start, 1), "env": args.env,
              "iterations": args.iterations, "eval_episodes": args.eval_episodes}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
