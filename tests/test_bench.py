"""The shortened learning benchmark, run as a user would run it."""

from __future__ import annotations

import json
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
