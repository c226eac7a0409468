"""Pretraining from scratch: next-token training on a task's synthetic solutions.

The task writes solutions two ways: answer at once (`<think></think><answer>19</answer>`) or
think step by step first, some traces with a slip (`pretrain.think_fraction`,
`pretrain.slip_fraction`). The loss covers the completion tokens only. Linear warmup, cosine
decay to lr / 10; a step whose loss or gradient is not finite is skipped and counted.

    rlvr train recipes/demo.toml --grpo.steps 0      # pretraining (and evaluation) only
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from rlvr.checkpoint import Checkpointer
from rlvr.config import Config
from rlvr.device import autocast
from rlvr.errors import StopRequested
from rlvr.learning.updates import make_optimizer, set_lr, too_many_bad_steps
from rlvr.model import Transformer
from rlvr.report import RunLogger, progress_bar
from rlvr.tokenizer import CharTokenizer


# A micro-batch's longest row is at most this many times its shortest (see `by_length`).
MAX_LENGTH_RATIO = 1.5


def by_length(rows: list[tuple[list[int], list[int]]]) -> list[list[tuple[list[int], list[int]]]]:
    """`rows` as one micro-batch when the longest is within MAX_LENGTH_RATIO of the shortest
    (then in their order, so such batches are computed exactly as before), else sorted by
    length and cut wherever a row would exceed that ratio: countdown's searches run from one
    try to nine, and padding them all to the longest wasted more than half the compute."""
    lengths = [len(ids) for ids, _ in rows]
    if max(lengths) <= MAX_LENGTH_RATIO * min(lengths):
        return [rows]
    parts: list[list] = []
    for row in sorted(rows, key=lambda r: len(r[0])):
        if not parts or len(row[0]) > MAX_LENGTH_RATIO * len(parts[-1][0][0]):
            parts.append([])
        parts[-1].append(row)
    return parts


def pretrain_batch(task, tokenizer: CharTokenizer, rng: random.Random, cfg: Config, step: int):
    """One step of synthetic solutions, as length-grouped, right-padded micro-batches.

    Some examples answer at once, some think step by step, and some of those traces slip.
    Answer-only examples are short and traces long, so each kind is padded on its own
    (padding one batch to the longest trace wasted ~45% of the compute), and a kind whose
    lengths vary widely is split further (`by_length`). Returns a list of
    (input ids (b, T), loss mask (b, T-1)) pairs; the mask is 1 on completion tokens only.
    """
    p = cfg.pretrain
    problems = task.problems("train", p.batch_size, seed=cfg.seed * 1_000_003 + step)
    groups: dict[bool, list[tuple[list[int], list[int]]]] = {False: [], True: []}
    for problem in problems:
        think = rng.random() < p.think_fraction
        slip = think and rng.random() < p.slip_fraction
        prompt = tokenizer.encode(tokenizer.format_prompt(problem.prompt))
        completion = tokenizer.encode(task.completion(problem, rng, think=think, slip=slip))
        completion.append(tokenizer.eos_id)
        groups[think].append((prompt + completion, [0] * (len(prompt) - 1) + [1] * len(completion)))
    batches = []
    for rows in [part for group in groups.values() if group for part in by_length(group)]:
        width = max(len(ids) for ids, _ in rows)
        ids_t = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
        mask_t = torch.zeros((len(rows), width - 1))
        for i, (ids, mask) in enumerate(rows):
            ids_t[i, : len(ids)] = torch.tensor(ids)
            mask_t[i, : len(mask)] = torch.tensor(mask, dtype=torch.float)
        batches.append((ids_t, mask_t))
    return batches


def pretrain(
    model: Transformer,
    tokenizer: CharTokenizer,
    task,
    cfg: Config,
    logger: RunLogger,
    checkpointer: Checkpointer,
    should_stop: Callable[[], bool],
    resume: dict | None = None,
) -> None:
    """Next-token training on synthetic solutions, from random weights (or a checkpoint)."""
    p = cfg.pretrain
    device = next(model.parameters()).device
    rng = random.Random(cfg.seed + 1)
    optimizer = make_optimizer(model, p.lr, p.weight_decay)
    first, bad_in_row = 1, 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        rng.setstate(resume["rng"])
        torch.set_rng_state(resume["torch_rng"])
        first, bad_in_row = resume["step"] + 1, resume["bad_in_row"]
    model.train()
    tokens, skipped, t_start = 0, 0, time.perf_counter()
    with progress_bar("pretrain", p.steps, done=first - 1) as advance:
        for step in range(first, p.steps + 1):
            # Right padding needs no attention mask: causal attention never looks ahead.
            batches = [(ids.to(device), mask.to(device))
                       for ids, mask in pretrain_batch(task, tokenizer, rng, cfg, step)]  # fmt: skip
            num_targets = sum(mask.sum() for _, mask in batches)
            optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros((), device=device)
            for ids, mask in batches:
                with autocast(cfg, model):
                    logits = model(ids[:, :-1])  # (b, T-1, V), float32
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
            if torch.isfinite(loss) and torch.isfinite(grad_norm):
                optimizer.step()
                bad_in_row = 0
            else:  # skip it: the weights and the optimizer state stay as they were
                skipped, bad_in_row = skipped + 1, bad_in_row + 1
                too_many_bad_steps(
                    cfg.max_bad_steps, "pretrain", step, bad_in_row, checkpointer.last, cfg.run_dir
                )

            tokens += sum(int((ids != tokenizer.pad_id).sum()) for ids, _ in batches)
            if step % 25 == 0 or step == p.steps:
                elapsed = time.perf_counter() - t_start
                logger.log("pretrain", step, {"loss": loss.item(), "lr": lr, "grad_norm": grad_norm.item(),
                                              "skipped_updates": skipped,
                                              "tokens_per_second": tokens / elapsed})  # fmt: skip
            advance(f"loss {loss.item():.3f}")

            stop = should_stop()
            if stop or checkpointer.due(step, p.steps):
                checkpointer.save("pretrain", step, model, {
                    "phase": "pretrain", "step": step, "optimizer": optimizer.state_dict(),
                    "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                    "bad_in_row": bad_in_row,
                })  # fmt: skip
            if stop and step < p.steps:
                raise StopRequested(f"pretraining step {step}", str(checkpointer.run_dir))
