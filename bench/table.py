"""The results table: held-out success of `smollm2-135m` on search-QA, WebShop and ALFWorld (valid_seen and
valid_unseen) zero-shot, after the behaviour-cloning warm start (`turnrl sft`'s path) and after each RL algorithm
from that same warm start at an equal rollout budget, on CPU.

Every cell is one `turnrl train` run (CELL_CONFIGS: the config per environment; the algorithm, seed and output
folder on the command line). The first algorithm of a seed evaluates all three phases (zero-shot, warm start,
after RL) unless a cell of that seed in docs/runs has them; the others start from the cached warm start and
evaluate after RL only (`--eval_phases [after_rl]`). A cell already in docs/runs is not run again.
Run folders go to runs/table/ENV/ALGO-sSEED; their small files (config.yaml, metrics.jsonl, eval.json) are copied
to docs/runs/ENV/ALGO-sSEED, which the table is regenerated from.

    python bench/table.py                          # print the table from docs/runs (last line: a JSON object)
    python bench/table.py --run searchqa           # run that environment's missing cells one at a time, copy them
    python bench/table.py --run webshop --algorithms grpo,gigpo --seeds 0,1
    python bench/table.py --write                  # also put the table into docs/results.md (between its markers)
    python bench/table.py --commands searchqa      # print the commands of the cells without running them

The last line printed is {"cells": {ENV: {SPLIT: {COLUMN: {"mean": ..., "seeds": [...], "score": ...}}}},
"missing": [...]} (mean success; "score", the mean score, where every seed's evaluation has one).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELL_CONFIGS = {"searchqa": "configs/quickstart.yaml", "webshop": "configs/table_webshop.yaml",
                "alfworld": "configs/table_alfworld.yaml"}
ALGORITHMS = ("grpo", "gigpo", "hgpo", "st-ppo", "alp")
NAMES = {"grpo": "GRPO", "gigpo": "GiGPO", "hgpo": "HGPO", "st-ppo": "ST-PPO", "alp": "ALP"}
SPLITS = {"searchqa": ("test",), "webshop": ("test",), "alfworld": ("valid_seen", "valid_unseen")}
# Where the table also gives the mean score (0-1) beside success: WebShop's partial reward, the number its papers
# report with success.
SCORED = ("webshop",)
KEPT_FILES = ("config.yaml", "metrics.jsonl", "eval.json")
MARKERS = ("<!-- results-table: start (bench/table.py --write) -->", "<!-- results-table: end -->")

# Published numbers for scale: other models (Qwen2.5-1.5B/3B-Instruct, full fine-tuning, 150+ iterations on
# GPUs) and other data (the full WebShop and ALFWorld sets, Wikipedia QA for search). Success %, from the
# GiGPO paper's Table 1 and the HGPO paper's Table 1 (../shared research notes, hgpo_verl_agent.md §4).
PUBLISHED = {
    ("webshop", "test"): "Qwen2.5-1.5B, success (score, of 100): base 5.2 (23.1), GRPO 56.8 (75.8), GiGPO 67.4 "
                         "(83.5) (GiGPO paper); HGPO 78.1 vs GiGPO 73.2 (K=4, HGPO paper)",
    ("alfworld", "valid_seen"): "Qwen2.5-1.5B: base 4.1 (all), GRPO 72.8, GiGPO 90.2, HGPO 92.8 (K=2, HGPO paper)",
    ("alfworld", "valid_unseen"): "Qwen2.5-1.5B: GRPO 70.1, GiGPO 84.8, HGPO 90.2 (K=2, HGPO paper)",
    ("searchqa", "test"): "Wikipedia QA, not this knowledge base: Qwen2.5-3B Search-R1 32.5, GiGPO 42.1 (EM, mean of "
                          "7 datasets, verl-agent README)",
}


def run_name(algorithm: str, seed: int) -> str:
    return f"{algorithm}-s{seed}"


def cell_command(env: str, algorithm: str, seed: int, first: bool) -> list[str]:
    """The `turnrl train` command of one cell (first: the seed's first algorithm, which evaluates every phase)."""
    command = ["turnrl", "train", "--config", CELL_CONFIGS[env], "--algorithm", algorithm, "--seed", str(seed),
               "--output_dir", f"runs/table/{env}/{run_name(algorithm, seed)}"]
    return command if first else command + ["--eval_phases", "[after_rl]"]


def run_cells(env: str, algorithms: list[str], seeds: list[int], runs: Path, docs: Path, dry: bool) -> None:
    for seed in seeds:
        for i, algorithm in enumerate(algorithms):
            name = run_name(algorithm, seed)
            # The seed's zero-shot and warm-start numbers come once: from its first cell, unless a cell copied to docs
            # has them already (the printed commands are the full set's)
            first = i == 0 and (dry or not _recorded(docs / env, seed, "warm_start"))
            command = cell_command(env, algorithm, seed, first=first)
            if dry:
                print(" ".join(c if " " not in c and "[" not in c else f"'{c}'" for c in command))
                continue
            if _recorded(docs / env, seed, "after_rl", name):
                continue   # copied to docs by an earlier session: its run folder may be gone
            out = runs / env / name
            if not _recorded(runs / env, seed, "after_rl", name):
                print("running:", " ".join(command), flush=True)
                resume = ["--resume"] if (out / "metrics.jsonl").exists() else []
                subprocess.run(command + resume, check=True, cwd=ROOT)
            copy_run(out, docs / env / name)


def _recorded(env_dir: Path, seed: int, phase: str, name: str | None = None) -> bool:
    """Whether a run folder under docs/runs/ENV or runs/table/ENV (of this seed, or the named one) has this phase's
    evaluation."""
    folders = [env_dir / name] if name else sorted(env_dir.glob(f"*-s{seed}"))
    for folder in folders:
        evals = folder / "eval.json"
        if evals.exists() and any(key.partition("@")[0] == phase for key in json.loads(evals.read_text())):
            return True
    return False


def copy_run(src: Path, dst: Path) -> None:
    """Copy a run's small files; phases already in dst's eval.json that the run did not evaluate are kept (a cell
    whose earlier phases were recorded by an earlier run of the same command, with `--eval_phases [after_rl]`)."""
    dst.mkdir(parents=True, exist_ok=True)
    kept = json.loads((dst / "eval.json").read_text()) if (dst / "eval.json").exists() else {}
    for name in KEPT_FILES:
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)
    if kept and (src / "eval.json").exists():
        (dst / "eval.json").write_text(json.dumps({**kept, **json.loads((src / "eval.json").read_text())}, indent=2))


def read_cells(docs: Path) -> dict:
    """{env: {split: {column: [(seed, success, episodes, mean score), ...]}}} from the run folders under docs
    (columns: zero-shot, SFT, and one per algorithm)."""
    cells: dict = {}
    for env in CELL_CONFIGS:
        for folder in sorted((docs / env).glob("*-s*")):
            evals_file = folder / "eval.json"
            if not evals_file.exists():
                continue
            algorithm, seed = folder.name.rsplit("-s", 1)
            evals = json.loads(evals_file.read_text())
            for key, summary in evals.items():
                phase, _, split = key.partition("@")
                split = split or summary.get("split")
                column = {"zero_shot": "zero-shot", "warm_start": "SFT", "after_rl": algorithm}.get(phase)
                if column is None:
                    continue
                cells.setdefault(env, {}).setdefault(split, {}).setdefault(column, []).append(
                    (int(seed), summary["success_rate"], summary["episodes"], summary.get("mean_score")))
    return cells


def table(cells: dict) -> str:
    columns = ["zero-shot", "SFT", *ALGORITHMS]
    head = ["environment (split, tasks)", "zero-shot", "after SFT", *(NAMES[a] for a in ALGORITHMS),
            "published, for scale (other models and data)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for env, splits in SPLITS.items():
        for split in splits:
            row = cells.get(env, {}).get(split, {})
            tasks = sorted({n for values in row.values() for _, _, n, _ in values})
            label = f"{env} ({split}, {'/'.join(map(str, tasks)) or '-'})"
            values = []
            for column in columns:
                got = row.get(column)
                if not got:
                    values.append("not run")
                    continue
                text = f"{statistics.fmean(s for _, s, _, _ in got):.2f}"
                if env in SCORED and all(score is not None for *_, score in got):
                    text += f" (score {statistics.fmean(score for *_, score in got):.2f})"
                values.append(text + (f" ({len(got)} seeds)" if len(got) > 1 else ""))
            lines.append("| " + " | ".join([label, *values, PUBLISHED[(env, split)]]) + " |")
    return "\n".join(lines)


def write_into(results: Path, text: str) -> None:
    doc = results.read_text()
    start, end = doc.index(MARKERS[0]) + len(MARKERS[0]), doc.index(MARKERS[1])
    results.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


def table_in(results: Path) -> str:
    """The table as docs/results.md holds it (between the markers)."""
    doc = results.read_text()
    return doc[doc.index(MARKERS[0]) + len(MARKERS[0]):doc.index(MARKERS[1])].strip()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", choices=sorted(CELL_CONFIGS), help="run this environment's missing cells")
    parser.add_argument("--commands", choices=sorted(CELL_CONFIGS), help="print this environment's cell commands")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated, the first runs all phases")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "table"), help="where the runs go")
    parser.add_argument("--docs", default=str(ROOT / "docs" / "runs"), help="the run folders the table is read from")
    parser.add_argument("--write", action="store_true", help="put the table into docs/results.md")
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.md"))
    args = parser.parse_args(argv)
    algorithms = [a for a in args.algorithms.split(",") if a]
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown:
        parser.error(f"unknown algorithm(s) {', '.join(unknown)}; choose from {', '.join(ALGORITHMS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.run or args.commands:
        run_cells(args.run or args.commands, algorithms, seeds, Path(args.runs), Path(args.docs), dry=bool(args.commands))
        if args.commands:
            return {}
    cells = read_cells(Path(args.docs))
    text = table(cells)
    print(text)
    if args.write:
        write_into(Path(args.results), text)
    summary = {"cells": {env: {split: {column: _summary(values) for column, values in row.items()}
                               for split, row in splits.items()} for env, splits in cells.items()},
               "missing": [f"{env}/{split}/{column}" for env, splits in SPLITS.items() for split in splits
                           for column in ("zero-shot", "SFT", *ALGORITHMS)
                           if column not in cells.get(env, {}).get(split, {})]}
    print(json.dumps(summary))
    return summary


def _summary(values: list) -> dict:
    """One cell of the JSON line: mean success, its seeds, and the mean score where every seed has one."""
    scores = [score for *_, score in values]
    out = {"mean": statistics.fmean(s for _, s, _, _ in values), "seeds": sorted(seed for seed, *_ in values)}
    return out | ({"score": statistics.fmean(scores)} if None not in scores else {})


if __name__ == "__main__":
    main(sys.argv[1:])
