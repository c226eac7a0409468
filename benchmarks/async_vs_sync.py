"""Asynchronous GRPO against the synchronous loop, side by side, from one pretrained model.

    .venv/bin/python benchmarks/async_vs_sync.py --init RUN/pretrained [--steps 30]
        [--settings demo,sampling_heavy]

For each setting, in one process, one after the other on the same machine:
  - sync:  `rlvr train` with grpo.max_staleness = 0 and `--threads` (2) threads;
  - async: grpo.max_staleness = 1 and 2, the sampler process and the learner one thread each;
  - alone: the sampler's step (`Sampler.sample`) and the learner's step
    (`GRPOLearner.train_step`), each timed on one thread with nothing else running.

    ratio = sync seconds per step / async seconds per step     (higher is better)
    bound = sync seconds per step / max(sampler alone, learner alone)

Overlapping two roles cannot beat `bound`: a step can never take less than its slower role on
one core. Seconds per step are medians over the steps after the first max_staleness + 2 (the
sampler process starts, and the lag fills, in those). Held-out accuracy (greedy) after the
same number of steps shows that the staleness did not hurt learning.

Settings (the demo's task, model and learning rate throughout):
  - demo: the demo's GRPO phase as it is (8 prompts x 8 samples, <= 64 tokens, mu = 2, beta
    0.04): the learner's work is most of a step.
  - sampling_heavy: few rows and long completions, as in reasoning RL at scale, where
    decoding is most of a step: 2 prompts x 4 samples forced to 160 tokens (EOS masked out until
    then), mu = 1, beta = 0.

Prints one JSON line last: {"demo": {...}, "sampling_heavy": {...}} with ratio, bound and the
figures behind them. Run it alone: two-thread timings collapse when another process holds a
core.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from rlvr.checkpoint import load_checkpoint
from rlvr.cli import recipe_path
from rlvr.config import load_config
from rlvr.learning.learner import GRPOLearner
from rlvr.loop import make_task, run, seed_everything
from rlvr.report import read_metrics
from rlvr.sampling.sampler import Sampler
from rlvr.verifiers.rewards import Scorer, open_pool

SETTINGS = {
    "demo": [],
    "sampling_heavy": [
        "--grpo.num_prompts", "2", "--grpo.group_size", "4", "--grpo.max_new_tokens", "160",
        "--grpo.min_new_tokens", "160", "--grpo.num_iterations", "1", "--grpo.beta", "0",
        "--eval.max_new_tokens", "64",
    ],
}  # fmt: skip


def overrides(init: str, steps: int, threads: int, setting: str, extra: list[str]) -> list[str]:
    return [
        "--init_from", init, "--pretrain.steps", "0", "--grpo.steps", str(steps),
        "--grpo.eval_every", "0", "--eval.num_samples", "0", "--checkpoint.every", "0",
        "--plots", "false", "--threads", str(threads), *SETTINGS[setting], *extra,
    ]  # fmt: skip


def train(init: str, steps: int, threads: int, setting: str, staleness: int) -> dict:
    """One `rlvr train` of the setting; median seconds per steady step and final accuracy."""
    extra = ["--grpo.max_staleness", str(staleness)]
    if staleness:
        extra += ["--sampler.threads", "1", "--learner.threads", "1"]
    cfg = load_config(recipe_path("demo"), overrides(init, steps, threads, setting, extra))
    with tempfile.TemporaryDirectory() as tmp:
        cfg.run_dir = str(Path(tmp) / "run")
        _, result = run(cfg)
        rows = [r for r in read_metrics(Path(cfg.run_dir)) if r["phase"] == "grpo"]
    steady = rows[staleness + 2 :]
    return {
        "seconds_per_step": statistics.median(r["step_seconds"] for r in steady),
        "accuracy": result["after"]["accuracy"],
        "accuracy_no_think": result["after"]["accuracy_no_think"],
        "mean_staleness": statistics.mean(r["staleness"] for r in steady),
        "learner_wait_seconds": statistics.median(r["learner_wait_seconds"] for r in steady),
        "sampler_wait_seconds": statistics.median(r["sampler_wait_seconds"] for r in steady),
    }


def roles_alone(init: str, setting: str, repeats: int) -> dict:
    """Median seconds of the sampler's step and of the learner's step, each on one thread."""
    cfg = load_config(recipe_path("demo"), overrides(init, repeats, 1, setting, []))
    seed_everything(cfg.seed, 1)
    policy, tokenizer, _, _ = load_checkpoint(init)
    task = make_task(cfg)
    with open_pool(cfg.reward, preload=(type(task).__module__,)) as pool:
        scorer = Scorer(task, cfg.reward, cfg.grpo.max_new_tokens, pool)
        learner = GRPOLearner(policy, cfg, tokenizer.pad_id, scorer.weights)
        sampler = Sampler(policy, tokenizer, scorer, task, cfg)
        sample_s, learn_s = [], []
        for step in range(1, repeats + 1):
            rollouts = sampler.sample(step, step - 1)
            t0 = time.perf_counter()
            learner.train_step(rollouts.episodes, step)
            learn_s.append(time.perf_counter() - t0)
            sample_s.append(rollouts.seconds)
    return {"sampler_seconds": statistics.median(sample_s[1:]),
            "learner_seconds": statistics.median(learn_s[1:])}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", required=True, help="a demo run's pretrained/ folder")
    parser.add_argument("--steps", type=int, default=30, help="GRPO steps per run")
    parser.add_argument("--threads", type=int, default=2, help="threads of the sync loop")
    parser.add_argument("--settings", default="demo,sampling_heavy")
    args = parser.parse_args()
    out: dict = {"benchmark": "async_vs_sync", "steps": args.steps, "threads": args.threads,
                 "machine": f"{platform.machine()} {platform.python_version()} torch {torch.__version__}"}  # fmt: skip
    for setting in args.settings.split(","):
        sync = train(args.init, args.steps, args.threads, setting, 0)
        async1 = train(args.init, args.steps, args.threads, setting, 1)
        async2 = train(args.init, args.steps, args.threads, setting, 2)
        alone = roles_alone(args.init, setting, repeats=6)
        slowest = max(alone["sampler_seconds"], alone["learner_seconds"])
        bound = sync["seconds_per_step"] / slowest
        result = {
            "ratio": sync["seconds_per_step"] / async1["seconds_per_step"],
            "ratio_staleness_2": sync["seconds_per_step"] / async2["seconds_per_step"],
            "bound": bound,
            "sync": sync, "async_staleness_1": async1, "async_staleness_2": async2, **alone,
        }  # fmt: skip
        result["ratio_over_bound"] = result["ratio"] / bound
        out[setting] = result
        print(json.dumps({setting: result}), file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
