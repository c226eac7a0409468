"""Pretraining from scratch: next-token training on a task's synthetic solutions.

The task writes solutions two ways: answer at once (`<think></think><answer>19</answer>`) or
think step by step first, some traces with a slip (`pretrain.think_fraction`,
`pretrain.slip_fraction`). The loss covers the completion tokens only. The learning rate
warms up linearly, then follows `pretrain.schedule`: a cosine decay to lr / 10 ("cosine"), or
constant until the last `pretrain.decay_fraction` of the steps and a linear decay from there
("wsd", warmup-stable-decay). A step whose loss or gradient is not finite is skipped and
counted.

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
from rlvr.config import Config, PretrainConfig
from rlvr.device import autocast
from rlvr.errors import StopRequested
from rlvr.learning.updates import make_optimizer, set_lr, too_many_bad_steps
from rlvr.model import Transformer
from rlvr.report import RunLogger, progress_bar
from rlvr.tokenizer import CharTokenizer

Example = tuple[list[int], list[int]]
"""One solution: token ids (prompt + completion + eos), and its loss mask over the next-token
targets (len(ids) - 1 entries, 1 on completion tokens)."""


def decay_start(p: PretrainConfig) -> int:
    """The last step before a "wsd" schedule starts to decay its learning rate."""
    return p.steps - max(1, round(p.decay_fraction * p.steps))


def learning_rate(p: PretrainConfig, step: int) -> float:
    """The learning rate of optimizer step `step` (1-based) under `p.schedule`."""
    warm = min(1.0, step / max(1, p.warmup_steps))
    if p.schedule == "wsd":
        # Warmup-stable-decay (Hu et al. 2024, MiniCPM; Hägele et al. 2024): the peak rate
        # until the last decay_fraction of the steps, then a straight line down to lr / 10.
        into = (step - decay_start(p)) / (p.steps - decay_start(p))
        return p.lr * warm * (1.0 - 0.9 * min(1.0, max(0.0, into)))
    decay = 0.5 * (1 + math.cos(math.pi * min(1.0, step / p.steps)))
    return p.lr * warm * (0.1 + 0.9 * decay)


def solution_examples(
    task, tokenizer: CharTokenizer, rng: random.Random, cfg: Config, step: int
) -> list[tuple[bool, Example]]:
    """One step's synthetic solutions, each with whether it thinks step by step.

    Some examples answer at once, some think step by step (`pretrain.think_fraction`, or
    `pretrain.decay_think_fraction` once a "wsd" schedule decays), and some traces slip.
    """
    p = cfg.pretrain
    think_fraction = p.think_fraction
    if p.decay_think_fraction >= 0 and step > decay_start(p):
        think_fraction = p.decay_think_fraction
    problems = task.problems("train", p.batch_size, seed=cfg.seed * 1_000_003 + step)
    examples = []
    for problem in problems:
        think = rng.random() < think_fraction
        slip = think and rng.random() < p.slip_fraction
        prompt = tokenizer.encode(tokenizer.format_prompt(problem.prompt))
        completion = tokenizer.encode(task.completion(problem, rng, think=think, slip=slip))
        completion.append(tokenizer.eos_id)
        mask = [0] * (len(prompt) - 1) + [1] * len(completion)
        examples.append((think, (prompt + completion, mask)))
    return examples


def pad_rows(rows: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids (b, T) and loss mask (b, T-1) of some examples."""
    width = max(len(ids) for ids, _ in rows)
    ids_t = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask_t = torch.zeros((len(rows), width - 1))
    for i, (ids, mask) in enumerate(rows):
        ids_t[i, : len(ids)] = torch.tensor(ids)
        mask_t[i, : len(mask)] = torch.tensor(mask, dtype=torch.float)
    return ids_t, mask_t


# A micro-batch's longest row is at most this many times its shortest (see `by_length`).
MAX_LENGTH_RATIO = 1.5


def by_length(rows: list[Example]) -> list[list[Example]]:
    """`rows` as one micro-batch when the longest is within MAX_LENGTH_RATIO of the shortest
    (then in their order, so such batches are computed exactly as before), else sorted by
    length and cut wherever a row would exceed that ratio: countdown's searches run from one
    try to nine, and padding them all to the longest wasted more than half the compute."""
    lengths = [len(ids) for ids, _ in rows]
    if max(lengths) <= MAX_LENGTH_RATIO * min(lengths):
        return [rows]
    parts: list[list[Example]] = []
    for row in sorted(rows, key=lambda r: len(r[0])):
        if not parts or len(row[0]) > MAX_LENGTH_RATIO * len(parts[-1][0][0]):
            parts.append([])
        parts[-1].append(row)
    return parts


def pack_rows(examples: list[Example], length: int) -> list[Example]:
    """Whole examples laid end to end into rows of at most `length` tokens (first fit,
    longest first); an example longer than `length` gets a row of its own.

    The target between two examples (the next one's first token) is masked out of the loss.
    """
    rows: list[Example] = []
    for ids, mask in sorted(examples, key=lambda e: -len(e[0])):
        for i, (row_ids, row_mask) in enumerate(rows):
            if len(row_ids) + len(ids) <= length:
                rows[i] = (row_ids + ids, row_mask + [0] + mask)
                break
        else:
            rows.append((list(ids), list(mask)))
    return rows


def pretrain_batch(task, tokenizer: CharTokenizer, rng: random.Random, cfg: Config, step: int):
    """One step of synthetic solutions as right-padded micro-batches: a list of (input ids
    (b, T), loss mask (b, T-1)) pairs; the mask is 1 on completion tokens only.

    By default answer-only examples (short) and traces (long) are padded each on their own
    (padding one batch to the longest trace wasted ~45% of the compute), and a kind whose
    lengths vary widely is split further (`by_length`). With
    `pretrain.pack_length` > 0 all examples are packed into rows of that many tokens and run
    as one micro-batch; a packed example attends to the examples before it in its row.
    """
    examples = solution_examples(task, tokenizer, rng, cfg, step)
    pack = cfg.pretrain.pack_length
    if pack > 0:
        return [pad_rows(pack_rows([e for _, e in examples], pack), tokenizer.pad_id)]
    batches = []
    for think in (False, True):
        rows = [e for thinks, e in examples if thinks == think]
        if rows:
            batches += [pad_rows(part, tokenizer.pad_id) for part in by_length(rows)]
    return batches


def next_token_step(
    model: Transformer,
    optimizer: torch.optim.Optimizer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    grad_clip: float,
    cfg: Config,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One optimizer step of next-token loss (mean over the masked targets of all batches).

    Returns the loss, the gradient norm and whether the update was applied: a step whose loss
    or gradient is not finite leaves the weights and the optimizer state as they were.
    """
    device = next(model.parameters()).device
    num_targets = sum(mask.sum() for _, mask in batches)
    optimizer.zero_grad(set_to_none=True)
    loss = torch.zeros((), device=device)
    for ids, mask in batches:
        # Right padding needs no attention mask: causal attention never looks ahead.
        with autocast(cfg, model):
            logits = model(ids[:, :-1])  # (b, T-1, V), float32
        losses = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
        part = (losses * mask.flatten()).sum() / num_targets
        part.backward()
        loss += part.detach()
    set_lr(optimizer, lr)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf"))
    applied = bool(torch.isfinite(loss) and torch.isfinite(grad_norm))
    if applied:
        optimizer.step()
    return loss, grad_norm, applied


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
    first, bad_in_row, total_tokens = 1, 0, 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        rng.setstate(resume["rng"])
        torch.set_rng_state(resume["torch_rng"])
        first, bad_in_row = resume["step"] + 1, resume["bad_in_row"]
        total_tokens = resume.get("tokens", 0)  # (checkpoints of older versions lack it)
    model.train()
    tokens, skipped, t_start = 0, 0, time.perf_counter()
    with progress_bar("pretrain", p.steps, done=first - 1) as advance:
        for step in range(first, p.steps + 1):
            batches = [(ids.to(device), mask.to(device))
                       for ids, mask in pretrain_batch(task, tokenizer, rng, cfg, step)]  # fmt: skip
            lr = learning_rate(p, step)
            loss, grad_norm, applied = next_token_step(model, optimizer, batches, lr,
                                                       p.grad_clip, cfg)  # fmt: skip
            if applied:
                bad_in_row = 0
            else:  # skipped: the weights and the optimizer state stay as they were
                skipped, bad_in_row = skipped + 1, bad_in_row + 1
                too_many_bad_steps(
                    cfg.max_bad_steps, "pretrain", step, bad_in_row, checkpointer.last, cfg.run_dir
                )

            num_tokens = sum(int((ids != tokenizer.pad_id).sum()) for ids, _ in batches)
            tokens, total_tokens = tokens + num_tokens, total_tokens + num_tokens
            if step % 25 == 0 or step == p.steps:
                elapsed = time.perf_counter() - t_start
                logger.log("pretrain", step, {"loss": loss.item(), "lr": lr, "grad_norm": grad_norm.item(),
                                              "skipped_updates": skipped, "tokens": total_tokens,
                                              "tokens_per_second": tokens / elapsed})  # fmt: skip
            advance(f"loss {loss.item():.3f}")

            stop = should_stop()
            if stop or checkpointer.due(step, p.steps):
                checkpointer.save("pretrain", step, model, {
                    "phase": "pretrain", "step": step, "optimizer": optimizer.state_dict(),
                    "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                    "bad_in_row": bad_in_row, "tokens": total_tokens,
                })  # fmt: skip
            if stop and step < p.steps:
                raise StopRequested(f"pretraining step {step}", str(checkpointer.run_dir))
