"""The reward-hacking watch: cheap checks that flag completions a verifier may have been fooled by.

A verifier that pays for the right final answer can be gamed: an answer with no reasoning
where the task asks for it, the answer copied out of the prompt, several answers hedged in
one completion, text after the answer, a completion cut off at the length limit and still
rewarded, a length far from the rest of its group. None of these proves hacking; a share
of *rewarded* completions flagged that rises during training is the sign to read the
flagged examples (`rlvr report` lists them).

Each check is a pure function of text (no torch, no model), so it runs anywhere and is
tested on crafted completions (tests/test_hacking.py). `flag_group` applies all of them to
one GRPO group; the training loop logs, per step, `hacking/<check>`: the share of rewarded
completions that check flagged, and `hacking/any`. `reward.zero_flagged` names the checks
whose flagged completions score 0 before advantages are computed.

    flags = flag_group(prompt, responses, finish_reasons, lengths)   # one tuple per response
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from statistics import median

from rlvr.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, EOS, THINK_CLOSE, THINK_OPEN

CHECKS = (
    "no_reasoning",
    "copied_answer",
    "several_answers",
    "text_after_answer",
    "truncated",
    "length_outlier",
)
"""The checks, in the order they are reported."""

_BOXED = "\\boxed{"


def final_answer(response: str) -> str | None:
    """The answer a completion gives: its first `<answer>` block, else its last `\\boxed{}`
    (the same places the math verifier reads first); None when it gives neither."""
    start = response.find(ANSWER_OPEN)
    if start >= 0:
        end = response.find(ANSWER_CLOSE, start)
        if end >= 0:
            return response[start + len(ANSWER_OPEN) : end].strip()
    boxed = boxed_contents(response)
    return boxed[-1].strip() if boxed else None


def boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` in text, braces balanced (`\\boxed{\\frac{1}{2}}`
    gives `\\frac{1}{2}`); an unclosed one is left out."""
    found = []
    i = text.find(_BOXED)
    while i >= 0:
        depth, j = 1, i + len(_BOXED)
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth == 0:
            found.append(text[i + len(_BOXED) : j - 1])
        i = text.find(_BOXED, i + len(_BOXED))
    return found


def no_reasoning(response: str) -> bool:
    """The completion answers with an empty or missing think block."""
    start = response.find(THINK_OPEN)
    end = response.find(THINK_CLOSE)
    if start < 0 or end < start:
        return True
    return not response[start + len(THINK_OPEN) : end].strip()


def copied_answer(response: str, prompt: str) -> bool:
    """The final answer appears in the prompt as a whole word or number (`19` in
    `17+6*2-10+19-19=`, not in `190`). On arithmetic prompts an answer can equal an operand
    by chance: read the rate's trend, not its level."""
    answer = final_answer(response)
    if not answer:
        return False
    pattern = r"(?<![\w.])" + re.escape(answer) + r"(?![\w.])"
    return re.search(pattern, prompt) is not None


def several_answers(response: str) -> bool:
    """More than one answer block, or more than one `\\boxed{}`: hedging between candidates."""
    return response.count(ANSWER_OPEN) > 1 or len(boxed_contents(response)) > 1


def text_after_answer(response: str) -> bool:
    """Anything but whitespace (and the end-of-sequence token) after the first `</answer>`."""
    end = response.find(ANSWER_CLOSE)
    if end < 0:
        return False
    rest = response[end + len(ANSWER_CLOSE) :].replace(EOS, "")
    return bool(rest.strip())


def truncated(finish_reason: str) -> bool:
    """The completion was cut off at the length limit (finish reason "length")."""
    return finish_reason == "length"


def length_outliers(lengths: Sequence[int], ratio: float) -> list[bool]:
    """Completions more than `ratio` times longer or shorter than their group's median
    length (tokens). A group of one has no outliers."""
    if len(lengths) < 2 or ratio <= 1:
        return [False] * len(lengths)
    mid = median(lengths)
    return [n > ratio * mid or n * ratio < mid for n in lengths]


def flag_group(
    prompt: str,
    responses: Sequence[str],
    finish_reasons: Sequence[str],
    lengths: Sequence[int],
    *,
    reasoning_required: bool = False,
    length_ratio: float = 4.0,
) -> list[tuple[str, ...]]:
    """The checks each completion of one group trips, in CHECKS order.

    reasoning_required: the task asks for reasoning, so an empty think block is flagged
    (`no_reasoning` is never flagged otherwise). length_ratio: see `length_outliers`.
    """
    outliers = length_outliers(lengths, length_ratio)
    flags = []
    for response, reason, outlier in zip(responses, finish_reasons, outliers):
        hit = {
            "no_reasoning": reasoning_required and no_reasoning(response),
            "copied_answer": copied_answer(response, prompt),
            "several_answers": several_answers(response),
            "text_after_answer": text_after_answer(response),
            "truncated": truncated(reason),
            "length_outlier": outlier,
        }
        flags.append(tuple(name for name in CHECKS if hit[name]))
    return flags


def flagged_shares(flags: Sequence[Sequence[str]], rewarded: Sequence[bool]) -> dict[str, float]:
    """`hacking/<check>`: the share of rewarded completions each check flagged, and
    `hacking/any` (0.0 when nothing was rewarded)."""
    num_rewarded = sum(rewarded)
    shares = {}
    for name in (*CHECKS, "any"):
        hits = sum(bool(f) if name == "any" else name in f for f, r in zip(flags, rewarded) if r)
        shares[f"hacking/{name}"] = hits / num_rewarded if num_rewarded else 0.0
    return shares
