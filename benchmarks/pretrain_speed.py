"""Pretraining throughput, A/B: the demo's optimizer step under several config variants.

    .venv/bin/python benchmarks/pretrain_speed.py --variant "" \
        --variant "--pretrain.pack_length 72" \
        --variant "--model.hidden_size 160 --model.num_hidden_layers 4" [--rounds 8] [--steps 10]

Each variant is a set of config overrides on recipes/demo.toml (the empty string is the recipe
itself); `--compile` adds, for each, the same step through `torch.compile(model, dynamic=True)`
(its compilation is timed apart, in the warm-up steps). Every variant gets its own freshly initialised model, optimizer and data stream; the
variants then take turns, `--steps` optimizer steps each per round, for `--rounds` rounds, so
a machine shared with other jobs slows them alike. Reported per variant: the median over
rounds of tokens per second (prompt and completion tokens, padding excluded: the figure
metrics.jsonl logs), seconds per step, and the ratio to the first variant. Prints one JSON
line last.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import statistics
import time

import torch

from rlvr.cli import recipe_path
from rlvr.config import load_config
from rlvr.learning.pretrain import learning_rate, next_token_step, pretrain_batch
from rlvr.learning.updates import make_optimizer
from rlvr.loop import make_task
from rlvr.model import Transformer
from rlvr.tokenizer import CharTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", default=[],
                        help="config overrides, e.g. \"--pretrain.batch_size 128\" (repeatable)")  # fmt: skip
    parser.add_argument("--recipe", default=str(recipe_path("demo")))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--steps", type=int, default=10, help="optimizer steps per variant per round"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true",
                        help="also time each variant through torch.compile (dynamic shapes)")  # fmt: skip
    args = parser.parse_args()
    variants = args.variant or [""]
    torch.set_num_threads(args.threads)

    tokenizer = CharTokenizer()
    runs = []
    for overrides, compiled in [
        (v, c) for v in variants for c in (False, True)[: 1 + args.compile]
    ]:
        cfg = load_config(args.recipe, shlex.split(overrides))
        cfg.model.vocab_size = tokenizer.vocab_size
        torch.manual_seed(cfg.seed)
        model = Transformer(cfg.model)
        model.train()
        optimizer = make_optimizer(model, cfg.pretrain.lr, cfg.pretrain.weight_decay)
        runs.append({"cfg": cfg, "model": torch.compile(model, dynamic=True) if compiled else model,
                     "parameters": model.num_parameters(), "optimizer": optimizer,
                     "task": make_task(cfg), "rng": random.Random(cfg.seed + 1), "step": 0,
                     "tokens/s": [], "s/step": [],
                     "name": f"{overrides or '(recipe)'}{' (compiled)' if compiled else ''}"})  # fmt: skip

    def run_steps(run: dict, n: int) -> tuple[int, float]:
        cfg, tokens, t0 = run["cfg"], 0, time.perf_counter()
        for _ in range(n):
            run["step"] += 1
            batches = pretrain_batch(run["task"], tokenizer, run["rng"], cfg, run["step"])
            lr = learning_rate(cfg.pretrain, min(run["step"], cfg.pretrain.steps))
            next_token_step(
                run["model"], run["optimizer"], batches, lr, cfg.pretrain.grad_clip, cfg
            )
            tokens += sum(int((ids != tokenizer.pad_id).sum()) for ids, _ in batches)
        return tokens, time.perf_counter() - t0

    for run in runs:  # warm-up: allocator, first-call costs, compilation
        run["warmup_seconds"] = run_steps(run, 3)[1]
    for _ in range(args.rounds):
        for run in runs:
            tokens, seconds = run_steps(run, args.steps)
            run["tokens/s"].append(tokens / seconds)
            run["s/step"].append(seconds / args.steps)

    base = statistics.median(runs[0]["tokens/s"])
    result = {"benchmark": "pretrain_speed", "threads": args.threads, "rounds": args.rounds,
              "steps_per_round": args.steps, "machine": platform.processor() or platform.machine(),
              "variants": []}  # fmt: skip
    for run in runs:
        tps = statistics.median(run["tokens/s"])
        row = {"variant": run["name"], "parameters": run["parameters"],
               "tokens_per_second": round(tps), "seconds_per_step": round(statistics.median(run["s/step"]), 4),
               "ratio": round(tps / base, 3), "warmup_seconds": round(run["warmup_seconds"], 2)}  # fmt: skip
        result["variants"].append(row)
        print(f"{run['name']:60s} {row['parameters']:>9,} params  {tps:8.0f} tok/s  "
              f"{row['seconds_per_step']:.3f} s/step  x{row['ratio']:.3f}  "
              f"(3 warm-up steps {row['warmup_seconds']:.1f} s)")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
