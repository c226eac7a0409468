"""Sampling speed of rlvr.sampling.engine: new tokens per second on a small random model.

    python benchmarks/engine_speed.py [--prompts 8] [--samples 8] [--new-tokens 64]
                                      [--compare-sdpa]

Defaults are one GRPO step of the CPU demo: 8 prompts x 8 samples x 64 new tokens from the
default ~1.1M-parameter model, fp32, 2 threads, no stop tokens (every row runs to the end).
`--compare-sdpa` also times the same engine with its one-query decode attention
(`rlvr.model.decode_attention`, two batched matmuls) swapped for torch's
scaled_dot_product_attention, alternating run by run, and adds both figures and their ratio.
Prints one JSON line. Run it alone: 2-thread torch slows down when another process holds a
core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import rlvr.model
from rlvr.model import ModelConfig, Transformer
from rlvr.sampling.engine import Engine


def sdpa_decode_attention(q, k, v, bias):
    """What rlvr.model.decode_attention computes, by torch's SDPA kernel (the comparison)."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, enable_gqa=q.shape[1] != k.shape[1]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=24, help="longest prompt, tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--compare-sdpa", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ModelConfig()
    model = Transformer(config).to(getattr(torch, args.dtype)).eval()
    engine = Engine(model, pad_id=0)
    # Prompts of varied lengths (left padding is part of the measured work).
    prompts = [
        torch.randint(1, config.vocab_size, (args.prompt_len - i % 5,)).tolist()
        for i in range(args.prompts)
    ]

    def run(seed: int) -> float:
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        completions = engine.generate(
            prompts,
            num_samples=args.samples,
            max_new_tokens=args.new_tokens,
            temperature=1.0,
            generator=generator,
        )
        seconds = time.perf_counter() - start
        assert (
            sum(len(c.token_ids) for c in completions)
            == args.prompts * args.samples * args.new_tokens
        )
        return seconds

    attentions = {"ours": rlvr.model.decode_attention}
    if args.compare_sdpa:
        attentions["sdpa"] = sdpa_decode_attention
    times: dict[str, list[float]] = {name: [] for name in attentions}
    for seed in range(args.runs + 2):  # two warm-up runs, then alternate
        for name, attention in attentions.items():
            rlvr.model.decode_attention = attention
            if seed >= 2:
                times[name].append(run(seed))
            else:
                run(seed)
    rlvr.model.decode_attention = attentions["ours"]
    seconds = statistics.median(times["ours"])
    new_tokens = args.prompts * args.samples * args.new_tokens
    extra = {}
    if args.compare_sdpa:
        sdpa = new_tokens / statistics.median(times["sdpa"])
        extra = {
            "sdpa_new_tokens_per_s": round(sdpa),
            "ratio_vs_sdpa": round(new_tokens / seconds / sdpa, 3),
        }
    print(
        json.dumps(
            {
                "benchmark": "engine_speed",
                "num_parameters": model.num_parameters(),
                "prompts": args.prompts,
                "samples": args.samples,
                "new_tokens": args.new_tokens,
                "prompt_len": args.prompt_len,
                "dtype": args.dtype,
                "threads": torch.get_num_threads(),
                "seconds": round(seconds, 4),
                "new_tokens_per_s": round(new_tokens / seconds),
                **extra,
            }
        )
    )


if __name__ == "__main__":
    main()
