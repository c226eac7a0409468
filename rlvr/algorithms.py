"""The math of RLVR: group advantages, token log-probs, KL estimators and the policy loss.

Pure functions of tensors: no I/O, no state, no model. Each function names the paper it
comes from and writes out its formula, so a reader can check the code against the paper.

Shapes used below:
    N  number of samples in a batch (= num_prompts * group_size)
    B  batch of sequences, T tokens per sequence, V vocabulary size

Run the checks with `pytest tests/test_algorithms.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

# exp() of a log-ratio beyond this is treated as this: exp(20) ~ 5e8 is already far past any
# clip range, and exp(89) overflows float32. Clamping keeps a stale or garbage token from
# turning the whole batch into inf/NaN.
MAX_LOG_RATIO = 20.0


def group_advantages(
    rewards: Tensor, group_size: int, scale_by_std: bool = True, eps: float = 1e-4
) -> Tensor:
    """Group-relative advantages: each sample is compared with the others for its prompt.

    GRPO (Shao et al. 2024, "DeepSeekMath", arXiv:2402.03300), outcome supervision:

        A_i = (r_i - mean(r_g)) / (std(r_g) + eps)

    where g is the group of `group_size` samples drawn for the same prompt. `std` is the
    unbiased sample std (divides by group_size - 1; torch's default and what TRL uses).
    With `scale_by_std=False` this is Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like
    Training", arXiv:2503.20783): A_i = r_i - mean(r_g), which removes the bias towards
    groups with small reward spread (too-easy or too-hard prompts).

    A group whose rewards are all equal (including a group of one) gets exactly zero
    advantage: it carries no learning signal.

    Args:
        rewards: (N,) rewards, groups contiguous: samples [k*group_size, (k+1)*group_size)
            belong to prompt k.
        group_size: samples per prompt.
        scale_by_std: divide by the group std (GRPO) or not (Dr. GRPO).
        eps: added to the std so a near-constant group does not blow up.

    Returns:
        (N,) advantages, float.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}.")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"group_advantages: {rewards.numel()} rewards do not split into groups of "
            f"{group_size}; the batch must hold group_size samples for every prompt."
        )
    if not rewards.is_floating_point():
        rewards = rewards.float()
    grouped = rewards.view(-1, group_size)  # (G, group_size)
    mean = grouped.mean(dim=1, keepdim=True)  # (G, 1)
    advantages = grouped - mean  # (G, group_size)
    if scale_by_std and group_size > 1:
        std = grouped.std(dim=1, keepdim=True)  # (G, 1), unbiased
        advantages = advantages / (std + eps)
    # mean() of equal floats need not return that float exactly (0.1 * 3 / 3 != 0.1), so
    # constant groups are zeroed explicitly rather than trusted to cancel.
    constant = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)  # (G, 1)
    advantages = torch.where(constant, torch.zeros_like(advantages), advantages)
    return advantages.view(-1)  # (N,)


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-probability of each chosen token under softmax(logits / temperature).

        log p(t) = z_t - logsumexp(z),   z = logits / temperature

    The same temperature as sampling must be used, or the learner's probabilities will not
    match the sampler's (importance ratios drift from 1 for no reason).

    Memory: never materialises the full (B, T, V) log_softmax. float32/float64 logits go
    through one logsumexp; lower-precision logits (bf16/fp16) are upcast to float32 one
    sequence at a time, so the float32 copy is (T, V), not (B, T, V).

    Args:
        logits: (B, T, V) logits; position t scores tokens[:, t].
        tokens: (B, T) token ids.
        temperature: sampling temperature, > 0.

    Returns:
        (B, T) float32 (or float64) log-probabilities.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} disagree on (B, T)."
        )
    index = tokens.long().unsqueeze(-1)  # (B, T, 1)
    if logits.dtype in (torch.float32, torch.float64):
        z = logits / temperature if temperature != 1.0 else logits  # (B, T, V)
        picked = z.gather(-1, index).squeeze(-1)  # (B, T)
        return picked - torch.logsumexp(z, dim=-1)  # (B, T)
    rows = []
    for row_logits, row_index in zip(logits, index):  # (T, V), (T, 1)
        z = row_logits.float() / temperature  # (T, V) float32
        rows.append(z.gather(-1, row_index).squeeze(-1) - torch.logsumexp(z, dim=-1))
    return torch.stack(rows)  # (B, T)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the next-token distribution at every position, in nats.

        H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v,   p = softmax(z)

    Computed in float32. Useful as a diagnostic: entropy collapsing to ~0 early in RL means
    the policy stopped exploring (DAPO, Yu et al. 2025, arXiv:2503.14476, section 3.1).

    Args:
        logits: (B, T, V).

    Returns:
        (B, T) entropies.
    """
    z = logits.float()  # (B, T, V)
    p = torch.softmax(z, dim=-1)  # (B, T, V)
    return torch.logsumexp(z, dim=-1) - (p * z).sum(dim=-1)  # (B, T)


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || ref) from tokens sampled from pi.

    Schulman 2020, "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html),
    the estimator GRPO uses (Shao et al. 2024, eq. 4):

        k3 = exp(ref - logp) - (ref - logp) - 1

    Unbiased for KL(pi || ref), and >= 0 for every token (e^x >= 1 + x), so it never
    rewards moving away from the reference. Its gradient w.r.t. logp is 1 - exp(ref - logp).
    The log-ratio is clamped to [-MAX_LOG_RATIO, MAX_LOG_RATIO] so a token the reference
    finds near-impossible gives a large but finite value (gradient zero beyond the clamp).

    Args:
        logprobs: (B, T) log pi(token) under the current policy.
        ref_logprobs: (B, T) log ref(token) under the reference policy.

    Returns:
        (B, T) non-negative estimates.
    """
    log_ratio = (ref_logprobs - logprobs).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # (B, T)
    return torch.exp(log_ratio) - log_ratio - 1.0


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over positions where mask is 1: sum(x * mask) / max(sum(mask), 1).

    A fully masked slice gives 0, not NaN. Values at masked positions never reach the
    result, not even as NaN or inf.

    Args:
        x: any shape.
        mask: same shape as x, 0/1 (bool or numeric).
        dim: reduce over this dimension, or over everything when None.
    """
    valid = mask.bool()
    total = torch.where(valid, x, torch.zeros_like(x))
    count = valid.to(x.dtype if x.is_floating_point() else torch.float32)
    if dim is None:
        return total.sum() / count.sum().clamp(min=1)
    return total.sum(dim) / count.sum(dim).clamp(min=1)


def clipped_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    epsilon_low: float,
    epsilon_high: float,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with asymmetric clipping and an optional KL penalty.

    PPO (Schulman et al. 2017, arXiv:1707.06347) with DAPO's clip-higher and token-level
    aggregation (Yu et al. 2025, arXiv:2503.14476), plus GRPO's k3 KL term (Shao et al. 2024):

        ratio_t    = exp(logp_t - old_logp_t)
        loss_t     = -min(ratio_t * A, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A)
                     + beta * k3_t
        loss       = sum_t(loss_t * mask_t) / sum_t(mask_t)      (over the whole batch)

    Token-level aggregation weighs every generated token equally, so long answers are not
    down-weighted per token as with GRPO's per-sequence mean. A larger eps_high lets
    unlikely tokens with positive advantage grow (against entropy collapse). The KL term is
    added only when beta > 0; it needs ref_logprobs then.

    The log-ratio is clamped to [-MAX_LOG_RATIO, MAX_LOG_RATIO] before exp() (numeric
    safety; far outside any clip range, so the loss is unchanged for sane inputs).

    Args:
        logprobs: (B, T) log pi_theta(token), with gradient.
        old_logprobs: (B, T) log pi_old(token) from the policy that sampled (no gradient).
        advantages: (B,) one advantage per sequence, shared by its tokens.
        mask: (B, T) 1 on completion tokens that count, 0 on prompt/padding.
        epsilon_low: lower clip, ratio floor is 1 - epsilon_low (e.g. 0.2).
        epsilon_high: upper clip, ratio ceiling is 1 + epsilon_high (e.g. 0.28 in DAPO).
        ref_logprobs: (B, T) log ref(token), or None.
        beta: KL coefficient.

    Returns:
        loss: scalar to minimise.
        stats: detached scalars. policy_loss (the clipped surrogate without KL),
            clip_fraction (share of valid tokens where the clipped branch is the active one,
            i.e. their gradient is zero), ratio_mean, and kl (mean k3) when ref is given.
    """
    if advantages.dim() != 1 or advantages.shape[0] != logprobs.shape[0]:
        raise ValueError(
            f"advantages must be (B,) = ({logprobs.shape[0]},), got {tuple(advantages.shape)}."
        )
    if beta > 0 and ref_logprobs is None:
        raise ValueError("clipped_policy_loss: beta > 0 needs ref_logprobs (or set beta = 0).")
    log_ratio = (logprobs - old_logprobs.detach()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)  # (B, T)
    adv = advantages.detach().unsqueeze(-1).to(ratio.dtype)  # (B, 1)
    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * ratio.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)  # (B, T)
    # max of the negated terms == -min(ratio * A, clip(ratio) * A). Where the clipped term
    # is strictly larger it is the one selected, and it is constant in logp: zero gradient.
    per_token = torch.maximum(unclipped, clipped)  # (B, T)
    is_clipped = (clipped > unclipped).to(ratio.dtype)  # (B, T)

    policy_loss = masked_mean(per_token, mask)
    loss = policy_loss
    stats: dict[str, Tensor] = {
        "policy_loss": policy_loss.detach(),
        "clip_fraction": masked_mean(is_clipped, mask).detach(),
        "ratio_mean": masked_mean(ratio.detach(), mask),
    }
    if ref_logprobs is not None:
        kl = kl_k3(logprobs, ref_logprobs.detach())  # (B, T)
        kl_mean = masked_mean(kl, mask)
        stats["kl"] = kl_mean.detach()
        if beta > 0:
            loss = policy_loss + beta * kl_mean
    return loss, stats
