"""The R1 response format: `<think>...</think><answer>...</answer>`, parsed and rewarded.

A response is the model's text after the prompt, special tokens written as their strings.
It may be truncated or garbage; parsing never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlvr.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, EOS, SPECIAL_TOKENS, THINK_CLOSE, THINK_OPEN

# The whole response: one think block, one answer block, then optionally <eos> and whitespace.
# re.ASCII keeps \s to ASCII whitespace; DOTALL lets blocks span lines.
_WELL_FORMED = re.compile(
    re.escape(THINK_OPEN)
    + r"(.*?)"
    + re.escape(THINK_CLOSE)
    + re.escape(ANSWER_OPEN)
    + r"(.*?)"
    + re.escape(ANSWER_CLOSE)
    + r"\s*(?:"
    + re.escape(EOS)
    + r")?\s*",
    re.ASCII | re.DOTALL,
)


@dataclass(frozen=True)
class ParsedResponse:
    """think/answer: block contents (None when absent); well_formed: the exact R1 shape."""

    think: str | None
    answer: str | None
    well_formed: bool


def _between(text: str, open_tag: str, close_tag: str) -> str | None:
    start = text.find(open_tag)
    if start < 0:
        return None
    start += len(open_tag)
    end = text.find(close_tag, start)
    return None if end < 0 else text[start:end]


def parse_response(text: str) -> ParsedResponse:
    """Split a response into its think and answer blocks.

    The answer comes from the first `<answer>...</answer>` pair even when the response is not
    well formed, except when `<answer>` occurs more than once: listing several candidate
    answers must not earn a reward, so that answer is None.
    """
    think = _between(text, THINK_OPEN, THINK_CLOSE)
    answer = _between(text, ANSWER_OPEN, ANSWER_CLOSE)
    if text.count(ANSWER_OPEN) > 1:
        answer = None
    match = _WELL_FORMED.fullmatch(text)
    # Lazy groups can still swallow tags (e.g. a second <think> inside the first block),
    # so well formed also means no special token inside either block.
    well_formed = match is not None and not any(
        tag in block for block in match.groups() for tag in SPECIAL_TOKENS
    )
    return ParsedResponse(think=think, answer=answer, well_formed=well_formed)


def answer_part(text: str) -> str:
    """The text after a response's think block, when it opens with one clean
    `<think>...</think>` (no other tag inside); else the whole text. Every verifier reads its
    answer from this part, so two responses with the same answer part get the same verdict
    (up to the format reward, which `format_reward` gives for the whole text)."""
    if text.startswith(THINK_OPEN):
        end = text.find(THINK_CLOSE)
        inside = text[len(THINK_OPEN) : end]
        if end >= 0 and not any(tag in inside for tag in SPECIAL_TOKENS):
            return text[end + len(THINK_CLOSE) :]
    return text


def format_reward(text: str) -> float:
    """1.0 when the response has the exact R1 shape, else 0.0."""
    return 1.0 if parse_response(text).well_formed else 0.0
