"""WebShop environment benchmark: step, reset and search latency, and scripted policies' scores.

    python bench/webshop.py [--products-100k 100000] [--episodes 500] [--all-goals]
                            [--model smollm2-135m --model-episodes 30 [--sft-episodes 40]]

Measures, on the shipped catalogue: the median `step()` and `reset()` time over expert and random
episodes, the median search time (the index itself, no cache) for the test goals' queries, the expert
and random policies' success rate and mean score on the test goals, and a "first result" baseline
(buy the top hit of the instruction's search, with the goal's options chosen, and without them as the
WebShop paper's rule baseline does: how often the task is trivial).
Then it generates a catalogue of `--products-100k` products, builds its index (timed) and times 100
queries (`search_ms_100k`). `--all-goals` also plays the expert on every shipped goal (it must
always succeed). `--model` evaluates a model through `turnrl eval` (window:2, 15 turns) on the first
`--model-episodes` test goals, and with `--sft-episodes N` first behaviour-clones it with `turnrl sft`
on N expert episodes and evaluates the result too.

The last line printed is a JSON object with every number, among them `step_ms_median` and
`search_ms_100k`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def play(env, task, choose, step_times: list[float]) -> tuple[float, bool]:
    env.reset(task=task, seed=0)
    while True:
        action = choose(env)
        start = time.perf_counter()
        result = env.step(action)
        step_times.append(time.perf_counter() - start)
        if result.done:
            return result.info["score"], result.info["success"]


def policy_scores(env, tasks, choose, step_times) -> dict:
    scores, wins = zip(*(play(env, task, choose, step_times) for task in tasks))
    return {"success_rate": sum(wins) / len(tasks), "mean_score": statistics.fmean(scores), "episodes": len(tasks)}


def first_result_baseline(env, tasks, choose_options: bool) -> dict:
    """Buy the instruction search's top hit, with the goal's options chosen or (the WebShop paper's rule
    baseline) without."""
    scores = []
    for task in tasks:
        env.reset(task=task, seed=0)
        env.step(f"search[{env.suggested_query()}]")
        if not env.hits:
            scores.append(0.0)
            continue
        env.step(f"click[{env.hits[0].lower()}]")
        for value in env._goal_option_values().values() if choose_options else ():
            env.step(f"click[{value}]")
        scores.append(env.step("click[buy now]").info["score"])
    return {"success_rate": sum(s == 1.0 for s in scores) / len(scores), "mean_score": statistics.fmean(scores)}


def model_eval(model: str, episodes: int, output: Path) -> dict:
    command = ["turnrl", "eval", "--env", "webshop", "--model", model, "--episodes", str(episodes), "--split", "test",
               "--context", "window:2", "--max-turns", "15", "--output", str(output)]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    summary = json.loads(output.read_text())
    return {key: summary[key] for key in ("success_rate", "mean_score", "mean_turns", "invalid_action_rate")
            if key in summary} | {"episodes": episodes, "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=500, help="test goals for the scripted policies")
    parser.add_argument("--products-100k", type=int, default=100_000, help="size of the large search catalogue")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--all-goals", action="store_true", help="play the expert on every shipped goal")
    parser.add_argument("--model", default=None, help="also evaluate this model with `turnrl eval`")
    parser.add_argument("--model-episodes", type=int, default=30)
    parser.add_argument("--sft-episodes", type=int, default=0, help="behaviour-clone the model first (0: skip)")
    parser.add_argument("--sft-epochs", type=float, default=2.0)
    parser.add_argument("--workdir", default=None, help="where model runs write (default: a temporary folder)")
    args = parser.parse_args(argv)

    from turnrl.environments import make_env
    from turnrl.environments.webshop import catalogue, search
    from turnrl.environments.webshop.engine import TOP_HITS

    out: dict = {}
    start = time.perf_counter()
    env = make_env("webshop", progress=False)
    out["first_env_s"] = round(time.perf_counter() - start, 3)   # catalogue + index: generated or loaded
    start = time.perf_counter()
    make_env("webshop")
    out["second_env_ms"] = round((time.perf_counter() - start) * 1000, 3)

    tasks = env.tasks("test")[: args.episodes]
    resets = []
    for task in tasks:
        start = time.perf_counter()
        env.reset(task=task, seed=0)
        resets.append(time.perf_counter() - start)
    out["reset_ms_median"] = round(statistics.median(resets) * 1000, 4)

    step_times: list[float] = []
    out["expert"] = policy_scores(env, tasks, lambda e: e.expert_action(), step_times)
    rng = random.Random(0)
    out["random"] = policy_scores(env, tasks, lambda e: rng.choice(e.admissible_actions()), step_times)
    out["step_ms_median"] = round(statistics.median(step_times) * 1000, 4)
    out["step_ms_p95"] = round(sorted(step_times)[int(0.95 * len(step_times))] * 1000, 4)
    out["first_result_with_options"] = first_result_baseline(env, tasks, choose_options=True)
    out["first_result_rule"] = first_result_baseline(env, tasks, choose_options=False)
    if args.all_goals:
        everything = env.tasks("all")
        out["expert_all_goals"] = policy_scores(env, everything, lambda e: e.expert_action(), [])

    queries = [env.shared.data.goals[task].instruction for task in tasks[: args.queries]]
    timings = []
    for query in queries:
        start = time.perf_counter()
        env.shared.index.search(query, TOP_HITS)
        timings.append(time.perf_counter() - start)
    out["search_ms_shipped"] = round(statistics.median(timings) * 1000, 3)
    out["shipped_products"] = len(env.products)
    out["shipped_goals"] = {split: len(env.tasks(split)) for split in ("train", "eval", "test")}

    if args.products_100k:
        start = time.perf_counter()
        records, _, _ = catalogue.generate(args.products_100k, goals_per_product=0)
        out["generate_100k_s"] = round(time.perf_counter() - start, 2)
        texts = [search.document_text(r["name"], r["full_description"], r["small_description"],
                                      {n: [v["value"].lower() for v in vs] for n, vs in
                                       r["customization_options"].items()}) for r in records]
        start = time.perf_counter()
        index = search.SearchIndex.build([r["asin"] for r in records], texts, progress=False)
        out["index_build_100k_s"] = round(time.perf_counter() - start, 2)
        with tempfile.TemporaryDirectory() as folder:
            index.save(Path(folder))
            start = time.perf_counter()
            index = search.SearchIndex.load(Path(folder))
            out["index_load_100k_s"] = round(time.perf_counter() - start, 3)
        timings = []
        for query in queries:
            start = time.perf_counter()
            index.search(query, TOP_HITS)
            timings.append(time.perf_counter() - start)
        out["search_ms_100k"] = round(statistics.median(timings) * 1000, 3)
        out["products_100k"] = len(records)

    if args.model:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="webshop-bench-"))
        out["model"] = {"zero_shot": model_eval(args.model, args.model_episodes, workdir / "zero_shot.json")}
        if args.sft_episodes:
            start = time.perf_counter()
            subprocess.run(["turnrl", "sft", "--env", "webshop", "--model", args.model, "--episodes",
                            str(args.sft_episodes), "--context", "window:2", "--max-turns", "15", "--epochs",
                            str(args.sft_epochs), "--output-dir", str(workdir / "sft")], check=True)
            out["model"]["sft_seconds"] = round(time.perf_counter() - start, 1)
            out["model"]["sft"] = model_eval(str(workdir / "sft" / "final"), args.model_episodes,
                                             workdir / "after_sft.json")
            out["model"]["sft_episodes"], out["model"]["sft_epochs"] = args.sft_episodes, args.sft_epochs

    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
