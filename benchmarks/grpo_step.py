"""Seconds per GRPO step: 8 prompts x 8 samples x up to 64 new tokens, ~1M-parameter model.

    .venv/bin/python benchmarks/grpo_step.py [--init RUN_DIR] [--steps 20] [--beta 0.04] [--mu 1]
        [--dtype float32|bfloat16]

The task and sampling settings are the demo recipe's. Without --init the model is freshly initialised, so no completion stops early and every
step samples the full 8 x 8 x 64 tokens (the worst case). With --init (e.g. a demo run's
pretrained/ folder) completions stop at EOS as they do in the demo. The first step is
excluded (one-off allocations). Run it alone: 2-thread timings collapse when another
process holds a core. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from rlvr.checkpoint import Checkpointer, load_checkpoint
from rlvr.cli import recipe_path
from rlvr.config import load_config
from rlvr.loop import grpo, make_task, seed_everything
from rlvr.model import Transformer
from rlvr.report import RunLogger, read_metrics
from rlvr.tokenizer import CharTokenizer
from rlvr.verifiers.rewards import Scorer, open_pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", help="checkpoint or run folder to start from")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--mu", type=int, default=1, help="optimizer passes per batch (TRL: 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the config's dtype: bfloat16 runs the forwards under autocast")  # fmt: skip
    args = parser.parse_args()

    cfg = load_config(recipe_path("demo"), ["--grpo.steps", str(args.steps), "--grpo.beta", str(args.beta),
                      "--grpo.num_iterations", str(args.mu), "--grpo.eval_every", "0",
                      "--threads", str(args.threads), "--checkpoint.every", "0",
                      "--dtype", args.dtype])  # fmt: skip
    seed_everything(cfg.seed, cfg.threads)
    if args.init:
        policy, tokenizer, _, _ = load_checkpoint(args.init)
    else:
        tokenizer = CharTokenizer()
        cfg.model.vocab_size = tokenizer.vocab_size
        policy = Transformer(cfg.model)
    task = make_task(cfg)
    g = cfg.grpo
    with tempfile.TemporaryDirectory() as tmp:
        with (
            RunLogger(Path(tmp), tensorboard=False) as logger,
            open_pool(cfg.reward, preload=(type(task).__module__,)) as pool,
        ):
            scorer = Scorer(task, cfg.reward, g.max_new_tokens, pool)
            checkpointer = Checkpointer(Path(tmp), cfg, tokenizer)  # saves once, at the end
            grpo(policy, tokenizer, task, scorer, cfg, logger, [], checkpointer, lambda: False)
        rows = [r for r in read_metrics(Path(tmp)) if r["phase"] == "grpo"][1:]
    step = [r["step_seconds"] for r in rows]
    sample = [r["sample_seconds"] for r in rows]
    print(json.dumps({
        "benchmark": "grpo_step",
        "num_prompts": g.num_prompts, "group_size": g.group_size, "max_new_tokens": g.max_new_tokens,
        "num_iterations": g.num_iterations, "beta": g.beta, "dtype": cfg.dtype,
        "num_parameters": policy.num_parameters(), "init": args.init or "random",
        "threads": torch.get_num_threads(), "steps_timed": len(rows),
        "mean_response_tokens": statistics.mean(r["response_length"] for r in rows),
        "seconds_per_step": statistics.median(step),
        "sample_seconds_per_step": statistics.median(sample),
        "trl_seconds_per_step_reference": 0.8,
        "machine": f"{platform.machine()} {platform.python_version()} torch {torch.__version__}",
    }))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
