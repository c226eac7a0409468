"""Hand-computed checks of the RL math in rlvr/algorithms.py."""

import math

import pytest
import torch

from rlvr.algorithms import (
    clipped_policy_loss,
    entropy_from_logits,
    group_advantages,
    kl_k3,
    masked_mean,
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
