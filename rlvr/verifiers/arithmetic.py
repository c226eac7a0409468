"""Arithmetic answers: the answer block must be an integer literal equal to the gold answer.

An integer literal is ASCII digits with an optional leading "-", surrounded by optional
whitespace; anything else ("1e3", "4.0", "٣", "2+2") is unparsable. Comparison is on the
normalised digit string, so a 10,000-digit answer costs no big-integer conversion.
"""

from __future__ import annotations

import re

from rlvr.verifiers.base import Verdict, grade, guarded
from rlvr.verifiers.format import parse_response

# re.ASCII: [0-9] and \s must not match unicode digits or spaces.
_INTEGER = re.compile(r"\s*(-?)([0-9]+)\s*", re.ASCII)


def normalize_integer(text: str) -> str | None:
    """The canonical decimal form of an integer literal ("-007" -> "-7"), or None."""
    match = _INTEGER.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.groups()
    digits = digits.lstrip("0") or "0"
    return digits if digits == "0" else sign + digits


@guarded
def verify_arithmetic(response: str, answer: str) -> Verdict:
    """Grade a full response (from `<think>` on) against the gold integer. reward == accuracy."""
    parsed = parse_response(response)
    if parsed.answer is None:
        return grade("unparsable", parsed.well_formed, "no single <answer> block")
    given = normalize_integer(parsed.answer)
    if given is None:
        return grade("unparsable", parsed.well_formed, "answer is not an integer")
    gold = normalize_integer(answer)
    if gold is None:
        raise ValueError(f"gold answer {answer!r} is not an integer")
    if given != gold:
        return grade("wrong", parsed.well_formed, f"answered {given[:20]}, expected {gold}")
    return grade("correct", parsed.well_formed, "ok")
