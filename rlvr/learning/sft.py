"""Supervised fine-tuning: next-token training on responses, the prompt only conditioning.

An SFT phase learns from examples of (prompt token ids, response token ids): read from a
JSONL or Parquet file (`[[phases]] kind = "sft"`, `sft.data`), or the verified traces that a
rejection-sampling round or a teacher produced (rlvr/iterate.py). The loss is the token mean
of the cross-entropy over every response token of a step (`sft_loss` in
rlvr/learning/algorithms.py); prompt tokens and padding count for nothing.

    rlvr train recipes/smoke.toml --phases '[{kind = "sft", sft = {data = "train.jsonl"}}]'

A data row is either {"prompt": ..., "response": ...} (the response is the text from <think>
on, as the model writes it) or {"messages": [{"role": "user", ...}, {"role": "assistant",
...}]}: the last message is the assistant's response, the ones before it the prompt, written
through the tokenizer's prompt format (a Hugging Face checkpoint's chat template). The run's
system prompt is used when the messages bring none. An end-of-sequence token follows every
response, so the model learns to stop.

Batches: a step takes `sft.batch_size` examples from a seeded shuffle of the data (epoch after
epoch), so step s is the same examples however a run got there and a resumed run needs no data
position. Rows are right-padded to the longest example, or with `sft.packing` several examples
share a row of `sft.max_length` tokens (first-fit decreasing), each with its own positions and
attention that does not cross into its neighbours: the same loss, fewer padded tokens. Linear
warmup, then a constant learning rate; a step with a NaN or infinite loss or gradient is
skipped and counted, like every rlvr phase.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rlvr.checkpoint import Checkpointer
from rlvr.config import Config, SFTConfig
from rlvr.device import autocast
from rlvr.errors import ConfigError, StopRequested
from rlvr.learning.algorithms import sft_loss
from rlvr.learning.updates import finite_update, make_optimizer, set_lr, too_many_bad_steps
from rlvr.model import Transformer
from rlvr.report import RunLogger, progress_bar


@dataclass(frozen=True)
class Example:
    """One SFT example as token ids."""

    prompt_ids: list[int]
    response_ids: list[int]
    """The response, ending with the token that stops the model."""


# ----------------------------------------------------------------------------- data


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a JSONL (one object per line) or Parquet file, as dicts.

    Raises ConfigError naming the file (and line) for a missing file, a line that is not a
    JSON object, or an empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"SFT data file {path} does not exist; set sft.data to a JSONL or Parquet file.")  # fmt: skip
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ConfigError(
                f"Reading {path} needs pyarrow: `pip install pyarrow` (or use JSONL)."
            ) from e
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises its own error types for a damaged file
            raise ConfigError(f"{path} is not a readable Parquet file ({e}).") from e
    else:
        rows = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}:{number} is not JSON ({e.msg}); fix or remove the line.") from e  # fmt: skip
                if not isinstance(row, dict):
                    raise ConfigError(f"{path}:{number} is not a JSON object; write one object per line.")  # fmt: skip
                rows.append(row)
    if not rows:
        raise ConfigError(f"{path} holds no examples; add prompt/response rows.")
    return rows


def split_messages(messages, where: str) -> tuple[list[dict], str]:
    """(the prompt's messages, the assistant's response) of a chat; ConfigError if malformed."""
    ok = (
        isinstance(messages, list)
        and len(messages) >= 2
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
    )
    if not ok or messages[-1].get("role") != "assistant":
        raise ConfigError(
            f"{where}: messages must be a list of {{role, content}} objects ending with the "
            "assistant's response (and one user message before it)."
        )
    return messages[:-1], messages[-1]["content"]


def prompt_from_messages(tokenizer, messages: list[dict], system_prompt: str, where: str) -> str:
    """The prompt text of a chat's messages: the tokenizer's format for one (system and) user
    message; any other conversation through a Hugging Face chat template."""
    roles = [m.get("role") for m in messages]
    if roles in (["user"], ["system", "user"]):
        system = messages[0]["content"] if roles[0] == "system" else system_prompt
        return tokenizer.format_prompt(messages[-1]["content"], system or None)
    hf = getattr(tokenizer, "hf", None)
    if hf is None or getattr(hf, "chat_template", None) is None:
        raise ConfigError(
            f"{where}: a conversation of {roles} needs a chat template; rlvr's character "
            "tokenizer takes one user message (write prompt/response rows instead)."
        )
    return hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def load_examples(
    path: str | Path, cfg: SFTConfig, tokenizer, system_prompt: str = "", max_positions: int = 0
) -> list[Example]:
    """The examples of an SFT data file, tokenized; every problem is a ConfigError naming
    the file and line, raised before any training."""
    rows = read_rows(path)
    stop = tokenizer.eos_id
    examples = []
    for number, row in enumerate(rows, start=1):
        where = f"{path}:{number}" if Path(path).suffix != ".parquet" else f"{path} row {number}"
        try:
            if cfg.prompt_field in row or cfg.response_field in row:
                prompt, response = row.get(cfg.prompt_field), row.get(cfg.response_field)
                if not (isinstance(prompt, str) and isinstance(response, str)):
                    raise ConfigError(
                        f"{where} needs text fields {cfg.prompt_field!r} and "
                        f"{cfg.response_field!r} (set sft.prompt_field / sft.response_field)."
                    )
                prompt_text = tokenizer.format_prompt(prompt, system_prompt or None)
            elif cfg.messages_field in row:
                messages, response = split_messages(row[cfg.messages_field], where)
                prompt_text = prompt_from_messages(tokenizer, messages, system_prompt, where)
            else:
                raise ConfigError(
                    f"{where} has neither {cfg.prompt_field!r}/{cfg.response_field!r} nor "
                    f"{cfg.messages_field!r} (its keys: {', '.join(sorted(row)) or 'none'}); "
                    "rename the fields or set sft.prompt_field, sft.response_field or "
                    "sft.messages_field."
                )
            example = Example(tokenizer.encode(prompt_text), tokenizer.encode(response) + [stop])
        except ValueError as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{where} cannot be tokenized ({e}).") from e
        length = len(example.prompt_ids) + len(example.response_ids)
        limit = min(cfg.max_length, max_positions or cfg.max_length)
        if length > limit:
            raise ConfigError(
                f"{where} is {length} tokens long, more than sft.max_length / the model's "
                f"length ({limit}); shorten it or raise sft.max_length."
            )
        examples.append(example)
    return examples


# ----------------------------------------------------------------------------- batches


def num_steps(cfg: SFTConfig, num_examples: int) -> int:
    """The phase's optimizer steps: sft.steps, or enough for sft.epochs passes."""
    return cfg.steps or max(1, math.ceil(cfg.epochs * num_examples / cfg.batch_size))


def step_examples(num_examples: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of step `step`'s examples (1-based steps): a fresh seeded shuffle per epoch,
    consumed in order, so any step is known without replaying the earlier ones."""
    out: list[int] = []
    start = (step - 1) * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), num_examples)
        order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))  # fmt: skip
        out += order[offset : offset + batch_size - len(out)].tolist()
    return out


def make_sft_batch(
    examples: list[Example], pad_id: int, packing: bool = False, max_length: int = 0
) -> dict[str, torch.Tensor]:
    """Rows of input ids (B, L) and the (B, L-1) mask of positions that predict a response
    token; with packing, several examples per row of at most max_length tokens and their
    document ids (B, L), -1 on padding.

    Packing is first-fit decreasing: the longest example first, each into the first row
    with room. An example's last token never predicts the next example's first: that
    position's mask is 0.
    """
    rows: list[list[Example]] = []
    if packing:
        room: list[int] = []
        for ex in sorted(examples, key=lambda e: -(len(e.prompt_ids) + len(e.response_ids))):
            size = len(ex.prompt_ids) + len(ex.response_ids)
            slot = next((i for i, free in enumerate(room) if free >= size), None)
            if slot is None:
                rows.append([ex])
                room.append(max_length - size)
            else:
                rows[slot].append(ex)
                room[slot] -= size
    else:
        rows = [[ex] for ex in examples]
    width = max(sum(len(e.prompt_ids) + len(e.response_ids) for e in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets_mask = torch.zeros((len(rows), width))  # position t predicts token t + 1
    document_ids = torch.full((len(rows), width), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for d, ex in enumerate(row):
            ids = ex.prompt_ids + ex.response_ids
            input_ids[r, at : at + len(ids)] = torch.tensor(ids)
            document_ids[r, at : at + len(ids)] = d
            # positions prompt_len - 1 .. len - 2 predict the response tokens
            targets_mask[r, at + len(ex.prompt_ids) - 1 : at + len(ids) - 1] = 1.0
            at += len(ids)
    batch = {"input_ids": input_ids, "mask": targets_mask[:, :-1]}
    if packing:
        batch["document_ids"] = document_ids
    return batch


# ----------------------------------------------------------------------------- the phase


def sft(
    model: torch.nn.Module,
    examples: list[Example],
    pad_id: int,
    cfg: Config,
    logger: RunLogger,
    checkpointer: Checkpointer,
    should_stop: Callable[[], bool],
    resume: dict | None = None,
    phase: str = "sft",
) -> float:
    """Fine-tune `model` on `examples` for the phase's steps; returns the mean seconds per
    step. `phase` names the checkpoints and metrics ("sft", "rsft", "distill")."""
    s = cfg.sft
    if s.packing and not isinstance(model, Transformer):
        raise ConfigError(
            "sft.packing needs rlvr's own model (its attention keeps packed examples apart); "
            "this checkpoint runs through transformers: set sft.packing = false."
        )
    if not examples:
        raise ConfigError(f"The {phase} phase has no examples to train on.")
    device = next(model.parameters()).device
    steps = num_steps(s, len(examples))
    optimizer = make_optimizer(model, s.lr, s.weight_decay)
    first, bad_in_row, skipped = 1, 0, 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        torch.set_rng_state(resume["torch_rng"])
        first, bad_in_row, skipped = resume["step"] + 1, resume["bad_in_row"], resume["skipped"]
    model.train()
    seconds: list[float] = []
    with progress_bar(phase, steps, done=first - 1) as advance:
        for step in range(first, steps + 1):
            t0 = time.perf_counter()
            chosen = [examples[i] for i in step_examples(len(examples), s.batch_size, step, cfg.seed)]  # fmt: skip
            batch = make_sft_batch(chosen, pad_id, s.packing, s.max_length)
            batch = {key: value.to(device) for key, value in batch.items()}
            ids = batch["input_ids"]
            with autocast(cfg, model):
                if s.packing:
                    logits = model(ids[:, :-1], document_ids=batch["document_ids"][:, :-1])
                else:  # right padding needs no mask: causal attention never looks ahead
                    logits = model(ids[:, :-1])  # (B, L-1, V)
            loss, stats = sft_loss(logits, ids[:, 1:], batch["mask"])
            set_lr(optimizer, s.lr * min(1.0, step / max(1, s.warmup_steps)))
            grad_norm = finite_update(loss, model, optimizer, s.grad_clip)
            if grad_norm is None:  # skipped: the weights and the optimizer state are unchanged
                skipped, bad_in_row = skipped + 1, bad_in_row + 1
                too_many_bad_steps(cfg.max_bad_steps, phase, step, bad_in_row,
                                   checkpointer.last, cfg.run_dir)  # fmt: skip
            else:
                bad_in_row = 0
            seconds.append(time.perf_counter() - t0)
            tokens = int((batch["document_ids"] >= 0).sum()) if s.packing else sum(
                len(e.prompt_ids) + len(e.response_ids) for e in chosen)  # fmt: skip
            logger.log(phase, step, {
                "loss": loss.item(), **stats, "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": grad_norm.item() if grad_norm is not None else math.nan,
                "skipped_updates": skipped, "examples": len(chosen),
                "padded_fraction": 1 - tokens / ids.numel(),
                "step_seconds": seconds[-1], "tokens_per_second": tokens / seconds[-1],
            })  # fmt: skip
            advance(f"loss {loss.item():.3f}")

            stop = should_stop()
            if stop or checkpointer.due(step, steps):
                checkpointer.save(phase, step, model, {
                    "phase": phase, "step": step, "optimizer": optimizer.state_dict(),
                    "torch_rng": torch.get_rng_state(), "bad_in_row": bad_in_row,
                    "skipped": skipped,
                })  # fmt: skip
            if stop and step < steps:
                raise StopRequested(f"{phase} step {step}", str(checkpointer.run_dir))
    steady = seconds[1:] or seconds
    return sum(steady) / max(1, len(steady))
