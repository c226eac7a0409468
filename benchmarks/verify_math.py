"""Our math grader vs math-verify's own parse + verify: speed, verdict identity, agreement.

    .venv/bin/python benchmarks/verify_math.py [--num-items 10000] [--workers 2]

Speed: the same mixed answers (plain numbers, fractions, LaTeX; half right, half wrong) are
graded by `verify_math_many` (plain numbers in this process, the rest in a VerifierPool of
`--workers` processes) and by math-verify called directly, one item after another in this
process (parse the gold, parse the completion, verify), which is how it is usually used.
Verdicts must be identical wherever both are sure (ours says correct or wrong).

Agreement: tests/data/math_agreement.jsonl holds the gold/prediction/expected triples of
Math-Verify's tests/test_all.py and tests/test_yujianll.py and lighteval's
tests/metrics/test_extractive_match.py; we
report how often each grader gives the expected verdict.

Prints one JSON line. Run it alone: the numbers are CPU time on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

from rlvr.verifiers.math import MATH_PRELOAD, verify_math_many
from rlvr.verifiers.pool import VerifierPool

AGREEMENT_FILE = Path(__file__).resolve().parents[1] / "tests" / "data" / "math_agreement.jsonl"


def make_items(num_items: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(kind, completion, gold) triples: 60% plain numbers, 20% fractions, 20% LaTeX."""
    rng = random.Random(seed)
    items = []
    for i in range(num_items):
        right = i % 2 == 0
        kind = ("number", "number", "number", "fraction", "latex")[i % 5]
        if kind == "number":
            form = rng.randrange(4)
            n = rng.randrange(1, 10**7)
            if form == 0:
                gold, pred = str(n), str(n if right else n + 1)
            elif form == 1:
                gold, pred = str(n), f"{(n if right else n + 3):,}"
            elif form == 2:
                gold = f"{n / 100:.2f}"
                pred = gold if right else f"{n / 100 + 0.01:.2f}"
            else:
                gold, pred = f"-{n}", f"-{n}" if right else f"{n}"
        elif kind == "fraction":
            a, b = rng.randrange(1, 100), rng.randrange(2, 100)
            gold = f"\\frac{{{a}}}{{{b}}}"
            pred = f"{a * 2}/{b * 2}" if right else f"{a + 1}/{b}"
        else:
            a, b = rng.randrange(2, 30), rng.randrange(2, 30)
            forms = [
                (f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{a * a * b}}}", f"\\sqrt{{{a * a * b + 1}}}"),
                (
                    f"\\frac{{{a}\\pi}}{{{b}}}",
                    f"\\frac{{{a}}}{{{b}}}\\pi",
                    f"\\frac{{{a + 1}}}{{{b}}}\\pi",
                ),
                (f"x^2 + {a}x", f"x(x + {a})", f"x(x + {a + 1})"),
                (f"({a}, {b})", f"\\left( {a}, {b} \\right)", f"\\left( {b + 1}, {a} \\right)"),
            ]
            gold, good, bad = forms[rng.randrange(len(forms))]
            pred = good if right else bad
        completion = f"Some reasoning first. So the result is \\boxed{{{pred}}}."
        items.append((kind, completion, gold))
    return items


def math_verify_grade(completion: str, gold: str) -> bool:
    """math-verify's documented use: parse both (gold wrapped in $...$), then verify."""
    from math_verify import parse, verify

    return bool(verify(parse(f"${gold}$"), parse(completion)))


def time_ours(pool: VerifierPool, pairs: list[tuple[str, str]]) -> tuple[float, list]:
    start = time.perf_counter()
    verdicts = verify_math_many(pool, pairs)
    return time.perf_counter() - start, verdicts


def time_theirs(pairs: list[tuple[str, str]]) -> tuple[float, list[bool]]:
    start = time.perf_counter()
    results = [math_verify_grade(c, g) for c, g in pairs]
    return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-items", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    items = make_items(args.num_items)
    result: dict = {"benchmark": "verify_math", "items": len(items), "workers": args.workers}
    result["cpus"] = os.cpu_count()

    with VerifierPool(args.workers, timeout_s=10.0, preload=MATH_PRELOAD) as pool:
        verify_math_many(pool, [("\\boxed{\\sqrt{2}}", "\\sqrt{2}")] * args.workers)  # warm-up
        mismatches, unsure = 0, 0
        for kind in ("number", "fraction", "latex"):
            pairs = [(c, g) for k, c, g in items if k == kind]
            ours_s, ours = time_ours(pool, pairs)
            theirs_s, theirs = time_theirs(pairs)
            for verdict, their, pair in zip(ours, theirs, pairs):
                if verdict.status not in ("correct", "wrong"):
                    unsure += 1
                elif (verdict.status == "correct") != their:
                    mismatches += 1
                    print(f"mismatch: {pair} ours={verdict.status} theirs={their}", file=sys.stderr)
            result[kind] = {
                "n": len(pairs),
                "ours_items_per_s": round(len(pairs) / ours_s, 1),
                "math_verify_items_per_s": round(len(pairs) / theirs_s, 1),
                "speedup": round(theirs_s / ours_s, 2),
            }
        result["verdict_mismatches"] = mismatches
        result["ours_unsure"] = unsure

        cases = [json.loads(line) for line in AGREEMENT_FILE.read_text().splitlines()]
        ours = verify_math_many(pool, [(c["prediction"], c["gold"]) for c in cases])
    theirs = [math_verify_grade(c["prediction"], c["gold"]) for c in cases]
    ours_ok = theirs_ok = 0
    for case, verdict, their in zip(cases, ours, theirs):
        ours_ok += (verdict.status == "correct") == bool(case["expected"])
        theirs_ok += their == bool(case["expected"])
        if (verdict.status == "correct") != bool(case["expected"]):
            print(f"ours disagrees: {json.dumps(case)[:300]} -> {verdict.status}: {verdict.reason}",
                  file=sys.stderr)  # fmt: skip
    result["agreement"] = {
        "cases": len(cases),
        "ours": round(ours_ok / len(cases), 4),
        "math_verify": round(theirs_ok / len(cases), 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
