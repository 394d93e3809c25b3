"""Group advantages for long horizons: what they cost, and what they learn.

1. Cost: GRPO, RLOO, GiGPO and HGPO (K = 2 and 4) on 128 episodes x 50 steps of synthetic observations
   drawn from a small vocabulary (so that groups form at every level), one core. Target < 1 s each;
   `seconds_128x50` is the slowest of them.
2. Learning (`--learning`): the `corridor` toy environment (sparse reward at the end, the same
   observation at different depths), the `tiny` model, one shared behaviour-cloning warm start, then
   GRPO, GiGPO and HGPO with the same rollout budget (iterations x tasks x group size), the same
   `window:2` context and the same update settings, for 3 seeds each. Success on held-out tasks after
   training (sampling at temperature 1, as trained); the training curves are plotted to
   `docs/advantages_learning.png`.

    python bench/advantages.py                  # cost only (seconds)
    python bench/advantages.py --learning       # cost + learning (tens of minutes on 2 CPU cores)

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path


def cost(episodes: int = 128, steps: int = 50, seed: int = 0) -> dict:
    from turnrl.algorithms.advantages import gigpo_advantages, grpo_advantages, hgpo_advantages, rloo_advantages

    rng = random.Random(seed)
    vocabulary = [f"You are in room {i}. Exits: north, south." for i in range(12)]
    observations = [[rng.choice(vocabulary) for _ in range(steps)] for _ in range(episodes)]
    rewards = [[0.0] * (steps - 1) + [float(rng.random() < 0.5)] for _ in range(episodes)]
    penalties = [[0.1 if rng.random() < 0.1 else 0.0 for _ in range(steps)] for _ in range(episodes)]
    groups = [e // 8 for e in range(episodes)]
    returns = [sum(r) - sum(p) for r, p in zip(rewards, penalties)]
    runs = {
        "grpo": lambda: grpo_advantages(returns, groups),
        "rloo": lambda: rloo_advantages(returns, groups),
        "gigpo": lambda: gigpo_advantages(observations, rewards, groups, penalties=penalties),
        "hgpo_k2": lambda: hgpo_advantages(observations, rewards, groups, history_length=2, penalties=penalties),
        "hgpo_k4": lambda: hgpo_advantages(observations, rewards, groups, history_length=4, penalties=penalties,
                                           base_group=True),
    }
    seconds = {}
    for name, fn in runs.items():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        seconds[name] = round(min(times), 4)
    return {"seconds": seconds, "seconds_128x50": max(seconds.values())}


def learning(args) -> dict:
    import torch

    from turnrl.agents.models import load_model
    from turnrl.agents.policy import Policy
    from turnrl.agents.rollout import evaluate
    from turnrl.algorithms.config import load_config
    from turnrl.algorithms.sft import run_sft
    from turnrl.algorithms.trainer import train
    from turnrl.environments import make_env
    from turnrl.episode import summarize

    torch.set_num_threads(args.threads)
    workdir = Path(args.output_dir or tempfile.mkdtemp(prefix="turnrl-advantages-"))
    env_kwargs = {"n_doors": args.doors, "max_steps": args.max_turns}

    def success(model_path: str, seed: int) -> float:
        model, tokenizer = load_model(model_path, progress=False)
        policy = Policy(model, tokenizer, temperature=1.0, max_new_tokens=16)
        tasks = make_env("corridor", **env_kwargs).tasks("test")[: args.eval_episodes]
        episodes = evaluate(policy, "corridor", tasks, env_kwargs=env_kwargs, context="window:2",
                            max_turns=args.max_turns, seed=seed)
        return summarize(episodes)["success_rate"]

    t0 = time.perf_counter()
    warm = run_sft(env="corridor", model="tiny", episodes=args.sft_episodes, output_dir=workdir / "sft",
                   env_kwargs=env_kwargs, context="window:2", max_turns=args.max_turns, epochs=args.sft_epochs,
                   learning_rate=3e-3, batch_size=8, seed=0, progress=False)
    before = success(str(warm), 0)
    print(f"warm start: success {before:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    curves: dict[str, list[list[float]]] = {}
    final: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    for method in args.methods:
        for seed in range(args.seeds):
            t1 = time.perf_counter()
            config = load_config(overrides={
                "env": "corridor", "env_kwargs": env_kwargs, "model": str(warm), "algorithm": method,
                "context": "window:2", "iterations": args.iterations, "tasks_per_iteration": args.tasks,
                "group_size": args.group_size, "max_turns": args.max_turns, "max_new_tokens": 16,
                "learning_rate": args.learning_rate, "minibatch_size": args.minibatch_size,
                "micro_batch_size": args.minibatch_size, "epochs": 1, "checkpoint_every": 0, "seed": seed,
                "output_dir": str(workdir / f"{method}-seed{seed}"),
            })
            run_dir = train(config, progress=False)
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            curves.setdefault(method, []).append([row["success_rate"] for row in rows])
            final.setdefault(method, []).append(success(str(run_dir / "final"), seed))
            seconds.setdefault(method, []).append(time.perf_counter() - t1)
            print(f"{method} seed {seed}: test success {final[method][-1]:.2f} "
                  f"({seconds[method][-1]:.0f} s)", flush=True)

    plot(curves, before, Path(args.plot))
    summary = {
        method: {"mean": round(statistics.mean(values), 4),
                 "std": round(statistics.pstdev(values), 4),
                 "min": min(values), "max": max(values), "per_seed": values,
                 "seconds_per_run": round(statistics.mean(seconds[method]), 1)}
        for method, values in final.items()
    }
    return {"before": before, "final_success": summary, "plot": args.plot,
            "budget": {"iterations": args.iterations, "tasks": args.tasks, "group_size": args.group_size,
                       "episodes_per_run": args.iterations * args.tasks * args.group_size,
                       "doors": args.doors, "max_turns": args.max_turns, "seeds": args.seeds,
                       "eval_episodes": args.eval_episodes}}


def plot(curves: dict[str, list[list[float]]], before: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method, runs in curves.items():
        length = min(len(r) for r in runs)
        x = list(range(1, length + 1))
        mean = [statistics.mean(r[i] for r in runs) for i in range(length)]
        low = [min(r[i] for r in runs) for i in range(length)]
        high = [max(r[i] for r in runs) for i in range(length)]
        ax.plot(x, mean, marker="o", label=f"{method} (mean of {len(runs)} seeds)")
        ax.fill_between(x, low, high, alpha=0.2)
    ax.axhline(before, color="grey", linestyle=":", label="warm start (test)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training success rate")
    ax.set_title("corridor, tiny model: GRPO vs GiGPO vs HGPO (band: min-max over seeds)")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learning", action="store_true", help="also run the learning comparison")
    parser.add_argument("--methods", nargs="+", default=["grpo", "gigpo", "hgpo"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--doors", type=int, default=4)
    parser.add_argument("--max-turns", type=int, default=8)
    parser.add_argument("--sft-episodes", type=int, default=60)
    parser.add_argument("--sft-epochs", type=float, default=2)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--minibatch-size", type=int, default=64)
    parser.add_argument("--eval-episodes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", default="docs/advantages_learning.png")
    parser.add_argument("--output-dir", default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    result = cost()
    print(f"advantage cost, 128 x 50 steps: {result['seconds']}", flush=True)
    if args.learning:
        result["learning"] = learning(args)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
