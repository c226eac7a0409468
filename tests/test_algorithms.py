"""Hand-computed checks of the RL math in rlvr/learning/algorithms.py."""

import math

import pytest
import torch

from rlvr.learning.algorithms import (
    ADVANTAGE_ESTIMATORS,
    LOSS_TYPES,
    clipped_policy_loss,
    combine_rewards,
    compute_advantages,
    dpo_loss,
    entropy_from_logits,
    group_advantages,
    kl_k3,
    mask_truncated,
    masked_mean,
    policy_loss,
    sampler_correction,
    sequence_logprob_sums,
    sft_loss,
    token_logprobs,
)

# ---------------------------------------------------------------- group_advantages


def test_all_equal_group_gives_exactly_zero():
    # 0.1 is not exact in binary: mean(0.1, 0.1, 0.1) need not be 0.1, so this checks that
    # constant groups are zeroed explicitly, with and without the std.
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 1.0, 1.0, 0.7, 0.7, 0.7])
    for scale in (True, False):
        adv = group_advantages(rewards, group_size=3, scale_by_std=scale)
        assert torch.equal(adv, torch.zeros(9))


def test_known_group_grpo_and_dr_grpo():
    # rewards [1, 0, 0, 1]: mean 0.5; unbiased std = sqrt(4 * 0.25 / 3) = sqrt(1/3) = 0.57735
    # A = +-0.5 / (0.57735 + 1e-4) = +-0.86588
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert a == pytest.approx(0.86588, abs=1e-5)
    adv = group_advantages(rewards, group_size=4)
    torch.testing.assert_close(adv, torch.tensor([a, -a, -a, a]))
    # Dr. GRPO: mean only.
    adv = group_advantages(rewards, group_size=4, scale_by_std=False)
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_groups_are_independent():
    # group 1: [1, 0] -> mean 0.5, std sqrt(0.5) = 0.70711 -> +-0.5 / 0.70721 = +-0.70700
    # group 2: [3, 3] -> constant -> 0
    # group 3: [0, 2] -> mean 1, std sqrt(2) = 1.41421 -> +-1 / 1.41431 = +-0.70706
    adv = group_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0, 0.0, 2.0]), group_size=2)
    a1 = 0.5 / (math.sqrt(0.5) + 1e-4)
    a3 = 1.0 / (math.sqrt(2.0) + 1e-4)
    torch.testing.assert_close(adv, torch.tensor([a1, -a1, 0.0, 0.0, -a3, a3]))


def test_integer_rewards_and_group_of_one():
    adv = group_advantages(torch.tensor([1, 0, 0, 1]), group_size=4)
    assert adv.dtype == torch.float32
    assert adv[0] > 0 > adv[1]
    # A group of one has no spread (its unbiased std would be NaN): zero advantage.
    assert torch.equal(group_advantages(torch.tensor([1.0, 0.0]), group_size=1), torch.zeros(2))


def test_group_size_must_divide_batch():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.zeros(6), group_size=4)


# ---------------------------------------------------------------- token_logprobs / entropy


def test_token_logprobs_hand_computed():
    # logits log([1, 2, 1]) -> probs [0.25, 0.5, 0.25]
    logits = torch.log(torch.tensor([1.0, 2.0, 1.0])).view(1, 1, 3).repeat(1, 2, 1)  # (1, 2, 3)
    tokens = torch.tensor([[1, 0]])
    lp = token_logprobs(logits, tokens)
    torch.testing.assert_close(lp, torch.log(torch.tensor([[0.5, 0.25]])))
    # temperature 2: z = log([1, sqrt2, 1]) -> p(1) = sqrt2 / (2 + sqrt2) = 0.41421
    lp = token_logprobs(logits, tokens, temperature=2.0)
    p1 = math.sqrt(2) / (2 + math.sqrt(2))
    torch.testing.assert_close(lp, torch.log(torch.tensor([[p1, 1 / (2 + math.sqrt(2))]])))


def test_token_logprobs_matches_log_softmax_and_bf16_path():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11) * 3
    tokens = torch.randint(0, 11, (3, 5))
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, tokens, temperature=0.7), expected)
    # bf16 logits go through the per-row float32 path; the result is float32.
    lp16 = token_logprobs(logits.bfloat16(), tokens, temperature=0.7)
    assert lp16.dtype == torch.float32
    expected16 = torch.log_softmax(logits.bfloat16().float() / 0.7, -1)
    expected16 = expected16.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(lp16, expected16)


def test_token_logprobs_rejects_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), temperature=0)
    with pytest.raises(ValueError, match="disagree"):
        token_logprobs(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long))


def test_entropy_hand_computed():
    # uniform over 8 -> ln 8; [0.25, 0.5, 0.25] -> 2 * 0.25 ln 4 + 0.5 ln 2 = 1.5 ln 2
    uniform = torch.zeros(1, 1, 8)
    torch.testing.assert_close(entropy_from_logits(uniform), torch.tensor([[math.log(8)]]))
    logits = torch.log(torch.tensor([[[1.0, 2.0, 1.0]]]))
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([[1.5 * math.log(2)]]))
    # a near-deterministic distribution has ~zero entropy
    peaked = torch.tensor([[[0.0, -1e4, -1e4]]])
    assert entropy_from_logits(peaked).abs().item() < 1e-6


# ---------------------------------------------------------------- kl_k3


def test_k3_zero_when_equal_positive_otherwise():
    lp = torch.log(torch.tensor([[0.5, 0.1, 0.9]]))
    assert torch.equal(kl_k3(lp, lp), torch.zeros(1, 3))
    torch.manual_seed(0)
    a, b = torch.randn(4, 7), torch.randn(4, 7)
    assert (kl_k3(a, b) > 0).all()


def test_k3_hand_computed_value_and_gradient():
    # logp = log 0.5, ref = log 0.25: x = ref - logp = log 0.5
    # k3 = e^x - x - 1 = 0.5 + 0.693147 - 1 = 0.193147
    # d k3 / d logp = 1 - e^x = 0.5
    logp = torch.tensor([[math.log(0.5)]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25)]])
    k3 = kl_k3(logp, ref)
    torch.testing.assert_close(k3, torch.tensor([[0.5 + math.log(2) - 1]]))
    k3.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.5]]))


def test_k3_clamped_log_ratio_stays_finite():
    logp = torch.tensor([[0.0, -1e9]])
    ref = torch.tensor([[-1e9, 0.0]])
    assert torch.isfinite(kl_k3(logp, ref)).all()


# ---------------------------------------------------------------- masked_mean


def test_masked_mean():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor(8.0 / 3))  # (1 + 3 + 4) / 3
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.0, 3.5]))
    # fully masked -> 0, and inf/NaN under the mask never leak out
    assert masked_mean(x, torch.zeros(2, 2)).item() == 0.0
    y = torch.tensor([[1.0, float("inf")], [float("nan"), 3.0]])
    torch.testing.assert_close(masked_mean(y, torch.tensor([[1, 0], [0, 1]])), torch.tensor(2.0))


# ---------------------------------------------------------------- clipped_policy_loss


def _ratios_as_logprobs(ratios):
    """(B, T) logprobs with grad and old logprobs 0, so that exp(logp - old) = ratios."""
    logp = torch.log(torch.tensor(ratios)).requires_grad_(True)
    return logp, torch.zeros_like(logp)


def test_clip_hand_computed_both_signs():
    # 4 sequences of 1 token, eps_low = eps_high = 0.2 (clip range [0.8, 1.2])
    #   A=+1 ratio 1.5: -min(1.5, 1.2) = -1.2   clipped   grad 0
    #   A=+1 ratio 1.1: -min(1.1, 1.1) = -1.1   active    grad -ratio = -1.1
    #   A=-1 ratio 0.5: -min(-0.5, -0.8) = 0.8  clipped   grad 0
    #   A=-1 ratio 0.9: -min(-0.9, -0.9) = 0.9  active    grad +ratio = 0.9
    # loss = (-1.2 - 1.1 + 0.8 + 0.9) / 4 = -0.15; clip_fraction 2/4; ratio_mean 4.0/4 = 1.0
    logp, old = _ratios_as_logprobs([[1.5], [1.1], [0.5], [0.9]])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, stats = clipped_policy_loss(logp, old, adv, torch.ones(4, 1), 0.2, 0.2)
    torch.testing.assert_close(loss, torch.tensor(-0.15))
    torch.testing.assert_close(stats["policy_loss"], torch.tensor(-0.15))
    torch.testing.assert_close(stats["clip_fraction"], torch.tensor(0.5))
    torch.testing.assert_close(stats["ratio_mean"], torch.tensor(1.0))
    assert "kl" not in stats
    loss.backward()
    # d(-A * ratio) / d logp = -A * ratio, divided by the 4 valid tokens
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0], [-1.1 / 4], [0.0], [0.9 / 4]]))


def test_clip_only_on_the_side_that_limits_the_update():
    # PPO's min() clips a positive advantage only above 1+eps and a negative one only below
    # 1-eps. On the other side the unclipped term is the pessimistic one and keeps its grad.
    #   A=+1 ratio 0.5: -min(0.5, 0.8) = -0.5    grad -0.5
    #   A=-1 ratio 1.5: -min(-1.5, -1.2) = 1.5   grad +1.5
    logp, old = _ratios_as_logprobs([[0.5], [1.5]])
    loss, stats = clipped_policy_loss(
        logp, old, torch.tensor([1.0, -1.0]), torch.ones(2, 1), 0.2, 0.2
    )
    torch.testing.assert_close(loss, torch.tensor((-0.5 + 1.5) / 2))
    assert stats["clip_fraction"].item() == 0.0
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5 / 2], [1.5 / 2]]))


def test_clip_higher_is_asymmetric():
    # ratio 1.25, A=+1: inside [0.8, 1.28] with DAPO's eps_high 0.28, clipped with 0.2.
    logp, old = _ratios_as_logprobs([[1.25]])
    adv = torch.tensor([1.0])
    loss, stats = clipped_policy_loss(logp, old, adv, torch.ones(1, 1), 0.2, 0.28)
    torch.testing.assert_close(loss, torch.tensor(-1.25))
    assert stats["clip_fraction"].item() == 0.0
    loss, stats = clipped_policy_loss(logp, old, adv, torch.ones(1, 1), 0.2, 0.2)
    torch.testing.assert_close(loss, torch.tensor(-1.2))
    assert stats["clip_fraction"].item() == 1.0
    # eps_low limits negative advantages: ratio 0.75, A=-1, floor 1-0.3=0.7 -> not clipped
    logp, old = _ratios_as_logprobs([[0.75]])
    loss, stats = clipped_policy_loss(logp, old, torch.tensor([-1.0]), torch.ones(1, 1), 0.3, 0.2)
    torch.testing.assert_close(loss, torch.tensor(0.75))
    assert stats["clip_fraction"].item() == 0.0


def test_token_level_aggregation_over_whole_batch():
    # ratio 1 everywhere so loss_t = -A. Sequence 0 has 1 valid token (A=+1), sequence 1 has
    # 3 (A=-1). DAPO: (-1 + 1 + 1 + 1) / 4 = 0.5 (a per-sequence mean would give 0).
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    loss, _ = clipped_policy_loss(logp, logp, torch.tensor([1.0, -1.0]), mask, 0.2, 0.2)
    torch.testing.assert_close(loss, torch.tensor(0.5))


def test_masked_tokens_do_not_contribute():
    # token 3 is padding with a wild logprob; the loss equals the loss of the first two tokens
    # alone and the padding position gets exactly zero gradient.
    logp = torch.tensor([[-1.0, -2.0, 30.0]], requires_grad=True)
    old = torch.tensor([[-1.1, -1.9, -50.0]])
    ref = torch.tensor([[-1.0, -2.5, -1e6]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    adv = torch.tensor([0.7])
    loss, stats = clipped_policy_loss(logp, old, adv, mask, 0.2, 0.28, ref, beta=0.1)
    assert all(torch.isfinite(v) for v in stats.values())
    loss.backward()
    assert logp.grad[0, 2].item() == 0.0
    assert logp.grad[0, :2].abs().sum() > 0
    short, _ = clipped_policy_loss(
        logp[:, :2], old[:, :2], adv, mask[:, :2], 0.2, 0.28, ref[:, :2], 0.1
    )
    torch.testing.assert_close(loss, short)


def test_fully_masked_batch_gives_zero_not_nan():
    logp = torch.randn(2, 3, requires_grad=True)
    loss, stats = clipped_policy_loss(
        logp, logp.detach() + 0.1, torch.ones(2), torch.zeros(2, 3), 0.2, 0.2, logp.detach(), 0.1
    )
    assert loss.item() == 0.0
    assert all(v.item() == 0.0 for v in stats.values())
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros(2, 3))


def test_beta_zero_equals_no_reference_and_kl_term_adds_beta_k3():
    torch.manual_seed(0)
    logp = torch.randn(2, 3)
    old = logp + 0.05 * torch.randn(2, 3)
    ref = logp + 0.3 * torch.randn(2, 3)
    adv = torch.tensor([0.5, -1.0])
    mask = torch.ones(2, 3)
    plain, plain_stats = clipped_policy_loss(logp, old, adv, mask, 0.2, 0.28)
    zero, zero_stats = clipped_policy_loss(logp, old, adv, mask, 0.2, 0.28, ref, beta=0.0)
    assert torch.equal(plain, zero)
    assert "kl" in zero_stats and zero_stats["kl"] > 0  # measured even when not penalised
    with_kl, kl_stats = clipped_policy_loss(logp, old, adv, mask, 0.2, 0.28, ref, beta=0.04)
    torch.testing.assert_close(with_kl, plain + 0.04 * kl_k3(logp, ref).mean())
    torch.testing.assert_close(kl_stats["policy_loss"], plain_stats["policy_loss"])


def test_kl_hand_computed_in_loss():
    # ratio 1, A=0 so the policy term is 0; logp = log .5, ref = log .25 -> k3 = 0.193147
    logp = torch.full((1, 1), math.log(0.5))
    ref = torch.full((1, 1), math.log(0.25))
    loss, stats = clipped_policy_loss(
        logp, logp, torch.zeros(1), torch.ones(1, 1), 0.2, 0.2, ref, 0.5
    )
    torch.testing.assert_close(stats["kl"], torch.tensor(0.5 + math.log(2) - 1))
    torch.testing.assert_close(loss, torch.tensor(0.5 * (0.5 + math.log(2) - 1)))


def test_beta_without_reference_is_an_error():
    with pytest.raises(ValueError, match="ref_logprobs"):
        clipped_policy_loss(
            torch.zeros(1, 1),
            torch.zeros(1, 1),
            torch.ones(1),
            torch.ones(1, 1),
            0.2,
            0.2,
            beta=0.1,
        )
    with pytest.raises(ValueError, match="advantages"):
        clipped_policy_loss(
            torch.zeros(2, 1), torch.zeros(2, 1), torch.ones(2, 1), torch.ones(2, 1), 0.2, 0.2
        )


def test_gradient_step_moves_probability_toward_positive_advantage():
    # A softmax policy over 3 tokens, two 1-token sequences: sequence 0 chose token 0 and was
    # rewarded (A=+1), sequence 1 chose token 1 and was not (A=-1). One SGD step on the loss
    # must raise p(token 0) and lower p(token 1).
    logits = torch.zeros(2, 1, 3, requires_grad=True)
    tokens = torch.tensor([[0], [1]])
    adv = torch.tensor([1.0, -1.0])
    before = torch.softmax(logits.detach(), -1)
    logp = token_logprobs(logits, tokens)
    loss, _ = clipped_policy_loss(logp, logp.detach(), adv, torch.ones(2, 1), 0.2, 0.2)
    loss.backward()
    with torch.no_grad():
        logits -= 0.5 * logits.grad
    after = torch.softmax(logits.detach(), -1)
    assert after[0, 0, 0] > before[0, 0, 0]
    assert after[1, 0, 1] < before[1, 0, 1]


# ---------------------------------------------------------------- compute_advantages

EPS = 1e-4


def test_every_estimator_hand_computed():
    # Two prompts, k = 4. Group 1 [1, 0, 0, 1]: mean 0.5, centred +-0.5. Group 2 all 1: zero.
    #   grpo:         +-0.5 / (std_g + eps),  std_g = sqrt(4 * 0.25 / 3) = sqrt(1/3)
    #   dr_grpo:      +-0.5
    #   rloo:         4/3 * +-0.5 = +-2/3     (1 - mean(0, 0, 1) = 2/3)
    #   batch_std:    +-0.5 / (std(r) + eps), r has mean 0.75, squares 6 * 0.0625 + 2 * 0.5625
    #                 = 1.5, std(r) = sqrt(1.5 / 7) = 0.46291
    #   reinforce_pp: centred [.5, -.5, -.5, .5, 0, 0, 0, 0] has mean 0 and
    #                 std sqrt(1 / 7) = 0.37796 -> +-0.5 / (0.37796 + eps)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    sign = torch.tensor([1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    expected = {
        "grpo": 0.5 / (math.sqrt(1 / 3) + EPS),
        "dr_grpo": 0.5,
        "rloo": 2 / 3,
        "batch_std": 0.5 / (math.sqrt(1.5 / 7) + EPS),
        "reinforce_pp": 0.5 / (math.sqrt(1 / 7) + EPS),
    }
    assert set(expected) == set(ADVANTAGE_ESTIMATORS)
    for estimator, a in expected.items():
        adv = compute_advantages(rewards, 4, estimator)
        torch.testing.assert_close(adv, a * sign, msg=estimator)
        assert torch.equal(adv[4:], torch.zeros(4)), estimator  # the constant group: exactly 0


def test_rloo_is_leave_one_out():
    # [3, 1, 2]: 3 - mean(1, 2) = 1.5; 1 - mean(3, 2) = -1.5; 2 - mean(3, 1) = 0
    adv = compute_advantages(torch.tensor([3.0, 1.0, 2.0]), 3, "rloo")
    torch.testing.assert_close(adv, torch.tensor([1.5, -1.5, 0.0]))


@pytest.mark.parametrize("estimator", ADVANTAGE_ESTIMATORS)
def test_all_equal_groups_give_exactly_zero_for_every_estimator(estimator):
    # 0.1 and 0.7 are inexact in binary: the zeros must be explicit, not cancellation.
    constant = torch.tensor([0.1, 0.1, 0.1, 1.0, 1.0, 1.0, 0.7, 0.7, 0.7])
    assert torch.equal(compute_advantages(constant, 3, estimator), torch.zeros(9))
    # Next to a group with spread (which moves the batch-level statistics) still exactly 0.
    mixed = torch.tensor([0.1, 0.1, 0.1, 0.3, 0.9, 0.0])
    adv = compute_advantages(mixed, 3, estimator)
    assert torch.equal(adv[:3], torch.zeros(3))
    assert (adv[3:] != 0).all() and torch.isfinite(adv).all()


@pytest.mark.parametrize("estimator", ADVANTAGE_ESTIMATORS)
def test_group_of_one_and_batch_of_one_give_zero(estimator):
    assert torch.equal(
        compute_advantages(torch.tensor([1.0, 0.0, 0.5]), 1, estimator), torch.zeros(3)
    )
    assert torch.equal(compute_advantages(torch.tensor([1.0]), 1, estimator), torch.zeros(1))


def test_one_prompt_batch_level_estimators_equal_grpo():
    # With a single group, the batch std of the raw rewards (batch_std) and of the centred
    # rewards (reinforce_pp) are the group std.
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.25])
    grpo = compute_advantages(rewards, 5, "grpo")
    torch.testing.assert_close(compute_advantages(rewards, 5, "batch_std"), grpo)
    torch.testing.assert_close(compute_advantages(rewards, 5, "reinforce_pp"), grpo)


def test_compute_advantages_rejects_bad_input():
    with pytest.raises(ValueError, match="rloo"):
        compute_advantages(torch.zeros(4), 2, "ppo")
    with pytest.raises(ValueError, match="groups of 4"):
        compute_advantages(torch.zeros(6), 4, "rloo")


# ---------------------------------------------------------------- combine_rewards


def test_combine_rewards_hand_computed():
    # One prompt, k = 4, rewards (accuracy, format), weights (1, 0.5).
    #   sum_then_normalize, dr_grpo: sums [1.5, 0.5, 1, 0], mean 0.75 -> [.75, -.25, .25, -.75]
    #   normalize_then_sum, grpo: each column is [1, 0, 1, 0] or [1, 1, 0, 0] -> +-a,
    #       a = 0.5 / (sqrt(1/3) + eps); sum [a + .5a, -a + .5a, a - .5a, -a - .5a]
    #       = a * [1.5, -0.5, 0.5, -1.5]
    #   gdpo: batch z-score of that: mean 0, std = a * sqrt((2.25 + .25 + .25 + 2.25) / 3)
    rewards = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    weights = torch.tensor([1.0, 0.5])
    adv = combine_rewards(rewards, weights, 4, "dr_grpo", "sum_then_normalize")
    torch.testing.assert_close(adv, torch.tensor([0.75, -0.25, 0.25, -0.75]))
    a = 0.5 / (math.sqrt(1 / 3) + EPS)
    summed = a * torch.tensor([1.5, -0.5, 0.5, -1.5])
    adv = combine_rewards(rewards, weights, 4, "grpo", "normalize_then_sum")
    torch.testing.assert_close(adv, summed)
    adv = combine_rewards(rewards, weights, 4, "grpo", "gdpo")
    torch.testing.assert_close(adv, summed / (a * math.sqrt(5 / 3) + EPS))


def test_combine_rewards_normalize_first_keeps_a_small_reward_audible():
    # Equal weights, GRPO. Accuracy is worth 2 and format 1. Summed first ([3, 1, 2, 0]),
    # format moves a sample half as far as accuracy does; normalised first, each reward moves
    # it by its own z-score step (2 / (std 1.1547 + eps) vs 1 / (std 0.57735 + eps)): equal.
    rewards = torch.tensor([[2.0, 1.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    weights = torch.ones(2)
    first_sum = combine_rewards(rewards, weights, 4, "grpo", "sum_then_normalize")
    first_norm = combine_rewards(rewards, weights, 4, "grpo", "normalize_then_sum")
    format_step, accuracy_step = first_sum[0] - first_sum[2], first_sum[0] - first_sum[1]
    torch.testing.assert_close(format_step, accuracy_step / 2)
    format_step, accuracy_step = first_norm[0] - first_norm[2], first_norm[0] - first_norm[1]
    torch.testing.assert_close(format_step, accuracy_step, rtol=1e-3, atol=0)


def test_combine_rewards_gdpo_example_sum_first_collapses_groups():
    # Two groups of two, rewards (accuracy, format). Group 1 [(0, 1), (0, 0)]: sums [1, 0];
    # group 2 [(1, 1), (0, 0)]: sums [2, 0]. GRPO on the sums: +-0.5 / (std 0.7071 + eps) and
    # +-1 / (std 1.4142 + eps), the same up to eps. Per reward first: group 1 +-a (format
    # only), group 2 +-2a (both), a = 0.5 / (0.7071 + eps).
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    weights = torch.ones(2)
    first_sum = combine_rewards(rewards, weights, 2, "grpo", "sum_then_normalize")
    torch.testing.assert_close(first_sum[2:], first_sum[:2], rtol=1e-3, atol=0)
    a = 0.5 / (math.sqrt(0.5) + EPS)
    first_norm = combine_rewards(rewards, weights, 2, "grpo", "normalize_then_sum")
    torch.testing.assert_close(first_norm, torch.tensor([a, -a, 2 * a, -2 * a]))


@pytest.mark.parametrize("mode", ["sum_then_normalize", "normalize_then_sum", "gdpo"])
@pytest.mark.parametrize("estimator", ADVANTAGE_ESTIMATORS)
def test_combine_rewards_constant_group_is_zero(mode, estimator):
    rewards = torch.tensor([[1.0, 0.2], [0.0, 0.9], [1.0, 0.2], [0.3, 0.3], [0.3, 0.3]])
    rewards = torch.cat([rewards, torch.full((5, 2), 0.1)])  # group 2 is constant
    adv = combine_rewards(rewards, torch.tensor([1.0, 0.5]), 5, estimator, mode)
    assert adv.shape == (10,) and torch.isfinite(adv).all()
    assert torch.equal(adv[5:], torch.zeros(5))
    assert (adv[:5] != 0).any()


def test_combine_rewards_linear_estimators_agree_across_modes():
    # dr_grpo and rloo are linear in the rewards: normalising before or after summing is the same.
    torch.manual_seed(0)
    rewards, weights = torch.rand(12, 3), torch.tensor([1.0, 0.2, -0.5])
    for estimator in ("dr_grpo", "rloo"):
        torch.testing.assert_close(
            combine_rewards(rewards, weights, 4, estimator, "sum_then_normalize"),
            combine_rewards(rewards, weights, 4, estimator, "normalize_then_sum"),
        )


def test_combine_rewards_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, R\)"):
        combine_rewards(torch.zeros(4), torch.ones(1), 2, "grpo")
    with pytest.raises(ValueError, match=r"\(N, R\)"):
        combine_rewards(torch.zeros(4, 2), torch.ones(3), 2, "grpo")
    with pytest.raises(ValueError, match="gdpo"):
        combine_rewards(torch.zeros(4, 2), torch.ones(2), 2, "grpo", "average")


# ---------------------------------------------------------------- truncation


def test_mask_truncated_zeroes_truncated_rows_and_keeps_dtype():
    for mask in (torch.ones(3, 2), torch.ones(3, 2, dtype=torch.bool), torch.ones(3, 2).long()):
        out = mask_truncated(mask, torch.tensor([False, True, False]))
        assert out.dtype == mask.dtype
        assert out.tolist() == [[1, 1], [0, 0], [1, 1]]
    with pytest.raises(ValueError, match="truncated"):
        mask_truncated(torch.ones(3, 2), torch.tensor([True, False]))


# ---------------------------------------------------------------- policy_loss


def _loss(logp, old, adv, mask, loss_type, eps=(0.2, 0.2), **kwargs):
    return policy_loss(
        logp, old, adv, mask, loss_type=loss_type, epsilon_low=eps[0], epsilon_high=eps[1],
        **kwargs,
    )  # fmt: skip


def _two_sequences():
    """Sequence 0: 1 valid token, A = +1. Sequence 1: 3 valid tokens, A = -1. ratio 1, logp
    log 0.5; the padding position holds wild values that must not matter."""
    logp = torch.full((2, 3), math.log(0.5))
    logp[0, 1:] = 30.0
    old = logp.clone()
    old[0, 1:] = -50.0
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    return logp.requires_grad_(True), old, torch.tensor([1.0, -1.0]), mask


# ratio 1 everywhere, so a PPO token loss is l = -A: -1 for sequence 0, +1 on each of the
# 3 tokens of sequence 1; its gradient d l / d logp = -A * ratio = -A, over the denominator.
#   grpo     (-1 + (1+1+1)/3) / 2 = 0          grads -1 / (1 * 2), +1 / (3 * 2)
#   bnpo     (-1 + 3) / 4 = 0.5                grads -1/4, +1/4
#   dr_grpo  (-1 + 3) / (2 * max_length 4)     grads -1/8, +1/8
#   dapo     (-1 + 3) / num_tokens 8           grads -1/8, +1/8
#   gspo     s_i = 1: as grpo                  grads -s_i / |o_i| / 2: -1/2, +1/6
#   cispo    -sg(w) A logp = A ln 2: (ln2 - 3 ln2) / 4 = -ln2 / 2, grads -w A / 4: -1/4, +1/4
@pytest.mark.parametrize(
    "loss_type, kwargs, loss, grad0, grad1",
    [
        ("grpo", {}, 0.0, -0.5, 1 / 6),
        ("bnpo", {}, 0.5, -0.25, 0.25),
        ("dr_grpo", {"max_length": 4}, 0.25, -0.125, 0.125),
        ("dapo", {"num_tokens": 8}, 0.25, -0.125, 0.125),
        ("dapo", {}, 0.5, -0.25, 0.25),
        ("gspo", {}, 0.0, -0.5, 1 / 6),
        ("cispo", {}, -math.log(2) / 2, -0.25, 0.25),
    ],
)
def test_policy_loss_aggregation_hand_computed(loss_type, kwargs, loss, grad0, grad1):
    logp, old, adv, mask = _two_sequences()
    value, stats = _loss(logp, old, adv, mask, loss_type, **kwargs)
    torch.testing.assert_close(value, torch.tensor(loss))
    torch.testing.assert_close(stats["policy_loss"], torch.tensor(loss))
    assert stats["clip_fraction"].item() == 0.0
    assert stats["ratio_mean"].item() == 1.0
    value.backward()
    expected = torch.tensor([[grad0, 0.0, 0.0], [grad1, grad1, grad1]])
    torch.testing.assert_close(logp.grad, expected)


def test_grpo_equals_bnpo_when_all_sequences_have_equal_length():
    torch.manual_seed(0)
    logp = torch.randn(4, 5).requires_grad_(True)
    old = logp.detach() + 0.2 * torch.randn(4, 5)
    adv = torch.randn(4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [1, 0, 1, 0, 1], [0, 0, 1, 1, 1]])
    grpo, _ = _loss(logp, old, adv, mask, "grpo")
    (grpo_grad,) = torch.autograd.grad(grpo, logp)
    bnpo, _ = _loss(logp, old, adv, mask, "bnpo")
    (bnpo_grad,) = torch.autograd.grad(bnpo, logp)
    torch.testing.assert_close(grpo, bnpo)
    torch.testing.assert_close(grpo_grad, bnpo_grad)
    # ... and they differ once the lengths differ
    mask[0, 3:] = 1
    assert not torch.allclose(
        _loss(logp, old, adv, mask, "grpo")[0], _loss(logp, old, adv, mask, "bnpo")[0]
    )


def test_bnpo_equals_dapo_with_one_micro_batch():
    torch.manual_seed(1)
    logp = torch.randn(3, 4)
    old = logp + 0.2 * torch.randn(3, 4)
    adv = torch.randn(3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    bnpo, _ = _loss(logp, old, adv, mask, "bnpo")
    assert torch.equal(bnpo, _loss(logp, old, adv, mask, "dapo")[0])
    torch.testing.assert_close(bnpo, _loss(logp, old, adv, mask, "dapo", num_tokens=7)[0])


def _random_batch(seed, b=6, t=5):
    generator = torch.Generator().manual_seed(seed)
    logp = (torch.randn(b, t, generator=generator) - 1).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(b, t, generator=generator)
    ref = logp.detach() + 0.3 * torch.randn(b, t, generator=generator)
    adv = torch.randn(b, generator=generator)
    lengths = torch.tensor([1, 5, 2, 4, 3, 5])[:b]
    mask = (torch.arange(t) < lengths[:, None]).float()  # (b, t), unequal lengths
    entropy = torch.rand(b, t, generator=generator).requires_grad_(True)
    return logp, old, ref, adv, mask, entropy


@pytest.mark.parametrize("loss_type", ["dapo", "cispo"])
def test_dapo_micro_batches_sum_to_the_whole_batch(loss_type):
    # Gradient accumulation over micro-batches [0, 2), [2, 3), [3, 6): summing the micro-batch
    # losses (and so the gradients) gives exactly the whole batch's token mean, KL and
    # entropy terms included.
    logp, old, ref, adv, mask, entropy = _random_batch(0)
    num_tokens = int(mask.sum())  # 20
    options = {"ref_logprobs": ref, "beta": 0.1, "entropy": entropy, "entropy_coef": 0.01}
    whole, _ = _loss(logp, old, adv, mask, loss_type, (0.2, 0.28), **options)
    whole_grads = torch.autograd.grad(whole, (logp, entropy))
    total = 0.0
    for rows in (slice(0, 2), slice(2, 3), slice(3, 6)):
        part, _ = _loss(
            logp[rows], old[rows], adv[rows], mask[rows], loss_type, (0.2, 0.28),
            num_tokens=num_tokens, ref_logprobs=ref[rows], beta=0.1, entropy=entropy[rows],
            entropy_coef=0.01,
        )  # fmt: skip
        total = total + part
    parts_grads = torch.autograd.grad(total, (logp, entropy))
    torch.testing.assert_close(total, whole)
    torch.testing.assert_close(parts_grads, whole_grads)
    # A per-micro-batch token mean (bnpo) summed or averaged over the same split does not.
    parts = [
        _loss(logp[r], old[r], adv[r], mask[r], "bnpo", (0.2, 0.28))[0]
        for r in (slice(0, 2), slice(2, 3), slice(3, 6))
    ]
    bnpo_whole, _ = _loss(logp, old, adv, mask, "bnpo", (0.2, 0.28))
    assert not torch.allclose(sum(parts) / 3, bnpo_whole)


def test_cispo_gradient_is_clipped_weight_times_advantage_and_never_zero():
    # ratios [1.5, 1.1, 0.5, 0.9], A [+1, +1, -1, -1], clip range [0.8, 1.2]
    #   w = sg(clip(ratio)) = [1.2, 1.1, 0.8, 0.9]; loss = -sum(w A logp) / num_tokens
    #   d loss / d logp = -w A / num_tokens: nonzero even where PPO clips (tokens 0 and 2)
    ratios = [1.5, 1.1, 0.5, 0.9]
    logp, old = _ratios_as_logprobs([[r] for r in ratios])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    w = torch.tensor([1.2, 1.1, 0.8, 0.9])
    for num_tokens, denominator in ((None, 4), (10, 10)):
        loss, stats = _loss(logp, old, adv, torch.ones(4, 1), "cispo", num_tokens=num_tokens)
        logs = torch.log(torch.tensor(ratios))
        torch.testing.assert_close(loss, -(w * adv * logs).sum() / denominator)
        assert stats["clip_fraction"].item() == 0.5
        (grad,) = torch.autograd.grad(loss, logp)
        torch.testing.assert_close(grad, (-w * adv / denominator).unsqueeze(-1))
    with pytest.raises(ValueError, match="cispo"):
        _loss(logp, old, adv, torch.ones(4, 1), "cispo", delta=3.0)


def test_gspo_clips_whole_sequences():
    # eps 0.2. Sequence 0 (A=+1): log-ratios [0.1, -0.1] -> s = exp(0) = 1, inside the range:
    #   loss -1, grad d(-s)/d logp_t = -s / |o| = -1/2, over 2 sequences: -1/4 per token.
    # Sequence 1 (A=+1): log-ratios [0.3, 0.1] -> s = exp(0.2) = 1.2214 > 1.2: clipped,
    #   loss -1.2 and zero gradient on *both* tokens (token-level PPO would keep the second,
    #   whose own ratio exp(0.1) = 1.105 is inside the range).
    # loss (-1 - 1.2) / 2 = -1.1; clip_fraction = 2 of 4 valid tokens.
    logp = torch.tensor([[0.1, -0.1, 30.0], [0.3, 0.1, -30.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0, -50.0], [0.0, 0.0, 50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    adv = torch.ones(2)
    loss, stats = _loss(logp, old, adv, mask, "gspo")
    torch.testing.assert_close(loss, torch.tensor(-1.1))
    assert stats["clip_fraction"].item() == 0.5
    torch.testing.assert_close(stats["ratio_mean"], torch.tensor((1 + math.exp(0.2)) / 2))
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, -0.25, 0.0], [0.0, 0.0, 0.0]]))
    token_level, _ = _loss(logp, old, adv, mask, "grpo")
    (grad,) = torch.autograd.grad(token_level, logp)
    assert grad[1, 1] != 0


def test_gspo_with_paper_clip_range():
    # eps 3e-4 / 4e-4: a sequence mean log-ratio of 1e-4 is inside, 1e-3 is clipped
    logp = torch.tensor([[1e-4, 1e-4], [1e-3, 1e-3]], requires_grad=True)
    loss, stats = _loss(
        logp, torch.zeros(2, 2), torch.ones(2), torch.ones(2, 2), "gspo", (3e-4, 4e-4)
    )
    torch.testing.assert_close(loss, torch.tensor(-(math.exp(1e-4) + 1 + 4e-4) / 2))
    assert stats["clip_fraction"].item() == 0.5


def test_one_token_completions():
    # With one token per sequence: the sequence ratio is the token ratio (gspo == grpo), every
    # token mean is a sequence mean (grpo == bnpo == dapo), and dr_grpo with max_length 1 too.
    torch.manual_seed(2)
    logp = torch.randn(5, 1).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(5, 1)
    adv = torch.randn(5)
    mask = torch.ones(5, 1)
    base, _ = _loss(logp, old, adv, mask, "grpo")
    (base_grad,) = torch.autograd.grad(base, logp)
    for loss_type, kwargs in [
        ("bnpo", {}),
        ("dapo", {"num_tokens": 5}),
        ("gspo", {}),
        ("dr_grpo", {"max_length": 1}),
    ]:
        loss, _ = _loss(logp, old, adv, mask, loss_type, **kwargs)
        (grad,) = torch.autograd.grad(loss, logp)
        torch.testing.assert_close(loss, base, msg=loss_type)
        torch.testing.assert_close(grad, base_grad, msg=loss_type)


def test_dual_clip_caps_negative_advantages():
    # eps 0.2, delta 3. Tokens: (ratio 4, A=-1), (ratio 2, A=-1), (ratio 4, A=+1).
    #   without delta: l = [4, 2, -1.2], loss 4.8 / 3, grads [4, 2, 0] / 3
    #   with delta 3:  l = [min(4, 3), 2, -1.2] = [3, 2, -1.2], loss 3.8 / 3, grads [0, 2, 0] / 3
    logp, old = _ratios_as_logprobs([[4.0], [2.0], [4.0]])
    adv = torch.tensor([-1.0, -1.0, 1.0])
    mask = torch.ones(3, 1)
    loss, stats = _loss(logp, old, adv, mask, "bnpo")
    torch.testing.assert_close(loss, torch.tensor(4.8 / 3))
    assert "dual_clip_fraction" not in stats
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, torch.tensor([[4.0], [2.0], [0.0]]) / 3)
    loss, stats = _loss(logp, old, adv, mask, "bnpo", delta=3.0)
    torch.testing.assert_close(loss, torch.tensor(3.8 / 3))
    torch.testing.assert_close(stats["clip_fraction"], torch.tensor(2 / 3))
    torch.testing.assert_close(stats["dual_clip_fraction"], torch.tensor(1 / 3))
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, torch.tensor([[0.0], [2.0], [0.0]]) / 3)
    with pytest.raises(ValueError, match="delta"):
        _loss(logp, old, adv, mask, "bnpo", delta=1.0)


def test_is_weights_scale_the_policy_term():
    # ratio 1, A=+1, weights [0.5, 2]. bnpo: (-0.5 - 2) / 2 = -1.25, grads -w / 2.
    # gspo: -s * mean(w) = -1.25, grads -mean(w) * s / |o| = -0.625 on each token.
    logp = torch.zeros(1, 2, requires_grad=True)
    w = torch.tensor([[0.5, 2.0]])
    for loss_type, grad in (("bnpo", [[-0.25, -1.0]]), ("gspo", [[-0.625, -0.625]])):
        loss, _ = _loss(
            logp, torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2), loss_type, is_weights=w
        )
        torch.testing.assert_close(loss, torch.tensor(-1.25))
        torch.testing.assert_close(torch.autograd.grad(loss, logp)[0], torch.tensor(grad))


def test_kl_term_is_aggregated_like_the_policy_term():
    # logp log .5, ref log .25: k3 = 0.5 + ln 2 - 1 on each of 3 valid tokens; A = 0.
    # dr_grpo: beta * 3 * k3 / (B 2 * max_length 4); the kl stat is the token mean k3.
    k3 = 0.5 + math.log(2) - 1
    logp = torch.full((2, 2), math.log(0.5))
    ref = torch.full((2, 2), math.log(0.25))
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = _loss(
        logp, logp, torch.zeros(2), mask, "dr_grpo", max_length=4, ref_logprobs=ref, beta=0.5
    )
    torch.testing.assert_close(loss, torch.tensor(0.5 * 3 * k3 / 8))
    torch.testing.assert_close(stats["kl"], torch.tensor(k3))


def test_entropy_bonus():
    # entropies [[1, 2], [3, pad]], bnpo mean 2: loss = 0 - 0.1 * 2; d loss / d H = -0.1 / 3
    logp = torch.zeros(2, 2)
    entropy = torch.tensor([[1.0, 2.0], [3.0, 1e9]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = _loss(logp, logp, torch.zeros(2), mask, "bnpo", entropy=entropy, entropy_coef=0.1)
    torch.testing.assert_close(loss, torch.tensor(-0.2))
    torch.testing.assert_close(stats["entropy"], torch.tensor(2.0))
    loss.backward()
    torch.testing.assert_close(entropy.grad, torch.tensor([[-0.1 / 3, -0.1 / 3], [-0.1 / 3, 0.0]]))
    # measured, not trained, with coefficient 0; a coefficient needs the entropies
    loss, stats = _loss(logp, logp, torch.zeros(2), mask, "bnpo", entropy=entropy)
    assert loss.item() == 0.0 and stats["entropy"].item() == 2.0
    with pytest.raises(ValueError, match="entropy"):
        _loss(logp, logp, torch.zeros(2), mask, "bnpo", entropy_coef=0.1)


def _every_loss_type_kwargs():
    for loss_type in LOSS_TYPES:
        kwargs = {"max_length": 8} if loss_type == "dr_grpo" else {}
        if loss_type in ("dapo", "cispo"):
            kwargs["num_tokens"] = 16
        if loss_type != "cispo":
            kwargs["delta"] = 3.0
        yield loss_type, kwargs


@pytest.mark.parametrize("loss_type, kwargs", list(_every_loss_type_kwargs()))
def test_fully_masked_batch_gives_zero_loss_and_gradient(loss_type, kwargs):
    logp = torch.randn(2, 3, requires_grad=True)
    entropy = torch.rand(2, 3, requires_grad=True)
    loss, stats = _loss(
        logp, logp.detach() + 0.1, torch.ones(2), torch.zeros(2, 3), loss_type,
        ref_logprobs=logp.detach(), beta=0.1, entropy=entropy, entropy_coef=0.01,
        is_weights=torch.full((2, 3), 0.5), **kwargs,
    )  # fmt: skip
    assert loss.item() == 0.0
    assert all(v.item() == 0.0 for v in stats.values())
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros(2, 3))
    assert torch.equal(entropy.grad, torch.zeros(2, 3))


@pytest.mark.parametrize("loss_type, kwargs", list(_every_loss_type_kwargs()))
def test_fully_masked_row_and_wild_padding_change_nothing(loss_type, kwargs):
    # A third, fully masked row (e.g. a truncated completion after mask_truncated) with wild
    # values: finite loss, zero gradient on it, and (except dr_grpo, whose denominator counts
    # rows by design) the same loss as without it.
    logp, old, ref, adv, mask, _ = _random_batch(3, b=2, t=5)
    wild = torch.tensor([[40.0, -1e4, 0.0, 7.0, -3.0]])
    logp3 = torch.cat([logp.detach(), wild]).requires_grad_(True)
    old3, ref3 = torch.cat([old, -wild]), torch.cat([ref, wild * 3])
    adv3, mask3 = torch.cat([adv, torch.tensor([5.0])]), torch.cat([mask, torch.zeros(1, 5)])
    options = {"ref_logprobs": ref3, "beta": 0.1, **kwargs}
    loss, stats = _loss(logp3, old3, adv3, mask3, loss_type, **options)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in stats.values())
    loss.backward()
    assert torch.isfinite(logp3.grad).all()
    assert torch.equal(logp3.grad[2], torch.zeros(5))
    if loss_type != "dr_grpo":
        options["ref_logprobs"] = ref
        two, _ = _loss(logp.detach(), old, adv, mask, loss_type, **options)
        torch.testing.assert_close(loss, two)


@pytest.mark.parametrize("loss_type, kwargs", list(_every_loss_type_kwargs()))
def test_all_equal_group_gives_zero_policy_gradient(loss_type, kwargs):
    logp, old, _, _, mask, _ = _random_batch(4, b=4, t=5)
    adv = compute_advantages(torch.tensor([0.3, 0.3, 0.3, 0.3]), 4, "grpo")
    loss, _ = _loss(logp, old, adv, mask, loss_type, **kwargs)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros_like(logp))


def test_clipped_policy_loss_is_policy_loss_bnpo_bit_for_bit():
    logp, old, ref, adv, mask, _ = _random_batch(5)
    wrapped, wrapped_stats = clipped_policy_loss(logp, old, adv, mask, 0.2, 0.28, ref, 0.04)
    direct, direct_stats = _loss(
        logp, old, adv, mask, "bnpo", (0.2, 0.28), ref_logprobs=ref, beta=0.04
    )
    assert torch.equal(wrapped, direct)
    assert (
        wrapped_stats.keys()
        == direct_stats.keys()
        == {"policy_loss", "clip_fraction", "ratio_mean", "kl"}
    )
    assert all(torch.equal(wrapped_stats[k], direct_stats[k]) for k in direct_stats)


def test_policy_loss_rejects_bad_input():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="loss_type"):
        _loss(z, z, torch.ones(2), z, "ppo")
    with pytest.raises(ValueError, match="max_length"):
        _loss(z, z, torch.ones(2), z, "dr_grpo")
    with pytest.raises(ValueError, match="is_weights"):
        _loss(z, z, torch.ones(2), z, "bnpo", is_weights=torch.ones(2, 2))
    with pytest.raises(ValueError, match="ref_logprobs"):
        _loss(z, z, torch.ones(2), z, "grpo", beta=0.1)


# ---------------------------------------------------------------- sampler_correction


def test_token_level_truncated_and_masked_weights():
    # rho = pi_learner / pi_sampler = [0.5, 1, 3, pad], cap 2
    #   truncate: w = [0.5, 1, 2, 0], mean 3.5 / 3, capped 1/3
    #   mask:     w = [0.5, 1, 0, 0], mean 1.5 / 3
    # k3 of KL(sampler || learner), x = learner - sampler: e^x - x - 1
    #   = [0.5 + ln 2 - 1, 0, 3 - ln 3 - 1] -> mean 0.36485
    sampler = torch.tensor([[-1.0, -2.0, -3.0, 0.0]])
    learner = sampler + torch.log(torch.tensor([[0.5, 1.0, 3.0, 1e6]]))
    mask = torch.tensor([[1, 1, 1, 0]])
    kl = (0.5 + math.log(2) - 1 + 3 - math.log(3) - 1) / 3
    weights, stats = sampler_correction(learner, sampler, mask)
    torch.testing.assert_close(weights, torch.tensor([[0.5, 1.0, 2.0, 0.0]]))
    torch.testing.assert_close(stats["is_weight_mean"], torch.tensor(3.5 / 3))
    torch.testing.assert_close(stats["is_capped_fraction"], torch.tensor(1 / 3))
    torch.testing.assert_close(stats["mismatch_kl"], torch.tensor(kl))
    weights, stats = sampler_correction(learner, sampler, mask, mode="mask")
    torch.testing.assert_close(weights, torch.tensor([[0.5, 1.0, 0.0, 0.0]]))
    torch.testing.assert_close(stats["is_weight_mean"], torch.tensor(1.5 / 3))


def test_sequence_level_uses_the_product_of_token_ratios():
    # sequence 0: rho = 2 * 1.5 = 3 -> truncate 2, mask 0; sequence 1: 0.5 * 2 = 1 -> 1
    sampler = torch.zeros(2, 3)
    learner = torch.log(torch.tensor([[2.0, 1.5, 9.0], [0.5, 2.0, 9.0]]))
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    weights, stats = sampler_correction(learner, sampler, mask, level="sequence")
    torch.testing.assert_close(weights, torch.tensor([[2.0, 2.0, 0.0], [1.0, 1.0, 0.0]]))
    torch.testing.assert_close(stats["is_weight_mean"], torch.tensor(1.5))
    torch.testing.assert_close(stats["is_capped_fraction"], torch.tensor(0.5))
    weights, stats = sampler_correction(learner, sampler, mask, level="sequence", mode="mask")
    torch.testing.assert_close(weights, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    torch.testing.assert_close(stats["is_weight_mean"], torch.tensor(0.5))


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("mode", ["truncate", "mask"])
def test_sampler_correction_edge_cases(level, mode):
    # detached weights; a huge summed log-ratio over a long sequence stays finite; a fully
    # masked row gets weight 0 and finite stats; an all-masked batch gives zeros.
    learner = torch.full((2, 400), 0.5, requires_grad=True)
    sampler = torch.zeros(2, 400)
    mask = torch.ones(2, 400)
    mask[1] = 0
    weights, stats = sampler_correction(learner, sampler, mask, level=level, mode=mode, cap=3.0)
    assert not weights.requires_grad
    assert torch.isfinite(weights).all() and all(torch.isfinite(v) for v in stats.values())
    assert torch.equal(weights[1], torch.zeros(400))
    if level == "token":  # each token: rho = e^0.5 = 1.65, under the cap
        torch.testing.assert_close(weights[0], torch.full((400,), math.exp(0.5)))
    else:  # the sequence: rho = e^(400 * 0.5), clamped to e^20, over the cap
        assert torch.equal(weights[0], torch.full((400,), 3.0 if mode == "truncate" else 0.0))
    weights, stats = sampler_correction(
        learner, sampler, torch.zeros(2, 400), level=level, mode=mode
    )
    assert torch.equal(weights, torch.zeros(2, 400))
    assert all(v.item() == 0.0 for v in stats.values())


def test_masked_token_gets_no_gradient_in_the_loss():
    # MIS weights fed to policy_loss: the token whose ratio exceeds the cap stops learning.
    sampler = torch.tensor([[-1.0, -1.0]])
    learner_old = torch.tensor([[-1.0, 0.5]])  # rho = [1, e^1.5 = 4.48]
    weights, _ = sampler_correction(learner_old, sampler, torch.ones(1, 2), mode="mask")
    logp = learner_old.clone().requires_grad_(True)
    loss, _ = _loss(logp, learner_old, torch.ones(1), torch.ones(1, 2), "bnpo", is_weights=weights)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5, 0.0]]))


def test_sampler_correction_rejects_bad_input():
    z = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="level"):
        sampler_correction(z, z, z, level="chunk")
    with pytest.raises(ValueError, match="mode"):
        sampler_correction(z, z, z, mode="clip")
    with pytest.raises(ValueError, match="cap"):
        sampler_correction(z, z, z, cap=0.0)
    with pytest.raises(ValueError, match="same"):
        sampler_correction(z, torch.zeros(1, 3), z)


# ----------------------------------------------------------------------------- SFT and DPO


def test_sft_loss_hand_computed_on_response_tokens_only():
    # Row 0: position 0 has uniform logits over 3 tokens (target 1: -log 1/3 = 1.098612),
    # position 1 has softmax [1/4, 1/2, 1/4] (target 1: -log 1/2 = 0.693147); position 2 is
    # prompt (mask 0) with a terrible prediction that must not count.
    ln2 = math.log(2.0)
    logits = torch.tensor([[[0.0, 0.0, 0.0], [0.0, ln2, 0.0], [50.0, -50.0, 0.0]]])
    targets = torch.tensor([[1, 1, 1]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, stats = sft_loss(logits, targets, mask)
    assert loss.item() == pytest.approx((math.log(3.0) + ln2) / 2, abs=1e-6)  # 0.895880
    assert stats["num_tokens"].item() == 2
    # arg-max hits: position 0 is a three-way tie (argmax picks 0: a miss), position 1 a hit
    assert stats["token_accuracy"].item() == pytest.approx(0.5)
    # a token mean over the batch, not a mean of per-row means: a second row with one
    # response token of loss -log 1/3 gives (1.098612 * 2 + 0.693147) / 3
    logits2 = torch.cat([logits, torch.zeros(1, 3, 3)])
    loss2, _ = sft_loss(logits2, torch.tensor([[1, 1, 1], [2, 0, 0]]),
                        torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))  # fmt: skip
    assert loss2.item() == pytest.approx((2 * math.log(3.0) + ln2) / 3, abs=1e-6)
    # no response token at all: 0, not NaN
    assert sft_loss(logits, targets, torch.zeros(1, 3))[0].item() == 0.0
    with pytest.raises(ValueError, match="agree"):
        sft_loss(logits, targets, torch.ones(1, 2))


def test_sequence_logprob_sums():
    logprobs = torch.tensor([[-1.0, -2.0, -4.0], [-0.5, -8.0, float("nan")]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert sequence_logprob_sums(logprobs, mask).tolist() == [-6.0, -0.5]


def test_dpo_loss_hand_computed_value_and_gradient():
    # Pair 0: beta 0.5, policy moved up on the chosen (-1 vs ref -2) and down on the rejected
    # (-3 vs ref -2): r_w = 0.5, r_l = -0.5, margin 1, loss -log sigmoid(1) = log(1 + e^-1).
    # Pair 1: the policy equals the reference: margin 0, loss log 2.
    chosen = torch.tensor([-1.0, -2.0], requires_grad=True)
    rejected = torch.tensor([-3.0, -2.0], requires_grad=True)
    ref_chosen, ref_rejected = torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0])
    loss, stats = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5)
    expected = (math.log(1 + math.exp(-1.0)) + math.log(2.0)) / 2  # 0.503197
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["chosen_reward"].item() == pytest.approx((0.5 + 0.0) / 2)
    assert stats["rejected_reward"].item() == pytest.approx((-0.5 + 0.0) / 2)
    assert stats["reward_margin"].item() == pytest.approx(0.5)
    assert stats["reward_accuracy"].item() == pytest.approx(0.5)  # margin 0 is not a win
    # d loss / d log pi(y_w) = -beta * sigmoid(-margin) / P; the rejected side has the
    # opposite sign
    loss.backward()
    sig = 1 / (1 + math.exp(1.0))  # sigmoid(-1) = 0.268941
    assert chosen.grad.tolist() == pytest.approx([-0.5 * sig / 2, -0.5 * 0.5 / 2], abs=1e-6)
    assert rejected.grad.tolist() == pytest.approx([0.5 * sig / 2, 0.5 * 0.5 / 2], abs=1e-6)


def test_dpo_loss_finite_for_huge_margins_and_bad_input():
    big = torch.tensor([1e4])
    loss, _ = dpo_loss(-big, big, big, -big, beta=1.0)  # margin -4e4: loss 4e4, not inf
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(4e4)
    loss, stats = dpo_loss(*(torch.zeros(0) for _ in range(4)), beta=0.1)
    assert loss.item() == 0.0 and stats["reward_accuracy"].item() == 0.0
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(big, big, big, big, beta=0.0)
    with pytest.raises(ValueError, match=r"\(P,\)"):
        dpo_loss(big, torch.zeros(2), big, big, beta=0.1)
