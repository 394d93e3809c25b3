"""ALP's cost: an update's forward + backward with the layerwise noise on against the same step without it.

    python bench/alp.py [--batch 2] [--length 256] [--repeats 5] [--device cpu] [--threads 1]

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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from turnrl.agents.models import load_model

    tiny, _ = load_model("tiny", progress=False)
    result = {
        "tiny": measure(tiny, args.batch, args.length, args.repeats, args.device, args.seed),
        "smollm2_shape": measure(smollm2_shaped(), args.batch, args.length, args.repeats, args.device, args.seed),
        "repeats": args.repeats, "device": args.device, "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
