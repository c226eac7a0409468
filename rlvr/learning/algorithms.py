"""The math of RLVR: advantages, token log-probs, KL estimators and the policy losses.

Pure functions of tensors: no I/O, no state, no model. Each function names the paper it
comes from and writes out its formula, so a reader can check the code against the paper.

    advantages     compute_advantages (grpo, dr_grpo, batch_std, rloo, reinforce_pp),
                   combine_rewards (several reward functions)
    length         mask_truncated (a loss mask); the overlong reward is in rlvr/verifiers/rewards.py
    tokens         token_logprobs, entropy_from_logits, kl_k3, masked_mean
    losses         policy_loss (grpo, bnpo, dr_grpo, dapo, gspo, cispo; dual clip, KL,
                   entropy bonus), clipped_policy_loss (the original token-mean loss)
    off-policy     sampler_correction (truncated / masked importance sampling between the
                   sampling engine's and the learner's log-probs)
    fine-tuning    sft_loss (next-token cross-entropy on response tokens only),
                   sequence_logprob_sums, dpo_loss (Direct Preference Optimization)

Shapes used below:
    N  number of samples in a batch (= num_prompts * group_size)
    R  number of reward functions
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

# The names compute_advantages, combine_rewards, policy_loss and sampler_correction accept
# (config validation can import these to list the choices).
ADVANTAGE_ESTIMATORS = ("grpo", "dr_grpo", "batch_std", "rloo", "reinforce_pp")
REWARD_COMBINE_MODES = ("sum_then_normalize", "normalize_then_sum", "gdpo")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "gspo", "cispo")
IS_LEVELS = ("token", "sequence")
IS_MODES = ("truncate", "mask")


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


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """REINFORCE Leave-One-Out: each sample's baseline is the mean of the *other* samples.

    RLOO (Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
    Learning from Human Feedback in LLMs", arXiv:2402.14740; Kool et al. 2019):

        A_i = r_i - 1/(k-1) * sum_{j != i} r_j  =  k/(k-1) * (r_i - mean(r_g))

    with k = group_size. The baseline does not contain r_i, so the gradient estimate is
    unbiased; it is Dr. GRPO's advantage scaled by k/(k-1). A group of one has no other
    sample to compare with and an all-equal group has nothing to learn: both give exactly 0.

    Args:
        rewards: (N,) rewards, groups contiguous (as in group_advantages).
        group_size: samples per prompt, k.

    Returns:
        (N,) advantages, float.
    """
    centred = group_advantages(rewards, group_size, scale_by_std=False)  # (N,)
    if group_size == 1:
        return centred  # all zeros: a group of one is constant
    return centred * (group_size / (group_size - 1))


def batch_std_advantages(rewards: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """Group mean as the baseline, the whole batch's reward std as the scale.

    "Tricks or Traps? A Deep Dive into RL for LLM Reasoning" (Liu et al. 2025,
    arXiv:2508.08221) recommends "group-level mean, batch-level std"; TRL calls it
    scale_rewards="batch":

        A_i = (r_i - mean(r_g)) / (std(r_1..r_N) + eps)

    std is the unbiased std of the raw rewards of all N samples. Unlike GRPO's per-group std
    it does not blow up the advantages of a group that is almost all right or all wrong, yet
    it keeps the scale of the advantages near 1 whatever the reward scale.

    An all-equal group gets exactly 0 (its numerator is zeroed before the division), whatever
    the rest of the batch holds; an all-equal batch gets 0 everywhere.
    """
    centred = group_advantages(rewards, group_size, scale_by_std=False)  # (N,)
    if centred.numel() < 2:
        return centred  # one sample: no spread, and its (constant) group gives 0
    std = rewards.to(centred.dtype).std()  # scalar, unbiased, over the whole batch
    return centred / (std + eps)


def reinforce_pp_advantages(rewards: Tensor, group_size: int, eps: float = 1e-4) -> Tensor:
    """REINFORCE++-baseline: group-mean baseline, then a z-score over the whole batch.

    REINFORCE++ (Hu 2025, "REINFORCE++: An Efficient RLHF Algorithm with Robustness to Both
    Prompt and Reward Models", arXiv:2501.03262) normalises advantages over the global batch
    instead of per prompt. This is its "REINFORCE++-baseline" variant, the one the paper uses
    with several samples per prompt and rule-based (RLVR) rewards:

        A'_i = r_i - mean(r_g)                                  group baseline
        A_i  = (A'_i - mean(A'_1..A'_N)) / (std(A'_1..A'_N) + eps)   global batch z-score

    Not implemented here: the plain REINFORCE++ variant (one sample per prompt, no group
    baseline, the KL to the reference folded into a per-token return) — use a policy loss
    with beta > 0 for the KL instead. Differences from OpenRLHF: the statistics are over the
    N sequences (one advantage each), not over tokens, so long answers do not weigh more in
    the mean and std; std is unbiased; eps is added to the std.

    mean(A') is zero in exact arithmetic (every group is centred), so in practice this is
    A' / std(A'). An all-equal group gets exactly 0 (it would get -mean(A')/std, i.e.
    rounding noise, so it is zeroed explicitly); an all-equal batch gets 0 everywhere. With
    group_size = 1 every group is constant and every advantage is 0.
    """
    centred = group_advantages(rewards, group_size, scale_by_std=False)  # (N,)
    return _batch_zscore(centred, group_size, eps)


def _batch_zscore(advantages: Tensor, group_size: int, eps: float) -> Tensor:
    """(A - mean(A)) / (std(A) + eps) over all N samples; groups whose A are all equal -> 0."""
    if advantages.numel() < 2:
        return torch.zeros_like(advantages)
    z = (advantages - advantages.mean()) / (advantages.std() + eps)  # (N,)
    grouped = advantages.view(-1, group_size)  # (G, group_size)
    constant = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)  # (G, 1)
    return torch.where(constant, torch.zeros_like(grouped), z.view(-1, group_size)).view(-1)


def compute_advantages(
    rewards: Tensor, group_size: int, estimator: str, eps: float = 1e-4
) -> Tensor:
    """One advantage per sample, by the named estimator.

        "grpo"          (r - mean_g) / (std_g + eps)            Shao et al. 2024
        "dr_grpo"       r - mean_g                              Liu et al. 2025
        "batch_std"     (r - mean_g) / (std_batch(r) + eps)     Liu et al. 2025 (Tricks or Traps)
        "rloo"          k/(k-1) * (r - mean_g)                  Ahmadian et al. 2024
        "reinforce_pp"  z-score over the batch of (r - mean_g)  Hu 2025

    See group_advantages, batch_std_advantages, rloo_advantages and reinforce_pp_advantages
    for the formulas and papers. Every estimator gives exactly 0 to a group whose rewards
    are all equal.

    Args:
        rewards: (N,) rewards, groups contiguous: samples [k*group_size, (k+1)*group_size)
            belong to prompt k.
        group_size: samples per prompt.
        estimator: one of ADVANTAGE_ESTIMATORS.
        eps: added to a std before dividing (unused by dr_grpo and rloo).

    Returns:
        (N,) advantages, float.
    """
    if estimator == "grpo":
        return group_advantages(rewards, group_size, scale_by_std=True, eps=eps)
    elif estimator == "dr_grpo":
        return group_advantages(rewards, group_size, scale_by_std=False, eps=eps)
    elif estimator == "batch_std":
        return batch_std_advantages(rewards, group_size, eps=eps)
    elif estimator == "rloo":
        return rloo_advantages(rewards, group_size)
    elif estimator == "reinforce_pp":
        return reinforce_pp_advantages(rewards, group_size, eps=eps)
    raise ValueError(
        f"unknown advantage estimator {estimator!r}; "
        f"choose one of {', '.join(ADVANTAGE_ESTIMATORS)}."
    )


def combine_rewards(
    rewards: Tensor,
    weights: Tensor,
    group_size: int,
    estimator: str,
    mode: str = "sum_then_normalize",
    eps: float = 1e-4,
) -> Tensor:
    """Advantages from several reward functions (accuracy, format, length, ...).

        "sum_then_normalize"   A = estimator(sum_j w_j r_j)             (GRPO, TRL's default)
        "normalize_then_sum"   A = sum_j w_j estimator(r_j)
        "gdpo"                 A = batch_zscore(sum_j w_j estimator(r_j))

    Summing first lets a reward with a large spread drown the others, and GRPO's std maps
    different reward combinations to the same advantages: a group of two whose sums are
    [2, 0] (one sample won both rewards) gets the same +-0.71 as one with [1, 0] (one sample
    won only the format reward). Normalising each reward within its group first keeps each
    one's contrast (+-1.41 and +-0.71). GDPO (Liu et al. 2026, "GDPO: Group reward-Decoupled
    Normalization Policy Optimization for Multi-reward RL Optimization", arXiv:2601.05242)
    is normalize_then_sum with the GRPO estimator followed by a z-score of the sum over the
    whole batch, so its scale does not grow with the number of rewards; "gdpo" applies that
    last step after whatever `estimator` is given. A group that is constant in every reward
    gets exactly 0 in all modes.

    Args:
        rewards: (N, R) one column per reward function, groups contiguous along N.
        weights: (R,) weight of each reward function.
        group_size: samples per prompt.
        estimator: one of ADVANTAGE_ESTIMATORS.
        mode: one of REWARD_COMBINE_MODES.
        eps: as in compute_advantages, and for the batch std of "gdpo".

    Returns:
        (N,) advantages, float.
    """
    if rewards.dim() != 2 or weights.dim() != 1 or weights.shape[0] != rewards.shape[1]:
        raise ValueError(
            f"combine_rewards needs rewards (N, R) and weights (R,), got "
            f"{tuple(rewards.shape)} and {tuple(weights.shape)}."
        )
    rewards = rewards if rewards.is_floating_point() else rewards.float()
    weights = weights.to(rewards.dtype)
    if mode == "sum_then_normalize":
        return compute_advantages((rewards * weights).sum(dim=1), group_size, estimator, eps)
    if mode not in ("normalize_then_sum", "gdpo"):
        raise ValueError(
            f"unknown reward combine mode {mode!r}; "
            f"choose one of {', '.join(REWARD_COMBINE_MODES)}."
        )
    per_reward = torch.stack(
        [compute_advantages(column, group_size, estimator, eps) for column in rewards.T], dim=1
    )  # (N, R)
    advantages = (per_reward * weights).sum(dim=1)  # (N,)
    if mode == "gdpo":
        advantages = _batch_zscore(advantages, group_size, eps)
    return advantages


def mask_truncated(mask: Tensor, truncated: Tensor) -> Tensor:
    """Zero the loss mask of completions cut off by the length cap (DAPO's overlong filtering).

    DAPO (Yu et al. 2025, arXiv:2503.14476, section 3.4): a truncated answer is not
    necessarily wrong, so punishing it with reward 0 is noise; its tokens are masked out of
    the loss instead. The sample still counts in its group's advantage statistics (it was
    computed before) but contributes no gradient.

    Args:
        mask: (B, T) loss mask, any dtype.
        truncated: (B,) True for completions that hit the length cap.

    Returns:
        (B, T) mask of the same dtype, all 0 on truncated rows.
    """
    if truncated.shape != mask.shape[:1]:
        raise ValueError(
            f"mask_truncated: truncated must be (B,) = ({mask.shape[0]},), "
            f"got {tuple(truncated.shape)}."
        )
    return torch.where(truncated.bool().unsqueeze(-1), torch.zeros_like(mask), mask)  # (B, T)


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


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    loss_type: str,
    epsilon_low: float,
    epsilon_high: float,
    delta: float | None = None,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    max_length: int | None = None,
    num_tokens: int | None = None,
    is_weights: Tensor | None = None,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The policy-gradient loss of one micro-batch, in the named variant.

    The PPO-style types (Schulman et al. 2017, arXiv:1707.06347) share the per-token clipped
    surrogate, with asymmetric clipping (DAPO's clip-higher, Yu et al. 2025,
    arXiv:2503.14476):

        ratio_t = exp(logp_t - old_logp_t)
        l_t     = -min(ratio_t * A, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A)

    and differ in how the l_t of a batch are averaged (|o_i| = valid tokens of sequence i):

        "grpo"     1/B' sum_i 1/|o_i| sum_t l_it   mean per sequence, then over the B'
                   sequences that have a valid token (Shao et al. 2024, arXiv:2402.03300).
                   A token of a long answer weighs less than one of a short answer.
        "bnpo"     sum_it l_it / sum_i |o_i|        token mean over this micro-batch.
        "dr_grpo"  sum_it l_it / (B * max_length)   a constant denominator, so no length
                   bias at all (Liu et al. 2025, "Understanding R1-Zero-Like Training",
                   arXiv:2503.20783). Needs max_length (the generation cap).
        "dapo"     sum_it l_it / num_tokens         token mean over the whole optimizer
                   batch (Yu et al. 2025, section 3.3): num_tokens counts the valid tokens
                   of every micro-batch the optimizer step accumulates, so the sum of the
                   micro-batch losses is exactly the batch's token mean, whatever the
                   split. num_tokens=None means this micro-batch is the whole batch (then
                   dapo == bnpo).
        "gspo"     1/B' sum_i -min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i),
                   s_i = exp(1/|o_i| sum_t (logp_it - old_logp_it)): one importance ratio
                   and one clip decision per sequence (Zheng et al. 2025, "Group Sequence
                   Policy Optimization", arXiv:2507.18071). s_i is a geometric mean, so its
                   clip range is tiny: the paper uses eps_low = 3e-4, eps_high = 4e-4.
                   With one advantage per sequence this is also GSPO-token's value and
                   gradient. A clipped sequence gets no gradient on any of its tokens.
        "cispo"    -sum_it sg(clip(ratio_it, 1 - eps_low, 1 + eps_high)) A_i logp_it / N_tok
                   (MiniMax 2025, "MiniMax-M1", arXiv:2506.13585): the ratio is clipped and
                   detached as a weight on a REINFORCE term, so every token keeps a gradient
                   (PPO drops the clipped ones). The paper effectively has no lower bound
                   (a large eps_low) and tunes eps_high. N_tok is the dapo denominator. The
                   loss value is not a surrogate objective; its gradient is what matters.

    Options, each off by default:

        delta         dual clip (Ye et al. 2019, "Mastering Complex Control in MOBA Games
                      with Deep Reinforcement Learning", arXiv:1912.09729): for A < 0,
                      l_t = min(l_t, -delta * A), so a token whose ratio has run far above 1
                      cannot push an unbounded loss (delta > 1, e.g. 3). Not for cispo, whose
                      weight is already capped at 1 + eps_high.
        is_weights    (B, T) per-token weights w_t (sampler_correction) multiplied into the
                      policy term: l_t -> w_t * l_t. For gspo the per-sequence loss is
                      multiplied by the mean of w over the sequence's valid tokens.
        beta          + beta * aggregate(k3_t), the GRPO KL penalty to ref_logprobs (kl_k3).
        entropy_coef  - entropy_coef * aggregate(H_t), an entropy bonus from the given
                      per-token entropies (with gradient if they should be trained).

    The KL and entropy terms are aggregated like the policy term (gspo: like grpo).
    The log-ratio is clamped to [-MAX_LOG_RATIO, MAX_LOG_RATIO] before exp(). Masked
    positions never reach the loss or its gradient; a fully masked micro-batch gives loss 0
    and zero gradient.

    Args:
        logprobs: (B, T) log pi_theta(token), with gradient.
        old_logprobs: (B, T) log pi_old(token) of the policy that sampled (no gradient).
        advantages: (B,) one advantage per sequence, shared by its tokens.
        mask: (B, T) 1 on completion tokens that count, 0 on prompt/padding.
        loss_type: one of LOSS_TYPES.
        epsilon_low: ratio floor is 1 - epsilon_low (0.2; gspo 3e-4).
        epsilon_high: ratio ceiling is 1 + epsilon_high (0.28 in DAPO; gspo 4e-4).
        delta: dual-clip bound for negative advantages, > 1, or None.
        ref_logprobs: (B, T) log ref(token), or None.
        beta: KL coefficient.
        max_length: the generation cap in tokens, for dr_grpo.
        num_tokens: valid tokens in the whole optimizer batch, for dapo and cispo.
        is_weights: (B, T) importance weights (no gradient), or None.
        entropy: (B, T) per-token entropies, or None.
        entropy_coef: entropy bonus coefficient; needs entropy when not 0.

    Returns:
        loss: scalar to minimise.
        stats: detached scalars. policy_loss (the policy term of loss, as aggregated),
            clip_fraction (share of valid tokens whose clip is active: the gradient is zero
            for the PPO types, the weight is clipped for cispo), ratio_mean, and
            dual_clip_fraction (if delta), kl (mean k3, if ref_logprobs), entropy (if
            given). Apart from policy_loss these are token means over this micro-batch.
    """
    _check_policy_loss_args(
        logprobs, old_logprobs, advantages, mask, loss_type, delta, ref_logprobs, beta,
        max_length, is_weights, entropy, entropy_coef,
    )  # fmt: skip
    log_ratio = (logprobs - old_logprobs.detach()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    if loss_type == "gspo":
        sequence_log_ratio = masked_mean(log_ratio, mask, dim=1)  # (B,)
        log_ratio = sequence_log_ratio.unsqueeze(-1).expand_as(log_ratio)  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    adv = advantages.detach().unsqueeze(-1).to(ratio.dtype)  # (B, 1)
    dual_clipped = None
    if loss_type == "cispo":
        weight = ratio.detach().clamp(1.0 - epsilon_low, 1.0 + epsilon_high)  # (B, T)
        per_token = -weight * adv * logprobs  # (B, T)
        is_clipped = (ratio < 1.0 - epsilon_low) | (ratio > 1.0 + epsilon_high)  # (B, T)
    else:
        unclipped = -adv * ratio  # (B, T)
        clipped = -adv * ratio.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)  # (B, T)
        # max of the negated terms == -min(ratio * A, clip(ratio) * A). Where the clipped
        # term is strictly larger it is the one selected, and it is constant in logp: zero
        # gradient.
        per_token = torch.maximum(unclipped, clipped)  # (B, T)
        is_clipped = clipped > unclipped  # (B, T)
        if delta is not None:
            # Negative advantage, ratio > delta: the loss -A * ratio would grow without bound;
            # the constant -A * delta replaces it (zero gradient).
            bound = -adv * delta  # (B, 1)
            dual_clipped = (adv < 0) & (per_token > bound)  # (B, T)
            per_token = torch.where(dual_clipped, bound.expand_as(per_token), per_token)
            is_clipped = is_clipped | dual_clipped
    if is_weights is not None:
        per_token = per_token * is_weights.detach()  # (B, T)

    policy_term = _aggregate(per_token, mask, loss_type, max_length, num_tokens)
    loss = policy_term
    stats: dict[str, Tensor] = {
        "policy_loss": policy_term.detach(),
        "clip_fraction": masked_mean(is_clipped.to(ratio.dtype), mask).detach(),
        "ratio_mean": masked_mean(ratio.detach(), mask),
    }
    if dual_clipped is not None:
        stats["dual_clip_fraction"] = masked_mean(dual_clipped.to(ratio.dtype), mask)
    if ref_logprobs is not None:
        kl = kl_k3(logprobs, ref_logprobs.detach())  # (B, T)
        stats["kl"] = masked_mean(kl.detach(), mask)
        if beta > 0:
            loss = loss + beta * _aggregate(kl, mask, loss_type, max_length, num_tokens)
    if entropy is not None:
        stats["entropy"] = masked_mean(entropy.detach(), mask)
        if entropy_coef != 0:
            bonus = _aggregate(entropy, mask, loss_type, max_length, num_tokens)
            loss = loss - entropy_coef * bonus
    return loss, stats


def _aggregate(
    per_token: Tensor, mask: Tensor, loss_type: str, max_length: int | None, num_tokens: int | None
) -> Tensor:
    """Reduce (B, T) per-token terms to the scalar of `loss_type` (see policy_loss)."""
    if loss_type in ("grpo", "gspo"):
        per_sequence = masked_mean(per_token, mask, dim=1)  # (B,)
        return masked_mean(per_sequence, mask.bool().any(dim=1))  # over sequences with tokens
    if loss_type == "bnpo" or (loss_type in ("dapo", "cispo") and num_tokens is None):
        return masked_mean(per_token, mask)
    total = torch.where(mask.bool(), per_token, torch.zeros_like(per_token)).sum()
    if loss_type == "dr_grpo":
        return total / (per_token.shape[0] * max_length)
    return total / max(num_tokens, 1)  # dapo, cispo: token mean over the optimizer batch


def _check_policy_loss_args(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    loss_type: str,
    delta: float | None,
    ref_logprobs: Tensor | None,
    beta: float,
    max_length: int | None,
    is_weights: Tensor | None,
    entropy: Tensor | None,
    entropy_coef: float,
) -> None:
    """One clear sentence for each way policy_loss can be called wrongly."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}.")
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be (B, T), got shape {tuple(logprobs.shape)}.")
    if advantages.dim() != 1 or advantages.shape[0] != logprobs.shape[0]:
        raise ValueError(
            f"advantages must be (B,) = ({logprobs.shape[0]},), got {tuple(advantages.shape)}."
        )
    named = {
        "old_logprobs": old_logprobs,
        "mask": mask,
        "ref_logprobs": ref_logprobs,
        "is_weights": is_weights,
        "entropy": entropy,
    }
    for name, tensor in named.items():
        if tensor is not None and tensor.shape != logprobs.shape:
            raise ValueError(
                f"{name} must have the shape of logprobs {tuple(logprobs.shape)}, "
                f"got {tuple(tensor.shape)}."
            )
    if beta > 0 and ref_logprobs is None:
        raise ValueError("policy_loss: beta > 0 needs ref_logprobs (or set beta = 0).")
    if entropy_coef != 0 and entropy is None:
        raise ValueError("policy_loss: entropy_coef != 0 needs the per-token entropy tensor.")
    if loss_type == "dr_grpo" and (max_length is None or max_length < 1):
        raise ValueError("policy_loss: loss_type 'dr_grpo' needs max_length (the generation cap).")
    if delta is not None:
        if loss_type == "cispo":
            raise ValueError(
                "policy_loss: delta (dual clip) is for the PPO-style losses; cispo already "
                "caps its weight at 1 + epsilon_high, so set delta = None."
            )
        if not delta > 1.0:
            raise ValueError(f"policy_loss: the dual-clip bound delta must be > 1, got {delta}.")


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
    """PPO clipped surrogate, token mean over the micro-batch, optional KL penalty.

    policy_loss with loss_type="bnpo" (kept for existing callers; the numbers are the same
    bit for bit):

        ratio_t    = exp(logp_t - old_logp_t)
        loss_t     = -min(ratio_t * A, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A)
                     + beta * k3_t
        loss       = sum_t(loss_t * mask_t) / sum_t(mask_t)      (over the whole micro-batch)

    When the micro-batch is the whole optimizer batch this is DAPO's token-level loss (Yu et
    al. 2025, arXiv:2503.14476); see policy_loss for the other variants and the stats.
    """
    return policy_loss(
        logprobs, old_logprobs, advantages, mask, loss_type="bnpo",
        epsilon_low=epsilon_low, epsilon_high=epsilon_high,
        ref_logprobs=ref_logprobs, beta=beta,
    )  # fmt: skip


def sampler_correction(
    learner_old_logprobs: Tensor,
    sampler_logprobs: Tensor,
    mask: Tensor,
    *,
    level: str = "token",
    mode: str = "truncate",
    cap: float = 2.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Importance weights that correct for the sampler and the learner disagreeing.

    The sampling engine (vLLM, a bf16 KV-cache sampler, ...) and the learner compute
    different probabilities for the same tokens with the same weights, so "on-policy"
    samples are in fact off-policy. Yao et al. 2025, "Your Efficient RL Framework Secretly
    Brings You Off-Policy RL Training" (https://fengyao.notion.site/off-policy-rl),
    reweight each token by rho = pi_learner / pi_sampler:

        rho_t = exp(learner_old_logp_t - sampler_logp_t)             level="token"
        rho_i = exp(sum_t (learner_old_logp_it - sampler_logp_it))   level="sequence"

        "truncate" (TIS)  w = min(rho, cap)
        "mask"     (MIS)  w = rho if rho <= cap else 0   (the token or sequence is dropped;
                          Liu, Li et al. 2025, "When Speed Kills Stability: Demystifying RL
                          Collapse from the Training-Inference Mismatch")

    The sequence ratio is the product of the token ratios: unbiased, but its variance grows
    with length; the token ratios are biased but tame. Pass the weights to policy_loss as
    is_weights. Both log-prob tensors are the old policy's, scored once per batch, so the
    weights are constants (detached).

    Args:
        learner_old_logprobs: (B, T) log-probs of the sampled tokens under the learner.
        sampler_logprobs: (B, T) log-probs the sampler reported for the same tokens.
        mask: (B, T) 1 on completion tokens.
        level: one of IS_LEVELS.
        mode: one of IS_MODES.
        cap: C > 0, the largest weight kept.

    Returns:
        weights: (B, T), 0 where mask is 0 (a sequence-level weight is repeated on its
            tokens).
        stats: detached scalars. mismatch_kl (token mean of the k3 estimate of
            KL(sampler || learner), from tokens the sampler drew), is_weight_mean and
            is_capped_fraction (share with rho > cap), both over valid tokens (token level)
            or over sequences with a valid token (sequence level).
    """
    if level not in IS_LEVELS:
        raise ValueError(f"unknown IS level {level!r}; choose one of {', '.join(IS_LEVELS)}.")
    if mode not in IS_MODES:
        raise ValueError(f"unknown IS mode {mode!r}; choose one of {', '.join(IS_MODES)}.")
    if not cap > 0:
        raise ValueError(f"sampler_correction: cap must be > 0, got {cap}.")
    if learner_old_logprobs.shape != sampler_logprobs.shape or mask.shape != sampler_logprobs.shape:
        raise ValueError(
            f"sampler_correction: learner {tuple(learner_old_logprobs.shape)}, sampler "
            f"{tuple(sampler_logprobs.shape)} and mask {tuple(mask.shape)} must be the same (B, T)."
        )
    learner = learner_old_logprobs.detach()
    sampler = sampler_logprobs.detach()
    valid = mask.bool()  # (B, T)
    log_rho = torch.where(valid, learner - sampler, torch.zeros_like(learner))  # (B, T)
    if level == "token":
        rho = torch.exp(log_rho.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))  # (B, T)
        unit_valid = valid  # (B, T)
    else:
        log_rho = log_rho.sum(dim=1).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # (B,)
        rho = torch.exp(log_rho)  # (B,)
        unit_valid = valid.any(dim=1)  # (B,)
    capped = rho > cap
    if mode == "truncate":
        weights = rho.clamp(max=cap)
    else:
        weights = torch.where(capped, torch.zeros_like(rho), rho)
    stats = {
        "mismatch_kl": masked_mean(kl_k3(sampler, learner), valid),
        "is_weight_mean": masked_mean(weights, unit_valid),
        "is_capped_fraction": masked_mean(capped.to(rho.dtype), unit_valid),
    }
    if level == "sequence":
        weights = weights.unsqueeze(-1).expand_as(learner)  # (B, T)
    weights = torch.where(valid, weights, torch.zeros_like(weights))  # (B, T)
    return weights, stats


# ----------------------------------------------------------------------------- fine-tuning


def sft_loss(logits: Tensor, targets: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Supervised fine-tuning: next-token cross-entropy on the response tokens only.

    The loss of instruction tuning (Ouyang et al. 2022, "Training language models to follow
    instructions with human feedback", arXiv:2203.02155, section 3.5) and of DeepSeek-R1's
    cold-start and rejection-sampling stages (DeepSeek-AI 2025, arXiv:2501.12948, 2.3.1 and
    2.3.3): the prompt conditions the response but is not itself learned.

        loss = sum_t mask_t * (-log softmax(z_t)[y_t]) / sum_t mask_t

    a token mean over every response token of the batch, so a long response weighs more than
    a short one (as in pretraining). A batch with no response token gives 0.

    Args:
        logits: (B, T, V); position t predicts targets[:, t].
        targets: (B, T) token ids.
        mask: (B, T), 1 on response tokens (prompt, padding and packing gaps 0).

    Returns:
        loss: scalar.
        stats: detached scalars: num_tokens (response tokens), accuracy (share of response
            tokens whose arg-max is the target).
    """
    if logits.shape[:-1] != targets.shape or mask.shape != targets.shape:
        raise ValueError(
            f"sft_loss: logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and mask "
            f"{tuple(mask.shape)} must agree on (B, T)."
        )
    nll = -token_logprobs(logits, targets)  # (B, T)
    loss = masked_mean(nll, mask)
    with torch.no_grad():
        hits = (logits.argmax(dim=-1) == targets).to(nll.dtype)  # (B, T)
        stats = {"num_tokens": mask.sum().detach(), "token_accuracy": masked_mean(hits, mask)}
    return loss, stats


def sequence_logprob_sums(logprobs: Tensor, mask: Tensor) -> Tensor:
    """log pi(y | x) of whole responses: the sum of their token log-probs.

        log pi(y | x) = sum_t mask_t * log pi(y_t | x, y_<t)

    Args:
        logprobs: (B, T) per-token log-probs (token_logprobs).
        mask: (B, T), 1 on the response's tokens.

    Returns:
        (B,) sums.
    """
    return torch.where(mask.bool(), logprobs, torch.zeros_like(logprobs)).sum(dim=1)


def dpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Direct Preference Optimization on (chosen, rejected) response pairs.

    Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
    Reward Model" (arXiv:2305.18290), eq. 7:

        r_w    = beta * (log pi(y_w|x) - log ref(y_w|x))         the chosen response's implicit reward
        r_l    = beta * (log pi(y_l|x) - log ref(y_l|x))         the rejected one's
        loss   = mean over pairs of  -log sigmoid(r_w - r_l)

    Here the pairs come from the verifier: y_w a correct response, y_l a wrong one to the
    same problem, both sampled from the policy (iterative/online DPO on verified pairs, as in
    Pang et al. 2024, "Iterative Reasoning Preference Optimization", arXiv:2404.19733, without
    its NLL term). -log sigmoid(x) is computed as softplus(-x), finite for any margin.

    Args:
        chosen_logps, rejected_logps: (P,) log pi of the chosen and rejected responses under
            the policy being trained (sequence_logprob_sums).
        ref_chosen_logps, ref_rejected_logps: (P,) the same under the frozen reference.
        beta: > 0, the strength of the implicit KL constraint to the reference.

    Returns:
        loss: scalar, the mean over the P pairs (0 when P = 0).
        stats: detached scalars: chosen_reward and rejected_reward (means of r_w and r_l),
            reward_margin (mean of r_w - r_l), reward_accuracy (share of pairs with r_w > r_l).
    """
    if not beta > 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta}.")
    shapes = {tuple(t.shape) for t in (chosen_logps, rejected_logps, ref_chosen_logps,
                                         ref_rejected_logps)}  # fmt: skip
    if len(shapes) != 1 or chosen_logps.dim() != 1:
        raise ValueError(f"dpo_loss: the four log-prob tensors must all be (P,), got {shapes}.")
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)  # (P,)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)  # (P,)
    margins = chosen_rewards - rejected_rewards  # (P,)
    if margins.numel() == 0:
        zero = margins.sum()
        return zero, {k: zero.detach() for k in ("chosen_reward", "rejected_reward",
                                                  "reward_margin", "reward_accuracy")}  # fmt: skip
    loss = torch.nn.functional.softplus(-margins).mean()
    stats = {
        "chosen_reward": chosen_rewards.detach().mean(),
        "rejected_reward": rejected_rewards.detach().mean(),
        "reward_margin": margins.detach().mean(),
        "reward_accuracy": (margins.detach() > 0).float().mean(),
    }
    return loss, stats
