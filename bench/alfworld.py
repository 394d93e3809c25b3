"""ALFWorld on the real engine: step and reset cost, and success per task type and split for the expert, a
random policy and (optionally) a model.

1. Cost: `--batch` environments in one process (as a rollout holds them) play random admissible actions on
   train games; median and p90 step time, cold reset (the first reset of a game in the process: grammar,
   PDDL-to-SAS translation) and warm reset (the game already loaded) times.
2. Success: `--episodes` tasks from the start of each split (the ids are interleaved by task type, so the
   first 6k tasks hold k of each type; `--episodes 0` = the whole split) for `--policy expert` and
   `--policy random` (max 50 steps), per task type and split.
3. `--model M` (optional): the same per-type table for a model, through turnrl's own evaluation
   (`window:k` context), on `--model-episodes` tasks of `--model-split`.
4. `--generate`: time the generation of one game per task type and split with the planner check (the shipped
   games are made by `python -m turnrl.environments.alfworld.generator games.jsonl.gz`).

    python bench/alfworld.py                                   # cost + expert/random on 30 tasks a split
    python bench/alfworld.py --episodes 0                      # every game of every split
    python bench/alfworld.py --model smollm2-135m --model-episodes 30 --max-turns 30

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict

# This file's name is the alfworld package's: keep its folder off the import path, or `import alfworld`
# finds this script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def cost(batch: int, steps: int, seed: int = 0) -> dict:
    from turnrl.environments import make_env

    envs = [make_env("alfworld") for _ in range(batch)]
    tasks = envs[0].tasks("train")
    rng = random.Random(seed)
    cold, warm, step_ms = [], [], []
    for i, env in enumerate(envs):  # distinct games: cold resets
        t0 = time.perf_counter()
        env.reset(tasks[(7 * i) % len(tasks)])
        cold.append(1000 * (time.perf_counter() - t0))
    for i, env in enumerate(envs):
        t0 = time.perf_counter()
        env.reset(tasks[(7 * i) % len(tasks)])
        warm.append(1000 * (time.perf_counter() - t0))
    for _ in range(steps):  # one turn of the whole batch at a time, as a rollout does
        for env in envs:
            action = rng.choice(env.admissible_actions())
            t0 = time.perf_counter()
            result = env.step(action)
            step_ms.append(1000 * (time.perf_counter() - t0))
            if result.done:
                env.reset(rng.choice(tasks[:batch]))
    for env in envs:
        env.close()
    return {"batch": batch, "steps": len(step_ms), "step_ms_median": round(statistics.median(step_ms), 2),
            "step_ms_p90": round(percentile(step_ms, 0.9), 2),
            "reset_ms_cold_median": round(statistics.median(cold), 1),
            "reset_ms_warm_median": round(statistics.median(warm), 1)}


def success_table(episodes) -> dict:
    """{task_type: success rate} plus "all" from turnrl Episode records."""
    wins, counts = defaultdict(int), defaultdict(int)
    for episode in episodes:
        task_type = episode.turns[-1].info.get("task_type", "?") if episode.turns else "?"
        counts[task_type] += 1
        wins[task_type] += bool(episode.success)
    table = {task_type: round(wins[task_type] / counts[task_type], 3) for task_type in sorted(counts)}
    table["all"] = round(sum(wins.values()) / max(1, sum(counts.values())), 3)
    table["episodes"] = sum(counts.values())
    return table


def scripted(policy: str, split: str, episodes: int, seed: int = 0) -> dict:
    from turnrl.agents.rollout import EpisodeSpec, expert_choice, random_choice, scripted_rollout
    from turnrl.environments import make_env

    env = make_env("alfworld")
    tasks = env.tasks(split)
    tasks = tasks if episodes <= 0 else tasks[:episodes]
    choose = expert_choice if policy == "expert" else random_choice(seed)
    played = []
    for g, task in enumerate(tasks):  # one environment, one episode after another
        played += scripted_rollout([env], [EpisodeSpec(task, seed, g)], choose, env_name="alfworld", max_turns=50)
    env.close()
    return success_table(played)


def model_eval(model: str, split: str, episodes: int, context: str, max_turns: int, max_new_tokens: int) -> dict:
    from turnrl.agents.models import load_model
    from turnrl.agents.policy import Policy
    from turnrl.agents.rollout import evaluate
    from turnrl.environments import make_env

    tasks = make_env("alfworld").tasks(split)[:episodes]
    network, tokenizer = load_model(model)
    policy = Policy(network, tokenizer, temperature=0.0, max_new_tokens=max_new_tokens)
    t0 = time.perf_counter()
    played = evaluate(policy, "alfworld", tasks, context=context, max_turns=max_turns, batch_size=len(tasks))
    table = success_table(played)
    turns = [t for e in played for t in e.turns]
    table["invalid_action_rate"] = round(sum(bool(t.info.get("invalid")) for t in turns) / max(1, len(turns)), 3)
    table["seconds"] = round(time.perf_counter() - t0, 1)
    return table


def generation_time() -> dict:
    from turnrl.environments.alfworld.catalog import TASK_TYPES, AlfredFacts
    from turnrl.environments.alfworld.engine import solve_and_verify
    from turnrl.environments.alfworld.generator import SPLIT_SIZES, sample_game
    from turnrl.environments.alfworld.pddl import problem_pddl

    facts = AlfredFacts()
    times = []
    for split in SPLIT_SIZES:
        for task_type in TASK_TYPES:
            t0 = time.perf_counter()
            spec = sample_game(split, task_type, 0, facts)
            assert solve_and_verify(spec, problem_pddl(spec, facts))
            times.append(time.perf_counter() - t0)
    total_games = len(TASK_TYPES) * sum(SPLIT_SIZES.values())
    return {"seconds_per_game_median": round(statistics.median(times), 2),
            "estimated_seconds_all_games_one_process": round(statistics.median(times) * total_games)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="environments in one process for the step timing")
    parser.add_argument("--steps", type=int, default=20, help="turns of the whole batch for the step timing")
    parser.add_argument("--episodes", type=int, default=30, help="tasks per split for expert/random (0 = all)")
    parser.add_argument("--splits", nargs="+", default=["train", "valid_seen", "valid_unseen"])
    parser.add_argument("--generate", action="store_true", help="also time game generation with the planner")
    parser.add_argument("--model", default=None, help="also evaluate this model (hub id, path or alias)")
    parser.add_argument("--model-split", default="test")
    parser.add_argument("--model-episodes", type=int, default=30)
    parser.add_argument("--context", default="window:2")
    parser.add_argument("--max-turns", type=int, default=30)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    t0 = time.perf_counter()
    from turnrl.environments import make_env

    make_env("alfworld").tasks("train")  # unpacks the shipped games on first use
    result = {"setup_seconds": round(time.perf_counter() - t0, 1)}
    result.update(cost(args.batch, args.steps))
    print(json.dumps(result), flush=True)
    for policy in ("expert", "random"):
        result[policy] = {split: scripted(policy, split, args.episodes) for split in args.splits}
        print(json.dumps({policy: result[policy]}), flush=True)
    if args.generate:
        result["generation"] = generation_time()
    if args.model:
        result["model"] = {"name": args.model, "split": args.model_split, "context": args.context,
                           "max_turns": args.max_turns,
                           **model_eval(args.model, args.model_split, args.model_episodes, args.context,
                                        args.max_turns, args.max_new_tokens)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
