"""Math verifier: extraction, the fast exact path, math-verify in workers, policies, attacks."""

import subprocess
import sys
import time

import pytest

from rlvr.verifiers.math import (
    MATH_PRELOAD,
    extract_answer,
    fast_math_verdict,
    parse_plain_number,
    verify_math,
    verify_math_many,
)
from rlvr.verifiers.pool import VerifierPool


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(num_workers=2, timeout_s=3.0, memory_mb=2048, preload=MATH_PRELOAD) as p:
        yield p


def grade(pool, completion: str, gold: str) -> str:
    return verify_math_many(pool, [(completion, gold)])[0].status


# --- extraction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion,answer,source",
    [
        ("<think>2+2</think><answer>4</answer>", "4", "answer_tag"),
        ("<answer>so \\boxed{7}</answer>", "7", "answer_tag"),
        ("We get \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", "boxed"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}", "boxed"),
        ("nested \\boxed{\\frac{a}{\\sqrt{b}}} ok", "\\frac{a}{\\sqrt{b}}", "boxed"),
        ("\\boxed 5 is it", "5", "boxed"),
        ("The final answer is $42$. I hope it is correct.", "$42$", "final_answer"),
        ("Final Answer: 7.78", "7.78", "final_answer"),
        ("lots of work\n\n 12 \n", "12", "bare"),
        ("<think>\\boxed{1}</think> so \\boxed{2}", "2", "boxed"),  # boxes in thinking ignored
    ],
)
def test_extraction(completion, answer, source):
    got = extract_answer(completion)
    assert (got.answer, got.source) == (answer, source)


def test_truncated_box_is_skipped_and_repeats_count_once():
    assert extract_answer("\\boxed{3} then \\boxed{4").answer == "3"
    got = extract_answer("\\boxed{9}" * 10_000)
    assert got.answer == "9" and got.candidates == ()


def test_empty_completion_is_unparsable():
    assert fast_math_verdict("", "3").status == "unparsable"
    assert fast_math_verdict("<answer> </answer>", "3").status == "unparsable"


# --- fast path: plain numbers, pure Python ---------------------------------------------------


@pytest.mark.parametrize(
    "pred,gold,status",
    [
        ("-5", "-5", "correct"),
        ("007", "7", "correct"),
        ("7,425,000", "7425000", "correct"),
        ("1{,}000", "1000", "correct"),
        ("11,\\!111,\\!111,\\!100", "11111111100", "correct"),
        ("1000.0", "1000", "correct"),
        ("1,000.99", "1000.99", "correct"),
        (".4", "0.4", "correct"),
        ("\\$1,000.99", "1000.99", "correct"),
        ("1.5e3", "1500", "correct"),
        ("1.5 \\times 10^{3}", "1500", "correct"),
        ("2/4", "\\frac{1}{2}", "correct"),
        ("-\\dfrac{10}{9}", "-10/9", "correct"),
        ("\\frac12", "0.5", "correct"),
        ("0.333333", "\\frac{1}{3}", "correct"),  # decimals: 6 places, like math-verify
        ("0.3333", "\\frac{1}{3}", "wrong"),
        ("x = 3", "3", "correct"),
        ("3", "x=3", "correct"),
        ("4", "5", "wrong"),
        ("16386.169", "16386.17", "wrong"),
        ("1" + "0" * 100, "1e100", "correct"),
    ],
)
def test_plain_numbers(pred, gold, status):
    verdict = fast_math_verdict(f"\\boxed{{{pred}}}", gold)
    assert verdict is not None and verdict.status == status
    assert verdict.reward == (1.0 if status == "correct" else 0.0)


def test_huge_integers_compare_as_strings():
    """A million digits (beyond int()'s 4,300-digit limit) are decided on the fast path,
    which is linear in the input (benchmarks/verify_math.py measures its speed)."""
    digits = "9" * 1_000_000
    assert fast_math_verdict(f"<answer>{digits}</answer>", digits).status == "correct"
    assert fast_math_verdict(f"<answer>{digits}8</answer>", digits).status == "wrong"
    assert fast_math_verdict(f"<answer>{digits}</answer>", "5").status == "wrong"


def test_plain_number_parser_rejects_non_numbers():
    for text in ("٣", "1,22", "0,111", "32, 349", "2+2", "x", "1/0", "\\frac{x}{2}"):
        assert parse_plain_number(text) is None, text


# --- policies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred,gold,status",
    [
        ("28", "28\\%", "correct"),
        ("28\\%", "28\\%", "correct"),
        ("28 percent", "28%", "correct"),
        ("28\\%", "28", "correct"),
        ("0.28", "28\\%", "wrong"),  # a percentage is not its fraction
        ("28\\%", "0.28", "wrong"),
    ],
)
def test_percent_policy(pred, gold, status):
    assert fast_math_verdict(f"\\boxed{{{pred}}}", gold).status == status


@pytest.mark.parametrize(
    "pred,gold,status",
    [
        ("(1, 2)", "(1,2)", "correct"),
        ("(2, 1)", "(1,2)", "wrong"),  # tuples are ordered
        ("\\{2, 1\\}", "\\{1,2\\}", "correct"),  # sets are not
        ("2, 1", "1, 2", "correct"),  # a bare list is a set
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})", "correct"),
    ],
)
def test_tuple_and_set_policy(pool, pred, gold, status):
    assert grade(pool, f"\\boxed{{{pred}}}", gold) == status


def test_several_boxed_answers(pool):
    assert grade(pool, "\\boxed{3} or maybe \\boxed{4}", "3") == "wrong"
    assert grade(pool, "\\boxed{4} and \\boxed{3}", "4") == "wrong"
    # When the gold has several elements, the boxes together are the answer.
    assert grade(pool, "The integers are \\boxed{-2} and \\boxed{1}.", "1, -2") == "correct"
    assert grade(pool, "\\boxed{9} " * 5000, "9") == "correct"  # repeats are one answer


@pytest.mark.parametrize(
    "completion",
    [
        "\\boxed{3 or 4}",
        "\\boxed{3 \\text{ or } 4}",
        "\\boxed{3 \\lor 4}",
        "<answer>3</answer><answer>4</answer>",
        "\\boxed{3, 4}",
    ],
)
def test_listing_candidates_is_wrong(pool, completion):
    assert grade(pool, completion, "3") == "wrong"


# --- math-verify in workers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred,gold",
    [
        ("\\dfrac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
        ("\\frac{9}{4}\\pi", "\\frac94\\pi"),
        ("2\\sqrt{3}", "\\sqrt{12}"),
        ("125\\text{ miles}", "125"),
        ("\\left(\\frac{1}{3}\\right)", "1/3"),
        ("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}"),
        ("\\sec^2(y)", "\\tan^2(y)+1"),
        ("[-1, 2)", "[-1,2)"),
        ("(-\\infty, 0] \\cup (1, \\infty)", "(-\\infty,0]\\cup(1,\\infty)"),
        ("y = 2x + 1", "2x + 1"),
        (
            "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
            "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}",
        ),
        ("1 \\pm \\sqrt{19}", "1 \\pm \\sqrt{19}"),
    ],
)
def test_symbolic_equivalence(pool, pred, gold):
    assert grade(pool, f"So \\boxed{{{pred}}}.", gold) == "correct"


@pytest.mark.parametrize(
    "pred,gold",
    [
        ("4\\sqrt{2}", "4"),
        ("[0, 1]", "[0,1)"),
        ("x + 1", "x + 2n + 1"),
        (
            "\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}",
            "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
        ),
    ],
)
def test_symbolic_differences(pool, pred, gold):
    assert grade(pool, f"\\boxed{{{pred}}}", gold) == "wrong"


@pytest.mark.parametrize("gold", ["", "   ", "\\frac{", "\\boxed{}"])
def test_unparsable_gold_is_an_error_never_a_reward(pool, gold):
    for completion in ("\\boxed{3}", "\\boxed{\\frac{", f"\\boxed{{{gold}}}"):
        verdict = verify_math_many(pool, [(completion, gold)])[0]
        assert verdict.status == "error" and verdict.reward == 0.0


def test_tower_of_exponents_times_out(pool):
    start = time.perf_counter()
    verdict = verify_math_many(pool, [("\\boxed{9^{9^{9^{9^{9^{9}}}}}}", "\\sqrt{2}")])[0]
    assert verdict.status == "timeout" and verdict.reward == 0.0
    assert time.perf_counter() - start < 10.0
    assert grade(pool, "\\boxed{\\sqrt{2}}", "\\sqrt{2}") == "correct"  # the pool goes on


def test_math_verify_never_runs_in_this_process():
    verdict = verify_math("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}")
    assert verdict.status == "error" and "worker" in verdict.reason
    # Other tests import sympy (torch does), so check a fresh interpreter.
    code = (
        "import sys; from rlvr.verifiers.math import verify_math; "
        "v = verify_math('\\\\boxed{\\\\frac{\\\\sqrt{2}}{2}}', '\\\\frac{1}{\\\\sqrt{2}}'); "
        "assert v.status == 'error', v; "
        "assert 'math_verify' not in sys.modules and 'sympy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_agreement_with_public_regression_cases(pool):
    """Math-Verify's and lighteval's test cases (tests/data/math_agreement.jsonl)."""
    import json
    from pathlib import Path

    path = Path(__file__).parent / "data" / "math_agreement.jsonl"
    cases = [json.loads(line) for line in path.read_text().splitlines()]
    verdicts = verify_math_many(pool, [(c["prediction"], c["gold"]) for c in cases])
    agree = sum((v.status == "correct") == bool(c["expected"]) for c, v in zip(cases, verdicts))
    assert agree / len(cases) >= 0.95  # math-verify's own parse+verify: 0.924 (198 cases)


def test_memoized_symbolic_verdicts_are_fresh_objects():
    """Workers memoize math-verify's grading; a caller changing one verdict (the dataset task
    adds its format part) must not change the next one."""
    from rlvr.verifiers.math import _symbolic_verdict

    first = _symbolic_verdict("\\frac{1}{2}", "\\frac{2}{4}", True)
    first.components["format"] = 0.0
    second = _symbolic_verdict("\\frac{1}{2}", "\\frac{2}{4}", True)
    assert second is not first and second.status == "correct"
    assert second.components == {"accuracy": 1.0}
