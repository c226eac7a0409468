"""Online DPO on verifier-labelled pairs: sample -> verify -> pair -> update, step after step.

    rlvr train recipes/demo.toml --phases '[{kind = "dpo", dpo = {steps = 30}}]'

Each step samples `grpo.group_size` completions of `grpo.num_prompts` problems with the
current policy (the GRPO sampler and its grpo.* sampling keys), lets the verifier grade
them, and pairs a correct completion (chosen) with a wrong one (rejected) of the same problem,
at most `dpo.pairs_per_problem` pairs per problem (a problem whose samples are all right or
all wrong gives none). The policy then takes `dpo.num_iterations` optimizer steps on the DPO
loss of those pairs (Rafailov et al. 2023; `dpo_loss` in rlvr/learning/algorithms.py) against
a frozen reference: the policy the phase started from, or, with `dpo.ref_update_every`, the
policy of a few steps ago (iterative DPO: Xu et al. 2023, arXiv:2312.16682; Pang et al. 2024,
arXiv:2404.19733). Because the pairs are sampled from the policy being trained at every
step, this is the online variant (Guo et al. 2024, "Direct Language Model Alignment from
Online AI Feedback", arXiv:2402.04792) with a verifier as the judge.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch

from rlvr.checkpoint import Checkpointer
from rlvr.config import Config
from rlvr.device import autocast
from rlvr.errors import StopRequested
from rlvr.learning.algorithms import dpo_loss, sequence_logprob_sums
from rlvr.learning.learner import make_batch, sequence_logprobs
from rlvr.learning.updates import finite_update, make_optimizer, set_lr, too_many_bad_steps
from rlvr.report import RunLogger, progress_bar
from rlvr.sampling.rollout import Episode
from rlvr.sampling.sampler import Sampler


def verified_pairs(
    episodes: list[Episode], group_size: int, pairs_per_problem: int
) -> list[tuple[Episode, Episode]]:
    """(chosen, rejected) pairs: a verified-correct and a not-correct completion of the same
    problem, in sampling order, at most pairs_per_problem per group of group_size."""
    pairs = []
    for i in range(0, len(episodes), group_size):
        group = episodes[i : i + group_size]
        correct = [ep for ep in group if ep.verdict.status == "correct"]
        wrong = [ep for ep in group if ep.verdict.status != "correct"]
        pairs += list(zip(correct, wrong))[:pairs_per_problem]
    return pairs


def pair_logprobs(model: torch.nn.Module, batch: dict, temperature: float) -> torch.Tensor:
    """(2P,) log pi of each response of the batch (chosen rows first, then rejected)."""
    logprobs, _ = sequence_logprobs(model, batch, temperature)
    return sequence_logprob_sums(logprobs, batch["completion_mask"])


def dpo(
    policy: torch.nn.Module,
    tokenizer,
    task,
    scorer,
    cfg: Config,
    logger: RunLogger,
    checkpointer: Checkpointer,
    should_stop: Callable[[], bool],
    resume: dict | None = None,
) -> float:
    """Online DPO for dpo.steps steps; returns the mean seconds per step."""
    d, g = cfg.dpo, cfg.grpo
    device = next(policy.parameters()).device
    sampler = Sampler(policy, tokenizer, scorer, task, cfg)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    optimizer = make_optimizer(policy, d.lr, d.weight_decay)
    first, bad_in_row, skipped = 1, 0, 0
    if resume is not None:
        sampler.load_state_dict(resume)
        reference.load_state_dict(resume["reference"])
        optimizer.load_state_dict(resume["optimizer"])
        torch.set_rng_state(resume["torch_rng"])
        first, bad_in_row, skipped = resume["step"] + 1, resume["bad_in_row"], resume["skipped"]
    seconds: list[float] = []
    with progress_bar("dpo", d.steps, done=first - 1) as advance:
        for step in range(first, d.steps + 1):
            t0 = time.perf_counter()
            rollouts = sampler.rollouts(step)
            sampled = rollouts.sampled
            pairs = verified_pairs(rollouts.episodes, g.group_size, d.pairs_per_problem)
            stats: dict[str, list[float]] = {}
            if pairs:
                # chosen rows first, then rejected: one padded batch, one forward per model
                batch = make_batch([c for c, _ in pairs] + [r for _, r in pairs], tokenizer.pad_id)
                batch = {key: value.to(device) for key, value in batch.items()}
                with torch.no_grad(), autocast(cfg, reference):
                    ref = pair_logprobs(reference, batch, g.temperature)  # (2P,)
                policy.train()
                set_lr(optimizer, d.lr * min(1.0, step / max(1, d.warmup_steps)))
                for _ in range(d.num_iterations):
                    with autocast(cfg, policy):
                        logps = pair_logprobs(policy, batch, g.temperature)  # (2P,)
                    n = len(pairs)
                    loss, loss_stats = dpo_loss(logps[:n], logps[n:], ref[:n], ref[n:], d.beta)
                    grad_norm = finite_update(loss, policy, optimizer, d.grad_clip)
                    if grad_norm is None:
                        skipped += 1
                        continue
                    for key, value in {
                        "loss": loss.detach(),
                        "grad_norm": grad_norm,
                        **loss_stats,
                    }.items():
                        stats.setdefault(key, []).append(float(value))
            all_skipped = bool(pairs) and not stats
            bad_in_row = bad_in_row + 1 if all_skipped else 0
            too_many_bad_steps(cfg.max_bad_steps, "DPO", step, bad_in_row, checkpointer.last,
                               cfg.run_dir)  # fmt: skip
            if d.ref_update_every and step % d.ref_update_every == 0:
                reference.load_state_dict(policy.state_dict())
            sampler.publish(policy, version=step)
            seconds.append(time.perf_counter() - t0)

            n = len(sampled)
            num_tokens = sum(len(ep.completion_ids) for ep in sampled)
            metrics = {
                "reward": sum(ep.reward for ep in sampled) / n,
                "accuracy": sum(ep.verdict.status == "correct" for ep in sampled) / n,
                "think_rate": sum(ep.thought for ep in sampled) / n,
                "response_length": num_tokens / n, "sampled_tokens": num_tokens,
                "pairs": len(pairs), "skipped_updates": skipped,
                **{key: sum(v) / len(v) for key, v in stats.items()},
                "lr": optimizer.param_groups[0]["lr"], "policy_version": step,
                "step_seconds": seconds[-1], "sample_seconds": rollouts.seconds,
            }  # fmt: skip
            logger.log("dpo", step, metrics)
            advance(f"acc {metrics['accuracy']:.2f}  pairs {len(pairs)}")

            stop = should_stop()
            if stop or checkpointer.due(step, d.steps):
                checkpointer.save("dpo", step, policy, {
                    "phase": "dpo", "step": step, "optimizer": optimizer.state_dict(),
                    "reference": reference.state_dict(), **sampler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "bad_in_row": bad_in_row,
                    "skipped": skipped,
                })  # fmt: skip
            if stop and step < d.steps:
                raise StopRequested(f"DPO step {step}", str(checkpointer.run_dir))
    steady = seconds[1:] or seconds
    return sum(steady) / max(1, len(steady))
