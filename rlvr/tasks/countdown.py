"""Countdown: combine some of the given numbers with + - * / to reach a target.

Prompt `3 7 9 12 -> 51`: use each number at most once (not all are needed). Any valid
expression is correct (checked by verifiers/countdown.py); the gold answer is the one the
generator built. Generation draws numbers, combines a random subset of at least two of them
with + - * and exact division, never going negative or fractional, and uses the value as
the target. The reasoning trace is the gold expression's steps, one per line:

    3 7 9 12 -> 51   ->   <think>7*9=63\\n63-12=51</think><answer>7*9-12</answer>
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from rlvr.tasks.base import Problem, Task
from rlvr.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, EMPTY_THINK, THINK_CLOSE, THINK_OPEN
from rlvr.verifiers.base import Verdict, guarded
from rlvr.verifiers.countdown import Step, evaluate_expression, verify_countdown

MAX_SLIP = 10  # a slipped trace misses the target by 1..MAX_SLIP
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
LITERAL = 3  # binds tighter than any operator


def random_expression(numbers: list[int], rng: random.Random) -> tuple[int, str]:
    """(value, text) of a random expression over a subset (>= 2) of `numbers`.

    Every intermediate result is a non-negative integer: "-" only when the left side is
    larger (so never 0 - it would make later steps trivial), "/" only when exact and not by 1.
    """
    k = rng.randint(2, len(numbers))
    pool = [(n, str(n), LITERAL) for n in rng.sample(numbers, k)]  # (value, text, precedence)
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        (a, text_a, prec_a), (b, text_b, prec_b) = pool[i], pool[j]
        ops = ["+", "*"]
        if a > b:
            ops.append("-")
        if b > 1 and a % b == 0:
            ops.append("/")
        op = rng.choice(ops)
        value = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a // b
        prec = PRECEDENCE[op]
        # Parentheses only where needed: the left side when it binds looser; the right side
        # also when equal for - and / (a-(b-c) and a/(b*c) differ from a-b-c and a/b*c).
        left = f"({text_a})" if prec_a < prec else text_a
        needs = prec_b < prec or (op in "-/" and prec_b == prec)
        right = f"({text_b})" if needs else text_b
        pool = [p for n, p in enumerate(pool) if n not in (i, j)]
        pool.append((value, f"{left}{op}{right}", prec))
    return pool[0][0], pool[0][1]


def _number(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _step_line(step: Step, result: Fraction | None = None) -> str:
    result = step.result if result is None else result
    return f"{_number(step.left)}{step.op}{_number(step.right)}={_number(result)}"


@dataclass
class CountdownTask(Task):
    """`num_numbers` numbers in [1, max_number]; targets in [target_min, target_max]."""

    name: ClassVar[str] = "countdown"

    num_numbers: int = 4
    max_number: int = 20
    target_min: int = 10
    target_max: int = 100

    def __post_init__(self) -> None:
        if self.num_numbers < 2 or self.max_number < 2:
            raise ValueError(
                f"Countdown needs num_numbers >= 2 and max_number >= 2, got "
                f"{self.num_numbers} and {self.max_number}."
            )
        if not 0 <= self.target_min <= self.target_max:
            raise ValueError(
                f"Countdown needs 0 <= target_min <= target_max, got "
                f"{self.target_min} and {self.target_max}."
            )

    def space_size(self) -> int:
        # Upper bound: multisets of numbers times targets (not every pair is reachable).
        multisets = math.comb(self.max_number + self.num_numbers - 1, self.num_numbers)
        return multisets * (self.target_max - self.target_min + 1)

    def sample(self, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
        while True:
            numbers = [rng.randint(1, self.max_number) for _ in range(self.num_numbers)]
            target, expr = random_expression(numbers, rng)
            # A target equal to a given number would be solved by that number alone.
            if self.target_min <= target <= self.target_max and target not in numbers:
                break
        numbers.sort()  # sorted, so the prompt is the canonical key of the problem
        prompt = " ".join(map(str, numbers)) + f" -> {target}"
        return prompt, expr, {"numbers": numbers, "target": target}

    @guarded
    def verify(self, response: str, problem: Problem) -> Verdict:
        return verify_countdown(response, problem.meta["numbers"], problem.meta["target"])

    def completion(self, problem: Problem, rng: random.Random, think: bool, slip: bool) -> str:
        """With slip=True the trace is of a near-miss expression whose last step is
        miscomputed to land on the target; the answer is that expression, so it is wrong."""
        if not think:
            if slip:
                raise ValueError(
                    "slip=True needs think=True: an answer-only completion has no steps."
                )
            return f"{EMPTY_THINK}{ANSWER_OPEN}{problem.answer}{ANSWER_CLOSE}"
        target = problem.meta["target"]
        expr = problem.answer
        if slip:
            expr = self._near_miss(problem.meta["numbers"], target, rng)
        steps = evaluate_expression(expr).steps
        lines = [_step_line(s) for s in steps]
        if slip:
            lines[-1] = _step_line(steps[-1], Fraction(target))
        body = "\n".join(lines)
        return f"{THINK_OPEN}{body}{THINK_CLOSE}{ANSWER_OPEN}{expr}{ANSWER_CLOSE}"

    @staticmethod
    def _near_miss(numbers: list[int], target: int, rng: random.Random) -> str:
        """An expression whose value is close to, but not, the target."""
        best: tuple[int, str] | None = None
        for _ in range(1000):
            value, expr = random_expression(numbers, rng)
            miss = abs(value - target)
            if 1 <= miss <= MAX_SLIP:
                return expr
            if miss > 0 and (best is None or miss < best[0]):
                best = (miss, expr)
        if best is None:
            raise ValueError(f"No expression over {numbers} misses {target}: cannot make a slip.")
        return best[1]
