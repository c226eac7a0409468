"""Countdown's search traces: every step's arithmetic, every verdict, the answer they lead to,
the give-up and slip variants, and `search_metrics` (what a response did while searching)."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from rlvr.learning.pretrain import by_length
from rlvr.tasks import CountdownTask, Problem
from rlvr.tasks.countdown import branches, finish, search_metrics, tries
from rlvr.verifiers.countdown import check_countdown, evaluate_expression
from rlvr.verifiers.format import parse_response

STEP = re.compile(r"([0-9]+)([-+*])([0-9]+)=([0-9]+)")
LINE = re.compile(r"([0-9]+[-+*][0-9]+=[0-9]+)( [0-9]+[-+*][0-9]+=[0-9]+)* (yes|no)")


def problem(numbers: list[int], target: int) -> Problem:
    prompt = " ".join(map(str, numbers)) + f" -> {target}"
    hit = next(t for t in tries(numbers, target) if t.value == target)
    return Problem("x", prompt, hit.expression, "countdown", "train",
                   {"numbers": numbers, "target": target})  # fmt: skip


def apply(left: int, op: str, right: int) -> int:
    return left + right if op == "+" else left - right if op == "-" else left * right


def read_trace(completion: str, p: Problem) -> tuple[list[list[tuple]], list[str], str]:
    """(steps per line, verdicts, answer) of a thinking completion, checking its shape and
    that every line combines exactly the problem's numbers, one step at a time."""
    parsed = parse_response(completion)
    assert parsed.well_formed and parsed.think.endswith("\n"), completion
    lines = parsed.think[:-1].split("\n")
    steps, verdicts = [], []
    for line in lines:
        assert LINE.fullmatch(line), (line, completion)
        found = [(int(a), op, int(b), int(r)) for a, op, b, r in STEP.findall(line)]
        pool = Counter(p.meta["numbers"])  # the values on the table
        for k, (left, _op, right, result) in enumerate(found):
            assert left >= right, line  # the larger operand first
            used = Counter([left, right])
            assert all(pool[v] >= n for v, n in used.items()), line  # only what is there
            assert k == 0 or found[k - 1][3] in used, line  # a chain: the last result goes on
            pool = pool - used + Counter([result])
        assert len(found) == len(p.meta["numbers"]) - 1, line
        steps.append(found)
        verdicts.append(line.rsplit(" ", 1)[1])
    return steps, verdicts, parsed.answer


@pytest.fixture(scope="module")
def searching():
    return CountdownTask(give_up=[0.3, 0.6])


def test_search_traces_are_valid(searching):
    rng = random.Random(0)
    for p in searching.problems("train", 300, seed=0):
        numbers, target = p.meta["numbers"], p.meta["target"]
        for slip in (False, True):
            completion = searching.completion(p, rng, think=True, slip=slip)
            steps, verdicts, answer = read_trace(completion, p)
            wrong = [(i, s) for i, line in enumerate(steps) for s in line
                     if apply(*s[:3]) != s[3]]  # fmt: skip
            # A slip is exactly one miscomputed step: the last of the last line, landing on
            # the target; a trace without one computes every step right.
            if slip:
                assert len(wrong) == 1 and wrong[0] == (len(steps) - 1, steps[-1][-1])
                assert steps[-1][-1][3] == target and verdicts[-1] == "yes"
            else:
                assert wrong == []
            # The tries follow each other in the order of `tries`, from any start, wrapping
            # around; each says yes exactly when its last result is the target; the search
            # stops at the first yes; every line is a different try.
            walk = [[tuple(s) for s in t.steps] for t in tries(numbers, target)]
            start = walk.index(steps[0]) if not slip or len(steps) > 1 else None
            if start is not None:
                expected = (walk[start:] + walk[:start])[: len(steps)]
                assert steps[:-1] == expected[:-1] and (slip or steps[-1] == expected[-1])
            for line, verdict in zip(steps, verdicts):
                assert (verdict == "yes") == (line[-1][3] == target)
            assert "yes" not in verdicts[:-1]
            assert len(set(map(tuple, steps))) == len(steps)
            # The answer is the expression of the last try, and verifies when it said yes.
            value = evaluate_expression(answer)
            ok, _ = check_countdown(answer, numbers, target)
            assert ok == (verdicts[-1] == "yes" and not slip), completion
            if verdicts[-1] == "yes":
                assert [int(s.result) for s in value.steps] == [s[3] for s in steps[-1]] or slip
            else:  # gave up: the answer is the nearest miss among the tries made
                misses = [abs(line[-1][3] - target) for line in steps]
                assert abs(value.value - target) == min(misses)


def test_search_never_gives_up_without_give_up():
    task = CountdownTask()
    rng = random.Random(1)
    lengths = []
    for p in task.problems("train", 300, seed=0):
        completion = task.completion(p, rng, think=True, slip=False)
        assert task.verify(completion, p).status == "correct", completion
        lengths.append(completion.count("\n"))
    assert max(lengths) >= 5  # some searches take many tries


@pytest.mark.parametrize("give_up, most_tries", [([1.0], 1), ([0.0, 1.0], 2), ([0.0, 0.0, 1.0], 3)])
def test_give_up_stops_after_that_many_failed_tries(give_up, most_tries):
    task = CountdownTask(give_up=give_up)
    rng = random.Random(2)
    gave_up = 0
    for p in task.problems("train", 200, seed=0):
        completion = task.completion(p, rng, think=True, slip=False)
        num_tries = completion.count("\n")
        assert num_tries <= most_tries
        if task.verify(completion, p).status != "correct":
            gave_up += 1
            assert num_tries == most_tries and completion.split("</think>")[0].endswith(" no\n")
    assert gave_up > 50


def test_give_up_rates_follow_the_list():
    task = CountdownTask(give_up=[0.3, 0.6])
    rng = random.Random(3)
    stops = Counter()  # (failed tries so far, gave up there)
    for p in task.problems("train", 2000, seed=1):
        steps = task.completion(p, rng, think=True, slip=False).split("</think>")[0]
        verdicts = re.findall(r" (yes|no)\n", steps)
        for i, verdict in enumerate(verdicts):
            if verdict == "no":
                stops[i + 1, i == len(verdicts) - 1] += 1
    rate = lambda k: stops[k, True] / (stops[k, True] + stops[k, False])  # noqa: E731
    assert abs(rate(1) - 0.3) < 0.05 and abs(rate(2) - 0.6) < 0.06
    assert stops[3, True] == 0 and stops[3, False] > 0  # after the list: never


def test_tries_take_the_closest_last_step():
    found = {" ".join(map(str, t.steps)): t.expression for t in tries([3, 7, 9], 60)}
    assert list(found)[:4] == ["9+7=16 16*3=48", "9-7=2 3*2=6", "9*7=63 63-3=60", "9+3=12 12*7=84"]
    assert found["9*7=63 63-3=60"] == "(9*7)-3"
    assert found["7-3=4 9*4=36"] == "9*(7-3)"  # the number left is larger: it goes first
    assert found["9+7=16 16*3=48"] == "(9+7)*3"  # 48 is nearer 60 than 19 or 13
    assert len(found) == 9 and len(branches([3, 7, 9])) == 9
    # Equal numbers give the same branches once; a minus never reaches 0.
    assert len(branches([4, 4, 5])) == 5
    assert all(s.result > 0 for b in branches([4, 4, 5]) for s in b.steps)
    # Two numbers: the pair is the whole expression.
    assert [t.expression for t in tries([3, 5], 15)] == ["5+3", "5-3", "5*3"]
    for b in branches([2, 6, 11, 13]):  # four numbers: all but one combined, left to right
        assert len(b.steps) == 2
        assert check_countdown(finish(b, 100).expression, [2, 6, 11, 13], finish(b, 100).value)


def test_problems_are_reachable_by_the_search():
    task = CountdownTask()
    for p in task.problems("test", 300, seed=0):
        numbers, target = p.meta["numbers"], p.meta["target"]
        assert len(numbers) == 3 and all(1 <= n <= task.max_number for n in numbers)
        assert task.target_min <= target <= task.target_max and target not in numbers
        assert any(t.value == target for t in tries(numbers, target))
        assert check_countdown(p.answer, numbers, target) == (True, "ok")


def test_search_metrics_read_back_what_a_response_did():
    backtracked = "<think>9*3=27 27+7=34 no\n9*7=63 63-3=60 yes\n</think><answer>(9*7)-3</answer>"
    at_once = "<think></think><answer>(9*7)-3</answer>"
    first_try = "<think>9*7=63 63-3=60 yes\n</think><answer>(9*7)-3</answer>"
    gave_up = "<think>9*3=27 27+7=34 no\n</think><answer>(9*3)+7</answer>"
    cut = "<think>9*3=27 27+7=34 no\n9*7=6</think><answer>(9*3)+7</answer>"
    metrics = search_metrics([backtracked, at_once, first_try, gave_up, cut])
    assert metrics == {"backtrack_rate": 2 / 5, "tries": 5 / 5}
    assert search_metrics([]) == {"backtrack_rate": 0.0, "tries": 0.0}


def test_give_up_must_be_chances():
    with pytest.raises(ValueError, match="give_up"):
        CountdownTask(give_up=[1.5])


def test_pretraining_splits_examples_of_very_different_lengths():
    rows = [([1] * n, [1] * (n - 1)) for n in (30, 10, 100, 12, 31)]
    assert [[len(ids) for ids, _ in part] for part in by_length(rows)] == [
        [10, 12],
        [30, 31],
        [100],
    ]
    close = [([1] * n, [1] * (n - 1)) for n in (40, 30, 44)]  # within 1.5x: kept as they are
    assert by_length(close) == [close]
