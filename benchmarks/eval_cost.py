"""What the demo's evaluation costs, in seconds and in pretraining steps of the same machine.

    .venv/bin/python benchmarks/eval_cost.py --pretrained RUN/pretrained --trained RUN/checkpoint \
        [--reps 2] [--threads 2]

For each model (before and after GRPO: the trained policy thinks, so its responses are ~5x
longer) it times, on the recipe's held-out problems: the greedy evaluation (greedy and think
block forced empty, what `grpo.eval_every` runs), the full evaluation with `eval.num_samples`
samples per problem (what runs before and after GRPO), and the forced-think accuracy
(rlvr.sweep.think_accuracy), all with the recipe's [eval] settings. Between them it times 10
pretraining steps of a fresh model of the recipe's shape and batch, so each cost is also given in pretraining steps, a unit that carries
over to a quieter or faster machine. Everything takes turns, `--reps` times; medians are
reported. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from rlvr.checkpoint import load_checkpoint
from rlvr.cli import recipe_path
from rlvr.config import load_config
from rlvr.evaluation import evaluate
from rlvr.learning.pretrain import learning_rate, next_token_step, pretrain_batch
from rlvr.learning.updates import make_optimizer
from rlvr.loop import make_task
from rlvr.model import Transformer
from rlvr.sweep import think_accuracy
from rlvr.verifiers.rewards import Scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrained", required=True, help="a run's pretrained/ folder")
    parser.add_argument("--trained", required=True, help="a run's checkpoint/ folder")
    parser.add_argument("--recipe", default=str(recipe_path("demo")),
                        help="whose [eval] settings and pretraining step to time")  # fmt: skip
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    models = {}
    for when, path in (("before", args.pretrained), ("after", args.trained)):
        models[when] = load_checkpoint(path)[:3]
    tokenizer = models["before"][1]
    cfg = load_config(args.recipe)  # the recipe's evaluation, not the one the runs used
    cfg.model.vocab_size = tokenizer.vocab_size
    task = make_task(cfg)
    problems = task.problems("test", cfg.eval.num_problems, seed=cfg.seed)
    scorer = Scorer(task, cfg.reward, cfg.eval.max_new_tokens, None)  # in-process verification

    fresh = Transformer(cfg.model)
    optimizer = make_optimizer(fresh, cfg.pretrain.lr, cfg.pretrain.weight_decay)
    rng, step = random.Random(0), 0

    def pretrain_steps() -> None:
        nonlocal step
        for _ in range(10):
            step += 1
            batches = pretrain_batch(task, tokenizer, rng, cfg, step)
            lr = learning_rate(cfg.pretrain, min(step, cfg.pretrain.steps))
            next_token_step(fresh, optimizer, batches, lr, cfg.pretrain.grad_clip, cfg)

    jobs = {"pretrain_step": lambda: pretrain_steps()}
    for when, (model, tok, _) in models.items():
        jobs[f"greedy_{when}"] = lambda m=model, t=tok: evaluate(
            m, t, scorer, problems, cfg.eval, seed=cfg.seed, sampled=False
        )
        jobs[f"full_{when}"] = lambda m=model, t=tok: evaluate(
            m, t, scorer, problems, cfg.eval, seed=cfg.seed, sampled=True
        )
        jobs[f"think_{when}"] = lambda m=model, t=tok: think_accuracy(
            m, t, scorer, problems, cfg.eval.max_new_tokens, cfg.eval.batch_size
        )
    seconds: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(args.reps):
        for name, job in jobs.items():
            t0 = time.perf_counter()
            job()
            seconds[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    median["pretrain_step"] /= 10
    result = {"benchmark": "eval_cost", "threads": args.threads, "reps": args.reps,
              "problems": len(problems), "num_samples": cfg.eval.num_samples, "seconds": {},
              "in_pretraining_steps": {}}  # fmt: skip
    for name, value in median.items():
        result["seconds"][name] = round(value, 3)
        result["in_pretraining_steps"][name] = round(value / median["pretrain_step"], 1)
        print(
            f"{name:16s} {value:8.2f} s  = {value / median['pretrain_step']:7.1f} pretraining steps"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
