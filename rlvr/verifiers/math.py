"""Math answers: extract the final answer from a completion and decide if it equals the gold.

Two layers:

1. A fast exact path in pure Python for plain numbers (`fast_math_verdict`). It is safe to
   run anywhere, the training process included: no eval, no sympy, no big-integer blow-up.
2. math-verify (PyPI `math-verify`, sympy underneath) for everything else: LaTeX, expressions,
   sets, intervals, tuples, equations, matrices. It runs model text through sympy, which can
   hang or eat memory (one answer of many repeated `\\boxed{9}` grew a process to 24 GB), so
   `verify_math` only calls it inside a `VerifierPool` worker, which has a hard kill and an
   RLIMIT_AS memory limit. Called anywhere else it returns status "error" instead.

    with VerifierPool(num_workers=2, timeout_s=5, memory_mb=2048,
                      preload=MATH_PRELOAD) as pool:
        verdicts = verify_math_many(pool, [(completion, gold), ...])  # fast path here, rest there

Extraction (`extract_answer`), in this order, after dropping everything up to the last
`</think>`:
  1. `<answer>...</answer>` (a `\\boxed{}` inside it is unwrapped);
  2. `\\boxed{...}` / `\\fbox{...}` with balanced braces;
  3. "final answer is ..." / "the answer is ..." / "Final Answer: ..." (the last one);
  4. a bare answer: the last non-empty line.

Policies (each has a test in tests/test_math_verifier.py):
- Percent: "%" is a unit and is dropped on both sides before comparing, so gold `28\\%`
  accepts `28`, `28%`, `28 percent`, and gold `28` accepts `28\\%`. A percentage is not its
  fraction: gold `28\\%` rejects `0.28`, and gold `0.28` rejects `28%`. (math-verify would
  accept 0.28 for 28%; one number per answer is the stricter, predictable rule.)
- Decimals: when either side is written as a decimal or in scientific notation, both are
  rounded to 6 decimal places (math-verify's default), so `1/3` accepts `0.333333`. Integers
  and fractions compare exactly; huge integers compare as digit strings.
- Thousands separators: `1,000,000`, `1{,}000`, `1,\\!000` are one number. A comma that is not
  a clean 3-digit grouping (`1,22`, `0,111`, `32, 349`) is left to math-verify (a list or a
  decimal comma there).
- Ordered vs unordered: a gold tuple `(1, 2)` is ordered, so `(2, 1)` is wrong and a bare
  list `1, 2` in the same order is right; a gold set `\\{1, 2\\}` or a bare list `1, 2` is
  unordered, so `2, 1` and `\\{2, 1\\}` are right.
- Equations: an assignment `x = 3` and the bare value `3` are equal either way round.
- Several answers (anti-hacking): listing candidates is wrong, never a lucky hit.
  * Several different `<answer>` blocks, or several different `\\boxed{}` answers, are wrong
    when the gold is one value. When the gold has several elements (`1, -2` or `\\{1, -2\\}`),
    the boxed answers together form the answer (`\\boxed{-2} and \\boxed{1}` is right).
    Identical repeats count once (so a thousand `\\boxed{9}` is just 9, and cheap).
  * An answer joining values with "or" (`3 or 4`, `3 \\text{ or } 4`, `3 \\lor 4`) is wrong
    unless the gold itself is written that way.
- The gold: a `\\boxed{}` in it is unwrapped; a bare gold is wrapped in `$...$` before
  math-verify parses it. A gold that is empty or that math-verify cannot parse is status
  "error" (never reward 1), whatever the completion says.
- Sizes: a plain number of any length (a million digits) is decided by the fast path in
  linear time; any other answer longer than MAX_ANSWER_CHARS is "unparsable" (sympy never
  sees it); anything that makes sympy
  hang (a tower of exponents) ends as status "timeout" by the pool's hard kill.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from rlvr.verifiers.base import Verdict, guarded

if TYPE_CHECKING:
    from rlvr.verifiers.pool import VerifierPool

MAX_ANSWER_CHARS = 2000  # longer "answers" are not one answer; sympy never sees them
MAX_EXACT_DIGITS = 2000  # beyond this a number is never converted to an int or Fraction
DECIMAL_PLACES = 6  # rounding for decimal answers, math-verify's float_rounding default
# Modules a pool worker should import before its first item (so no item pays for the import).
MATH_PRELOAD = ("rlvr.verifiers.math", "math_verify")


def _verdict(status: str, reason: str) -> Verdict:
    reward = 1.0 if status == "correct" else 0.0
    return Verdict(reward=reward, status=status, components={"accuracy": reward}, reason=reason)


# --- extraction -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extraction:
    """The final answer of a completion.

    answer: the answer text (None when nothing was found).
    candidates: every distinct answer found where only one was expected (several boxed or
        several <answer> blocks); empty when there was just one.
    source: "answer_tag", "boxed", "final_answer" or "bare".
    context: for "final_answer" and "bare", the text math-verify reads as it is (its own
        extraction finds the expression in a sentence); boxed and tagged answers are
        wrapped in `$...$` instead.
    """

    answer: str | None
    candidates: tuple[str, ...] = ()
    source: str = "bare"
    context: str = ""


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_FINAL_ANSWER = re.compile(
    r"(?:final\s+answer|the\s+answer)\s*(?:is|:|=)?\s*:?\s*(?P<answer>[^\n]+)", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\s+I hope\b", re.IGNORECASE)


def boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` / `\\fbox{...}` with balanced braces, in order.

    Escaped braces (`\\{`, `\\}`) do not count towards the balance. An unclosed box (a
    truncated completion) is skipped. `\\boxed 5` (no braces) yields the next token.
    """
    found: list[str] = []
    for match in _BOXED.finditer(text):
        start = match.end()
        if start >= len(text):
            continue
        if text[start] != "{":
            token = re.match(r"[^\s$]+", text[start:])
            if token and not text[start].isspace():
                found.append(token.group(0))
            continue
        depth, i = 0, start
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2  # skip the escaped character, e.g. \{ or \}
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    found.append(text[start + 1 : i])
                    break
            i += 1
    return found


def _distinct(texts: Sequence[str]) -> list[str]:
    """Distinct answers in order of appearance; whitespace differences do not count."""
    seen: dict[str, str] = {}
    for text in texts:
        seen.setdefault(re.sub(r"\s+", "", text), text.strip())
    return list(seen.values())


def _from_text(text: str, source: str) -> Extraction:
    """One answer from a piece of text, or all the distinct boxed answers in it."""
    boxed = _distinct(boxed_contents(text))
    if len(boxed) == 1:
        return Extraction(boxed[0], (), "boxed" if source == "bare" else source)
    if len(boxed) > 1:
        return Extraction(boxed[-1], tuple(boxed), "boxed" if source == "bare" else source)
    return Extraction(text.strip(), (), source)


def extract_answer(completion: str) -> Extraction:
    """The final answer of a completion; see the module docstring for the order of rules."""
    text = completion.rsplit("</think>", 1)[-1]
    tags = _distinct(_ANSWER_TAG.findall(text))
    if len(tags) > 1:
        return Extraction(tags[-1], tuple(tags), "answer_tag")
    if tags:
        return _from_text(tags[0], "answer_tag")
    if boxed_contents(text):
        return _from_text(text, "boxed")
    finals = list(_FINAL_ANSWER.finditer(text))
    if finals:
        answer = _SENTENCE_END.split(finals[-1].group("answer"), maxsplit=1)[0]
        if answer.strip():
            return Extraction(answer.strip(), (), "final_answer", finals[-1].group(0))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return Extraction(None)
    if len(lines) == 1 and _is_math_span(lines[0]):
        return Extraction(lines[0], (), "bare")  # "$\\sqrt{2}.$": one formula, wrapped as such
    return Extraction(lines[-1], (), "bare", text)


def _is_math_span(line: str) -> bool:
    """Whether a line is exactly one formula in math delimiters (trailing punctuation aside)."""
    line = line.rstrip(".,; ")
    for open_, close in _DELIMITERS:
        inner = line[len(open_) : len(line) - len(close)]
        if line.startswith(open_) and line.endswith(close) and len(line) > len(open_ + close):
            return "$" not in inner
    return False


# --- text clean-up ------------------------------------------------------------------------------

_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_PERCENT = re.compile(r"\s*(?:\\%|%|\\text\{\s*%\s*\}|\bpercent(?:age)?\b|\bpct\b)", re.I)
_ALTERNATIVES = re.compile(r"(?:\\text\{\s*or\s*\}|\\(?:lor|vee)\b|\bor\b)")
_ASSIGNMENT = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?P<value>[^=]+)$")


def clean_answer(text: str) -> str:
    """Strip math delimiters, trailing punctuation and the percent unit (see the policy)."""
    text = text.strip()
    changed = True
    while changed and text:
        changed = False
        text = text.strip().rstrip(".,;").strip()
        for open_, close in _DELIMITERS:
            if (
                len(text) >= len(open_) + len(close)
                and text.startswith(open_)
                and text.endswith(close)
            ):
                text, changed = text[len(open_) : len(text) - len(close)], True
                break
        boxed = boxed_contents(text)
        if len(boxed) == 1 and re.fullmatch(r"\\(?:boxed|fbox)\s*\{.*\}", text, re.DOTALL):
            text, changed = boxed[0], True
    return _PERCENT.sub("", text).strip()


def lists_alternatives(text: str) -> bool:
    """Whether an answer offers alternatives joined by "or" ("3 or 4", "3 \\lor 4")."""
    return _ALTERNATIVES.search(text) is not None


def _top_level_commas(text: str) -> int:
    """Commas outside any brackets: "1, 2" has one, "(1, 2)" has none."""
    depth, count = 0, 0
    for i, c in enumerate(text):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0 and not (i > 0 and text[i - 1] == "{"):
            count += 1
    return count


def has_several_elements(gold: str) -> bool:
    """Whether a gold answer names several values: a bare list or a set in braces."""
    body = gold.strip()
    if body.startswith("\\{") and body.endswith("\\}"):
        return "," in body
    return _top_level_commas(body) > 0 and parse_plain_number(body) is None


# --- plain numbers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlainNumber:
    """A number written plainly. Exactly one of `decimal` / `fraction` is set.

    decimal: (sign, digits, exponent), value = sign * int(digits) * 10**exponent, digits with
        no leading or trailing zeros ("0" for zero, sign +1). Equal numbers have equal tuples,
        so huge integers compare without ever building an int.
    fraction: an exact Fraction, for a/b that is not a terminating decimal literal.
    exact: written as an integer or a fraction (compared exactly); False for decimals and
        scientific notation (compared after rounding to DECIMAL_PLACES).
    """

    decimal: tuple[int, str, int] | None
    fraction: Fraction | None
    exact: bool

    def to_fraction(self) -> Fraction | None:
        """The exact value, or None when it is too large to build cheaply."""
        if self.fraction is not None:
            return self.fraction
        sign, digits, exponent = self.decimal
        if len(digits) + abs(exponent) > MAX_EXACT_DIGITS:
            return None
        value = Fraction(int(digits)) * Fraction(10) ** exponent
        return value if sign > 0 else -value


def _canonical(sign: str, whole: str, frac: str, exponent: int) -> tuple[int, str, int]:
    digits = (whole + frac).lstrip("0")
    exponent -= len(frac)
    if not digits:
        return (1, "0", 0)
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    return (-1 if sign == "-" else 1, stripped, exponent)


_GROUPED = r"(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)"  # 1,234,567 or plain digits
_DECIMAL = re.compile(rf"(?P<sign>[+-]?)(?P<whole>{_GROUPED})?(?:\.(?P<frac>\d+))?", re.ASCII)
_SCIENTIFIC = re.compile(
    r"(?P<sign>[+-]?)(?P<whole>\d+)(?:\.(?P<frac>\d*))?"
    r"(?:[eE](?P<exp>[+-]?\d{1,9})|\s*\\(?:times|cdot)\s*10\s*\^\s*\{?(?P<exp2>[+-]?\d{1,9})\}?)",
    re.ASCII,
)
_FRACTION = re.compile(
    r"(?P<sign>[+-]?)(?:(?P<a>\d+)\s*/\s*(?P<b>\d+)"
    r"|\\[dt]?frac\s*\{\s*(?P<c>[+-]?\d+)\s*\}\s*\{\s*(?P<d>\d+)\s*\}"
    r"|\\[dt]?frac(?P<e>\d)(?P<f>\d))",
    re.ASCII,
)


def parse_plain_number(text: str) -> PlainNumber | None:
    """Parse integers, decimals, a/b, \\frac{a}{b}, 1.5e3, 1.5\\times10^{3}; else None.

    Thousands separators (`,` in 3-digit groups, `{,}`, `,\\!`), thin spaces (`\\,`), a leading
    currency `\\$` and an `x =` in front are accepted. Unicode digits are not.
    """
    text = clean_answer(text)
    assignment = _ASSIGNMENT.match(text)
    if assignment:
        text = assignment.group("value").strip()
    text = text.replace("{,}", ",").replace("\\!", "").replace("\\,", "").replace("\\ ", "")
    text = text.removeprefix("\\$").removeprefix("$").strip()
    if text.startswith(("-\\$", "+\\$")):
        text = text[0] + text[3:]
    if not text:
        return None
    match = _DECIMAL.fullmatch(text)
    if match and (match.group("whole") or match.group("frac")):
        whole = (match.group("whole") or "").replace(",", "")
        frac = match.group("frac") or ""
        decimal = _canonical(match.group("sign"), whole, frac, 0)
        return PlainNumber(decimal, None, exact=not frac and "." not in text)
    match = _SCIENTIFIC.fullmatch(text)
    if match:
        exponent = int(match.group("exp") or match.group("exp2"))
        decimal = _canonical(
            match.group("sign"), match.group("whole"), match.group("frac") or "", exponent
        )
        return PlainNumber(decimal, None, exact=False)
    match = _FRACTION.fullmatch(text)
    if match:
        numerator = match.group("a") or match.group("c") or match.group("e")
        denominator = match.group("b") or match.group("d") or match.group("f")
        if len(numerator) + len(denominator) > MAX_EXACT_DIGITS or int(denominator) == 0:
            return None
        value = Fraction(int(numerator), int(denominator))
        if match.group("sign") == "-":
            value = -value
        return PlainNumber(None, value, exact=True)
    return None


def numbers_equal(gold: PlainNumber, given: PlainNumber) -> bool | None:
    """Equality under the decimal policy; None when the numbers are too large to decide."""
    if gold.decimal is not None and given.decimal is not None:
        if gold.decimal == given.decimal:
            return True
        if gold.exact and given.exact:
            return False  # two different integers
    a, b = gold.to_fraction(), given.to_fraction()
    if a is None or b is None:
        # One side is huge. Two plain decimals with different digits and exponents >= 0
        # are different integers; anything else is left to the symbolic path.
        both_integers = all(n.decimal is not None and n.decimal[2] >= 0 for n in (gold, given))
        return False if both_integers else None
    if gold.exact and given.exact:
        return a == b
    return round(a, DECIMAL_PLACES) == round(b, DECIMAL_PLACES)


# --- grading ------------------------------------------------------------------------------------


def _prepare(completion: str, answer: str) -> tuple[str, Extraction, str | None] | Verdict:
    """Checks shared by both paths: (gold, extraction, answer text) or a final Verdict."""
    if not isinstance(answer, str):
        answer = ""
    gold_boxes = _distinct(boxed_contents(answer))
    gold = clean_answer(", ".join(gold_boxes) if gold_boxes else answer)
    if not gold:
        return _verdict("error", f"gold answer {answer!r} is empty or not a string")
    if not isinstance(completion, str):
        return _verdict("error", f"completion is {type(completion).__name__}, not a string")
    extraction = extract_answer(completion)
    if extraction.answer is None:
        return _verdict("unparsable", "no answer found")
    text = extraction.answer
    if extraction.candidates:
        if extraction.source == "answer_tag" or not has_several_elements(gold):
            shown = ", ".join(c[:20] for c in extraction.candidates[:4])
            return _verdict("wrong", f"several different answers ({shown}); one is asked")
        text = ", ".join(extraction.candidates)  # the gold has several elements: a list
    text = clean_answer(text)
    if not text and not extraction.context:
        return _verdict("unparsable", "the answer is empty")
    if lists_alternatives(text) and not lists_alternatives(gold):
        return _verdict("wrong", f"answer lists alternatives ({text[:40]!r}); one is asked")
    return gold, extraction, text


@guarded
def fast_math_verdict(completion: str, answer: str) -> Verdict | None:
    """Grade with pure Python when both answers are plain numbers; None when sympy is needed.

    Safe in any process: no eval, no sympy, linear time in the input length.
    """
    prepared = _prepare(completion, answer)
    if isinstance(prepared, Verdict):
        return prepared
    gold, _, text = prepared
    gold_number = parse_plain_number(gold)
    given_number = parse_plain_number(text)
    if gold_number is None or given_number is None:
        return None
    equal = numbers_equal(gold_number, given_number)
    if equal is None:
        return None
    if equal:
        return _verdict("correct", "ok")
    return _verdict("wrong", f"answered {text[:30]}, expected {gold[:30]}")


@guarded
def verify_math(completion: str, answer: str) -> Verdict:
    """Grade one completion against a gold answer: fast path, then math-verify.

    The math-verify part runs only inside a VerifierPool worker (see the module docstring);
    submit this function to a pool: `pool.map(verify_math, [(completion, gold), ...])`.
    """
    fast = fast_math_verdict(completion, answer)
    if fast is not None:
        return fast
    from rlvr.verifiers import pool

    if not pool.in_worker():
        return _verdict(
            "error",
            "this answer needs math-verify, which runs only in a VerifierPool worker; "
            "use pool.map(verify_math, ...) or verify_math_many",
        )
    prepared = _prepare(completion, answer)
    if isinstance(prepared, Verdict):
        return prepared
    gold, extraction, text = prepared
    if extraction.context and not extraction.candidates:
        # A sentence: math-verify's own extraction reads it (percent unit dropped, as above).
        text = _PERCENT.sub("", extraction.context.strip())[-MAX_ANSWER_CHARS:]
        wrap = False
    else:
        wrap = True
    if len(text) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return _verdict("unparsable", f"answer longer than {MAX_ANSWER_CHARS} characters")
    return _symbolic_verdict(gold, text, wrap)


def _symbolic_verdict(gold: str, text: str, wrap: bool) -> Verdict:
    """math-verify's parse + verify. Only ever called inside a pool worker. A fresh Verdict
    each call (callers may change its components); the grading itself is memoized."""
    return _verdict(*_symbolic_status(gold, text, wrap))


@functools.lru_cache(maxsize=4096)
def _symbolic_status(gold: str, text: str, wrap: bool) -> tuple[str, str]:
    """(status, reason) from math-verify. Memoized per worker: the k samples of a group share
    one gold answer and often write the same final answer, and the result is a pure function
    of the two strings."""
    import math_verify
    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    from sympy import Basic, MatrixBase

    # Our pool enforces the time limit with a hard kill; math-verify's own SIGALRM timeouts
    # are turned off (None), and so is its warning about that.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    config = [LatexExtractionConfig(), ExprExtractionConfig()]

    def parse(s: str) -> list:
        return math_verify.parse(s, extraction_config=config, parsing_timeout=None)

    gold_parsed = parse(f"${gold}$")
    if not any(isinstance(x, Basic | MatrixBase) for x in gold_parsed):
        return ("error", f"gold answer {gold[:40]!r} could not be parsed")
    given_parsed = parse(f"${text}$" if wrap else text)
    if not given_parsed:
        return ("unparsable", f"could not parse the answer {text[:40]!r}")
    if math_verify.verify(gold_parsed, given_parsed, timeout_seconds=None):
        return ("correct", "ok")
    return ("wrong", f"answered {text[:30]}, expected {gold[:30]}")


def verify_math_many(pool: VerifierPool, items: Sequence[tuple[str, str]]) -> list[Verdict]:
    """Grade (completion, gold) pairs: plain numbers here, the rest in the pool's workers."""
    verdicts: list[Verdict | None] = [fast_math_verdict(c, a) for c, a in items]
    todo = [i for i, v in enumerate(verdicts) if v is None]
    for i, verdict in zip(todo, pool.map(verify_math, [items[i] for i in todo])):
        verdicts[i] = verdict
    return verdicts  # type: ignore[return-value]
