"""Countdown: combine the given numbers with + - * to reach a target, by searching.

Prompt `3 7 9 -> 60`: use each number at most once to make the target. Any valid expression
is correct (checked by verifiers/countdown.py, which parses and never evaluates model text);
the gold answer is one solution found by the search below.

Problems: `num_numbers` numbers in [1, max_number]; the target is the value of a random
chain over all of them (two numbers combined, the result combined with the next number, and
so on) with + - *, where a minus always takes the smaller from the larger, so every value
along the way is a positive integer. A target equal to a given number is redrawn.

Reasoning traces search over those chains. A branch fixes every step but the last; a try
(one line of the trace) computes the branch and then the last step with the operation that
lands closest to the target, so a try hits the target exactly when its branch can. Each try
is compared with the target: ` no` backs off to another branch, ` yes` ends the search, and
the answer is the expression of the try that said yes:

    3 7 9 -> 60   ->   <think>9+7=16 16*3=48 no
                       9-7=2 3*2=6 no
                       9*7=63 63-3=60 yes
                       </think><answer>(9*7)-3</answer>

A step writes the larger operand first (`9+7=16`, `3*2=6`). A search starts at a random
try and walks them in a fixed order (`tries`: the pair of the two largest numbers first,
with + - *, then the next pair), wrapping around, so the next try follows from the last
line alone: a small model need not remember which tries it has made. Pretraining mixes four kinds of solutions (`completion`): answer at once (no
thinking), search that goes on until it finds the target, search that gives up after a few
failed tries (`give_up`: the chance to stop after the 1st, 2nd, ... failed try, answering
with the nearest miss), and search with a slip (a try miscomputed to land on the target and
accepted, so the answer is wrong). `search_metrics` reads back what a response did.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, ClassVar, NamedTuple

from rlvr.tasks.base import Problem, Task
from rlvr.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, EMPTY_THINK, THINK_CLOSE, THINK_OPEN
from rlvr.verifiers.base import Verdict, guarded
from rlvr.verifiers.countdown import verify_countdown

OPS = ("+", "-", "*")  # also the tie-break order of the closest last step
YES, NO = " yes", " no"  # the verdict that ends each try's line


class Step(NamedTuple):
    """One operation as a trace writes it: left op right = result, left >= right."""

    left: int
    op: str
    right: int
    result: int

    def __str__(self) -> str:
        return f"{self.left}{self.op}{self.right}={self.result}"


def combine(a: int, op: str, b: int) -> Step | None:
    """a op b with the larger operand first; None when a minus would reach 0."""
    big, small = max(a, b), min(a, b)
    if op == "+":
        return Step(big, op, small, big + small)
    if op == "*":
        return Step(big, op, small, big * small)
    return Step(big, op, small, big - small) if big > small else None


def _join(left: str, op: str, right: str, inner: bool) -> str:
    return f"({left}{op}{right})" if inner else f"{left}{op}{right}"


class Branch(NamedTuple):
    """Every step of a chain but the last: its steps, expression, value and the number left."""

    steps: tuple[Step, ...]
    expression: str
    value: int
    last: int


class Try(NamedTuple):
    """A branch finished with the last step closest to the target: one line of a trace."""

    steps: tuple[Step, ...]
    expression: str

    @property
    def value(self) -> int:
        return self.steps[-1].result

    def line(self, target: int) -> str:
        """`9*7=63 63-12=51 yes`: the steps, then whether the try hit the target."""
        verdict = YES if self.value == target else NO
        return " ".join(map(str, self.steps)) + verdict


def branches(numbers: list[int]) -> list[Branch]:
    """Every distinct branch over `numbers` (at least 2): chains that combine all but one of
    them, left to right (a pair first, then one number at a time). In order: pairs from the
    largest numbers down (for 3 7 9: 9 and 7, 9 and 3, 7 and 3), each with + - *."""
    out: dict[tuple[Step, ...], Branch] = {}

    def extend(steps: tuple[Step, ...], expr: str, value: int, rest: list[int]) -> None:
        if len(rest) == 1:
            out.setdefault(steps, Branch(steps, expr, value, rest[0]))
            return
        for k, x in enumerate(rest):
            for op in OPS:
                step = combine(value, op, x)
                if step is not None:
                    left, right = (expr, str(x)) if value >= x else (str(x), expr)
                    extend((*steps, step), _join(left, op, right, True), step.result,
                           rest[:k] + rest[k + 1 :])  # fmt: skip

    numbers = sorted(numbers, reverse=True)
    for i, j in combinations(range(len(numbers)), 2):
        for op in OPS:
            step = combine(numbers[i], op, numbers[j])
            if step is not None:
                rest = [x for k, x in enumerate(numbers) if k not in (i, j)]
                expr = _join(str(step.left), op, str(step.right), bool(rest))
                if rest:
                    extend((step,), expr, step.result, rest)
                else:  # two numbers: the pair is the whole chain, nothing is left
                    out.setdefault((step,), Branch((step,), expr, step.result, 0))
    return list(out.values())


def finish(branch: Branch, target: int) -> Try:
    """The try of a branch: its last step is the operation that lands closest to the target
    (ties: + before - before *), so the try hits the target when any operation can."""
    if branch.last == 0:  # a two-number branch is already complete
        return Try(branch.steps, branch.expression)
    best: tuple[int, Step, str] | None = None
    for op in OPS:
        step = combine(branch.value, op, branch.last)
        if step is None:
            continue
        if branch.value >= branch.last:
            expr = _join(branch.expression, op, str(branch.last), False)
        else:
            expr = _join(str(branch.last), op, branch.expression, False)
        if best is None or abs(step.result - target) < best[0]:
            best = (abs(step.result - target), step, expr)
    assert best is not None  # + and * always apply
    return Try((*branch.steps, best[1]), best[2])


def tries(numbers: list[int], target: int) -> list[Try]:
    """Every try over `numbers`, one per branch, in the order a search walks them."""
    return [finish(b, target) for b in branches(numbers)]


def search_metrics(responses: list[str]) -> dict[str, float]:
    """What a batch of responses did while searching: `backtrack_rate` (the share that
    backed off from a failed try and tried another, i.e. wrote ` no` and went on) and
    `tries` (mean lines ending in ` yes` or ` no` per response)."""
    backtracked, num_tries = 0, 0
    for response in responses:
        think = response.split(THINK_CLOSE, 1)[0]
        lines = think.split("\n")
        verdicts = [line.endswith((YES, NO)) for line in lines]
        num_tries += sum(verdicts)
        # A failed try followed by another line that holds a step: the search went on.
        backtracked += any(
            line.endswith(NO) and "=" in after for line, after in zip(lines, lines[1:])
        )
    n = max(1, len(responses))
    return {"backtrack_rate": backtracked / n, "tries": num_tries / n}


@dataclass
class CountdownTask(Task):
    """`num_numbers` numbers in [1, max_number]; targets in [target_min, target_max]."""

    name: ClassVar[str] = "countdown"

    num_numbers: int = 3
    max_number: int = 20
    target_min: int = 10
    target_max: int = 99
    give_up: list = field(default_factory=list)
    """Search traces (pretraining): give_up[i] is the chance of stopping after the (i+1)-th
    failed try, answering with the nearest miss; after the list, never. [] never gives up."""

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
        if not all(isinstance(p, (int, float)) and 0 <= p <= 1 for p in self.give_up):
            raise ValueError(f"give_up must be a list of chances in [0, 1], got {self.give_up!r}.")

    def space_size(self) -> int:
        # Upper bound: multisets of numbers times targets (not every pair is reachable).
        multisets = math.comb(self.max_number + self.num_numbers - 1, self.num_numbers)
        return multisets * (self.target_max - self.target_min + 1)

    def sample(self, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
        while True:
            numbers = sorted(rng.randint(1, self.max_number) for _ in range(self.num_numbers))
            branch = rng.choice(branches(numbers))
            if branch.last == 0:
                target = branch.value
            else:
                steps = [combine(branch.value, op, branch.last) for op in OPS]
                target = rng.choice([s for s in steps if s is not None]).result
            # A target equal to a given number would be solved by that number alone.
            if self.target_min <= target <= self.target_max and target not in numbers:
                break
        solution = finish(branch, target)  # the try of the drawn branch hits the target
        prompt = " ".join(map(str, numbers)) + f" -> {target}"
        return prompt, solution.expression, {"numbers": numbers, "target": target}

    @guarded
    def verify(self, response: str, problem: Problem) -> Verdict:
        return verify_countdown(response, problem.meta["numbers"], problem.meta["target"])

    def completion(self, problem: Problem, rng: random.Random, think: bool, slip: bool) -> str:
        """A pretraining solution: the answer at once (think=False), or a search that walks
        the tries in order from a random one (wrapping around) and stops at the first hit,
        or gives up (`give_up`), or, with slip=True, accepts the nearest miss before the
        first hit, miscomputed to land on the target (so the answer is wrong)."""
        if not think:
            if slip:
                raise ValueError(
                    "slip=True needs think=True: an answer-only completion has no steps."
                )
            return f"{EMPTY_THINK}{ANSWER_OPEN}{problem.answer}{ANSWER_CLOSE}"
        target = problem.meta["target"]
        order = tries(problem.meta["numbers"], target)
        hits = [t.value == target for t in order]
        if slip:  # start at a miss; the nearest miss before the first hit is accepted
            starts = [i for i, hit in enumerate(hits) if not hit]
            if not starts:
                raise ValueError(f"Every try of {problem.prompt!r} hits: cannot make a slip.")
            start = rng.choice(starts)
        else:
            start = rng.randrange(len(order))
        order = order[start:] + order[:start]
        slipped = None
        if slip:
            first_hit = next(i for i, t in enumerate(order) if t.value == target)
            slipped = min(order[:first_hit], key=lambda t: abs(t.value - target))
        lines: list[str] = []
        answer = None
        for i, attempt in enumerate(order):
            if attempt is slipped:
                last = attempt.steps[-1]._replace(result=target)
                lines.append(" ".join(map(str, (*attempt.steps[:-1], last))) + YES)
                answer = attempt.expression
                break
            lines.append(attempt.line(target))
            if attempt.value == target:
                answer = attempt.expression
                break
            failed = i + 1
            if slipped is None and failed <= len(self.give_up) and rng.random() < self.give_up[i]:
                tried = order[:failed]
                answer = min(tried, key=lambda t: abs(t.value - target)).expression
                break
        body = "".join(line + "\n" for line in lines)
        return f"{THINK_OPEN}{body}{THINK_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
