"""Agent Q on a benchmark with a warm-started model (issue 13's comparison): plain sampling vs MCTS-guided acting at an
equal environment-step budget, greedy success before and after one round of step-level DPO on the search's pairs,
and the pairs per task with the share of sibling pairs above θ.

    python bench/agentq.py                                   # WebShop, the results table's warm start
    python bench/agentq.py --config configs/table_webshop.yaml --eval-tasks 6 --act-tasks 2 --act-simulations 2

The policy is the results table's warm start of `--config` (`turnrl train`'s behaviour cloning, loaded from the
warm-start cache when the table has run, else trained here), so the numbers follow the table's cells.

1. Greedy success on the first `--eval-tasks` tasks of the config's `eval_split`: before.
2. MCTS-guided acting (`act_by_search`, the `turnrl eval --search` path) on the first `--act-tasks` of them at
   `--act-simulations` simulations per step; each task's budget is the agent turns its search simulated.
3. Plain sampling on the same tasks at the same budget: episodes sampled at the config's temperature, one more per
   task while its turns stay below that task's search turns; a task counts as solved when any of its episodes is
   (best of n, chosen by the environment's reward as the search's simulations are); also the first episode's
   success (one sample).
4. `run_search` on `--search-tasks` training tasks at `--simulations` per root: pairs with |ΔQ| > θ.
5. One round of DPO on those pairs (`run_dpo`, the paper's behaviour reference), then greedy success again: after.

The last line printed is a JSON object of the numbers and the seconds each stage took.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

# bench/alfworld.py would shadow the alfworld package that the ALFWorld environment imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch

from turnrl.agents.models import load_trained, save_model
from turnrl.agents.policy import Policy, keyed_generator
from turnrl.agents.prompts import PromptBuilder
from turnrl.agents.rollout import EpisodeSpec, evaluate, rollout
from turnrl.algorithms.config import load_config
from turnrl.algorithms.dpo import run_dpo
from turnrl.algorithms.trainer import Trainer
from turnrl.environments import make_env
from turnrl.episode import summarize
from turnrl.search import SearchConfig, act_by_search, run_search


def warm_started(config_path: str, out: Path) -> Path:
    """The warm start of `config_path` (cached by `turnrl train`), saved to OUT/warm_start."""
    folder = out / "warm_start"
    if (folder / "turnrl_model.json").exists():
        return folder
    config = load_config(config_path, {"output_dir": str(out / "trainer"), "eval_episodes": 0, "iterations": 1})
    trainer = Trainer(config, progress=False)
    how = trainer.warm_start()
    print(f"warm start: {how}", flush=True)
    save_model(trainer.accelerator.unwrap_model(trainer.model), trainer.tokenizer, folder, config.model)
    return folder


def sample_at_budget(policy: Policy, env_name: str, tasks: list, budgets: list[int], *, env_kwargs: dict,
                     context: str, max_turns: int, builder: PromptBuilder, seed: int) -> dict:
    """Plain sampling: episodes per task until its agent turns reach its budget (at least one episode)."""
    used, solved, first, episodes = [0] * len(tasks), [False] * len(tasks), [False] * len(tasks), [0] * len(tasks)
    round_ = 0
    while True:
        live = [i for i in range(len(tasks)) if round_ == 0 or used[i] < budgets[i]]
        if not live:
            break
        envs = [make_env(env_name, **env_kwargs) for _ in live]
        specs = [EpisodeSpec(tasks[i], seed, i) for i in live]
        generators = [keyed_generator(f"agentq-sample-{seed}-{i}-{round_}", policy.device) for i in live]
        played = rollout(policy, envs, specs, env_name=env_name, context=context, max_turns=max_turns,
                         prompt_builder=builder, generator=generators)
        for i, episode in zip(live, played):
            used[i] += len(episode.turns)
            episodes[i] += 1
            solved[i] = solved[i] or episode.success
            if round_ == 0:
                first[i] = episode.success
        for env in envs:
            env.close()
        round_ += 1
    n = max(len(tasks), 1)
    return {"best_of_n_success_rate": sum(solved) / n, "one_sample_success_rate": sum(first) / n,
            "env_steps": sum(used), "episodes": sum(episodes), "episodes_per_task": episodes}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/table_webshop.yaml", help="the warm start's `turnrl train` config")
    parser.add_argument("--eval-tasks", type=int, default=8)
    parser.add_argument("--act-tasks", type=int, default=4)
    parser.add_argument("--act-simulations", type=int, default=2)
    parser.add_argument("--search-tasks", type=int, default=4)
    parser.add_argument("--simulations", type=int, default=4)
    parser.add_argument("--branching", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="runs/bench_agentq")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config, {"output_dir": str(out / "trainer")})
    env_kwargs, builder = dict(config.env_kwargs), PromptBuilder(style=config.prompt_style)
    search_config = SearchConfig(simulations=args.simulations, branching=args.branching, max_turns=config.max_turns,
                                 context=config.context)
    eval_tasks = list(make_env(config.env, **env_kwargs).tasks(config.eval_split))[: args.eval_tasks]
    train_tasks = list(make_env(config.env, **env_kwargs).tasks(config.split))[: args.search_tasks]
    seconds: dict[str, float] = {}
    result = {"env": config.env, "model": config.model, "config": args.config, "context": config.context,
              "max_turns": config.max_turns, "temperature": config.temperature, "eval_tasks": len(eval_tasks),
              "act_tasks": min(args.act_tasks, len(eval_tasks)), "act_simulations": args.act_simulations,
              "search_tasks": len(train_tasks), "simulations": args.simulations, "branching": args.branching,
              "threshold": args.threshold, "beta": args.beta, "seconds": seconds}

    # Each stage's result is kept in OUTPUT_DIR/stages.json, so a rerun after an interruption does the rest only.
    stages_file = out / "stages.json"
    stages = json.loads(stages_file.read_text()) if stages_file.exists() else {}

    def run(name: str, compute):
        if name not in stages:
            start = time.perf_counter()
            value = compute()
            stages[name] = {"value": value, "seconds": round(time.perf_counter() - start, 1)}
            stages_file.write_text(json.dumps(stages, indent=1))
            print(json.dumps({name: value}), flush=True)
        seconds[name] = stages[name]["seconds"]
        return stages[name]["value"]

    model_dir = warm_started(args.config, out)
    model, tokenizer = load_trained(model_dir)
    model.eval()
    greedy = Policy(model, tokenizer, temperature=0.0, max_new_tokens=config.max_new_tokens)
    sampler = Policy(model, tokenizer, temperature=config.temperature, max_new_tokens=config.max_new_tokens)

    def greedy_success(policy: Policy) -> float:
        played = evaluate(policy, config.env, eval_tasks, env_kwargs=env_kwargs, context=config.context,
                          max_turns=config.max_turns, seed=args.seed, prompt_builder=builder)
        return summarize(played)["success_rate"]

    result["greedy_success_before"] = run("greedy_before", lambda: greedy_success(greedy))
    act_tasks = eval_tasks[: result["act_tasks"]]

    def mcts() -> dict:
        act_config = SearchConfig(**{**search_config.__dict__, "simulations": args.act_simulations})
        searched, trees = act_by_search(sampler, config.env, act_tasks, act_config, env_kwargs=env_kwargs,
                                        seed=args.seed, builder=builder)
        budgets = [tree.env_steps for tree in trees]
        return {"success_rate": summarize(searched)["success_rate"], "env_steps": sum(budgets),
                "env_steps_per_task": budgets, "failed_tasks": sum(t.error is not None for t in trees)}

    result["mcts"] = run("mcts_acting", mcts)
    result["plain"] = run("plain_sampling", lambda: sample_at_budget(
        sampler, config.env, act_tasks, result["mcts"]["env_steps_per_task"], env_kwargs=env_kwargs,
        context=config.context, max_turns=config.max_turns, builder=builder, seed=args.seed))

    def search() -> dict:
        summary = run_search(sampler, config.env, train_tasks, search_config, out / "search", env_kwargs=env_kwargs,
                             threshold=args.threshold, seed=args.seed, builder=builder)
        return {k: summary[k] for k in ("pairs", "pairs_per_task", "sibling_pairs", "share_above_threshold",
                                        "best_success_rate", "env_steps", "expansions", "failed_tasks")}

    result["search"] = run("search", search)

    if result["search"]["pairs"]:
        def dpo() -> dict:
            trained = run_dpo(model=str(model_dir), pairs=out / "search" / "pairs", output_dir=out / "dpo",
                              lora=config.lora, lora_rank=config.lora_rank, beta=args.beta, reference="behaviour",
                              epochs=1.0, learning_rate=5e-5, batch_size=4, seed=args.seed, progress=False)
            return {k: trained[k] for k in ("pairs", "margin_before", "margin_after", "final_loss", "model")}

        result["dpo"] = run("dpo", dpo)
        trained, tokenizer = load_trained(result["dpo"]["model"])
        trained.eval()
        result["greedy_success_after"] = run("greedy_after", lambda: greedy_success(
            Policy(trained, tokenizer, temperature=0.0, max_new_tokens=config.max_new_tokens)))
    else:
        result["dpo"] = {"skipped": "no pairs above the threshold"}
        result["greedy_success_after"] = None
    result["seconds_total"] = round(sum(v for v in seconds.values() if v is not None), 1)
    print(json.dumps(result, default=lambda x: None if isinstance(x, float) and not math.isfinite(x) else str(x)))
    return result


if __name__ == "__main__":
    main()
