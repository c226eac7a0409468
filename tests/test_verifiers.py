"""Verifiers: the R1 format, arithmetic and countdown grading, and hostile model text."""

import time

import pytest

from rlvr.tasks import ArithmeticTask, CountdownTask, Problem
from rlvr.verifiers import (
    STATUSES,
    Verdict,
    check_countdown,
    evaluate_expression,
    format_reward,
    guarded,
    parse_response,
    verify_arithmetic,
    verify_countdown,
)


def wrap(answer: str, think: str = "") -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


# --- format -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        wrap("40", "6*8=48\n37+48=85"),
        wrap("40") + "<eos>",
        wrap("40") + "\n <eos>\n",
        wrap(""),
    ],
)
def test_well_formed(text):
    parsed = parse_response(text)
    assert parsed.well_formed and parsed.answer is not None
    assert format_reward(text) == 1.0


@pytest.mark.parametrize(
    "text, answer",
    [
        ("<answer>40</answer>", "40"),  # no think block
        ("<think>x<answer>40</answer>", "40"),  # think never closed
        ("hello " + wrap("40"), "40"),  # text before
        (wrap("40") + "<eos>more", "40"),  # text after <eos>
        (wrap("40") + "<eos><eos>", "40"),
        ("<think><think>x</think></think><answer>40</answer>", "40"),  # nested tags
        ("<think>a</think><think>b</think><answer>40</answer>", "40"),  # two think blocks
        ("<think></think><answer>4<eos>0</answer>", "4<eos>0"),  # special token inside
        ("<think>abc", None),  # truncated
        ("<think></think><answer>40", None),  # truncated inside the answer
        ("", None),
        ("40", None),
        (wrap("39") + "<answer>40</answer>", None),  # several candidate answers
        ("<think></think><answer>39<answer>40</answer>", None),
    ],
)
def test_malformed(text, answer):
    parsed = parse_response(text)
    assert not parsed.well_formed
    assert parsed.answer == answer
    assert format_reward(text) == 0.0


def test_parse_keeps_think_text():
    assert parse_response(wrap("7", "3+4=7")).think == "3+4=7"
    assert parse_response("<answer>7</answer>").think is None


# --- arithmetic ---------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["40", " 40 ", "\n40\n", "040"])
def test_arithmetic_correct(answer):
    verdict = verify_arithmetic(wrap(answer, "6*8=48"), "40")
    assert verdict.status == "correct"
    assert verdict.reward == 1.0
    assert verdict.components == {"accuracy": 1.0, "format": 1.0}


def test_arithmetic_negative_and_zero():
    assert verify_arithmetic(wrap("-12"), "-12").status == "correct"
    assert verify_arithmetic(wrap("12"), "-12").status == "wrong"
    assert verify_arithmetic(wrap("-0"), "0").status == "correct"


def test_arithmetic_wrong_keeps_format_component():
    verdict = verify_arithmetic(wrap("41"), "40")
    assert verdict.status == "wrong" and verdict.reward == 0.0
    assert verdict.components == {"accuracy": 0.0, "format": 1.0}


def test_arithmetic_correct_but_malformed():
    # The answer still counts (reward == accuracy); the format component says it is malformed.
    verdict = verify_arithmetic("<answer>40</answer>", "40")
    assert verdict.status == "correct" and verdict.components["format"] == 0.0


@pytest.mark.parametrize(
    "answer",
    ["1e999", "4.0", "2+2", "40 40", "٣", "４０", "--40", "+40", "__import__('os')", "", "forty"],
)
def test_arithmetic_unparsable(answer):
    verdict = verify_arithmetic(wrap(answer), "40")
    assert verdict.status == "unparsable" and verdict.reward == 0.0


@pytest.mark.parametrize(
    "response",
    ["", "<think>6*8=48", "<think></think><answer>4", wrap("40") + "<answer>41</answer>"],
)
def test_arithmetic_truncated_or_listing_candidates(response):
    assert verify_arithmetic(response, "40").status == "unparsable"


def test_arithmetic_huge_number_is_fast():
    start = time.perf_counter()
    verdict = verify_arithmetic(wrap("9" * 10000), "40")
    assert verdict.status == "wrong"
    assert verify_arithmetic(wrap("9" * 10000), "9" * 10000).status == "correct"
    assert time.perf_counter() - start < 0.5


# --- countdown ----------------------------------------------------------------------------

NUMBERS, TARGET = [3, 7, 9, 12], 51


@pytest.mark.parametrize(
    "expr, numbers",
    [
        ("7*9-12", NUMBERS),
        ("9*7-12", NUMBERS),
        ("(7*9)-12", NUMBERS),
        ("7 * 9 - 12", NUMBERS),
        ("((7*9)-(12))", NUMBERS),
        ("3*(12+9-7)+9", NUMBERS + [9]),  # a number given twice may be used twice
        ("12*3+7+9-1*1", NUMBERS + [1, 1]),
    ],
)
def test_countdown_distinct_valid_expressions(expr, numbers):
    assert check_countdown(expr, numbers, TARGET) == (True, "ok")
    assert verify_countdown(wrap(expr), numbers, TARGET).status == "correct"


def test_countdown_allows_exact_fractions_along_the_way():
    assert check_countdown("7/2*4", [2, 4, 7], 14) == (True, "ok")
    assert check_countdown("12/(3-7/7)", [3, 7, 7, 12], 6) == (True, "ok")


@pytest.mark.parametrize(
    "expr, reason",
    [
        ("7*9-12+3", "evaluates to 54"),
        ("7*7", "uses 7 2 times"),
        ("51", "not among the numbers"),
        ("7*9-13+1", "not among the numbers"),
    ],
)
def test_countdown_wrong(expr, reason):
    ok, why = check_countdown(expr, NUMBERS, TARGET)
    assert not ok and reason in why
    assert verify_countdown(wrap(expr), NUMBERS, TARGET).status == "wrong"


@pytest.mark.parametrize(
    "expr, reason",
    [
        ("9/(3-3)", "division by zero"),
        ("-3+54", "expected a number"),  # no unary minus
        ("7*(9-12", "missing closing"),
        ("7*9)-12", "unexpected ')'"),
        ("7*9-", "ends too early"),
        ("", "ends too early"),
        ("7 9", "unexpected '9'"),
        ("7**9", "expected a number"),
        ("1e999", "unexpected character 'e'"),
        ("__import__('os')", "unexpected character '_'"),
        ("٣*17", "unexpected character"),
        ("7*9-12=51", "unexpected character '='"),
        ("7.0*9-12", "unexpected character '.'"),
        ("9" * 10000, "longer than 200"),
        ("9" * 50, "more than 9 digits"),
        ("(" * 1000 + "3" + ")" * 1000, "longer than 200"),
        ("(" * 90 + "3" + ")" * 90, "nested deeper"),
    ],
)
def test_countdown_invalid(expr, reason):
    ok, why = check_countdown(expr, NUMBERS + [3], TARGET)
    assert not ok and reason in why
    assert verify_countdown(wrap(expr), NUMBERS, TARGET).status == "unparsable"


def test_countdown_deep_nesting_is_fast_and_never_recurses_out():
    start = time.perf_counter()
    for depth in (31, 33, 100, 1000, 100_000):
        text = "(" * depth + "3" + ")" * depth
        ok, _ = check_countdown(text, [3], 3)
        assert ok == (depth <= 32 and len(text) <= 200)
        assert verify_countdown(wrap(text), [3], 3).status in ("correct", "unparsable")
    assert time.perf_counter() - start < 0.5


def test_countdown_big_products_stay_cheap():
    start = time.perf_counter()
    expr = "*".join(["999999999"] * 20)  # 199 characters: the largest value the limits allow
    assert len(expr) <= 200
    assert evaluate_expression(expr).value == 999999999**20
    assert time.perf_counter() - start < 0.1


def test_countdown_task_verify_uses_meta():
    task = CountdownTask()
    p = Problem(
        "x", "3 7 9 12 -> 51", "7*9-12", "countdown", "test", {"numbers": NUMBERS, "target": 51}
    )
    assert task.verify(wrap("12*3+7+9-1", "..."), p).status == "wrong"  # 1 is not given
    assert task.verify(wrap("9*7-12"), p).status == "correct"


# --- Verdict and the guard ----------------------------------------------------------------


def test_verdict_status_is_checked():
    assert STATUSES == ("correct", "wrong", "unparsable", "timeout", "error")
    with pytest.raises(ValueError, match="status"):
        Verdict(1.0, "right")


def test_guard_turns_faults_into_error_verdicts():
    @guarded
    def broken(response: str) -> Verdict:
        raise RecursionError("boom")

    verdict = broken("x")
    assert verdict.status == "error" and verdict.reward == 0.0 and "boom" in verdict.reason


def test_task_verify_never_raises_on_bad_problems():
    bad = Problem("x", "?", "not a number", "arithmetic", "test")
    assert ArithmeticTask().verify(wrap("3"), bad).status == "error"
    no_meta = Problem("y", "?", "1+2", "countdown", "test")
    assert CountdownTask().verify(wrap("1+2"), no_meta).status == "error"
