"""bench/table.py: the results table in docs/results.md is what its cited run folders (docs/runs) give, and the
reader puts each evaluation phase and split in its cell."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_table", ROOT / "bench" / "table.py")
table_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table_module)


def test_the_results_table_regenerates_from_its_run_folders():
    cells = table_module.read_cells(ROOT / "docs" / "runs")
    assert cells, "docs/runs holds no run folder"
    assert table_module.table(cells) == table_module.table_in(ROOT / "docs" / "results.md")


def test_cells_come_from_each_phase_and_split(tmp_path):
    def summary(split, success, episodes=20, score=None):
        return {"split": split, "success_rate": success, "episodes": episodes, "mean_score": score}

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
    assert seen["zero-shot"] == [(0, 0.0, 20, None)] and unseen["SFT"] == [(0, 0.25, 20, None)]
    assert sorted(seen["st-ppo"]) == [(0, 0.4, 20, None), (1, 0.5, 20, None)]
    text = table_module.table(cells)
    row = next(line for line in text.splitlines() if line.startswith("| alfworld (valid_seen"))
    assert "| 0.00 | 0.30 | 0.35 | not run | not run | 0.45 (2 seeds) | not run |" in row
    assert "searchqa (test, -) | not run" in text


def test_webshop_cells_give_the_mean_score_beside_success(tmp_path):
    for seed, score in ((0, 0.2), (1, 0.4)):
        folder = tmp_path / "webshop" / f"grpo-s{seed}"
        folder.mkdir(parents=True)
        (folder / "eval.json").write_text(json.dumps({"after_rl": {
            "split": "test", "success_rate": 0.05 * seed, "episodes": 20, "mean_score": score}}))
    row = next(line for line in table_module.table(table_module.read_cells(tmp_path)).splitlines()
               if line.startswith("| webshop"))
    assert "| not run | not run | 0.03 (score 0.30) (2 seeds) | not run |" in row
    cell = table_module.main(["--docs", str(tmp_path)])["cells"]["webshop"]["test"]["grpo"]
    assert cell["seeds"] == [0, 1] and cell["mean"] == pytest.approx(0.025) and cell["score"] == pytest.approx(0.3)


def test_cell_commands_evaluate_every_phase_once_per_seed():
    first = table_module.cell_command("webshop", "grpo", 0, first=True)
    later = table_module.cell_command("webshop", "gigpo", 0, first=False)
    assert first[:4] == ["turnrl", "train", "--config", "configs/table_webshop.yaml"]
    assert "--eval_phases" not in first and later[-2:] == ["--eval_phases", "[after_rl]"]
    assert later[later.index("--output_dir") + 1] == "runs/table/webshop/gigpo-s0"


def test_running_cells_skips_what_docs_holds_and_evaluates_the_seed_once(tmp_path, monkeypatch):
    """A cell copied to docs/runs is not run again (its run folder may be gone on a fresh machine); a seed whose
    zero-shot and warm-start numbers are in docs starts its first missing cell with after-RL evaluation only."""
    runs, docs, ran = tmp_path / "runs", tmp_path / "docs", []
    (docs / "alfworld" / "grpo-s0").mkdir(parents=True)
    (docs / "alfworld" / "grpo-s0" / "eval.json").write_text(json.dumps(
        {phase: {"split": "valid_seen", "success_rate": 0.0, "episodes": 20}
         for phase in ("zero_shot", "warm_start", "after_rl")}))

    def fake_run(command, check, cwd):   # what `turnrl train` leaves: the run's evaluation
        ran.append(command)
        out = runs / "alfworld" / command[command.index("--output_dir") + 1].rsplit("/", 1)[1]
        out.mkdir(parents=True)
        phases = ["after_rl"] if "--eval_phases" in command else ["zero_shot", "warm_start", "after_rl"]
        (out / "eval.json").write_text(json.dumps({p: {"split": "valid_seen", "success_rate": 0.1, "episodes": 20}
                                                   for p in phases}))

    monkeypatch.setattr(table_module.subprocess, "run", fake_run)
    table_module.run_cells("alfworld", ["grpo", "gigpo"], [0, 1], runs, docs, dry=False)
    names = [c[c.index("--output_dir") + 1].rsplit("/", 1)[1] for c in ran]
    assert names == ["gigpo-s0", "grpo-s1", "gigpo-s1"]
    assert ran[0][-2:] == ["--eval_phases", "[after_rl]"]        # seed 0's phases are in docs already
    assert "--eval_phases" not in ran[1] and ran[2][-2:] == ["--eval_phases", "[after_rl]"]
    assert sorted(p.name for p in (docs / "alfworld").iterdir()) == ["gigpo-s0", "gigpo-s1", "grpo-s0", "grpo-s1"]


def test_copying_a_run_keeps_the_phases_it_did_not_evaluate(tmp_path):
    src, dst = tmp_path / "run", tmp_path / "docs" / "grpo-s0"
    src.mkdir()
    dst.mkdir(parents=True)
    (dst / "eval.json").write_text(json.dumps({"zero_shot": {"success_rate": 0.0}, "after_rl": {"success_rate": 0.1}}))
    (src / "eval.json").write_text(json.dumps({"after_rl": {"success_rate": 0.2}}))
    (src / "metrics.jsonl").write_text('{"iteration": 1}\n')
    table_module.copy_run(src, dst)
    assert json.loads((dst / "eval.json").read_text()) == {"zero_shot": {"success_rate": 0.0},
                                                           "after_rl": {"success_rate": 0.2}}
    assert (dst / "metrics.jsonl").read_text() == '{"iteration": 1}\n'
