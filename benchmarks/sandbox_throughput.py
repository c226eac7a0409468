"""Sandboxed stdin/stdout test runs per second (issue 3 target: >= 20/s on 2 cores).

Each run is one fresh sandbox (bubblewrap where it works) executing a small program on one
test case; `--workers` runs go on at once, as a verifier pool would run them. Prints one
JSON line. Run alone: other load on the 2 cores skews it.

    .venv/bin/python benchmarks/sandbox_throughput.py --runs 100 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from rlvr.verifiers.code import verify_code
from rlvr.verifiers.sandbox import backend

PROGRAM = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="test runs in total")
    parser.add_argument("--workers", type=int, default=2, help="runs at once")
    args = parser.parse_args()

    cases = [{"inputs": [f"{i} {i + 1}\n"], "outputs": [str(2 * i + 1)]} for i in range(args.runs)]
    verify_code(PROGRAM, cases[0])  # warm-up: picks the backend, fills the page cache
    start = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        verdicts = list(pool.map(lambda tests: verify_code(PROGRAM, tests), cases))
    seconds = time.perf_counter() - start
    record = {
        "benchmark": "sandbox_throughput",
        "backend": backend(),
        "runs": args.runs,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "seconds": round(seconds, 3),
        "runs_per_s": round(args.runs / seconds, 1),
        "all_correct": all(v.reward == 1.0 for v in verdicts),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
