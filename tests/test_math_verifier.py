"""Math verifier: extraction, the fast exact path, math-verify in workers, policies, attacks."""

import subprocess
import sys
import time

import pytest

from rlvr.verifiers.math import (
    MATH_PRELOAD,
    canonical_text,
    decimals_agree,
    drop_approximation,
    extract_answer,
    fast_math_verdict,
    looks_like_formula,
    parse_plain_number,
    to_latex,
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
        ("Answer \\[ \n 9 \n \\]", "9", "bare"),  # a display formula at the end
        ("Natalia sold 24 clips.\n#### 6", "6", "final_answer"),  # GSM8K
        ("Donc la réponse est 12.", "12", "final_answer"),
        ("所以答案是 12。", "12", "final_answer"),
        ("Die Antwort ist 12.", "12", "final_answer"),
        ("Ответ: 12", "12", "final_answer"),
        ("**Answer:** $\\frac{1}{2}$", "$\\frac{1}{2}$", "final_answer"),  # markdown
        ("**Final Answer**\n\n$$\\frac{1}{2}$$", "$$\\frac{1}{2}$$", "final_answer"),  # own line
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
    for text in (
        "٣",
        "1,22",
        "0,111",
        "32, 349",
        "2+2",
        "x",
        "1/0",
        "\\frac{x}{2}",
        "2\\frac{3}{2}",
    ):
        assert parse_plain_number(text) is None, text


@pytest.mark.parametrize(
    "pred,gold,status",
    [
        ("918\\frac{1}{2}", "918.5", "correct"),  # mixed numbers
        ("3128 1/2", "3128.5", "correct"),
        ("56,\\!01,\\!78,\\!95,\\!760", "56017895760", "correct"),  # any grouping with ,\\!
        ("1000,99", "1000.99", "correct"),  # a decimal comma, when that reading matches
        ("1.22", "1,22", "correct"),
        ("185\\", "185", "correct"),  # a stray backslash
        ("**18**", "18", "correct"),  # markdown bold
        ("12, 13", "12", "wrong"),  # several numbers where one is asked
        ("12 and 13", "12", "wrong"),
    ],
)
def test_number_forms(pred, gold, status):
    assert fast_math_verdict(f"<answer>{pred}</answer>", gold).status == status


def test_decimals_agree_to_six_places_and_relatively():
    from fractions import Fraction as F

    assert decimals_agree(F(1, 3), F("0.333333"))
    assert not decimals_agree(F(1, 3), F("0.3333"))
    assert not decimals_agree(F("16386.169"), F("16386.17"))  # places
    assert not decimals_agree(F(1, 2**61), F(1, 2**60))  # relative: tiny values are not all 0
    assert not decimals_agree(F(0), F("1e-7"))
    assert decimals_agree(F("1e-19"), F("1.0000001e-19"))


# --- policies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred,gold,status",
    [
        ("28", "28\\%", "correct"),
        ("28\\%", "28\\%", "correct"),
        ("28 percent", "28%", "correct"),
        ("28 pct", "28\\%", "correct"),
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
        ("1, 2", "(1,2)", "correct"),  # a bare list in the tuple's order
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


@pytest.mark.parametrize(
    "pred,gold",
    [
        ("(2, 5)", "(2, 5)"),
        ("\\{4,5,6\\}", "\\{4, 5, 6\\}"),
        ("{4,5,6}", "{4,5,6}"),
        ("[0,3]", "[0, 3]"),
        ("1,45", "1,45"),
        ("even $k$", "even $k$"),
        ("\\text{even}", "even"),
        ("\\left( 1, \\dfrac{3}{4} \\right)", "(1,\\frac{3}{4})"),
    ],
)
def test_identical_answers_are_correct_in_this_process(pred, gold):
    """After spaces, $, \\left/\\right, \\text{} and \\dfrac spellings, equal text is correct
    whatever a parser makes of it; no worker is needed."""
    verdict = fast_math_verdict(f"The answer is ${pred}$.", gold)
    assert verdict.status == "correct" and "identical" in verdict.reason


def test_canonical_text():
    assert canonical_text("$\\left( 1, 2 \\right)$") == "(1,2)"
    assert canonical_text("\\tfrac34") == "\\frac34"
    assert canonical_text("a \\leftarrow b") == "a\\leftarrowb"  # \\left is not \\leftarrow


@pytest.mark.parametrize(
    "plain,latex",
    [
        ("sqrt(2)/2", "\\sqrt{2}/2"),
        ("3**(1/3)", "3^{1/3}"),
        ("sqrt(1+sqrt(2))", "\\sqrt{1+\\sqrt{2}}"),
        ("5x^12", "5x^{12}"),
        ("x^-2", "x^{-2}"),
        ("x^(n+1)", "x^{n+1}"),
        ("2π", "2\\pi "),
        ("x²+1", "x^{2}+1"),
        ("sin(x) + log(y)", "\\sin(x) + \\log(y)"),
        ("2√3", "2\\sqrt{3}"),
        ("1.6e-19", "1.6\\times 10^{-19}"),
        ("[1, inf)", "[1, \\infty)"),
        ("1 - \\frac{1}{\\mathrm{e}}", "1 - \\frac{1}{e}"),
        ("\\sin x \\cdot \\text{cost}", "\\sin x \\cdot \\text{cost}"),  # LaTeX left alone
    ],
)
def test_plain_text_to_latex(plain, latex):
    assert to_latex(plain) == latex


def test_formula_or_prose():
    assert looks_like_formula("y^2 - 3*y + 2") and looks_like_formula("sqrt(2)/2")
    assert looks_like_formula("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}")
    assert not looks_like_formula("12 apples") and not looks_like_formula("有12个苹果")


def test_approximations_are_dropped():
    assert drop_approximation("\\frac{\\sqrt{2}}{2} \\approx 0.71") == "\\frac{\\sqrt{2}}{2}"
    assert drop_approximation("x \\approx 0.71") == "0.71"
    assert drop_approximation("x = \\sqrt{2} ≈ 1.41") == "x = \\sqrt{2}"


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


@pytest.mark.parametrize(
    "pred,gold",
    [
        ("y^2 - 3*y + 2", "y^2-3y+2"),
        ("sqrt(2)/2", "\\frac{\\sqrt{2}}{2}"),
        ("3**(1/3)", "\\sqrt[3]{3}"),
        ("30°", "30^\\circ"),
        ("x = 2 \\text{ or } x = 3", "3, 2"),  # "or" lists the solutions of a gold with several
        ("(y-1)^2", "(y-1)(y-1)"),
        ("5x^12", "5x^{12}"),
        ("(0.25, 1.5]", "(\\frac14, \\frac32]"),
        ("3=y", "y=3"),
        ("y>3", "3<y"),
        ("\\frac{\\sqrt{2}}{2} \\approx 0.71", "\\frac{\\sqrt{2}}{2}"),
        ("1 - e^{-1}", "1 - \\frac{1}{\\mathrm{e}}"),
        ("e^{i\\pi}", "-1"),  # e and i are constants
        ("(1, 2)", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),  # a vector written as a tuple
        ("-2 \\le x \\le 7", "x \\in [-2, 7]"),  # a relation and a set, either way round
        ("1, 2, \\dots, k", "1, 2, \\ldots, k"),
        ("\\sqrt{2}+\\sqrt{3}", "\\sqrt{5+2\\sqrt{6}}"),
    ],
)
def test_plain_text_and_forms_grade_correct(pool, pred, gold):
    assert grade(pool, f"\\boxed{{{pred}}}", gold) == "correct"


@pytest.mark.parametrize(
    "completion,gold",
    [
        # math-verify 0.9 grades all of these correct
        ("\\boxed{1 - \\frac{1}{\\mathrm{e}}}", "1 + \\frac{1}{\\mathrm{e}}"),
        ("The answer is $1 - \\frac{1}{\\mathrm{e}}$.", "1 + \\frac{1}{\\mathrm{e}}"),
        ("\\boxed{\\frac{1}{2^{61}}}", "\\frac{1}{2^{60}}"),
        ("The answer is $\\frac{1}{2^{61}}$.", "\\frac{1}{2^{60}}"),
        ("\\boxed{\\frac{1}{102!}}", "\\frac{1}{100!}"),
        ("\\boxed{3 + \\frac{1}{\\mathrm{x}}}", "3"),  # a parse must not drop the second term
        ("\\boxed{2.4e-10}", "2.5 \\times 10^{-10}"),
        ("\\boxed{10^{30}}", "10^{30}+1"),
        ("\\boxed{-\\infty}", "\\infty"),
        ("\\boxed{1:4:9:\\ldots}", "1:2:3:\\ldots"),
        ("\\boxed{1, 3, \\ldots, 2k-1}", "1, 2, \\ldots, k"),
        ("\\boxed{1, 2, \\ldots, n+1}", "1, 2, \\ldots, n"),
        ("$1, 2, 3, ...$", "1, 2, 3"),
        ("The answer is 12 and 13", "12"),
    ],
)
def test_wrong_answers_math_verify_accepts_are_wrong(pool, completion, gold):
    assert grade(pool, completion, gold) in ("wrong", "unparsable")


def test_numbers_compare_with_our_rule_inside_math_verify():
    """verify() compares numbers inside sets, intervals and matrices through
    math_verify.grader.sympy_numeric_eq; the worker replaces it with ours."""
    import math_verify.grader
    from sympy import Float, Integer, Rational, pi

    from rlvr.verifiers.math_symbolic import _math_verify, _numeric_equal

    _math_verify()
    assert math_verify.grader.sympy_numeric_eq is _numeric_equal
    assert not _numeric_equal(Rational(1, 2**61), Rational(1, 2**60))
    assert _numeric_equal(Rational(1, 3), Float("0.333333"))
    assert not _numeric_equal(Integer(2) ** 100, Integer(2) ** 100 + 1)
    assert _numeric_equal(2 * pi, Float("6.283185"))


@pytest.mark.parametrize(
    "completion,gold",
    [
        ("所以他一共有12个苹果。", "12"),  # the last number of a sentence without spaces
        ("Il a donc 12 pommes au total.", "12"),
        ("11个男孩 * 9颗弹珠/男孩 = 99颗弹珠 2. **结论**：Haley总共有99颗弹珠。", "99"),
        ("La réponse est $\\frac{1}{2}$.", "\\frac{1}{2}"),
    ],
)
def test_answers_in_other_languages(pool, completion, gold):
    assert grade(pool, completion, gold) == "correct"


def test_security_payloads_are_never_rewarded(pool, tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        f"\\boxed{{__import__('os').system('touch {marker}')}}",
        f"The answer is __import__('os').system('touch {marker}')",
        "\\boxed{eval('1+1')}",
        "\\boxed{(lambda: 2)()}",
        "\\boxed{().__class__.__bases__[0].__subclasses__()}",
        "\\boxed{open('/etc/passwd').read()}",
        "\\boxed{\\input{/etc/passwd}}",
        '\\boxed{exec("x=2")}',
        "\\boxed{9**9**9**9**9}",
    ]
    verdicts = verify_math_many(pool, [(p, "2") for p in payloads])
    assert [v.reward for v in verdicts] == [0.0] * len(payloads)
    assert not marker.exists()


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
    """Cases from public grader test suites plus rlvr's own (tests/data/math_agreement.jsonl;
    benchmarks/verify_math.py reports them per source, math-verify alone beside ours)."""
    import json
    from pathlib import Path

    path = Path(__file__).parent / "data" / "math_agreement.jsonl"
    cases = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(cases) >= 500 and all(c["source"] and c["why"] for c in cases)
    verdicts = verify_math_many(pool, [(c["prediction"], c["gold"]) for c in cases])
    agree = sum((v.status == "correct") == bool(c["expected"]) for c, v in zip(cases, verdicts))
    assert agree / len(cases) >= 0.95  # math-verify's own parse+verify agrees on 0.745
    # Wrong answers that math-verify's defaults grade correct: none may be graded correct.
    family_2 = [
        v
        for c, v in zip(cases, verdicts)
        if c.get("rule") == "strict_numbers" and not c["expected"]
    ]
    assert len(family_2) >= 30 and all(v.status != "correct" for v in family_2)


def test_memoized_symbolic_verdicts_are_fresh_objects():
    """Workers memoize math-verify's grading; a caller changing one verdict (the dataset task
    adds its format part) must not change the next one."""
    from rlvr.verifiers.math_symbolic import symbolic_verdict

    first = symbolic_verdict("\\frac{1}{2}", "\\frac{2}{4}", True)
    first.components["format"] = 0.0
    second = symbolic_verdict("\\frac{1}{2}", "\\frac{2}{4}", True)
    assert second is not first and second.status == "correct"
    assert second.components == {"accuracy": 1.0}
