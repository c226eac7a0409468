"""Optimizer steps that survive bad numbers: AdamW groups, the learning rate, and updates
whose NaN or infinite loss or gradient is skipped (and, too many in a row, stop the run)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rlvr.errors import TrainingError

if TYPE_CHECKING:
    from rlvr.learning.distributed import DataParallel


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


def finite_update(
    loss: torch.Tensor, model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float,
    dp: DataParallel | None = None,
) -> torch.Tensor | None:  # fmt: skip
    """Backpropagate and step, unless the loss or the gradient is NaN or infinite.

    Returns the gradient norm, or None when the update was skipped (the weights and the
    optimizer state are untouched then). Data-parallel (`dp`): `loss` is this process's share;
    the shares' sum decides the skip and the gradients are summed before the clip, so every
    process takes the same decision and the same step.
    """
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss if dp is None else dp.sum(loss.detach())):
        return None
    if dp is None:
        loss.backward()
    else:
        dp.backward(loss, model)  # gradients summed over the processes
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf"))
    if dp is not None:
        grad_norm = dp.full(grad_norm)
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    return grad_norm


def too_many_bad_steps(
    max_bad_steps: int, phase: str, step: int, bad_in_row: int, last: Path | None, run_dir: str
) -> None:
    """Raise TrainingError (the run stops, naming the last good checkpoint) once `bad_in_row`
    steps in a row had a NaN or infinite loss or gradient (`max_bad_steps` 0: never)."""
    if max_bad_steps and bad_in_row >= max_bad_steps:
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise TrainingError(
            f"{phase} step {step}: the loss or gradient was NaN or infinite for {bad_in_row} "
            f"steps in a row, so the run stopped ({where}); lower the learning rate or check "
            f"the reward functions, then resume with `rlvr train --resume {run_dir or 'RUN_DIR'}`."
        )
