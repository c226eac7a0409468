"""Countdown: check that an arithmetic expression over given numbers hits a target.

The expression is parsed by a small recursive-descent parser of our own (never eval):
integer literals, + - * /, parentheses, spaces. No unary minus, no other characters
(unicode digits included). Arithmetic is exact (fractions.Fraction), so 7/2*2 is 7 and
intermediate fractions are allowed; division by zero makes the expression invalid. Limits
on length, literal size and nesting keep hostile input cheap.

    check_countdown("(12-9)*7+20", [3, 7, 9, 12, 20], 41)  # -> (True, "ok")
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import NamedTuple

from rlvr.verifiers.base import Verdict, grade, guarded
from rlvr.verifiers.format import parse_response

MAX_CHARS = 200  # longer answers are rejected before parsing
MAX_DIGITS = 9  # per literal: far above any countdown number, far below a slow bignum
MAX_DEPTH = 32  # parenthesis nesting; keeps recursion far from Python's limit

_DIGITS = "0123456789"  # explicit: str.isdigit() accepts "٣" and friends
_SPACES = " \t"


class ExpressionError(ValueError):
    """The text is not a valid expression (syntax, limits, division by zero)."""


class Step(NamedTuple):
    """One binary operation in evaluation order: left op right = result."""

    left: Fraction
    op: str
    right: Fraction
    result: Fraction


class Evaluation(NamedTuple):
    value: Fraction
    literals: list[int]  # every integer literal, in order of appearance
    steps: list[Step]  # every binary operation, in the order it is evaluated


def _tokenize(expr: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in _SPACES:
            i += 1
        elif c in _DIGITS:
            j = i
            while j < len(expr) and expr[j] in _DIGITS:
                j += 1
            if j - i > MAX_DIGITS:
                raise ExpressionError(f"number at position {i} has more than {MAX_DIGITS} digits")
            tokens.append(expr[i:j])
            i = j
        elif c in "+-*/()":
            tokens.append(c)
            i += 1
        else:
            raise ExpressionError(f"unexpected character {c!r} at position {i}")
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ;
    factor := NUMBER | '(' expr ')'"""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.literals: list[int] = []
        self.steps: list[Step] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        token = self.peek()
        self.pos += 1
        return token

    def apply(self, left: Fraction, op: str, right: Fraction) -> Fraction:
        if op == "+":
            result = left + right
        elif op == "-":
            result = left - right
        elif op == "*":
            result = left * right
        else:
            if right == 0:
                raise ExpressionError("division by zero")
            result = left / right
        self.steps.append(Step(left, op, right, result))
        return result

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            value = self.apply(value, op, self.term())
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self.peek() in ("*", "/"):
            op = self.take()
            value = self.apply(value, op, self.factor())
        return value

    def factor(self) -> Fraction:
        token = self.take()
        if token is None:
            raise ExpressionError("expression ends too early")
        if token == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExpressionError(f"parentheses nested deeper than {MAX_DEPTH}")
            value = self.expr()
            if self.take() != ")":
                raise ExpressionError("missing closing parenthesis")
            self.depth -= 1
            return value
        if token[0] in _DIGITS:
            self.literals.append(int(token))
            return Fraction(int(token))
        raise ExpressionError(f"expected a number or '(' but found {token!r}")


def evaluate_expression(expr: str) -> Evaluation:
    """Parse and evaluate exactly; raises ExpressionError for anything invalid."""
    if len(expr) > MAX_CHARS:
        raise ExpressionError(f"expression longer than {MAX_CHARS} characters")
    parser = _Parser(_tokenize(expr))
    value = parser.expr()
    if parser.peek() is not None:
        raise ExpressionError(f"unexpected {parser.peek()!r} after the expression")
    return Evaluation(value, parser.literals, parser.steps)


def _grade(expr: str, numbers: list[int], target: int) -> tuple[str, str]:
    """(status, reason): "unparsable" for invalid expressions, else "correct" or "wrong"."""
    try:
        result = evaluate_expression(expr)
    except ExpressionError as exc:
        return "unparsable", str(exc)
    available = Counter(numbers)
    for number, used in Counter(result.literals).items():
        if available[number] == 0:
            return "wrong", f"uses {number}, which is not among the numbers"
        if used > available[number]:
            return "wrong", f"uses {number} {used} times but it is given {available[number]}"
    if result.value != target:
        return "wrong", f"evaluates to {result.value}, not {target}"
    return "correct", "ok"


def check_countdown(expr: str, numbers: list[int], target: int) -> tuple[bool, str]:
    """Whether `expr` uses each of `numbers` at most as often as given and equals `target`."""
    status, reason = _grade(expr, numbers, target)
    return status == "correct", reason


@guarded
def verify_countdown(response: str, numbers: list[int], target: int) -> Verdict:
    """Grade a full response (from `<think>` on). reward == accuracy; see Verdict."""
    parsed = parse_response(response)
    if parsed.answer is None:
        return grade("unparsable", parsed.well_formed, "no single <answer> block")
    status, reason = _grade(parsed.answer, numbers, target)
    return grade(status, parsed.well_formed, reason)
