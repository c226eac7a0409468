"""Reward parts and their weighted sum (rlvr/verifiers/rewards.py), in-process and through the pool."""

from __future__ import annotations

import math

import pytest

from rlvr.config import Config, ConfigError
from rlvr.tasks import ArithmeticTask
from rlvr.verifiers.rewards import Scorer, load_function, open_pool, overlong_penalty

TASK = ArithmeticTask(ops="+*")
PROBLEM = TASK.problems("train", 1, seed=0)[0]
RIGHT = f"<think>x</think><answer>{PROBLEM.answer}</answer>"
WRONG = "<think>x</think><answer>-1</answer>"


def test_overlong_penalty_hand_computed():
    # L_max 16, buffer 4: free up to 12, then (12 - L) / 4, -1 beyond 16; buffer 0 is off
    got = [overlong_penalty(n, 16, 4) for n in (0, 12, 13, 14, 15, 16, 17, 100)]
    assert got == [0.0, 0.0, -0.25, -0.5, -0.75, -1.0, -1.0, -1.0]
    assert overlong_penalty(100, 16, 0) == 0.0
    assert [overlong_penalty(n, 4, 4) for n in (0, 2, 4)] == [0.0, -0.5, -1.0]


def scorer(**reward) -> Scorer:
    cfg = Config()
    for key, value in reward.items():
        setattr(cfg.reward, key, value)
    return Scorer(TASK, cfg.reward, max_new_tokens=16)


def test_weighted_sum_of_named_parts():
    s = scorer(accuracy_weight=1.0, format_weight=0.5, overlong_buffer=4, overlong_weight=2.0)
    right = s.score(s.submit(RIGHT, PROBLEM), num_tokens=14)
    assert right.parts == {"accuracy": 1.0, "format": 1.0, "overlong": -0.5}
    assert right.reward == pytest.approx(1.0 + 0.5 - 1.0)
    wrong = s.score(s.submit(WRONG, PROBLEM), num_tokens=3)
    assert wrong.parts == {"accuracy": 0.0, "format": 1.0, "overlong": 0.0}
    assert wrong.verdict.status == "wrong" and wrong.reward == pytest.approx(0.5)
    assert s.weights == {"accuracy": 1.0, "format": 0.5, "overlong": 2.0}


def test_user_functions_are_parts_and_nan_scores_zero():
    s = scorer(functions={"tests.reward_functions:length_bonus": 0.1,
                          "tests.reward_functions:not_a_number": 1.0})  # fmt: skip
    scored = s.score(s.submit(RIGHT, PROBLEM), num_tokens=5)
    assert scored.parts["tests.reward_functions:length_bonus"] == len(RIGHT) / 100
    assert scored.parts["tests.reward_functions:not_a_number"] == 0.0
    assert scored.bad == 1 and math.isfinite(scored.reward)


def test_a_raising_user_function_scores_zero_in_process():
    s = scorer(functions={"tests.reward_functions:raises": 1.0})
    scored = s.score(s.submit(RIGHT, PROBLEM), num_tokens=5)
    assert scored.parts["tests.reward_functions:raises"] == 0.0 and scored.parts["accuracy"] == 1.0


def test_pool_verifies_and_times_out_a_hanging_function(monkeypatch, tmp_path):
    cfg = Config()
    cfg.reward.workers, cfg.reward.timeout_s = 1, 1.0
    cfg.reward.functions = {"tests.reward_functions:hangs": 1.0}
    with open_pool(cfg.reward) as pool:
        s = Scorer(TASK, cfg.reward, max_new_tokens=16, pool=pool)
        pending = [s.submit(r, PROBLEM) for r in (RIGHT, WRONG)]
        right, wrong = (s.score(p, num_tokens=5) for p in pending)
    assert right.parts == {"accuracy": 1.0, "format": 1.0, "tests.reward_functions:hangs": 0.0}
    assert wrong.verdict.status == "wrong"


def test_bad_function_names_are_config_errors():
    for name, match in [("nocolon", "module:function"), ("no_such_module_xyz:f", "cannot be imported"),
                        ("tests.reward_functions:missing", "has no function")]:  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            load_function(name)


def test_the_engine_hands_over_each_completion_as_it_finishes():
    # The rollout submits a completion to the verifier pool from on_complete: it must see
    # every completion exactly once, stopped ones before the others run to max_new_tokens,
    # and the completions must be the same as without the callback.
    import torch

    from rlvr.model import ModelConfig, Transformer
    from rlvr.sampling.engine import Engine

    torch.manual_seed(0)
    engine = Engine(Transformer(ModelConfig()).eval(), pad_id=0)
    prompts = [[1, 5, 6, 7], [1, 8, 9]]
    kwargs = dict(num_samples=4, max_new_tokens=20, stop_token_ids=[2, 10, 11, 12])
    plain = engine.generate(prompts, generator=torch.Generator().manual_seed(1), **kwargs)
    seen = []
    streamed = engine.generate(prompts, generator=torch.Generator().manual_seed(1),
                               on_complete=seen.append, **kwargs)  # fmt: skip
    assert streamed == plain
    assert sorted((c.prompt_index, c.sample_index) for c in seen) == [
        (c.prompt_index, c.sample_index) for c in plain
    ]
    reasons = [c.finish_reason for c in seen]
    assert "stop" in reasons and "length" in reasons
    assert reasons == sorted(reasons, key=lambda r: r != "stop")  # stops first
