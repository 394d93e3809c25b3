"""Update step cost: `Trainer.update` against a bare forward + backward of the same model on the same
padded micro-batches, and an update whose samples all have zero advantage against a full one.

    python bench/update_step.py [--model tiny] [--samples 16] [--length 256] [--repeats 3]

Samples are synthetic token sequences (a prompt, then agent tokens with advantages +-1 and the
behaviour log-probs the model gives them), so every mode trains on exactly the same batch. The last
line printed is a JSON object with `update_vs_raw` (seconds per training token of `Trainer.update` over
the bare loop's; 1.0 = no overhead) and `zero_signal_vs_full` (time of an all-zero-advantage update over
a full one), from the median of `--repeats` interleaved timings.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time

import torch


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--length", type=int, default=256, help="tokens per sample (half of them agent tokens)")
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--minibatch-size", type=int, default=8)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from turnrl.agents.policy import pad_right, token_logprobs
    from turnrl.algorithms.config import TrainConfig
    from turnrl.algorithms.trainer import Trainer
    from turnrl.episode import Sample

    config = TrainConfig(env="guess-number", model=args.model, lora=args.lora, tasks_per_iteration=1, group_size=1,
                         minibatch_size=args.minibatch_size, micro_batch_size=args.micro_batch_size,
                         output_dir=tempfile.mkdtemp(), seed=args.seed).validate()
    trainer = Trainer(config, progress=False)
    model = trainer.model
    rng = random.Random(args.seed)
    vocab = len(trainer.tokenizer)
    prompt = args.length // 2
    ids = [[rng.randrange(vocab) for _ in range(args.length)] for _ in range(args.samples)]
    with torch.no_grad():
        behaviour = trainer.policy.logprobs(ids)

    def samples(advantage) -> list[Sample]:
        out = []
        for i, seq in enumerate(ids):
            a = advantage(i)
            out.append(Sample(token_ids=seq, loss_mask=[0] * prompt + [1] * (args.length - prompt),
                              turn_index=[-1] * prompt + [0] * (args.length - prompt),
                              behaviour_logprobs=[0.0] * prompt + behaviour[i][prompt - 1:],
                              advantages=[0.0] * prompt + [a] * (args.length - prompt),
                              episode_index=i, episode_agent_tokens=args.length - prompt))
        return out

    full = samples(lambda i: 1.0 if i % 2 else -1.0)
    zero = samples(lambda i: 0.0)

    def timed_update(batch: list[Sample]) -> tuple[float, int]:
        start = time.perf_counter()
        stats = trainer.update(batch, iteration=1)
        return time.perf_counter() - start, stats["train_tokens"]

    def raw() -> tuple[float, int]:
        """The same minibatches and micro-batches through a bare forward + backward and optimizer step."""
        start = time.perf_counter()
        n_minibatches = -(-len(full) // args.minibatch_size)
        tokens = 0
        for k in range(n_minibatches):
            minibatch = full[k::n_minibatches]
            for j in range(0, len(minibatch), args.micro_batch_size):
                micro = minibatch[j: j + args.micro_batch_size]
                input_ids, attention = pad_right([s.token_ids for s in micro], trainer.policy.pad_id)
                mask = pad_right([s.loss_mask for s in micro], 0)[0][:, 1:].float()
                loss = -(token_logprobs(model, input_ids, attention) * mask).sum() / mask.sum()
                loss.backward()
                tokens += int(mask.sum())
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()
        return time.perf_counter() - start, tokens

    timed_update(full)   # warm-up
    updates, raws, zeros = [], [], []
    for _ in range(args.repeats):
        updates.append(timed_update(full))
        raws.append(raw())
        zeros.append(timed_update(zero))
    update_s, update_tokens = sorted(updates)[len(updates) // 2]
    raw_s, raw_tokens = sorted(raws)[len(raws) // 2]
    zero_s, zero_tokens = sorted(zeros)[len(zeros) // 2]
    result = {
        "model": args.model, "lora": args.lora, "samples": args.samples, "length": args.length,
        "update_s_per_token": update_s / max(update_tokens, 1), "raw_s_per_token": raw_s / max(raw_tokens, 1),
        "update_vs_raw": round((update_s / max(update_tokens, 1)) / (raw_s / max(raw_tokens, 1)), 3),
        "zero_signal_s": round(zero_s, 4), "full_s": round(update_s, 4),
        "zero_signal_vs_full": round(zero_s / update_s, 4), "zero_signal_train_tokens": zero_tokens,
        "repeats": args.repeats, "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
