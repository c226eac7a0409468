"""`rlvr verify`: grade a JSONL file of model outputs offline.

    rlvr verify outputs.jsonl --verifier math --output graded.jsonl --workers 2

Each input line is a JSON object with `completion` plus what its verifier needs:
    math          {"completion": "... \\boxed{42}", "answer": "42"}
    choice        {"completion": "... Answer: B", "answer": "B"}  (or "(B) Paris"; A-J)
    code          {"completion": "```python ...```", "tests": {...}}
    puzzle:NAME   {"completion": "...", "answer": "...", "problem": {...}}  (reasoning-gym)
    judge         {"completion": "...", "answer": "...", "question": "..."}  (a local model,
                  --judge-model PATH; "question" (or "prompt") is optional)
A line may name its own `verifier`; otherwise --verifier (default math) applies. Each output
line is the input object plus `reward`, `status` and `reason` (code adds `passed`, `total`),
in input order. A line that is not a JSON object, or lacks a field, gets status "error" with
its line number; the others are still graded. Blank lines are skipped. A summary (count per
status, items/s) goes to stderr.

Multiple choice, plain-number math answers and answers identical to the gold are graded in
this process (pure Python; a math line whose gold is a letter is graded as multiple choice);
everything else runs in a VerifierPool, so sympy and sandboxed code never run here. The judge
(rlvr/verifiers/judge.py) runs in a worker process of its own, batched; identical (question,
answer, gold) triples are judged once, and the summary counts the judge's gradings and cache
hits.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rlvr.verifiers.base import STATUSES, Verdict

DEFAULT_TIMEOUT_S = 10.0  # per item; the sandbox's own limits are inside this


def _error(reason: str) -> Verdict:
    return Verdict(0.0, "error", {}, reason)


# --- adapters that run inside pool workers (module-level so they pickle by name) --------------


def grade_code(completion: str, tests: Any, partial: bool) -> Verdict:
    """The code verifier; imported in the worker so this module stays cheap to import."""
    from rlvr.verifiers.code import verify_code

    return verify_code(completion, tests, partial=partial)


def grade_puzzle(name: str, completion: str, line: dict, partial: bool) -> Verdict:
    """A reasoning-gym puzzle; imported in the worker (reasoning-gym is slow to import)."""
    from rlvr.verifiers.puzzles import verify_puzzle

    return verify_puzzle(name, completion, line.get("answer"), line.get("problem"), partial=partial)


# --- the command ----------------------------------------------------------------------------


def _plan(line: dict, lineno: int, default: str, partial: bool):
    """(immediate Verdict, None) or (None, (fn, args)) for one parsed input line."""
    from rlvr.verifiers.choice import verify_choice
    from rlvr.verifiers.math import fast_math_verdict, verify_math

    completion = line.get("completion")
    if not isinstance(completion, str):
        return _error(f"line {lineno}: no string field 'completion'"), None
    name = line.get("verifier", default)
    if name == "math":
        if "answer" not in line:
            return _error(f"line {lineno}: math needs an 'answer' field"), None
        answer = str(line["answer"])
        fast = fast_math_verdict(completion, answer)
        return (fast, None) if fast is not None else (None, (verify_math, (completion, answer)))
    if name == "choice":
        if "answer" not in line:
            return _error(
                f"line {lineno}: choice needs an 'answer' field (the option letter)"
            ), None
        return verify_choice(completion, str(line["answer"])), None
    if name == "code":
        if "tests" not in line:
            return _error(f"line {lineno}: code needs a 'tests' field"), None
        return None, (grade_code, (completion, line["tests"], partial))
    if name == "judge":
        if "answer" not in line:
            return _error(f"line {lineno}: judge needs an 'answer' field (the reference)"), None
        question = line.get("question", line.get("prompt", ""))
        return None, ("judge", (str(question), completion, str(line["answer"])))
    if isinstance(name, str) and name.startswith("puzzle:") and len(name) > len("puzzle:"):
        return None, (grade_puzzle, (name.removeprefix("puzzle:"), completion, line, partial))
    return _error(
        f"line {lineno}: unknown verifier {name!r}; use math, choice, code, puzzle:NAME or judge"
    ), None


def _output_line(line: dict, verdict: Verdict) -> dict:
    out = dict(line)
    out.update(reward=verdict.reward, status=verdict.status, reason=verdict.reason)
    if verdict.total is not None:  # test-based verifiers (code)
        out.update(passed=verdict.passed, total=verdict.total)
    return out


def run_verify(
    input_path: str | Path,
    verifier: str = "math",
    output: str | Path | None = None,
    workers: int = 2,
    partial: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    judge_model: str | None = None,
    judge_template: str | None = None,
) -> int:
    """Grade a JSONL file; returns the exit code. Raises ConfigError for a missing file, or
    a judge model folder that is not a model."""
    from rlvr.config import ConfigError, JudgeConfig  # here: workers import this module
    from rlvr.verifiers.judge import check_judge_folder
    from rlvr.verifiers.math import MATH_PRELOAD
    from rlvr.verifiers.pool import VerifierPool

    path = Path(input_path)
    if not path.is_file():
        raise ConfigError(f"Input file {path} does not exist; pass a JSONL file of completions.")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}.")
    if verifier == "judge" and not judge_model:
        raise ConfigError(
            "--verifier judge needs --judge-model PATH (a Hugging Face model folder)."
        )
    if judge_model:
        check_judge_folder(judge_model)
    start = time.perf_counter()
    lines: list[dict] = []
    verdicts: list[Verdict | None] = []
    jobs: dict[int, tuple] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as exc:
                line, verdict = {"line": lineno}, _error(f"line {lineno}: not valid JSON ({exc})")
            else:
                if isinstance(line, dict):
                    verdict, job = _plan(line, lineno, verifier, partial)
                    if job is not None:
                        jobs[len(verdicts)] = job
                else:
                    line = {"line": lineno}
                    verdict = _error(f"line {lineno}: not a JSON object")
            lines.append(line)
            verdicts.append(verdict)

    judged = hits = 0
    judge_jobs = {i: args for i, (fn, args) in jobs.items() if fn == "judge"}
    jobs = {i: job for i, job in jobs.items() if i not in judge_jobs}
    if judge_jobs and not judge_model:
        for i in judge_jobs:
            verdicts[i] = _error("a line names the judge verifier: pass --judge-model PATH")
    elif judge_jobs:
        from rlvr.verifiers.judge import Judge, response_answer

        settings = JudgeConfig(model=judge_model, timeout_s=max(timeout_s, 60.0))
        if judge_template is not None:
            settings.template = judge_template
        with Judge(settings) as judge:
            asked: dict[tuple[str, str, str], Any] = {}  # the verdict cache: one per triple
            futures = {}
            for i, (question, completion, gold) in judge_jobs.items():
                key = (question if "{question}" in settings.template else "",
                       response_answer(completion), gold)  # fmt: skip
                if key in asked:
                    hits += 1
                else:
                    asked[key] = judge.submit(*key)
                futures[i] = asked[key]
            for i, future in futures.items():
                verdicts[i] = future.result()
            judged = judge.judged

    if jobs:
        # Workers import math-verify up front only when some item needs it.
        needs_math = any(fn.__name__ == "verify_math" for fn, _ in jobs.values())
        preload = MATH_PRELOAD if needs_math else ()
        with VerifierPool(workers, timeout_s=timeout_s, preload=preload) as pool:
            futures = {i: pool.submit(fn, *args) for i, (fn, args) in jobs.items()}
            for i, future in futures.items():
                verdicts[i] = future.result()

    sink = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        for line, verdict in zip(lines, verdicts):
            sink.write(json.dumps(_output_line(line, verdict), ensure_ascii=False) + "\n")
    finally:
        if output:
            sink.close()
        else:
            sink.flush()
    seconds = time.perf_counter() - start
    counts = Counter(v.status for v in verdicts)
    summary = ", ".join(f"{status} {counts[status]}" for status in STATUSES)
    rate = len(verdicts) / seconds if seconds > 0 else 0.0
    if judge_jobs:
        summary += f"; judged {judged}, cache hits {hits}"
    print(
        f"rlvr verify: {len(verdicts)} items in {seconds:.2f} s ({rate:.1f} items/s): {summary}",
        file=sys.stderr,
    )
    return 0
