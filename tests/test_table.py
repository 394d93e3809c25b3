"""bench/table.py: the results table in docs/results.md is what its cited run folders (docs/runs) give, and the
reader puts each evaluation phase and split in its cell."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_table", ROOT / "bench" / "table.py")
table_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table_module)


def test_the_results_table_regenerates_from_its_run_folders():
    cells = table_module.read_cells(ROOT / "docs" / "runs")
    assert cells, "docs/runs holds no run folder"
    assert table_module.table(cells) == table_module.table_in(ROOT / "docs" / "results.md")


def test_cells_come_from_each_phase_and_split(tmp_path):
    def summary(split, success, episodes=20):
        return {"split": split, "success_rate": success, "episodes": episodes}

    first = tmp_path / "alfworld" / "grpo-s0"
    first.mkdir(parents=True)
    (first / "eval.json").write_text(json.dumps({
        "zero_shot": summary("valid_seen", 0.0), "zero_shot@valid_unseen": summary("valid_unseen", 0.05),
        "warm_start": summary("valid_seen", 0.3), "warm_start@valid_unseen": summary("valid_unseen", 0.25),
        "after_rl": summary("valid_seen", 0.35), "after_rl@valid_unseen": summary("valid_unseen", 0.2)}))
    for seed, success in ((0, 0.4), (1, 0.5)):
        other = tmp_path / "alfworld" / f"st-ppo-s{seed}"
        other.mkdir(parents=True)
        (other / "eval.json").write_text(json.dumps({"after_rl": summary("valid_seen", success),
                                                     "after_rl@valid_unseen": summary("valid_unseen", 0.1)}))
    cells = table_module.read_cells(tmp_path)
    seen, unseen = cells["alfworld"]["valid_seen"], cells["alfworld"]["valid_unseen"]
    assert seen["zero-shot"] == [(0, 0.0, 20)] and unseen["SFT"] == [(0, 0.25, 20)]
    assert sorted(seen["st-ppo"]) == [(0, 0.4, 20), (1, 0.5, 20)]
    text = table_module.table(cells)
    row = next(line for line in text.splitlines() if line.startswith("| alfworld (valid_seen"))
    assert "| 0.00 | 0.30 | 0.35 | not run | not run | 0.45 (2 seeds) | not run |" in row
    assert "searchqa (test, -) | not run" in text


def test_cell_commands_evaluate_every_phase_once_per_seed():
    first = table_module.cell_command("webshop", "grpo", 0, first=True)
    later = table_module.cell_command("webshop", "gigpo", 0, first=False)
    assert first[:4] == ["turnrl", "train", "--config", "configs/table_webshop.yaml"]
    assert "--eval_phases" not in first and later[-2:] == ["--eval_phases", "[after_rl]"]
    assert later[later.index("--output_dir") + 1] == "runs/table/webshop/gigpo-s0"
