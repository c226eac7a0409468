"""Self-improvement with a verifier: sample, keep the verified traces, fine-tune, repeat.

    rlvr iterate recipes/iterate.toml --out runs/iterate        # three rounds
    rlvr iterate --resume runs/iterate                          # after a stop or a kill

One round (a `rsft` phase; `distill` is the same with a teacher sampling):
1. sample `traces.samples_per_problem` (k) completions of each of `traces.num_problems`
   training problems (the same problems every round) with the current model;
2. verify each, and keep (`keep_traces`) the correct ones that finished, distinct per problem
   (deduplicated on the response text), at most `traces.max_per_problem` (m) per problem;
   with `traces.balance` every kept problem gives m training rows (its distinct traces
   repeated in turn), so a problem solved once in k weighs as much as one solved k times and
   the hard problems stay represented;
3. fine-tune on them (rlvr/learning/sft.py) from the previous round's weights, or from the
   weights the first round started from (`iterate.fine_tune_from = "start"`, as STaR does);
4. evaluate on the held-out split (the phase runner in rlvr/loop.py does that).

Expert iteration (Anthony et al. 2017), STaR (Zelikman et al. 2022, arXiv:2203.14465),
rejection-sampling fine-tuning (Yuan et al. 2023, arXiv:2308.01825), ReST-EM (Singh et al.
2023, arXiv:2312.06585) and DeepSeek-R1's rejection-sampling stage are this loop.

Each round writes what it learned from, for a person to read: traces/<phase>.jsonl (one kept
trace per line: prompt, response, gold answer, its verdict, its problem's pass rate, and the
token ids the fine-tuning used) and traces/<phase>.json (the round's numbers); the run's
rounds.md is the per-round table (problems solved, kept traces, held-out accuracy, with the
think block forced empty).

The blind-spot experiment: `traces.filter = "majority"` keeps the traces whose answer is the
model's own majority answer among its k samples, with no verifier (a model grading itself).
The verifier still grades every kept trace, only to count the wrong ones it let through
(`kept_wrong`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from rlvr.device import autocast
from rlvr.errors import ConfigError, TrainingError
from rlvr.learning.sft import Example
from rlvr.sampling.engine import Engine
from rlvr.sampling.rollout import Episode, rollout
from rlvr.tasks import Problem
from rlvr.verifiers.format import parse_response
from rlvr.verifiers.rewards import Scorer

TRACES = "traces"
ROUNDS_TABLE = "rounds.md"
HARD = 0.25
"""A problem is hard when at most this share of its k samples were correct."""


# ----------------------------------------------------------------------------- the filter


def majority_answer(group: Sequence[Episode]) -> str | None:
    """The most common extracted answer of a group (the first to reach the top count on a
    tie); None when no sample has an answer."""
    votes = Counter(
        a.strip() for a in (parse_response(ep.response).answer for ep in group) if a is not None
    )
    return votes.most_common(1)[0][0] if votes else None


def keep_traces(
    group: Sequence[Episode], max_per_problem: int, filter: str = "verifier",
    require_think: bool = False,
) -> list[Episode]:  # fmt: skip
    """The traces of one problem's samples that a round keeps, in sampling order.

    filter "verifier": the verified-correct ones; "majority": those whose answer is the
    group's majority answer (no verifier). Only completions that ended by themselves (a
    truncated one would teach the model not to stop), with a non-empty think block when
    require_think, each response text once, at most max_per_problem.
    """
    if filter == "verifier":
        ok = [ep for ep in group if ep.verdict.status == "correct"]
    elif filter == "majority":
        winner = majority_answer(group)
        ok = [ep for ep in group if winner is not None
              and (parse_response(ep.response).answer or "").strip() == winner]  # fmt: skip
    else:
        raise ValueError(f"unknown traces filter {filter!r}; choose verifier or majority.")
    kept, seen = [], set()
    for ep in ok:
        if ep.finish_reason != "stop" or (require_think and not ep.thought):
            continue
        if ep.response in seen:
            continue
        seen.add(ep.response)
        kept.append(ep)
        if len(kept) == max_per_problem:
            break
    return kept


def training_rows(kept: Sequence[Episode], max_per_problem: int, balance: bool) -> list[Episode]:
    """One problem's rows of fine-tuning data: its kept traces, repeated in turn up to
    max_per_problem rows when balance is on (so hard problems weigh as much as easy ones)."""
    if not balance or not kept:
        return list(kept)
    return [kept[i % len(kept)] for i in range(max_per_problem)]


# ----------------------------------------------------------------------------- a round


def sample_traces(
    model: torch.nn.Module, tokenizer, scorer: Scorer, problems: Sequence[Problem], cfg,
    generator: torch.Generator, batch_problems: int = 32,
) -> list[list[Episode]]:  # fmt: skip
    """k verified samples of each problem (one group per problem), sampled with `model`."""
    t = cfg.traces
    was_training = model.training
    model.eval()
    engine = Engine(model, pad_id=tokenizer.pad_id)
    groups: list[list[Episode]] = []
    with torch.no_grad(), autocast(cfg, model):
        for i in range(0, len(problems), batch_problems):
            chunk = problems[i : i + batch_problems]
            episodes = rollout(
                engine, tokenizer, scorer, chunk, num_samples=t.samples_per_problem,
                max_new_tokens=t.max_new_tokens, temperature=t.temperature, generator=generator,
            )  # fmt: skip
            k = t.samples_per_problem
            groups += [episodes[j * k : (j + 1) * k] for j in range(len(chunk))]
    model.train(was_training)
    return groups


def select(groups: list[list[Episode]], cfg) -> tuple[list[dict], dict]:
    """The kept traces of a round as JSON rows (one per distinct trace) and its numbers."""
    t = cfg.traces
    rows: list[dict] = []
    solved = kept_problems = hard_kept = kept_wrong = thought = tokens = correct = 0
    for group in groups:
        num_correct = sum(ep.verdict.status == "correct" for ep in group)
        correct += num_correct
        solved += num_correct > 0
        thought += sum(ep.thought for ep in group)
        tokens += sum(len(ep.completion_ids) for ep in group)
        kept = keep_traces(group, t.max_per_problem, t.filter, t.require_think)
        if not kept:
            continue
        pass_rate = num_correct / len(group)
        kept_problems += 1
        hard_kept += pass_rate <= HARD
        repeats = Counter(id(ep) for ep in training_rows(kept, t.max_per_problem, t.balance))
        for ep in kept:
            kept_wrong += ep.verdict.status != "correct"
            rows.append({
                "problem_id": ep.problem.id, "prompt": ep.problem.prompt,
                "answer": ep.problem.answer, "response": ep.response,
                "status": ep.verdict.status, "pass_rate": pass_rate,
                "rows": repeats[id(ep)], "prompt_ids": ep.prompt_ids,
                "completion_ids": ep.completion_ids,
            })  # fmt: skip
    n = sum(len(g) for g in groups)
    stats = {
        "problems": len(groups), "solved": solved, "kept_problems": kept_problems,
        "hard_problems_kept": hard_kept, "kept_traces": len(rows),
        "training_rows": sum(r["rows"] for r in rows), "kept_wrong": kept_wrong,
        "sample_accuracy": correct / max(1, n), "sample_think_rate": thought / max(1, n),
        "sampled_tokens": tokens,
    }  # fmt: skip
    return rows, stats


def examples_of(rows: list[dict]) -> list[Example]:
    """The fine-tuning examples of a round's kept traces (each repeated `rows` times)."""
    return [Example(r["prompt_ids"], r["completion_ids"]) for r in rows for _ in range(r["rows"])]


def write_json_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all (a kill mid-write leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def save_round(run_dir: Path, label: str, rows: list[dict], stats: dict) -> Path:
    """traces/<label>.jsonl (the kept traces) and traces/<label>.json (the round's numbers)."""
    folder = Path(run_dir) / TRACES
    write_json_atomic(folder / f"{label}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write_json_atomic(folder / f"{label}.json", json.dumps(stats, indent=2) + "\n")
    return folder / f"{label}.jsonl"


def load_round(run_dir: Path, label: str) -> tuple[list[dict], dict]:
    """What save_round wrote (a resumed round trains on exactly the traces it kept)."""
    folder = Path(run_dir) / TRACES
    rows = [json.loads(line) for line in (folder / f"{label}.jsonl").read_text().splitlines()]
    return rows, json.loads((folder / f"{label}.json").read_text())


def no_traces_message(label: str, stats: dict, cfg) -> str:
    t = cfg.traces
    what = "verified-correct" if t.filter == "verifier" else "majority-answer"
    think = " with a non-empty think block" if t.require_think else ""
    return (
        f"{label}: none of the {stats['problems']} problems x {t.samples_per_problem} samples "
        f"gave a finished {what} trace{think} (sample accuracy {stats['sample_accuracy']:.3f}), "
        "so there is nothing to fine-tune on; start from a stronger model (more pretraining "
        "or a GRPO phase first), or raise traces.samples_per_problem or traces.max_new_tokens."
    )


def check_teacher(teacher_path: str, student_tokenizer) -> None:
    """ConfigError unless the teacher's tokenizer is the student's (the traces are token ids)."""
    from rlvr.checkpoint import load_checkpoint

    _, teacher_tokenizer, _, _ = load_checkpoint(teacher_path)
    if not same_tokenizer(teacher_tokenizer, student_tokenizer):
        raise ConfigError(
            f"The teacher {teacher_path} has a different tokenizer ({teacher_tokenizer!r}) "
            f"from the student's ({student_tokenizer!r}); distill into a student built with "
            "the teacher's tokenizer."
        )


def same_tokenizer(a, b) -> bool:
    """Whether two tokenizers map the same text to the same ids (same vocabulary and type)."""
    if type(a) is not type(b):
        return False
    if hasattr(a, "tokens"):  # CharTokenizer
        return a.tokens == b.tokens
    return a.hf.get_vocab() == b.hf.get_vocab()


# ----------------------------------------------------------------------------- the table


def rounds_table(results: list[dict]) -> str:
    """The per-round markdown table of a run's rsft/distill phases (`results` are the phase
    runner's records: before-training first, then one per phase)."""
    lines = [
        "| round | phase | problems solved | kept traces (problems, hard) | kept wrong | "
        "held-out accuracy | think forced empty |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    number = 0
    for r in results:
        ev = r["eval"]
        if r.get("round") is None and r["label"] != "start":
            cells = [" ", r["label"], "", "", ""]
        elif r["label"] == "start":
            cells = ["0", "start", "", "", ""]
        else:
            number += 1
            s = r["round"]
            cells = [str(number), r["label"], f"{s['solved']} / {s['problems']}",
                     f"{s['kept_traces']} ({s['kept_problems']}, {s['hard_problems_kept']})",
                     str(s["kept_wrong"])]  # fmt: skip
        cells += [f"{ev['accuracy']:.3f}", f"{ev['accuracy_no_think']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the phase


def traces_round(
    policy: torch.nn.Module, tokenizer, task, scorer: Scorer, cfg, kind: str, label: str,
    logger, checkpointer, should_stop, resume: dict | None, problem_seed: int,
    start_weights: dict | None = None,
) -> dict:  # fmt: skip
    """One round: sample and keep traces (kind "rsft": with the policy; "distill": with
    traces.teacher), then fine-tune the policy on them. Returns the round's numbers.

    A resumed round (a checkpoint inside its fine-tuning) trains on the traces it saved;
    one resumed before its first checkpoint samples again, which gives the same traces (the
    same weights, problems and seeded generator).
    """
    import time

    from rlvr.checkpoint import load_checkpoint
    from rlvr.device import place_model
    from rlvr.learning.sft import sft

    run_dir = Path(cfg.run_dir)
    if resume is None:
        t0 = time.perf_counter()
        model = policy
        if kind == "distill":
            model, teacher_tokenizer, _, _ = load_checkpoint(cfg.traces.teacher)
            if not same_tokenizer(teacher_tokenizer, tokenizer):  # checked at start-up too
                raise ConfigError(f"The teacher {cfg.traces.teacher} has a different tokenizer from the student's.")  # fmt: skip
            place_model(model, cfg.device)
        problems = task.problems("train", cfg.traces.num_problems, seed=problem_seed)
        generator = torch.Generator().manual_seed(cfg.seed + 5)
        groups = sample_traces(model, tokenizer, scorer, problems, cfg, generator)
        rows, stats = select(groups, cfg)
        stats["collect_seconds"] = time.perf_counter() - t0
        if not rows:
            raise TrainingError(no_traces_message(label, stats, cfg))
        save_round(run_dir, label, rows, stats)
        logger.log(kind, 0, stats)
        if start_weights is not None:  # iterate.fine_tune_from = "start"
            policy.load_state_dict(start_weights)
    else:
        rows, stats = load_round(run_dir, label)
    sft(policy, examples_of(rows), tokenizer.pad_id, cfg, logger, checkpointer, should_stop,
        resume=resume, phase=kind)  # fmt: skip
    return stats
