"""The GRPO learner role: a step's scored episodes in, one policy update out.

    learner = GRPOLearner(policy, cfg, pad_id=tokenizer.pad_id, reward_weights=scorer.weights)
    result = learner.train_step(rollouts.episodes, step)     # the policy is now version `step`

Per step: group-relative advantages of the rewards (`grpo.advantage`, `grpo.reward_combine`),
the padded batch, the reference model's logprobs once (beta > 0), optionally the importance
correction between the sampler's and the learner's logprobs (`grpo.is_level`), then
`grpo.num_iterations` passes of clipped policy-gradient updates, one optimizer step per
minibatch. The formulas and their papers are in rlvr/learning/algorithms.py.

With LoRA (`lora.rank > 0`) only the adapters train and the reference is the policy with them
turned off; otherwise the reference is a frozen copy of the starting policy.

Data-parallel (`learner.processes = N`, rlvr/learning/distributed.py): every process holds the
whole batch and takes its share of each minibatch's groups; its loss is its share of the
minibatch's loss (the same denominator as one process would use) and gradients are summed
across processes, so the update is the single-process one. Without `dp` nothing changes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from rlvr.config import Config
from rlvr.device import autocast
from rlvr.learning.algorithms import (
    combine_rewards,
    compute_advantages,
    entropy_from_logits,
    kl_k3,
    mask_truncated,
    masked_mean,
    policy_loss,
    sampler_correction,
    token_logprobs,
)
from rlvr.learning.updates import finite_update, make_optimizer, set_lr
from rlvr.lora import adapter_state, adapters_disabled, inject_lora, load_adapter_state
from rlvr.report import console

if TYPE_CHECKING:
    from rlvr.learning.distributed import DataParallel
    from rlvr.sampling.rollout import Episode


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


def episode_advantages(episodes: list[Episode], weights: dict[str, float], g) -> torch.Tensor:
    """(N,) advantages of the episodes (group-major), by grpo.advantage and reward_combine."""
    if g.reward_combine == "sum_then_normalize":
        rewards = torch.tensor([ep.reward for ep in episodes])  # (N,) the weighted sums
        return compute_advantages(rewards, g.group_size, g.advantage)
    names = list(weights)
    parts = torch.tensor([[ep.parts[name] for name in names] for ep in episodes])  # (N, R)
    return combine_rewards(parts, torch.tensor([weights[name] for name in names]),
                           g.group_size, g.advantage, mode=g.reward_combine)  # fmt: skip


@dataclass
class StepResult:
    """What one learner step did."""

    stats: dict[str, list[float]] = field(default_factory=dict)
    """Per-update values (loss, kl, clip fraction, entropy, grad_norm, ...), one per optimizer
    step; importance-correction statistics once per step."""
    updates: int = 0
    """Optimizer steps attempted (num_iterations x num_minibatches, 0 with no episodes)."""
    skipped: int = 0
    """Of those, updates skipped for a NaN or infinite loss or gradient."""


class GRPOLearner:
    """The learner role: owns the policy's optimizer, the reference model and the minibatch
    shuffle, and turns a batch of scored episodes into one policy update."""

    def __init__(
        self, policy: torch.nn.Module, cfg: Config, pad_id: int, reward_weights: dict[str, float],
        dp: DataParallel | None = None,
    ) -> None:  # fmt: skip
        g = cfg.grpo
        self.policy, self.cfg, self.pad_id = policy, cfg, pad_id
        self.dp = dp
        """This process's part of a data-parallel learner (None: the whole batch is here)."""
        self.reward_weights = reward_weights
        """The weight of each reward part by name (`Scorer.weights`), for reward_combine."""
        self.lora = cfg.lora.rank > 0
        if self.lora:  # only the adapters train; the reference is the policy with them off
            trainable = inject_lora(policy, cfg.lora)
            console.print(f"LoRA rank {cfg.lora.rank}: {trainable / 1e6:.3f}M trainable parameters")
        self.reference = None
        if g.beta > 0 and not self.lora:
            self.reference = copy.deepcopy(policy).eval().requires_grad_(False)
        if dp is not None:  # with learner.fsdp, shard both before the optimizer sees them
            dp.wrap(policy, self.reference)
        self.optimizer = make_optimizer(policy, g.lr, g.weight_decay)
        self.shuffle = torch.Generator().manual_seed(cfg.seed + 3)
        self.bad_in_row = 0
        """Steps in a row whose every update was skipped (NaN or infinite)."""

    def train_step(self, episodes: list[Episode], step: int) -> StepResult:
        """Update the policy on `episodes` (group-major, whole groups); it becomes version
        `step`. No episodes (dynamic sampling found no signal): no update."""
        g, policy = self.cfg.grpo, self.policy
        cfg, device = self.cfg, next(policy.parameters()).device
        stats: dict[str, list[float]] = {}
        updates = skipped = 0
        if episodes:
            advantages = episode_advantages(episodes, self.reward_weights, g)

            # The padded batch; the reference model's logprobs once per batch.
            batch = make_batch(episodes, self.pad_id)
            batch["advantages"] = advantages
            batch = {key: value.to(device) for key, value in batch.items()}
            if g.mask_truncated:
                truncated = torch.tensor(
                    [ep.finish_reason == "length" for ep in episodes], device=device
                )
                batch["completion_mask"] = mask_truncated(batch["completion_mask"], truncated)
            with torch.no_grad():
                if g.beta > 0:  # the frozen copy; with LoRA, the policy without adapters
                    ref_model = self.reference if self.reference is not None else policy
                    with adapters_disabled(ref_model), autocast(cfg, ref_model):
                        batch["ref_logprobs"] = self._logprobs(ref_model, batch)
                if g.is_level != "none":
                    # The learner's own logprobs become the ratio's "old" ones; the weights
                    # correct for the sampler having drawn from slightly different ones.
                    with autocast(cfg, policy):
                        learner_old = self._logprobs(policy, batch)
                    batch["is_weights"], is_stats = sampler_correction(
                        learner_old, batch["old_logprobs"], batch["completion_mask"],
                        level=g.is_level, mode=g.is_mode, cap=g.is_cap,
                    )  # fmt: skip
                    batch["old_logprobs"] = learner_old
                    for key, value in is_stats.items():
                        stats[key] = [float(value)]

            # mu passes of clipped policy-gradient updates over the batch.
            policy.train()
            set_lr(self.optimizer, g.lr * min(1.0, step / max(1, g.warmup_steps)))
            num_groups = len(episodes) // g.group_size
            for iteration in range(g.num_iterations):
                order = torch.randperm(num_groups, generator=self.shuffle)
                for group_ids in order.chunk(g.num_minibatches):
                    # one optimizer step per minibatch: dapo's "whole batch" is this one
                    minibatch_mask = batch["completion_mask"][self._rows(group_ids, device)]
                    if self.dp is not None:  # this process's groups of the minibatch
                        group_ids = self.dp.shard(group_ids)
                    rows = self._rows(group_ids, device)
                    mb = {k: v[rows] for k, v in batch.items()}
                    with autocast(cfg, policy):  # logits and logprobs come out float32
                        logprobs, logits = sequence_logprobs(policy, mb, g.temperature)
                    mask = mb["completion_mask"]
                    if iteration == 0 and g.is_level == "none":
                        # How far the sampler's policy (stale by `staleness` versions in an
                        # asynchronous run) is from the learner's, before this update.
                        mismatch = masked_mean(
                            kl_k3(mb["old_logprobs"], logprobs.detach()), mask.bool()
                        )
                        if self.dp is not None:
                            mismatch = self.dp.token_mean(mismatch, mask, minibatch_mask)
                        stats.setdefault("mismatch_kl", []).append(float(mismatch))
                    loss, loss_stats = policy_loss(
                        logprobs, mb["old_logprobs"], mb["advantages"], mask,
                        loss_type=g.loss_type, epsilon_low=g.epsilon,
                        epsilon_high=g.epsilon_high, delta=g.delta or None,
                        ref_logprobs=mb.get("ref_logprobs"), beta=g.beta,
                        max_length=g.max_new_tokens, num_tokens=minibatch_mask.sum(),
                        is_weights=mb.get("is_weights"),
                        entropy=entropy_from_logits(logits) if g.entropy_coef else None,
                        entropy_coef=g.entropy_coef,
                    )  # fmt: skip
                    if self.dp is not None:  # this process's share of the minibatch loss
                        share = self.dp.loss_share(g.loss_type, mask, minibatch_mask)
                        loss = loss * share
                        loss_stats["policy_loss"] = loss_stats["policy_loss"] * share
                    grad_norm = finite_update(loss, policy, self.optimizer, g.grad_clip, self.dp)
                    updates += 1
                    if grad_norm is None:
                        skipped += 1
                        continue
                    if "entropy" not in loss_stats:
                        with torch.no_grad():
                            entropy = entropy_from_logits(logits.detach())
                            loss_stats["entropy"] = (entropy * mask).sum() / mask.sum().clamp(min=1)
                    loss_stats["grad_norm"] = grad_norm
                    loss_stats["loss"] = loss.detach()
                    if self.dp is not None:  # the minibatch's values, as one process has them
                        loss_stats = self.dp.reduce_stats(loss_stats, mask, minibatch_mask)
                    for key, value in loss_stats.items():
                        stats.setdefault(key, []).append(float(value))
        self.bad_in_row = self.bad_in_row + 1 if skipped and skipped == updates else 0
        if self.reference is not None and g.ref_update_every and step % g.ref_update_every == 0:
            self.reference.load_state_dict(policy.state_dict())
        return StepResult(stats, updates, skipped)

    def _rows(self, group_ids: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The batch rows of these groups (group-major: a group's samples are adjacent)."""
        k = self.cfg.grpo.group_size
        return (group_ids[:, None] * k + torch.arange(k)).flatten().to(device)

    def _logprobs(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """(N, T-1) logprobs of the whole batch under `model`, without gradient; data-parallel,
        each process computes a slice of the rows and they are gathered."""
        if self.dp is None:
            return sequence_logprobs(model, batch, self.cfg.grpo.temperature)[0]
        return self.dp.gather_rows(
            lambda part: sequence_logprobs(model, part, self.cfg.grpo.temperature)[0], batch
        )

    def close(self) -> None:
        """Nothing to release in this process (the data-parallel learner stops its processes)."""

    def state_dict(self) -> dict:
        """What a checkpoint needs to continue the same updates (the weights are saved apart)."""
        if self.dp is not None and self.dp.fsdp:  # the shards gathered (every rank joins)
            optimizer, reference = self.dp.full_state(self.policy, self.optimizer, self.reference)
        else:
            optimizer = self.optimizer.state_dict()
            reference = self.reference.state_dict() if self.reference is not None else None
        return {
            "optimizer": optimizer,
            "shuffle": self.shuffle.get_state(),
            "bad_in_row": self.bad_in_row,
            "reference": reference,
            "lora": adapter_state(self.policy) if self.lora else None,
        }

    def load_state_dict(self, state: dict) -> None:
        if self.lora:
            load_adapter_state(self.policy, state.get("lora"))
        if self.dp is not None and self.dp.fsdp:  # each rank keeps its shards
            self.dp.load_full_state(self.policy, self.optimizer, self.reference, state)
        else:
            self.optimizer.load_state_dict(state["optimizer"])
            if self.reference is not None:
                self.reference.load_state_dict(state["reference"])
        self.shuffle.set_state(state["shuffle"])
        self.bad_in_row = state["bad_in_row"]
