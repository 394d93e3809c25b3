"""The shortened learning benchmark, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_learning_benchmark_quick_improves(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "learning.py"), "--quick", "--output-dir", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=1200, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"before", "after", "seconds"} <= summary.keys()
    assert 0.0 <= summary["before"] <= 1.0 and 0.0 <= summary["after"] <= 1.0
    # GRPO must improve on the behaviour-cloning warm start even in the short run.
    assert summary["after"] > summary["before"], summary
    metrics = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == summary["iterations"]
    assert all(m["logprob_max_abs_diff"] <= 1e-4 for m in metrics)


@pytest.mark.slow
def test_agentq_benchmark_runs_its_stages_and_resumes(tmp_path):
    """bench/agentq.py on `lights` with `tiny` (a 4-episode warm start): every stage reports, plain sampling gets at
    least each task's search budget of agent turns, and a second run reuses the stages it finds (stages.json)."""
    config = tmp_path / "warm.yaml"
    config.write_text("env: lights\nmodel: tiny\nlora: true\ncontext: full\nmax_turns: 3\nmax_new_tokens: 12\n"
                      f"warm_start_episodes: 4\niterations: 1\neval_split: test\noutput_dir: {tmp_path / 'trainer'}\n")
    command = [sys.executable, str(ROOT / "bench" / "agentq.py"), "--config", str(config), "--eval-tasks", "4",
               "--act-tasks", "2", "--search-tasks", "2", "--simulations", "2", "--output-dir", str(tmp_path / "out")]
    env = {**os.environ, "TURNRL_CACHE": str(tmp_path / "cache")}
    first = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert {"greedy_success_before", "mcts", "plain", "search", "dpo", "greedy_success_after"} <= summary.keys()
    budgets = summary["mcts"]["env_steps_per_task"]
    assert len(budgets) == 2 and all(b > 0 for b in budgets)
    assert summary["plain"]["env_steps"] >= sum(budgets)
    assert all(n >= 1 for n in summary["plain"]["episodes_per_task"])
    assert summary["search"]["pairs"] <= summary["search"]["sibling_pairs"]
    stages = json.loads((tmp_path / "out" / "stages.json").read_text())
    assert {"greedy_before", "mcts_acting", "plain_sampling", "search"} <= stages.keys()
    again = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    lines = [line for line in again.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and json.loads(lines[0])["mcts"] == summary["mcts"]
