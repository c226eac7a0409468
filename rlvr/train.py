"""The training loops, readable top to bottom: pretrain from scratch, then GRPO.

    rlvr train recipes/demo.toml --grpo.beta 0.02

`run(cfg)` is the whole job: pretrain -> evaluate -> GRPO -> evaluate, writing a run folder
(config.toml, metrics.jsonl, tensorboard/, plots/, samples/, pretrained/, checkpoint/,
summary.json).

GRPO here follows DeepSeekMath (Shao et al. 2024) with these choices, all in the config:
- advantages are z-scores within each group of k samples (`grpo.scale_rewards = false` gives
  Dr. GRPO's mean-only advantages, Liu et al. 2025);
- the ratio is clipped asymmetrically, [1 - epsilon, 1 + epsilon_high] (DAPO's clip-higher);
- the loss is averaged over all completion tokens of a minibatch (token-level, as DAPO), not
  per sequence first;
- the KL penalty to the frozen starting policy uses the k3 estimator inside the loss, as the
  paper does; beta = 0 loads no reference model;
- the "old" logprobs of the ratio are the sampler's, taken at sampling time; each batch is
  used for `num_iterations` (mu) optimizer passes.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rlvr.algorithms import (
    clipped_policy_loss,
    entropy_from_logits,
    group_advantages,
    token_logprobs,
)
from rlvr.checkpoint import load_checkpoint, save_checkpoint
from rlvr.config import Config, to_toml
from rlvr.engine import Engine
from rlvr.evaluate import evaluate
from rlvr.model import Transformer
from rlvr.report import RunLogger, plot_metrics, write_samples
from rlvr.rollout import Episode, rollout
from rlvr.tasks import TASKS, Problem
from rlvr.tokenizer import EOS, CharTokenizer, format_prompt

console = Console(stderr=True)


# ----------------------------------------------------------------------------- set-up


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def make_run_dir(cfg: Config) -> Path:
    if cfg.run_dir:
        path = Path(cfg.run_dir)
    else:
        path = Path(cfg.runs_dir) / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_task(cfg: Config):
    try:
        return TASKS[cfg.task.name](**cfg.task.options)
    except TypeError as e:
        from rlvr.config import ConfigError

        raise ConfigError(
            f"task.options do not fit task {cfg.task.name!r} ({e}); check the option names."
        ) from e


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; matrices decay, norms and biases do not."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@contextmanager
def progress_bar(description: str, total: int) -> Iterator:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}")]  # fmt: skip
    with Progress(*columns, console=console, transient=False) as progress:
        task_id = progress.add_task(description, total=total, info="")

        def advance(info: str = "") -> None:
            progress.update(task_id, advance=1, info=info)

        yield advance


# ----------------------------------------------------------------------------- pretraining


def pretrain_batch(task, tokenizer: CharTokenizer, rng: random.Random, cfg: Config, step: int):
    """One step of synthetic solutions, as length-grouped, right-padded micro-batches.

    Some examples answer at once, some think step by step, and some of those traces slip.
    Answer-only examples are short and traces long, so each kind is padded on its own
    (padding one batch to the longest trace wasted ~45% of the compute). Returns a list of
    (input ids (b, T), loss mask (b, T-1)) pairs; the mask is 1 on completion tokens only.
    """
    p = cfg.pretrain
    problems = task.problems("train", p.batch_size, seed=cfg.seed * 1_000_003 + step)
    groups: dict[bool, list[tuple[list[int], list[int]]]] = {False: [], True: []}
    for problem in problems:
        think = rng.random() < p.think_fraction
        slip = think and rng.random() < p.slip_fraction
        prompt = tokenizer.encode(format_prompt(problem.prompt))
        completion = tokenizer.encode(task.completion(problem, rng, think=think, slip=slip) + EOS)
        groups[think].append((prompt + completion, [0] * (len(prompt) - 1) + [1] * len(completion)))
    batches = []
    for rows in groups.values():
        if not rows:
            continue
        width = max(len(ids) for ids, _ in rows)
        ids_t = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
        mask_t = torch.zeros((len(rows), width - 1))
        for i, (ids, mask) in enumerate(rows):
            ids_t[i, : len(ids)] = torch.tensor(ids)
            mask_t[i, : len(mask)] = torch.tensor(mask, dtype=torch.float)
        batches.append((ids_t, mask_t))
    return batches


def pretrain(
    model: Transformer, tokenizer: CharTokenizer, task, cfg: Config, logger: RunLogger
) -> None:
    """Next-token training on synthetic solutions, from random weights."""
    p = cfg.pretrain
    rng = random.Random(cfg.seed + 1)
    optimizer = make_optimizer(model, p.lr, p.weight_decay)
    model.train()
    tokens, t_start = 0, time.perf_counter()
    with progress_bar("pretrain", p.steps) as advance:
        for step in range(1, p.steps + 1):
            # Right padding needs no attention mask: causal attention never looks ahead.
            batches = pretrain_batch(task, tokenizer, rng, cfg, step)
            num_targets = sum(mask.sum() for _, mask in batches)
            optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros(())
            for ids, mask in batches:
                logits = model(ids[:, :-1])  # (b, T-1, V)
                losses = F.cross_entropy(
                    logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none"
                )
                part = (losses * mask.flatten()).sum() / num_targets
                part.backward()
                loss += part.detach()

            # linear warmup, cosine decay to lr / 10
            warm = min(1.0, step / max(1, p.warmup_steps))
            decay = 0.5 * (1 + math.cos(math.pi * min(1.0, step / p.steps)))
            lr = p.lr * warm * (0.1 + 0.9 * decay)
            set_lr(optimizer, lr)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), p.grad_clip or float("inf")
            )
            optimizer.step()

            tokens += sum(int((ids != tokenizer.pad_id).sum()) for ids, _ in batches)
            if step % 25 == 0 or step == p.steps:
                elapsed = time.perf_counter() - t_start
                logger.log("pretrain", step, {"loss": loss.item(), "lr": lr, "grad_norm": grad_norm.item(),
                                              "tokens_per_second": tokens / elapsed})  # fmt: skip
            advance(f"loss {loss.item():.3f}")


# ----------------------------------------------------------------------------- GRPO


def make_batch(episodes: list[Episode], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt+completion rows and their per-position completion tensors.

    Position t of the (N, T-1) tensors scores token t+1, so a completion token at column j
    sits at position j-1 there.
    """
    rows = [ep.prompt_ids + ep.completion_ids for ep in episodes]
    width = max(map(len, rows))
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((n, width - 1))
    old_logprobs = torch.zeros((n, width - 1))
    for i, (row, ep) in enumerate(zip(rows, episodes)):
        input_ids[i, : len(row)] = torch.tensor(row)
        start, end = len(ep.prompt_ids) - 1, len(row) - 1
        completion_mask[i, start:end] = 1.0
        old_logprobs[i, start:end] = torch.tensor(ep.logprobs)
    return {"input_ids": input_ids,
            "completion_mask": completion_mask, "old_logprobs": old_logprobs}  # fmt: skip


def sequence_logprobs(
    model: torch.nn.Module, batch: dict, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token logprobs (N, T-1) of the batch's tokens, and the logits that gave them."""
    # Rows are right-padded: under causal attention a real token never sees the padding
    # after it, so no mask is needed and the fused causal attention path applies.
    logits = model(batch["input_ids"])[:, :-1]
    return token_logprobs(logits, batch["input_ids"][:, 1:], temperature), logits


def train_problems(task, cfg: Config) -> Iterator[list[Problem]]:
    """An endless, seeded stream of training problem batches for GRPO."""
    round_ = 0
    while True:
        pool = task.problems("train", cfg.grpo.num_prompts * 50, seed=cfg.seed * 7919 + 17 + round_)
        for i in range(0, len(pool) - cfg.grpo.num_prompts + 1, cfg.grpo.num_prompts):
            yield pool[i : i + cfg.grpo.num_prompts]
        round_ += 1


def grpo(policy: Transformer, tokenizer: CharTokenizer, task, cfg: Config, logger: RunLogger,
         eval_problems: list[Problem]) -> float:  # fmt: skip
    """GRPO; returns the mean seconds per step (sampling + verification + update)."""
    g = cfg.grpo
    reference = None
    if g.beta > 0:
        reference = copy.deepcopy(policy).eval().requires_grad_(False)
    optimizer = make_optimizer(policy, g.lr, g.weight_decay)
    engine = Engine(policy, pad_id=tokenizer.pad_id)
    generator = torch.Generator().manual_seed(cfg.seed + 2)
    shuffle = torch.Generator().manual_seed(cfg.seed + 3)
    problems = train_problems(task, cfg)
    step_seconds = []

    with progress_bar("grpo", g.steps) as advance:
        for step in range(1, g.steps + 1):
            t0 = time.perf_counter()

            # 1. Sample k completions per problem with the current policy, and verify them.
            policy.eval()
            episodes = rollout(
                engine, tokenizer, task, next(problems), num_samples=g.group_size,
                max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p,
                top_k=g.top_k, generator=generator, policy_version=step - 1,
                accuracy_weight=g.accuracy_weight, format_weight=g.format_weight,
            )  # fmt: skip
            t_sampled = time.perf_counter()

            # 2. Group-relative advantages.
            rewards = torch.tensor([ep.reward for ep in episodes])  # (N,)
            advantages = group_advantages(rewards, g.group_size, scale_by_std=g.scale_rewards)

            # 3. The learner's batch; reference logprobs once per batch.
            batch = make_batch(episodes, tokenizer.pad_id)
            batch["advantages"] = advantages
            if reference is not None:
                with torch.no_grad():
                    batch["ref_logprobs"], _ = sequence_logprobs(reference, batch, g.temperature)

            # 4. mu passes of clipped policy-gradient updates over the batch.
            policy.train()
            set_lr(optimizer, g.lr * min(1.0, step / max(1, g.warmup_steps)))
            stats: dict[str, list[float]] = {}
            num_groups = len(episodes) // g.group_size
            for _ in range(g.num_iterations):
                order = torch.randperm(num_groups, generator=shuffle)
                for group_ids in order.chunk(g.num_minibatches):
                    rows = (
                        group_ids[:, None] * g.group_size + torch.arange(g.group_size)
                    ).flatten()
                    mb = {k: v[rows] for k, v in batch.items()}
                    logprobs, logits = sequence_logprobs(policy, mb, g.temperature)
                    loss, loss_stats = clipped_policy_loss(
                        logprobs, mb["old_logprobs"], mb["advantages"], mb["completion_mask"],
                        epsilon_low=g.epsilon, epsilon_high=g.epsilon_high,
                        ref_logprobs=mb.get("ref_logprobs"), beta=g.beta,
                    )  # fmt: skip
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(
                        policy.parameters(), g.grad_clip or float("inf")
                    )
                    optimizer.step()
                    with torch.no_grad():
                        entropy = entropy_from_logits(logits.detach())
                        mask = mb["completion_mask"]
                        loss_stats["entropy"] = (entropy * mask).sum() / mask.sum().clamp(min=1)
                    loss_stats["grad_norm"] = grad_norm
                    loss_stats["loss"] = loss.detach()
                    for key, value in loss_stats.items():
                        stats.setdefault(key, []).append(float(value))
            t_end = time.perf_counter()
            step_seconds.append(t_end - t0)

            num_tokens = sum(len(ep.completion_ids) for ep in episodes)
            metrics = {
                "reward": rewards.mean().item(),
                "accuracy": sum(ep.verdict.components.get("accuracy", 0.0) for ep in episodes)
                / len(episodes),
                "format_rate": sum(ep.verdict.components.get("format", 0.0) for ep in episodes)
                / len(episodes),
                "think_rate": sum(ep.thought for ep in episodes) / len(episodes),
                "response_length": num_tokens / len(episodes),
                "truncated_rate": sum(ep.finish_reason == "length" for ep in episodes)
                / len(episodes),
                **{key: sum(v) / len(v) for key, v in stats.items()},
                "policy_version": step,
                "step_seconds": t_end - t0,
                "sample_seconds": t_sampled - t0,
                "tokens_per_second": num_tokens / (t_end - t0),
            }
            logger.log("grpo", step, metrics)
            advance(f"reward {metrics['reward']:.2f}  think {metrics['think_rate']:.2f}")

            if g.eval_every and step % g.eval_every == 0 and step < g.steps:
                eval_metrics, samples = evaluate(policy, tokenizer, task, eval_problems, cfg.eval,
                                                 seed=cfg.seed, sampled=False)  # fmt: skip
                logger.log("eval", step, eval_metrics)
                write_samples(logger.run_dir, f"grpo-step{step:05d}", samples)

    # the first step pays one-off costs (allocations, warm caches); report the steady state
    steady = step_seconds[1:] or step_seconds
    return sum(steady) / max(1, len(steady))


# ----------------------------------------------------------------------------- the whole job


def run(cfg: Config) -> tuple[Path, dict]:
    """Pretrain (or load) -> evaluate -> GRPO -> evaluate. Returns the run folder and summary."""
    t_start = time.perf_counter()
    seed_everything(cfg.seed, cfg.threads)
    run_dir = make_run_dir(cfg)
    (run_dir / "config.toml").write_text(to_toml(cfg))
    task = make_task(cfg)
    eval_problems = task.problems("test", cfg.eval.num_problems, seed=cfg.seed)
    summary: dict = {
        "run_dir": str(run_dir),
        "task": cfg.task.name,
        "seed": cfg.seed,
        "threads": cfg.threads,
    }

    with RunLogger(run_dir) as logger:
        if cfg.init_from:
            policy, tokenizer, _, _ = load_checkpoint(cfg.init_from)
            console.print(f"loaded {cfg.init_from}")
        else:
            tokenizer = CharTokenizer()
            cfg.model.vocab_size = tokenizer.vocab_size
            policy = Transformer(cfg.model)
            console.print(f"model: {policy.num_parameters() / 1e6:.2f}M parameters")
            if cfg.pretrain.steps > 0:
                t0 = time.perf_counter()
                pretrain(policy, tokenizer, task, cfg, logger)
                summary["pretrain_seconds"] = time.perf_counter() - t0
                save_checkpoint(
                    run_dir / "pretrained", policy, tokenizer, cfg, {"phase": "pretrain"}
                )
        summary["num_parameters"] = policy.num_parameters()

        console.print("evaluating the starting policy ...")
        before, samples = evaluate(policy, tokenizer, task, eval_problems, cfg.eval, seed=cfg.seed)
        logger.log("eval", 0, before)
        write_samples(run_dir, "before-grpo", samples)

        after = before
        if cfg.grpo.steps > 0:
            t0 = time.perf_counter()
            summary["grpo_seconds_per_step"] = grpo(
                policy, tokenizer, task, cfg, logger, eval_problems
            )
            summary["grpo_seconds"] = time.perf_counter() - t0
            console.print("evaluating the trained policy ...")
            after, samples = evaluate(
                policy, tokenizer, task, eval_problems, cfg.eval, seed=cfg.seed
            )
            logger.log("eval", cfg.grpo.steps, after)
            write_samples(run_dir, "after-grpo", samples)
        save_checkpoint(run_dir / "checkpoint", policy, tokenizer, cfg,
                        {"phase": "grpo", "step": cfg.grpo.steps, "policy_version": cfg.grpo.steps})  # fmt: skip

    plot_metrics(run_dir)
    for key, value in before.items():
        summary[f"pretrain_{key}"] = value
    for key, value in after.items():
        summary[f"final_{key}"] = value
    summary["eval_problems"] = len(eval_problems)
    summary["wall_seconds"] = time.perf_counter() - t_start
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir, {"before": before, "after": after, **summary}
