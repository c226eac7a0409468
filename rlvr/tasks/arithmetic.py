"""Arithmetic: evaluate short expressions like `37+6*8-45=` with standard precedence.

Operands of + and - are drawn from [add_min, add_max] (two digits by default), operands next
to a * from [mul_min, mul_max] (one digit), and every expression has at least one *. The
reasoning trace does the multiplications first, left to right, then the additions and
subtractions left to right, one step per line:

    37+6*8-45=   ->   <think>6*8=48\\n37+48=85\\n85-45=40</think><answer>40</answer>
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from rlvr.tasks.base import Problem, Task
from rlvr.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, EMPTY_THINK, THINK_CLOSE, THINK_OPEN
from rlvr.verifiers.arithmetic import verify_arithmetic
from rlvr.verifiers.base import Verdict, guarded

MAX_SLIP = 10  # a slipped step is off by 1..MAX_SLIP, either sign


def trace(
    operands: list[int], ops: list[str], slip_step: int | None = None, slip: int = 0
) -> tuple[list[str], int]:
    """The step lines and the final value; step `slip_step` (if any) is off by `slip`.

    A slipped result is used by every later step, so the error reaches the final answer.
    """
    steps: list[str] = []

    def record(x: int, op: str, y: int, z: int) -> int:
        if len(steps) == slip_step:
            # Never slip a non-negative result below zero: "123--5" is no mistake a person makes.
            z += -slip if z >= 0 and z + slip < 0 else slip
        steps.append(f"{x}{op}{y}={z}")
        return z

    # Multiplications first: each run of * collapses into one term of the sum.
    terms, signs = [operands[0]], []
    for op, y in zip(ops, operands[1:]):
        if op == "*":
            terms[-1] = record(terms[-1], "*", y, terms[-1] * y)
        else:
            terms.append(y)
            signs.append(op)
    total = terms[0]
    for op, y in zip(signs, terms[1:]):
        total = record(total, op, y, total + y if op == "+" else total - y)
    return steps, total


def parse_prompt(prompt: str) -> tuple[list[int], list[str]]:
    """`37+6*8-45=` -> ([37, 6, 8, 45], ["+", "*", "-"]); prompts are ours, never model text."""
    tokens = re.findall(r"[0-9]+|[-+*]", prompt)
    return [int(t) for t in tokens[0::2]], tokens[1::2]


@dataclass
class ArithmeticTask(Task):
    """`num_ops` operations over + - * (at least one *), standard precedence."""

    name: ClassVar[str] = "arithmetic"

    num_ops: int = 3
    ops: str = ""
    """A fixed operator pattern, e.g. "+*-" for a+b*c-d; empty draws num_ops at random."""
    add_min: int = 10
    add_max: int = 99
    mul_min: int = 2
    mul_max: int = 9

    def __post_init__(self) -> None:
        if self.ops:
            if set(self.ops) - set("+-*") or "*" not in self.ops:
                raise ValueError(f"ops must use + - * with at least one *, got {self.ops!r}.")
            self.num_ops = len(self.ops)
        if self.num_ops < 1:
            raise ValueError(f"num_ops must be at least 1, got {self.num_ops}.")
        # Operands are positive so that a slipped step always changes the final answer
        # (multiplying by zero would erase the slip).
        if not (1 <= self.add_min <= self.add_max and 1 <= self.mul_min <= self.mul_max):
            raise ValueError(
                f"Operand ranges must be positive and non-empty, got add [{self.add_min}, "
                f"{self.add_max}] and mul [{self.mul_min}, {self.mul_max}]."
            )

    def _ranges(self, ops: tuple[str, ...] | list[str]) -> list[tuple[int, int]]:
        padded = ["+", *ops, "+"]  # operand i sits between padded[i] and padded[i + 1]
        return [
            (self.mul_min, self.mul_max)
            if "*" in (padded[i], padded[i + 1])
            else (self.add_min, self.add_max)
            for i in range(self.num_ops + 1)
        ]

    def space_size(self) -> int:
        total = 0
        patterns = [tuple(self.ops)] if self.ops else itertools.product("+-*", repeat=self.num_ops)
        for ops in patterns:
            if "*" in ops:
                total += math.prod(hi - lo + 1 for lo, hi in self._ranges(ops))
        return total

    def sample(self, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
        ops = list(self.ops) or [rng.choice("+-*") for _ in range(self.num_ops)]
        while "*" not in ops:
            ops = [rng.choice("+-*") for _ in range(self.num_ops)]
        operands = [rng.randint(lo, hi) for lo, hi in self._ranges(ops)]
        prompt = str(operands[0]) + "".join(f"{op}{y}" for op, y in zip(ops, operands[1:])) + "="
        _, value = trace(operands, ops)
        return prompt, str(value), {}

    @guarded
    def verify(self, response: str, problem: Problem) -> Verdict:
        return verify_arithmetic(response, problem.answer)

    def completion(self, problem: Problem, rng: random.Random, think: bool, slip: bool) -> str:
        if not think:
            if slip:
                raise ValueError(
                    "slip=True needs think=True: an answer-only completion has no steps."
                )
            return f"{EMPTY_THINK}{ANSWER_OPEN}{problem.answer}{ANSWER_CLOSE}"
        operands, ops = parse_prompt(problem.prompt)
        slip_step, delta = None, 0
        if slip:
            slip_step = rng.randrange(len(ops))
            delta = rng.choice([-1, 1]) * rng.randint(1, MAX_SLIP)
        steps, value = trace(operands, ops, slip_step, delta)
        body = "\n".join(steps)
        return f"{THINK_OPEN}{body}{THINK_CLOSE}{ANSWER_OPEN}{value}{ANSWER_CLOSE}"
