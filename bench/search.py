"""Tree search costs: snapshot and restore time per environment, and node expansions per second with generation
batched across nodes and tasks, as a ratio to one node at a time and to one row at a time.

    python bench/search.py [--model tiny] [--tasks 8] [--simulations 4] [--branching 4] [--threads 1]

Snapshots: each registered environment (adapters excepted) is reset on a training task and stepped by its expert
`--depth` times (fewer where the episode ends), then `snapshot()` and `restore()` are timed over `--repeats`
calls each (ALFWorld, which replays, over a tenth of them); the median per call, in milliseconds.

Expansion rate: `search_tasks` on `lights` (window:2 context, α = 1, so every generate call is a proposal or a
rollout turn) with `--tasks` trees searched together, once per `SearchConfig.batching` mode: `all` (one generate
call per round for every tree's requests), `request` (one call per node expansion or rollout turn: one node at a
time) and `row` (one call per generated response). Each tree samples from its own generator, so the modes grow the
same trees (up to float rounding of the batched forward: a flipped sample changes a tree); the rate is
expansions / wall seconds. The last line printed is a JSON object of the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

# bench/alfworld.py would shadow the alfworld package that the ALFWorld environment imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch

from turnrl.agents.models import load_model
from turnrl.agents.policy import Policy
from turnrl.environments import ADAPTER_ENVS, list_envs, make_env
from turnrl.search import SearchConfig, search_tasks


def snapshot_times(depth: int, repeats: int) -> dict:
    times = {}
    for name in [n for n in list_envs() if n not in ADAPTER_ENVS]:
        try:
            env = make_env(name)
        except ImportError as err:          # an optional engine that is not installed
            times[name] = {"skipped": str(err)[:200]}
            continue
        env.reset(task=env.tasks("train")[0], seed=0)
        for _ in range(depth):
            action = env.expert_action()
            if action is None or env.step(action).done:
                break
        n = max(repeats // 10, 5) if name == "alfworld" else repeats
        snap_ns, restore_ns = [], []
        snap = env.snapshot()
        for _ in range(n):
            start = time.perf_counter_ns()
            snap = env.snapshot()
            snap_ns.append(time.perf_counter_ns() - start)
            start = time.perf_counter_ns()
            env.restore(snap)
            restore_ns.append(time.perf_counter_ns() - start)
        times[name] = {"snapshot_ms": statistics.median(snap_ns) / 1e6, "restore_ms": statistics.median(restore_ns) / 1e6,
                       "kind": type(snap).__name__, "calls": n}
        env.close()
    return times


def expansion_rates(model_name: str, tasks: int, simulations: int, branching: int, max_new_tokens: int) -> dict:
    model, tokenizer = load_model(model_name)
    rates = {}
    for batching in ("all", "request", "row"):
        policy = Policy(model, tokenizer, temperature=1.0, max_new_tokens=max_new_tokens)
        config = SearchConfig(simulations=simulations, branching=branching, alpha=1.0, max_turns=4,
                              context="window:2", batching=batching)
        start = time.perf_counter()
        trees = search_tasks(policy, "lights", list(range(tasks)), config, batch_size=tasks, seed=0)
        seconds = time.perf_counter() - start
        expansions = sum(t.expansions for t in trees)
        rates[batching] = {"expansions": expansions, "seconds": round(seconds, 3),
                           "expansions_per_second": expansions / seconds,
                           "env_steps": sum(t.env_steps for t in trees)}
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--simulations", type=int, default=4)
    parser.add_argument("--branching", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    snaps = snapshot_times(args.depth, args.repeats)
    for name, row in snaps.items():
        print(f"{name:14s} {row}")
    rates = expansion_rates(args.model, args.tasks, args.simulations, args.branching, args.max_new_tokens)
    for mode, row in rates.items():
        print(f"batching {mode:8s} {row}")
    summary = {
        "model": args.model, "tasks": args.tasks, "simulations": args.simulations, "branching": args.branching,
        "threads": args.threads, "snapshots": snaps, "expansion": rates,
        "batched_vs_one_node_at_a_time": rates["all"]["expansions_per_second"]
        / rates["request"]["expansions_per_second"],
        "batched_vs_one_row_at_a_time": rates["all"]["expansions_per_second"] / rates["row"]["expansions_per_second"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
