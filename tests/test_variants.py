"""Every loss type, advantage estimator and GRPO option runs end to end through `rlvr train`.

Tiny runs (a random 2-layer model, 2 GRPO steps, no pretraining) check that each variant
trains without error and logs what it should; the math itself is checked against hand-
computed numbers in tests/test_algorithms.py.
"""

from __future__ import annotations

import math

import pytest

from rlvr.cli import main, recipe_path
from rlvr.learning.algorithms import ADVANTAGE_ESTIMATORS, LOSS_TYPES
from rlvr.report import read_metrics

TINY = [
    "--pretrain.steps", "0", "--grpo.steps", "2", "--grpo.num_prompts", "2",
    "--grpo.group_size", "4", "--grpo.max_new_tokens", "12", "--grpo.eval_every", "0",
    "--eval.num_problems", "4", "--eval.num_samples", "0", "--eval.max_new_tokens", "8",
    "--reward.workers", "0", "--checkpoint.every", "0", "--threads", "1", "--plots", "false",
    # a random model answers nothing right: a format-only reward varies within groups
    "--reward.format_weight", "1.0",
]  # fmt: skip


def train(tmp_path, *overrides: str) -> list[dict]:
    out = tmp_path / "run"
    args = ["train", str(recipe_path("smoke")), "--out", str(out), *TINY, *overrides]
    assert main(args) == 0
    rows = [r for r in read_metrics(out) if r["phase"] == "grpo"]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float):
                assert math.isfinite(value), (key, value)
    return rows


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_each_loss_type_trains(tmp_path, loss_type):
    extra = ["--grpo.epsilon", "3e-4", "--grpo.epsilon_high", "4e-4"] if loss_type == "gspo" else []
    rows = train(tmp_path, "--grpo.loss_type", loss_type, *extra)
    assert all("loss" in r and "clip_fraction" in r for r in rows)


@pytest.mark.parametrize("advantage", ADVANTAGE_ESTIMATORS)
def test_each_advantage_estimator_trains(tmp_path, advantage):
    train(tmp_path, "--grpo.advantage", advantage)


def test_dynamic_sampling_drops_flat_groups_and_logs_it(tmp_path):
    rows = train(tmp_path, "--grpo.dynamic_sampling", "true", "--grpo.max_sampling_rounds", "3")
    for r in rows:
        assert 1 <= r["sampling_rounds"] <= 3
        assert 0 <= r["dropped_groups"] <= 2 * r["sampling_rounds"]


def test_forced_length_samples_max_new_tokens(tmp_path):
    # Unforced, this random model ends some completions at EOS; either way of forcing the
    # length makes every completion max_new_tokens long.
    assert min(r["response_length"] for r in train(tmp_path / "plain")) < 12
    for name, length in [("ignore", ["--grpo.ignore_eos", "true"]),
                         ("min", ["--grpo.min_new_tokens", "12"])]:  # fmt: skip
        rows = train(tmp_path / name, *length)
        assert all(r["response_length"] == 12 and r["truncated_rate"] == 1.0 for r in rows)


def test_everything_at_once(tmp_path):
    rows = train(
        tmp_path,
        "--grpo.loss_type", "grpo", "--grpo.advantage", "rloo",
        "--grpo.reward_combine", "normalize_then_sum", "--grpo.delta", "3.0",
        "--grpo.mask_truncated", "true", "--grpo.entropy_coef", "0.01",
        "--grpo.ref_update_every", "1", "--grpo.is_level", "sequence", "--grpo.is_mode", "mask",
        "--reward.overlong_buffer", "4",
    )  # fmt: skip
    for r in rows:
        assert {"mismatch_kl", "is_weight_mean", "entropy", "kl", "reward/overlong"} <= set(r)
        # the sampler and the learner are the same model here: they agree closely
        assert r["mismatch_kl"] < 1e-3


@pytest.mark.parametrize("combine", ["sum_then_normalize", "normalize_then_sum", "gdpo"])
def test_each_reward_combination_trains(tmp_path, combine):
    """Several reward parts (accuracy, format, a user function), combined each way."""
    rows = train(
        tmp_path, "--grpo.reward_combine", combine,
        "--reward.functions", '{"tests.reward_functions:text_parity" = 1.0}',
    )  # fmt: skip
    assert all("loss" in r and "reward/tests.reward_functions:text_parity" in r for r in rows)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_importance_correction_logs_the_mismatch(tmp_path, level):
    rows = train(tmp_path, "--grpo.is_level", level)
    assert all(0 <= r["is_capped_fraction"] <= 1 for r in rows)


@pytest.mark.parametrize("dynamic_sampling", ["false", "true"])
@pytest.mark.parametrize("advantage", ADVANTAGE_ESTIMATORS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_every_combination_trains(tmp_path, loss_type, advantage, dynamic_sampling):
    """The whole matrix the config allows: loss type x advantage x dynamic sampling. A reward
    that varies within a random model's groups keeps some groups informative, so each step
    updates the policy (dynamic sampling drops only the flat ones)."""
    rows = train(
        tmp_path,
        "--grpo.loss_type", loss_type, "--grpo.advantage", advantage,
        "--grpo.dynamic_sampling", dynamic_sampling, "--grpo.max_sampling_rounds", "2",
        "--reward.functions", '{"tests.reward_functions:text_parity" = 1.0}',
    )  # fmt: skip
    for r in rows:
        assert {"loss", "clip_fraction", "entropy", "kl", "grad_norm"} <= set(r), r
        assert r["dropped_fraction"] < 1.0
        if dynamic_sampling == "false":
            assert r["dropped_groups"] == 0 and r["sampling_rounds"] == 1
