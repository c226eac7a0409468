"""Tasks: deterministic distinct problems, disjoint splits, traces that verify as they should."""

import pickle
import random
import re
import subprocess
import sys

import pytest

from rlvr.tasks import TASKS, ArithmeticTask, CountdownTask, Problem
from rlvr.tasks.base import split_of
from rlvr.tokenizer import CharTokenizer, format_prompt
from rlvr.verifiers.countdown import check_countdown, evaluate_expression

ALL_TASKS = [ArithmeticTask(), CountdownTask()]


@pytest.fixture(params=ALL_TASKS, ids=lambda t: t.name)
def task(request):
    return request.param


def test_registry_names_match():
    assert {name: cls.name for name, cls in TASKS.items()} == {
        "arithmetic": "arithmetic",
        "countdown": "countdown",
        "dataset": "dataset",
    }


def test_deterministic_per_seed(task):
    a = task.problems("train", 50, seed=3)
    assert a == task.problems("train", 50, seed=3)
    assert [p.prompt for p in a] != [p.prompt for p in task.problems("train", 50, seed=4)]


def test_splits_disjoint_and_labelled(task):
    train = task.problems("train", 2000, seed=0)
    test = task.problems("test", 500, seed=0)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert all(p.split == "train" and split_of(p.prompt) == "train" for p in train)
    assert all(p.split == "test" and split_of(p.prompt) == "test" for p in test)
    # A different seed draws different problems, but never crosses the split.
    other = task.problems("train", 2000, seed=1)
    assert not {p.prompt for p in other} & {p.prompt for p in test}


def test_distinct_ids_and_prompts(task):
    problems = task.problems("train", 1000, seed=0)
    assert len({p.id for p in problems}) == len(problems)
    assert len({p.prompt for p in problems}) == len(problems)
    assert all(p.verifier == task.name for p in problems)


def test_completions_verify_as_intended(task):
    rng = random.Random(0)
    tok = CharTokenizer()
    for p in task.problems("train", 300, seed=0):
        answer_only = task.completion(p, rng, think=False, slip=False)
        assert answer_only == f"<think></think><answer>{p.answer}</answer>"
        assert task.verify(answer_only, p).status == "correct"
        traced = task.completion(p, rng, think=True, slip=False)
        verdict = task.verify(traced, p)
        assert verdict.status == "correct" and verdict.reward == 1.0, (p, traced, verdict)
        assert verdict.components == {"accuracy": 1.0, "format": 1.0}
        slipped = task.completion(p, rng, think=True, slip=True)
        verdict = task.verify(slipped, p)
        assert verdict.status == "wrong" and verdict.reward == 0.0, (p, slipped, verdict)
        assert verdict.components["format"] == 1.0
        # Everything a task writes is encodable by the default tokenizer.
        tok.encode(format_prompt(p.prompt) + slipped + "<eos>")


def test_slip_needs_think(task):
    p = task.problems("train", 1, seed=0)[0]
    with pytest.raises(ValueError, match="think=True"):
        task.completion(p, random.Random(0), think=False, slip=True)


def test_too_many_problems_is_a_clear_error():
    small = ArithmeticTask(num_ops=1, mul_min=2, mul_max=5)  # 16 expressions in all
    with pytest.raises(ValueError, match="ask for fewer"):
        small.problems("test", 10, seed=0)
    with pytest.raises(ValueError, match="ask for fewer"):
        small.problems("train", 16, seed=0)
    assert len(small.problems("train", 8, seed=0)) == 8


def test_unknown_split():
    with pytest.raises(ValueError, match="split"):
        ArithmeticTask().problems("valid", 1, seed=0)


def test_problem_round_trips():
    p = CountdownTask().problems("test", 1, seed=0)[0]
    assert Problem.from_dict(p.to_dict()) == p
    assert pickle.loads(pickle.dumps(p)) == p
    assert pickle.loads(pickle.dumps(CountdownTask(max_number=9))) == CountdownTask(max_number=9)
    with pytest.raises(ValueError, match="unknown fields"):
        Problem.from_dict({**p.to_dict(), "extra": 1})


def test_arithmetic_problems_have_the_promised_shape():
    for p in ArithmeticTask().problems("train", 500, seed=0):
        assert p.prompt.endswith("=") and "*" in p.prompt
        # The gold answer agrees with an independent evaluation (our countdown parser).
        assert evaluate_expression(p.prompt[:-1]).value == int(p.answer)
        for factor in p.prompt[:-1].replace("+", " ").replace("-", " ").split():
            numbers = factor.split("*")
            if len(numbers) > 1:
                assert all(2 <= int(n) <= 9 for n in numbers)
            else:
                assert 10 <= int(numbers[0]) <= 99


def test_arithmetic_trace_multiplies_first():
    task = ArithmeticTask()
    p = Problem("x", "37+6*8-45=", "40", "arithmetic", "train")
    rng = random.Random(0)
    assert task.completion(p, rng, think=True, slip=False) == (
        "<think>6*8=48\n37+48=85\n85-45=40</think><answer>40</answer>"
    )
    p = Problem("y", "10+2*3+4*5=", "36", "arithmetic", "train")
    assert task.completion(p, rng, think=True, slip=False) == (
        "<think>2*3=6\n4*5=20\n10+6=16\n16+20=36</think><answer>36</answer>"
    )


def test_arithmetic_slip_changes_exactly_one_step_by_a_small_amount():
    task = ArithmeticTask()
    rng = random.Random(1)
    for p in task.problems("train", 200, seed=0):
        good = task.completion(p, rng, think=True, slip=False)
        bad = task.completion(p, rng, think=True, slip=True)
        steps = bad.split("<think>")[1].split("</think>")[0].split("\n")
        lhs_rhs = [s.rsplit("=", 1) for s in steps]
        wrong = [i for i, (lhs, rhs) in enumerate(lhs_rhs) if evaluate_step(lhs) != int(rhs)]
        assert len(wrong) == 1, bad
        lhs, rhs = lhs_rhs[wrong[0]]
        assert 1 <= abs(int(rhs) - evaluate_step(lhs)) <= 10
        assert good != bad
        assert "--" not in bad and "+-" not in bad  # slipped terms stay non-negative


def evaluate_step(lhs: str) -> int:
    # A step is "x op y" where x may be negative ("-38+99"), so not a countdown expression.
    x, op, y = re.fullmatch(r"(-?[0-9]+)([-+*])([0-9]+)", lhs).groups()
    return int(x) + int(y) if op == "+" else int(x) - int(y) if op == "-" else int(x) * int(y)


def test_countdown_problems_are_solvable_and_sensible():
    task = CountdownTask()
    for p in task.problems("train", 500, seed=0):
        numbers, target = p.meta["numbers"], p.meta["target"]
        assert len(numbers) == 3 and all(1 <= n <= 20 for n in numbers)
        assert 10 <= target <= 99 and target not in numbers
        assert p.prompt == " ".join(map(str, sorted(numbers))) + f" -> {target}"
        assert check_countdown(p.answer, numbers, target) == (True, "ok")
        # The gold expression never goes negative or fractional along the way.
        for step in evaluate_expression(p.answer).steps:
            assert step.result >= 0 and step.result.denominator == 1


def test_countdown_trace_searches_until_it_hits():
    task = CountdownTask()
    p = Problem(
        "x",
        "3 7 9 -> 60",
        "(9*7)-3",
        "countdown",
        "train",
        {"numbers": [3, 7, 9], "target": 60},
    )
    assert task.completion(p, random.Random(2), think=True, slip=False) == (
        "<think>9+7=16 16*3=48 no\n9-7=2 3*2=6 no\n9*7=63 63-3=60 yes\n</think>"
        "<answer>(9*7)-3</answer>"
    )


def test_no_torch_import():
    code = "import sys, rlvr.tasks, rlvr.verifiers, rlvr.tokenizer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
