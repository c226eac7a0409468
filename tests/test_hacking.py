"""The reward-hacking watch: each check on crafted completions, the per-step shares, and the
switch that scores flagged completions 0."""

from __future__ import annotations

import pytest

from rlvr.config import Config, ConfigError, load_config
from rlvr.tasks import Problem
from rlvr.verifiers import Verdict
from rlvr.verifiers.hacking import (
    CHECKS,
    boxed_contents,
    copied_answer,
    final_answer,
    flag_group,
    flagged_shares,
    length_outliers,
    no_reasoning,
    several_answers,
    text_after_answer,
    truncated,
)
from rlvr.verifiers.rewards import Scored, Scorer

GOOD = "<think>6*2=12\n17+12=29</think><answer>29</answer><eos>"


def test_no_reasoning():
    assert no_reasoning("<think></think><answer>29</answer>")
    assert no_reasoning("<think> \n </think><answer>29</answer>")
    assert no_reasoning("<answer>29</answer>")  # no think block at all
    assert not no_reasoning(GOOD)


def test_copied_answer_matches_whole_numbers_only():
    prompt = "17+6*2-10+19-19="
    assert copied_answer("<think></think><answer>19</answer>", prompt)
    assert copied_answer("<think>x</think><answer> 17 </answer>", prompt)
    assert not copied_answer("<think>x</think><answer>1</answer>", prompt)  # inside 17, 10, 19
    assert not copied_answer("<think>x</think><answer>190</answer>", prompt)
    assert not copied_answer("<think>x</think><answer>29</answer>", prompt)
    assert not copied_answer("<think>no answer</think>", prompt)
    assert copied_answer("The answer is \\boxed{Paris}.", "Is the capital Paris or Lyon?")


def test_several_answers():
    assert several_answers("<think>x</think><answer>3</answer><answer>4</answer>")
    assert several_answers("so \\boxed{3} or maybe \\boxed{4}")
    assert not several_answers(GOOD)
    assert not several_answers("the answer is \\boxed{\\frac{1}{2}}")


def test_text_after_answer():
    assert text_after_answer("<think>x</think><answer>3</answer> or 4")
    assert text_after_answer("<think>x</think><answer>3</answer><eos>junk")
    assert not text_after_answer(GOOD)
    assert not text_after_answer("<think>x</think><answer>3</answer>  \n")
    assert not text_after_answer("<think>x</think>no answer block")


def test_truncated():
    assert truncated("length")
    assert not truncated("stop")


def test_length_outliers():
    assert length_outliers([10, 11, 12, 10, 60, 11, 2, 12], ratio=4.0) == [
        False, False, False, False, True, False, True, False,
    ]  # fmt: skip
    assert length_outliers([10, 30], ratio=4.0) == [False, False]
    assert length_outliers([5], ratio=4.0) == [False]


def test_final_answer_and_boxed():
    assert final_answer(GOOD) == "29"
    assert final_answer("so x = \\boxed{\\frac{1}{2}} and then \\boxed{3}") == "3"
    assert final_answer("nothing here") is None
    assert boxed_contents("\\boxed{a{b}c} \\boxed{unclosed") == ["a{b}c"]


def test_flag_group_and_shares():
    prompt = "17+6*2-10+19-19="
    responses = [
        GOOD,  # clean
        "<think></think><answer>19</answer>",  # copied (and no reasoning)
        "<think>a</think><answer>3</answer><answer>4</answer>",  # several
        "<think>" + "x" * 200,  # truncated, long
    ]
    flags = flag_group(prompt, responses, ["stop", "stop", "stop", "length"], [20, 10, 15, 200])
    assert flags == [
        (), ("copied_answer",), ("several_answers", "text_after_answer"),
        ("truncated", "length_outlier"),
    ]  # fmt: skip
    required = flag_group(
        prompt, responses[:2], ["stop", "stop"], [20, 10], reasoning_required=True
    )
    assert required == [(), ("no_reasoning", "copied_answer")]

    shares = flagged_shares(flags, rewarded=[True, True, False, True])
    assert set(shares) == {f"hacking/{name}" for name in (*CHECKS, "any")}
    assert shares["hacking/copied_answer"] == pytest.approx(1 / 3)
    assert shares["hacking/several_answers"] == 0.0  # flagged, but not rewarded
    assert shares["hacking/truncated"] == pytest.approx(1 / 3)
    assert shares["hacking/any"] == pytest.approx(2 / 3)
    assert flagged_shares(flags, rewarded=[False] * 4)["hacking/any"] == 0.0


def _scored(reward: float) -> Scored:
    return Scored(Verdict(reward, "correct" if reward else "wrong"), {"accuracy": reward,
                  "format": 1.0}, reward + 0.1)  # fmt: skip


@pytest.mark.parametrize("zero", [[], ["copied_answer"], ["truncated", "copied_answer"]])
def test_zero_flagged_scores_flagged_completions_zero(zero):
    cfg = load_config(None, ["--reward.workers", "0", "--reward.zero_flagged", str(zero)])
    scorer = Scorer(None, cfg.reward, max_new_tokens=64)
    problem = Problem("p", "17+6*2-10+19-19=", "19", "arithmetic", "train")
    responses = [GOOD, "<think></think><answer>19</answer>", "<think>" + "x" * 60]
    scored = [_scored(1.0), _scored(1.0), _scored(1.0)]
    scorer.watch(problem, responses, ["stop", "stop", "length"], [20, 12, 64], scored)
    assert [s.flags for s in scored] == [(), ("copied_answer",), ("truncated",)]
    assert scored[0].reward == pytest.approx(1.1)  # never flagged: untouched
    for s in scored[1:]:
        punished = any(name in zero for name in s.flags)
        assert s.reward == (0.0 if punished else pytest.approx(1.1))
        assert all(v == 0.0 for v in s.parts.values()) == punished


def test_zero_flagged_names_are_checked():
    with pytest.raises(ConfigError, match="not a check"):
        load_config(None, ["--reward.zero_flagged", '["copied"]'])
    assert Config().reward.zero_flagged == []
    with pytest.raises(ConfigError, match="length_ratio"):
        load_config(None, ["--reward.length_ratio", "1.0"])
