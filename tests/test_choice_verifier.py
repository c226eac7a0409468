"""Multiple-choice grading: gold letters, where the chosen letter is found, honest refusals."""

import doctest

import pytest

import rlvr.verifiers.choice as choice
from rlvr.verifiers.choice import extract_choice, gold_letter, verify_choice
from rlvr.verifiers.math import fast_math_verdict


@pytest.mark.parametrize(
    "gold,letter",
    [
        ("C", ("C", "")),
        ("(C)", ("C", "")),
        ("\\text{(C)}", ("C", "")),
        ("$\\text{E}$", ("E", "")),
        ("(B) Paris", ("B", "Paris")),
        ("B. Paris", ("B", "Paris")),
        ("B Paris", ("B", "Paris")),
        ("A Peter\nCelina bum", ("A", "Peter\nCelina bum")),
        ("Alina and the answer is\n(C) Cecile", ("C", "Cecile")),
        ("J", ("J", "")),  # MMLU-Pro: ten options
    ],
)
def test_gold_letters(gold, letter):
    assert gold_letter(gold) == letter


@pytest.mark.parametrize("gold", ["A = 5", "A and B", "K", "c", "x", "12", "A:B=1", "\\{A, B\\}"])
def test_golds_that_are_not_option_letters(gold):
    assert gold_letter(gold) is None


@pytest.mark.parametrize(
    "completion,letter,source",
    [
        ("<answer>C</answer>", "C", "answer_tag"),
        ("so \\boxed{\\text{(B)}}", "B", "boxed"),
        ("The answer is for sure D, it can't be A or B", "D", "anchored"),
        ("answer: B, since A is impossible", "B", "anchored"),
        ("Final answer: **(B)**", "B", "anchored"),
        ("La respuesta correcta es la C.", "C", "anchored"),
        ("答案是 B", "B", "anchored"),
        ("정답은 C입니다", "C", "anchored"),
        ("Answer: B\n\nWait, actually the answer is C.", "C", "anchored"),  # the last one
        ("\\mathrm{A}", "A", "alone"),
        ("D. it can't be A or B", "D", "first"),
        ("B。不是 A", "B", "first"),
        ("Let's see. It's not A because of x, therefore I think it's B", "B", "last"),
        ("Option B is correct.", "B", "only"),
        ("<think>Answer: A</think>The answer is (C).", "C", "anchored"),  # thinking ignored
    ],
)
def test_where_the_letter_is_found(completion, letter, source):
    found = extract_choice(completion)
    assert (found.letter, found.source, found.candidates) == (letter, source, ())


@pytest.mark.parametrize(
    "completion",
    [
        "A triangle has three sides.",  # the article "A"
        "I think so.",  # the pronoun "I"
        "Answer: c",  # lowercase letters are not options
        "No letter here, the value is 42.",
        "E'",
        "\\mathrm{E}*2",
        "\\boxed{A = 5}",  # an equation, not option A
    ],
)
def test_no_letter_is_found(completion):
    assert extract_choice(completion).letter is None


@pytest.mark.parametrize(
    "completion",
    ["The answer is A or B.", "Answer: A, B", "Answer: A and C", "\\boxed{A} or \\boxed{B}"],
)
def test_naming_several_letters_is_wrong(completion):
    assert len(extract_choice(completion).candidates) == 2
    assert verify_choice(completion, "A").status == "wrong"


@pytest.mark.parametrize(
    "completion,gold,status",
    [
        ("The answer is C.", "C", "correct"),
        ("The answer is B.", "C", "wrong"),
        ("B", "(B) Paris", "correct"),
        ("The answer is Paris.", "(B) Paris", "correct"),  # the option's own text
        ("The answer is Berlin.", "(B) Paris", "unparsable"),
        ("Answer: c", "C", "unparsable"),
        ("A triangle has three sides, so the answer is C.", "A", "wrong"),
    ],
)
def test_verify_choice(completion, gold, status):
    verdict = verify_choice(completion, gold)
    assert verdict.status == status
    assert verdict.reward == (1.0 if status == "correct" else 0.0)


def test_a_gold_that_is_no_letter_is_an_error():
    assert verify_choice("The answer is C.", "42").status == "error"
    assert verify_choice(None, "C").status == "error"


def test_math_verifier_grades_letter_golds_as_choices():
    """The math verifier hands letter golds to verify_choice, in this process (pure regex)."""
    assert fast_math_verdict("I pick (D), the others fail.", "(D) 17").status == "correct"
    assert fast_math_verdict("\\boxed{D}", "B").status == "wrong"


def test_doctests():
    assert doctest.testmod(choice).failed == 0


def test_rlvr_verify_choice(tmp_path):
    """`rlvr verify --verifier choice` grades letters alone, in this process (no workers)."""
    import json

    from rlvr.cli import main

    lines = [
        {"completion": "Thinking... Answer: B", "answer": "B"},
        {"completion": "The answer is (A) or (B).", "answer": "(A) 3"},
        {"completion": "The answer is C."},
        {"completion": "\\boxed{B}", "answer": "7", "verifier": "math"},  # a line may name its own
    ]
    source, graded = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["verify", str(source), "--verifier", "choice", "--output", str(graded)]) == 0
    out = [json.loads(line) for line in graded.read_text().splitlines()]
    assert [o["status"] for o in out] == ["correct", "wrong", "error", "wrong"]
    assert "line 3" in out[2]["reason"] and "answer" in out[2]["reason"]
