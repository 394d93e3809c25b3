"""Monte-Carlo tree search over environment snapshots (Agent Q): `mcts` grows the trees, `critique` ranks
proposed actions with the policy's own model, `preferences` turns trees into step-level preference pairs, and
`run_search` (behind `turnrl search`) writes all three outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from turnrl.search.mcts import (
    Node,
    SearchConfig,
    SearchTree,
    TreeSearch,
    act_by_search,
    best_episodes,
    blended_value,
    drive,
    running_mean,
    search_tasks,
    ucb1,
)
from turnrl.search.preferences import (
    DEFAULT_THRESHOLD,
    preference_dataset,
    preference_pairs,
    save_pairs,
    sibling_pair_count,
)


def run_search(policy, env_name: str, tasks: list, config: SearchConfig, output_dir: str | Path, *,
               env_kwargs: dict | None = None, threshold: float = DEFAULT_THRESHOLD, seed: int = 0,
               batch_size: int = 8, builder=None, trees_file: str = "trees.jsonl") -> dict:
    """Search every task and write OUTPUT_DIR/`trees_file` (one tree per line, the report's shape),
    OUTPUT_DIR/episodes.jsonl (each task's best trajectory, `Episode.to_json()` per line, with behaviour
    log-probs: the `search_episodes` of `turnrl train`) and OUTPUT_DIR/pairs (`datasets.Dataset.save_to_disk`).
    Returns the summary."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    trees = search_tasks(policy, env_name, tasks, config, env_kwargs=env_kwargs, seed=seed, batch_size=batch_size,
                         builder=builder)
    seconds = time.perf_counter() - start
    episodes = best_episodes(trees, env_name, config.context)
    rows = preference_pairs(trees, policy.tokenizer, threshold=threshold, temperature=policy.logprob_temperature)
    (output_dir / trees_file).parent.mkdir(parents=True, exist_ok=True)
    with (output_dir / trees_file).open("w") as fh:
        for tree in trees:
            fh.write(json.dumps(tree.to_json(), default=str) + "\n")
    with (output_dir / "episodes.jsonl").open("w") as fh:
        for episode in episodes:
            fh.write(json.dumps(episode.to_json(), default=str) + "\n")
    save_pairs(preference_dataset(rows), output_dir / "pairs")
    siblings = sibling_pair_count(trees)
    n = len(trees)
    return {
        "env": env_name, "tasks": n, "simulations": config.simulations, "branching": config.branching,
        "alpha": config.alpha, "threshold": threshold, "context": config.context,
        "nodes": sum(t.nodes for t in trees), "expansions": sum(t.expansions for t in trees),
        "env_steps": sum(t.env_steps for t in trees), "critic_questions": sum(t.critic_questions for t in trees),
        "critic_unread": sum(t.critic_unread for t in trees),
        "failed_tasks": sum(t.error is not None for t in trees),
        "errors": [t.error for t in trees if t.error is not None][:10],
        "best_success_rate": sum(e.success for e in episodes) / n if n else 0.0,
        "mean_best_return": sum(e.total_reward for e in episodes) / n if n else 0.0,
        "pairs": len(rows), "pairs_per_task": len(rows) / n if n else 0.0, "sibling_pairs": siblings,
        "share_above_threshold": len(rows) / siblings if siblings else 0.0,
        "seconds": round(seconds, 3), "expansions_per_second": sum(t.expansions for t in trees) / seconds,
        "output_dir": str(output_dir),
    }


__all__ = [
    "DEFAULT_THRESHOLD",
    "Node",
    "SearchConfig",
    "SearchTree",
    "TreeSearch",
    "act_by_search",
    "best_episodes",
    "blended_value",
    "drive",
    "preference_dataset",
    "preference_pairs",
    "run_search",
    "running_mean",
    "save_pairs",
    "search_tasks",
    "sibling_pair_count",
    "ucb1",
]
