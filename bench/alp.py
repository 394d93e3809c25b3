"""ALP's cost, and ALP against the plain ratios in training.

    python bench/alp.py [--batch 2] [--length 256] [--repeats 5] [--device cpu] [--threads 1]
    python bench/alp.py --training [--seeds 3] [--stalenesses 0,4] [--plot docs/alp.png]

Training (`--training`): GRPO with the token ratio, GRPO with the sequence ratio (GSPO), Token-ALP and Seq-ALP
(preset alp) at equal rollout budget, `max_staleness` 0 and 4, on the `traffic` toy environment in full context
with `tiny` after bench/stppo.py's warm start; a small KL term (0.01) so that KL is measured. Per run: the
return, the p99 of |log ratio| (its growth over training), KL, σ per layer. The ALP runs use the preset's
window [0.5, 4.0] and dual clip 3 (the authors'), the GRPO runs PPO's 0.2, as each method is published. The last
line printed is a JSON object {"runs": ..., "summary": ...}.

Cost (default):

For `tiny` and for a random model of SmolLM2-135M's shape (a LlamaConfig: hidden 576, 30 layers, 9 heads,
3 KV heads, intermediate 1536, vocab 49152; no weights needed), on one batch of random token ids: the
policy's token log-probs, their sum, backward, with and without `LayerwiseNoise.active()` (learnable σ,
all layers), interleaved, `--repeats` times after a warm-up of each. The last line printed is a JSON object
with, per model, `alp_vs_plain`: the median ALP step time over the median plain one (target <= 1.15), and
`alp_vs_plain_min`, the same from the fastest of each (less sensitive to other work on a shared machine). One
CPU thread by default: two threads on two busy cores stall each other and swamp the difference measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def smollm2_shaped():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, max_position_embeddings=2048,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def measure(model, batch: int, length: int, repeats: int, device: str, seed: int) -> dict:
    from turnrl.agents.policy import token_logprobs
    from turnrl.algorithms.alp import LayerwiseNoise

    model = model.to(device)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed)).to(device)
    mask = torch.ones_like(ids)
    noise = LayerwiseNoise(model, sigma=1e-3, learnable=True, seed=seed)

    def step(alp: bool, index: int) -> float:
        model.zero_grad(set_to_none=True)
        noise.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        if alp:
            with noise.active(step=index):
                loss = token_logprobs(model, ids, mask).sum()
        else:
            loss = token_logprobs(model, ids, mask).sum()
        loss.backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step(False, 0)   # warm-up
    step(True, 0)
    plain, alp = [], []
    for index in range(repeats):
        plain.append(step(False, index))
        alp.append(step(True, index))
    assert noise.log_sigma.grad is not None and torch.all(noise.log_sigma.grad != 0)
    noise.remove()
    plain_s, alp_s = statistics.median(plain), statistics.median(alp)
    return {"alp_vs_plain": round(alp_s / plain_s, 3), "alp_vs_plain_min": round(min(alp) / min(plain), 3),
            "plain_s": round(plain_s, 4), "alp_s": round(alp_s, 4), "layers": len(noise.layer_indices),
            "batch": batch, "length": length}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--training", action="store_true", help="the training comparison instead of the cost")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--stalenesses", default="0,4")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.training:
        result = training(args)
        print(json.dumps(result))
        return result

    from turnrl.agents.models import load_model

    tiny, _ = load_model("tiny", progress=False)
    result = {
        "tiny": measure(tiny, args.batch, args.length, args.repeats, args.device, args.seed),
        "smollm2_shape": measure(smollm2_shaped(), args.batch, args.length, args.repeats, args.device, args.seed),
        "repeats": args.repeats, "device": args.device, "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return result


VARIANTS = {   # name -> config overrides
    "grpo-token": {"algorithm": "grpo", "ratio_level": "token"},
    "grpo-seq": {"algorithm": "grpo", "ratio_level": "sequence"},
    "token-alp": {"algorithm": "alp", "ratio_level": "token"},
    "seq-alp": {"algorithm": "alp"},
}


def training(args) -> dict:
    import tempfile

    from turnrl.algorithms.config import load_config
    from turnrl.algorithms.trainer import train

    work = Path(args.output_dir or tempfile.mkdtemp(prefix="turnrl-alp-"))
    runs = {}
    for seed in range(args.seeds):
        for staleness in [int(x) for x in args.stalenesses.split(",")]:
            for name, overrides in VARIANTS.items():
                run = f"{name}-stale{staleness}-seed{seed}"
                t0 = time.perf_counter()
                config = load_config(None, {
                    "env": "traffic", "env_kwargs": {"n_steps": 4}, "model": "tiny", "context": "full",
                    "max_turns": 4, "max_new_tokens": 16, "iterations": args.iterations, "tasks_per_iteration": 8,
                    "group_size": 4, "epochs": 2, "minibatch_size": 8, "micro_batch_size": 8, "learning_rate": 1e-3,
                    "kl_coef": 0.01, "max_staleness": staleness, "warm_start_episodes": 160, "warm_start_epochs": 3.0,
                    "warm_start_learning_rate": 3e-3, "warm_start_batch_size": 8, "checkpoint_every": 0,
                    "seed": seed, "output_dir": str(work / run), **overrides})
                rows = [json.loads(line) for line in (train(config, progress=False) / "metrics.jsonl")
                        .read_text().splitlines()]
                series = {k: [row.get(k) for row in rows] for k in
                          ("mean_return", "abs_log_ratio_p99", "kl", "clip_fraction", "alp_sigma_mean",
                           "sigma_per_layer")}
                runs[run] = {"variant": name, "max_staleness": staleness, "seed": seed, "series": series,
                             "final_return": sum(series["mean_return"][-3:]) / 3,
                             "seconds": round(time.perf_counter() - t0, 1)}
                print(f"{run}: final return {runs[run]['final_return']:.3f} ({runs[run]['seconds']}s)",
                      file=sys.stderr, flush=True)
    summary = {}
    for name in VARIANTS:
        for staleness in [int(x) for x in args.stalenesses.split(",")]:
            group = [r for r in runs.values() if r["variant"] == name and r["max_staleness"] == staleness]
            tails = [r["series"]["abs_log_ratio_p99"] for r in group]
            kls = [v for r in group for v in r["series"]["kl"] if v is not None]
            summary[f"{name}-stale{staleness}"] = {
                "final_return_mean": round(sum(r["final_return"] for r in group) / len(group), 4),
                "abs_log_ratio_p99_first": round(sum(t[0] for t in tails) / len(tails), 4),
                "abs_log_ratio_p99_last": round(sum(t[-1] for t in tails) / len(tails), 4),
                "kl_max": round(max(kls, default=0.0), 4),
                "sigma_mean_last": None if group[0]["series"]["alp_sigma_mean"][-1] is None else
                round(sum(r["series"]["alp_sigma_mean"][-1] for r in group) / len(group), 6),
            }
    if args.plot:
        plot(runs, Path(args.plot))
    return {"runs": runs, "summary": summary}


def plot(runs: dict, out: Path) -> None:
    from staleness_curves import plot_runs  # beside this script

    plot_runs(runs, VARIANTS, ("mean_return", "abs_log_ratio_p99", "kl", "alp_sigma_mean"), out,
              log_keys=("alp_sigma_mean",))


if __name__ == "__main__":
    main(sys.argv[1:])
