"""ST-PPO's variants at equal rollout budget: token-level PPO vs Turn-PPO vs S-PPO vs ST-PPO, with fresh rollouts
(`max_staleness` 0) and with the rollouts of the last 4 iterations replayed (`max_staleness` 4), several seeds.

Setting: the `traffic` toy environment (several turns per episode) in full context, so a training sequence
holds several turns and the turn ratio differs from the token ratio; `tiny` after a short behaviour-cloning
warm start from the expert (the same for every variant of a seed); a turn-level critic with GAE; deliberately
aggressive updates (a high learning rate, several epochs) so that off-policy drift and clipping are visible.
ST-PPO's claim (research notes §1.6) is that S-PPO and ST-PPO do not collapse where token-PPO does.

Per run: return (the fraction of lights answered right), success, clip fraction, ‖C‖ (clip_bias_norm_mean),
p99 of |log ratio| and KL per iteration; whether and
when it collapses (the 3-iteration mean return falls below half of its best after reaching >= 0.3). And the
cost of the clip-bias normalisation: one update of S-PPO vs PPO on the same samples, interleaved repetitions.

    python bench/stppo.py                 # the full comparison (about 40 minutes on 2 CPU cores)
    python bench/stppo.py --quick         # a short version (one seed, staleness 0 and 4, few iterations)
    python bench/stppo.py --plot docs/stppo.png

The last line printed is a JSON object: {"runs": {...}, "summary": {...}, "clip_bias_cost": ..., "seconds": ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = ("ppo", "turn-ppo", "s-ppo", "st-ppo")
SERIES = ("mean_return", "success_rate", "clip_fraction", "clip_bias_norm_mean", "abs_log_ratio_p99", "kl",
          "value_loss")


def collapse_iteration(returns: list[float], floor: float = 0.3) -> int | None:
    """The first iteration (1-based) at which the 3-iteration mean return falls below half of its best so far,
    after the best reached `floor`; None if it never does."""
    best = 0.0
    for i in range(2, len(returns)):
        mean = sum(returns[i - 2: i + 1]) / 3
        if best >= floor and mean < best / 2:
            return i + 1
        best = max(best, mean)
    return None


def run_config(args, variant: str, staleness: int, seed: int, output_dir: Path) -> dict:
    return {
        "env": "traffic", "model": "tiny", "algorithm": variant, "context": "full", "max_turns": 4,
        "env_kwargs": {"n_steps": 4}, "max_new_tokens": 16, "iterations": args.iterations,
        "tasks_per_iteration": args.tasks, "group_size": args.group_size, "epochs": args.epochs,
        "minibatch_size": args.minibatch_size, "micro_batch_size": args.minibatch_size,
        "learning_rate": args.learning_rate, "max_staleness": staleness, "kl_coef": 0.0,
        # bench/learning.py's warm start: it teaches the answer format, leaves many answers wrong
        "warm_start_episodes": args.warm_start_episodes, "warm_start_epochs": 3.0,
        "warm_start_learning_rate": 3e-3, "warm_start_batch_size": 8, "checkpoint_every": 0, "seed": seed,
        "output_dir": str(output_dir),
    }


def clip_bias_cost(args, work: Path, repeats: int = 5) -> float:
    """Seconds of one S-PPO update over one PPO update on the same samples (median of interleaved repeats)."""
    from turnrl.algorithms.config import load_config
    from turnrl.algorithms.trainer import Trainer

    trainers = {}
    for variant in ("ppo", "s-ppo"):
        values = {**run_config(args, variant, 0, 0, work / f"cost-{variant}"), "epochs": 1}
        for key in ("warm_start_episodes", "warm_start_epochs", "warm_start_learning_rate", "warm_start_batch_size"):
            values.pop(key)
        config = load_config(None, values)
        trainers[variant] = Trainer(config, progress=False)
    plain = trainers["ppo"]
    episodes, _ = plain.collect(1)
    samples, _ = plain.training_samples(episodes)
    times = {"ppo": [], "s-ppo": []}
    for _ in range(repeats):
        for variant, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer.update(samples, iteration=1)
            times[variant].append(time.perf_counter() - t0)
    return statistics.median(times["s-ppo"]) / statistics.median(times["ppo"])


def plot(runs: dict, out: Path) -> None:
    from staleness_curves import plot_runs  # beside this script

    plot_runs(runs, VARIANTS, ("mean_return", "clip_fraction", "clip_bias_norm_mean", "abs_log_ratio_p99"), out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed, 3 iterations (for CI)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--stalenesses", default="0,4")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2, help="passes over each batch: later ones are off-policy")
    parser.add_argument("--minibatch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warm-start-episodes", type=int, default=160)
    parser.add_argument("--output-dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--plot", default=None, help="write the curves to this PNG")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.iterations, args.tasks = 1, 3, 4

    from turnrl.algorithms.config import load_config
    from turnrl.algorithms.trainer import train

    torch.set_num_threads(1)   # a 2-layer model is faster on one thread
    start = time.perf_counter()
    work = Path(args.output_dir or tempfile.mkdtemp(prefix="turnrl-stppo-"))
    runs: dict[str, dict] = {}
    for seed in range(args.seeds):
        for staleness in [int(s) for s in args.stalenesses.split(",")]:
            for variant in args.variants.split(","):
                name = f"{variant}-stale{staleness}-seed{seed}"
                t0 = time.perf_counter()
                config = load_config(None, run_config(args, variant, staleness, seed, work / name))
                run_dir = train(config, progress=False)
                rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
                series = {key: [row.get(key) for row in rows] for key in SERIES}
                runs[name] = {"variant": variant, "max_staleness": staleness, "seed": seed, "series": series,
                              "final_return": sum(series["mean_return"][-3:]) / len(series["mean_return"][-3:]),
                              "final_success": sum(series["success_rate"][-3:]) / len(series["success_rate"][-3:]),
                              "collapse_iteration": collapse_iteration(series["mean_return"]),
                              "seconds": round(time.perf_counter() - t0, 1)}
                print(f"{name}: final return {runs[name]['final_return']:.3f}  collapse "
                      f"{runs[name]['collapse_iteration']}  ({runs[name]['seconds']}s)", file=sys.stderr, flush=True)
    summary = {}
    for (variant, staleness) in sorted({(r["variant"], r["max_staleness"]) for r in runs.values()}):
        group = [r for r in runs.values() if r["variant"] == variant and r["max_staleness"] == staleness]
        clip = [v for r in group for v in r["series"]["clip_fraction"] if v is not None]
        tail = [v for r in group for v in r["series"]["abs_log_ratio_p99"] if v is not None]
        summary[f"{variant}-stale{staleness}"] = {
            "final_return_mean": round(sum(r["final_return"] for r in group) / len(group), 4),
            "final_success_mean": round(sum(r["final_success"] for r in group) / len(group), 4),
            "collapsed_runs": sum(r["collapse_iteration"] is not None for r in group), "runs": len(group),
            "clip_fraction_mean": round(sum(clip) / max(len(clip), 1), 4),
            "abs_log_ratio_p99_max": round(max(tail, default=0.0), 4),
        }
    cost = clip_bias_cost(args, work)
    if args.plot:
        plot(runs, Path(args.plot))
    result = {"runs": runs, "summary": summary, "clip_bias_cost": round(cost, 3),
              "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
