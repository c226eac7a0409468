"""Our math grader vs math-verify's own parse + verify: speed, verdict identity, agreement.

    .venv/bin/python benchmarks/verify_math.py [--num-items 10000] [--workers 2]

Speed: the same mixed answers (plain numbers, fractions, LaTeX; half right, half wrong) are
graded by `verify_math_many` (plain numbers in this process, the rest in a VerifierPool of
`--workers` processes) and by math-verify called directly, one item after another in this
process (parse the gold, parse the completion, verify), which is how it is usually used.
Verdicts must be identical wherever both are sure (ours says correct or wrong).

Agreement: tests/data/math_agreement.jsonl holds (gold, prediction, expected) cases, each with
the `source` it was transcribed from (the test suites of Math-Verify, lighteval, NeMo-Skills,
hendrycks/math, Qwen2.5-Math, open-r1, TRL, OpenCompass, lm-evaluation-harness) or "rlvr" for
the cases written for rlvr's own rules (their `rule` field), and a `why`. Both graders see the
same cases; the report gives agreement overall, per source repository and per rule, and counts
wrong answers graded correct among the "strict_numbers" cases (the ones math-verify's defaults
get wrong). `--agreement-only` skips the speed part; `--show-disagreements` lists rlvr's misses.

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


def measure_speed(pool: VerifierPool, items: list[tuple[str, str, str]]) -> dict:
    """Items per second of both graders per kind, and verdicts that differ where ours is sure."""
    result: dict = {}
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
    return result


def agreement(cases: list[dict], ours: list, theirs: list[bool], show: bool) -> dict:
    """How often each grader gives the expected verdict: overall, per source repository, per
    rule of the rlvr-written cases; and wrong answers graded correct among "strict_numbers"."""
    groups: dict[str, list[int]] = {}  # name -> [cases, ours agree, math-verify agrees]
    false_correct = 0
    for case, verdict, their in zip(cases, ours, theirs):
        expected = bool(case["expected"])
        ok, their_ok = (verdict.status == "correct") == expected, their == expected
        repo = case["source"].split(" ")[0]
        names = ["all", repo] + ([f"rlvr:{case['rule']}"] if "rule" in case else [])
        for name in names:
            group = groups.setdefault(name, [0, 0, 0])
            group[0] += 1
            group[1] += ok
            group[2] += their_ok
        if case.get("rule") == "strict_numbers" and not expected and verdict.status == "correct":
            false_correct += 1
        if show and not ok:
            shown = {k: case[k] for k in ("gold", "prediction", "source")}
            shown["prediction"] = shown["prediction"][-160:]
            shown.update(expected=case["expected"], ours=f"{verdict.status}: {verdict.reason[:80]}")
            print(f"ours disagrees: {json.dumps(shown, ensure_ascii=False)}", file=sys.stderr)
    table = {
        name: {"cases": n, "ours": round(a / n, 4), "math_verify": round(b / n, 4)}
        for name, (n, a, b) in groups.items()
    }
    overall = table.pop("all")
    return {**overall, "strict_numbers_wrong_graded_correct": false_correct, "by_source": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-items", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--agreement-only", action="store_true", help="skip the speed part")
    parser.add_argument(
        "--show-disagreements", action="store_true", help="print the cases rlvr grades wrongly"
    )
    args = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    items = make_items(args.num_items)
    result: dict = {"benchmark": "verify_math", "items": len(items), "workers": args.workers}
    result["cpus"] = os.cpu_count()

    with VerifierPool(args.workers, timeout_s=10.0, preload=MATH_PRELOAD) as pool:
        verify_math_many(pool, [("\\boxed{\\sqrt{2}}", "\\sqrt{2}")] * args.workers)  # warm-up
        if not args.agreement_only:
            result.update(measure_speed(pool, items))
        cases = [json.loads(line) for line in AGREEMENT_FILE.read_text().splitlines()]
        ours = verify_math_many(pool, [(c["prediction"], c["gold"]) for c in cases])
    theirs = [math_verify_grade(c["prediction"], c["gold"]) for c in cases]
    result["agreement"] = agreement(cases, ours, theirs, args.show_disagreements)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
