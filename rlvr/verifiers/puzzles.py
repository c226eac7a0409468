"""reasoning-gym puzzles: problems from its generators, scores from its scorers in the sandbox.

reasoning-gym (PyPI `reasoning-gym`, the `puzzles` extra) has ~100 procedural tasks, each
with a `score_answer(answer, entry)`. Several scorers pass model text to eval or sympy, so
scoring runs in the code sandbox: one sandbox per batch, and inside it one forked process per
answer, so an answer that hijacks its scorer can neither hang nor forge another answer's score
(its own score it can still forge: for eval-based scorers the sandbox protects the host, not
the reward).

Rewards are binary at score 1.0 (many scorers hand out 0.01-0.66 for wrong answers) unless
partial credit is asked for. Scorers known to be broken are overridden (OVERRIDDEN) and tasks
that cannot be generated with default settings are excluded (EXCLUDED); tests/test_puzzles.py
shows why for each.

    problems = make_problems("basic_arithmetic", "train", num=8, seed=0)
    verdicts = score_answers([p.meta for p in problems], ["4", ...])
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import pickle
from typing import Any

from rlvr.tasks.base import SPLITS, Problem, problem_id, split_of
from rlvr.verifiers.base import Verdict, guarded
from rlvr.verifiers.format import parse_response
from rlvr.verifiers.sandbox import Limits, run_harness

# Task name -> why its own scorer is replaced (the replacement runs in the harness below).
OVERRIDDEN = {
    "game_of_life_halting": "scores any non-empty answer 1.0 (it compares bool(answer))",
    "coin_flip": "scores 1.0 for any answer that is a prefix of the probability, e.g. '0'",
}
# Task name -> why make_problems refuses it.
EXCLUDED = {
    "composite": "mixes other tasks and needs their list; use the tasks themselves",
}

IMPORT_SECONDS = 10.0  # importing reasoning_gym in the sandbox takes ~1.5 s on 2 cores
SCORE_SECONDS = 5.0  # per answer
MEMORY_MB = 2048

# Trusted harness: imports reasoning_gym once, then scores each answer in a forked child that
# gets only its own pipe (not the result channel), under a per-answer deadline.
_HARNESS = r"""
import ctypes, json, os, pickle, base64, select, signal, time
ctypes.CDLL(None).prctl(4, 0)  # PR_SET_DUMPABLE 0: the children may not ptrace this process
with open(os.path.join(os.path.dirname(__file__), "items.b64"), "rb") as f:
    spec = pickle.loads(base64.b64decode(f.read()))
import reasoning_gym
from fractions import Fraction

def gol_halting(answer, entry):
    return float(answer is not None and answer.strip().lower() == str(entry["answer"]).lower())

def coin_flip(answer, entry):
    if answer is None or len(answer) > 100:
        return 0.0
    try:
        got, want = (float(Fraction(a.replace(",", "").strip())) for a in (answer, entry["answer"]))
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(abs(got - want) <= 1e-4)

OVERRIDES = {"game_of_life_halting": gol_halting, "coin_flip": coin_flip}

def emit(obj):
    os.write(CHANNEL_FD, (json.dumps(obj) + "\n").encode())

for i, (task, answer, entry) in enumerate(spec["items"]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.close(CHANNEL_FD)
        try:
            fn = OVERRIDES.get(task) or reasoning_gym.get_score_answer_fn(task)
            out = {"score": float(fn(answer, entry))}
        except BaseException as e:
            out = {"error": type(e).__name__ + ": " + str(e)[:100]}
        os.write(w, json.dumps(out).encode()[:4096])
        os._exit(0)
    os.close(w)
    deadline, data = time.monotonic() + spec["seconds"], b""
    while True:
        ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            data = b'{"timeout": true}'
            break
        chunk = os.read(r, 4096)
        if not chunk or len(data) > 4096:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    try:
        out = json.loads(data)
    except ValueError:
        out = {"error": "the scorer process died"}
    emit({"i": i, **(out if isinstance(out, dict) else {"error": "bad output"})})
"""


def task_names() -> list[str]:
    """Every reasoning-gym task that make_problems accepts."""
    from reasoning_gym.factory import DATASETS

    return sorted(set(DATASETS) - set(EXCLUDED))


def make_problems(task_name: str, split: str, num: int, seed: int) -> list[Problem]:
    """`num` distinct problems of `split` from reasoning-gym's generator for `task_name`.

    Splits are disjoint by the same rule as rlvr.tasks: a question is a test question iff
    split_of(question) == "test". Problem.meta holds {"task", "entry"} for the scorer.
    """
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: use one of {SPLITS}.")
    if task_name in EXCLUDED:
        raise ValueError(f"reasoning-gym task {task_name!r} is excluded: {EXCLUDED[task_name]}.")
    if task_name not in DATASETS:
        raise ValueError(
            f"Unknown reasoning-gym task {task_name!r}; see rlvr.verifiers.puzzles.task_names()."
        )
    out: list[Problem] = []
    seen: set[str] = set()
    chunk = max(16, 2 * num)
    for attempt in range(20):
        # Seeds apart per split and attempt, so the two splits do not draw the same stream.
        key = f"{task_name}/{split}/{seed}/{attempt}".encode()
        rg_seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "big")
        dataset = reasoning_gym.create_dataset(task_name, seed=rg_seed, size=chunk)
        for entry in dataset:
            question = entry["question"]
            if question in seen or split_of(question) != split:
                continue
            seen.add(question)
            meta = {"task": task_name, "entry": dict(entry)}
            answer = "" if entry["answer"] is None else str(entry["answer"])
            pid = problem_id(f"rg-{task_name}", question)
            out.append(Problem(pid, question, answer, f"puzzle:{task_name}", split, meta))
            if len(out) == num:
                return out
    raise ValueError(
        f"reasoning-gym task {task_name!r} gave only {len(out)} distinct {split} problems of "
        f"the {num} asked for: ask for fewer."
    )


def score_answers(
    metas: list[dict[str, Any]],
    answers: list[str | None],
    *,
    partial: bool = False,
    kind: str = "auto",
) -> list[Verdict]:
    """Score each answer against its problem's meta ({"task", "entry"}) in one sandbox run.

    An answer whose scorer hangs gets status "timeout"; one whose scorer raises gets
    "unparsable" (the scorers raise on answers they cannot read).
    """
    items = [(m["task"], a, m["entry"]) for m, a in zip(metas, answers)]
    verdicts: list[Verdict | None] = [None] * len(items)
    start = 0
    while start < len(items):
        batch = items[start:]
        spec = {"items": batch, "seconds": SCORE_SECONDS}
        limits = Limits(
            timeout=IMPORT_SECONDS + SCORE_SECONDS * len(batch) + 1.0,
            memory_mb=MEMORY_MB,
            max_open_files=256,
        )
        files = {"items.b64": base64.b64encode(pickle.dumps(spec)).decode()}
        result = run_harness(_HARNESS, files, limits=limits, kind=kind)
        reports = _reports(result.channel, len(batch))
        for j, report in enumerate(reports):
            if report is not None:
                verdicts[start + j] = _verdict(report, partial)
        missing = [j for j, r in enumerate(reports) if r is None]
        if not missing:
            break
        # The harness itself died or ran out of time: blame the first unscored answer.
        first = missing[0]
        why = result.killed_reason or result.stderr.strip()[-200:] or "no result"
        verdicts[start + first] = Verdict(0.0, "error", {"accuracy": 0.0}, f"scorer: {why}")
        start += first + 1
    return [v for v in verdicts if v is not None]


def _reports(lines: list[str], n: int) -> list[dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = [None] * n
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        i = obj.get("i") if isinstance(obj, dict) else None
        if isinstance(i, int) and 0 <= i < n and out[i] is None:
            out[i] = obj
    return out


def _verdict(report: dict[str, Any], partial: bool) -> Verdict:
    if report.get("timeout"):
        return Verdict(0.0, "timeout", {"accuracy": 0.0}, "the scorer timed out")
    score = report.get("score")
    if not isinstance(score, int | float) or math.isnan(score):
        reason = f"the scorer could not read the answer: {report.get('error', '?')}"
        return Verdict(0.0, "unparsable", {"accuracy": 0.0}, reason[:200])
    score = min(1.0, max(0.0, float(score)))
    correct = score >= 1.0
    reward = score if partial else float(correct)
    status = "correct" if correct else "wrong"
    return Verdict(reward, status, {"accuracy": reward, "score": score}, f"score {score:.3g}")


@guarded
def verify_puzzle(
    name: str,
    completion: str,
    answer: Any = None,
    problem: dict[str, Any] | None = None,
    *,
    partial: bool = False,
) -> Verdict:
    """Grade one completion for reasoning-gym task `name` (for `rlvr verify`).

    The answer is the <answer> block of the completion, else the whole completion stripped.
    `problem` is the reasoning-gym entry ({"question", "answer", "metadata"}) or a Problem's
    meta ({"task", "entry"}); `answer`, when given, overrides the entry's gold answer.
    """
    if not isinstance(problem, dict):
        return Verdict(0.0, "error", {"accuracy": 0.0}, "puzzles need the 'problem' entry")
    entry = dict(problem.get("entry", problem))
    if answer is not None:
        entry["answer"] = answer
    entry.setdefault("metadata", {})
    parsed = parse_response(completion)
    text = parsed.answer if parsed.answer is not None else completion.strip()
    return score_answers([{"task": name, "entry": entry}], [text], partial=partial)[0]
