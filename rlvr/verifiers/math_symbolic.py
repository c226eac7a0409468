"""The worker side of the math verifier: parse answers with math-verify and compare them with
sympy. Model text reaches sympy here, so this runs only inside a VerifierPool worker (which
has a hard kill and a memory limit); `rlvr.verifiers.math.verify_math` calls it there after the
pure-Python checks. The policies it applies are in rlvr/verifiers/math.py's docstring.

What it changes in math-verify 0.9 (each has a test in tests/test_math_verifier.py):
- a formula is parsed whole or not at all (`extraction_mode="first_match"`), so a parse that
  stops early, such as the leading `1` of `1 + \\frac{1}{\\mathrm{e}}`, is unparsable;
- numbers compare by `_numeric_equal` instead of 6-place rounding and `evalf(chop=True)`,
  which make every tiny number 0;
- a free symbol `i` is the imaginary unit;
- sequences with an ellipsis compare term by term.
"""

from __future__ import annotations

import functools
import logging
import re
from fractions import Fraction

from rlvr.verifiers.base import Verdict
from rlvr.verifiers.math import (
    UNICODE_MATH,
    canonical_text,
    decimals_agree,
    last_number,
    to_latex,
)

_SPACELESS_SCRIPT = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")  # kana, CJK, Hangul
_ELLIPSIS = re.compile(r"\\[lc]?dots[bc]?(?![A-Za-z])|\.\.\.|…")


def symbolic_verdict(gold: str, text: str, whole: bool) -> Verdict:
    """Grade a cleaned answer against a cleaned gold with math-verify and sympy. Only ever
    called inside a pool worker (by `verify_math`). A fresh Verdict each call (callers may
    change its components); the grading itself is memoized."""
    status, reason = _symbolic_status(gold, text, whole)
    reward = 1.0 if status == "correct" else 0.0
    return Verdict(reward, status, {"accuracy": reward}, reason)


@functools.lru_cache(maxsize=4096)
def _symbolic_status(gold: str, text: str, whole: bool) -> tuple[str, str]:
    """(status, reason). `whole`: parse `text` as one formula; else read it as prose.
    Memoized per worker: the k samples of a group share one gold answer and often write the
    same final answer, and the result is a pure function of the two strings."""
    gold, text = to_latex(gold), to_latex(text) if whole else _constants_only(text)
    if whole and (_ELLIPSIS.search(gold) or _ELLIPSIS.search(text)):
        return _compare_sequences(gold, text)
    gold_value = _parse_gold(gold)
    if gold_value is None:
        return ("error", f"gold answer {gold[:40]!r} could not be parsed")
    if whole:
        given = _parse_whole(text)
    else:
        # math-verify's extraction needs spaces around numbers; in scripts written without
        # them ("总共有99颗弹珠") it picks a list number, so there the last number is the answer.
        spaceless = _SPACELESS_SCRIPT.search(text) and not re.search(r"\\[A-Za-z]|\$", text)
        given = None if spaceless else _parse_prose(text)
        if given is None and last_number(text) is not None:
            given = _parse_whole(last_number(text).replace(",", ""))
    if given is None:
        return ("unparsable", f"could not parse the answer {text[:40]!r}")
    if _equal(gold_value, given):
        return ("correct", "ok")
    return ("wrong", f"answered {text[:30]}, expected {gold[:30]}")


def _constants_only(text: str) -> str:
    """Prose keeps its words; only `\\mathrm{e}`-style constants and unicode signs are rewritten
    (math-verify's normalization cuts `\\mathrm{e}` out of a formula, with its closing brace)."""
    for char, latex in UNICODE_MATH.items():
        text = text.replace(char, latex)
    return re.sub(r"\\(?:mathrm|text|operatorname|mathit|rm)\s*\{\s*([ei])\s*\}", r"\1", text)


def _math_verify():
    """math-verify, set up for the worker: our numeric comparison in place of its 6-place
    rounding, its own SIGALRM timeouts off (the pool kills a worker that hangs)."""
    import math_verify
    import math_verify.grader

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    # verify() compares numbers (also inside sets, intervals, tuples and matrices) through this
    # module-level function; ours replaces 6-place rounding and evalf(chop=True) with the
    # policy in the module docstring. tests/test_math_verifier.py checks that it takes effect.
    math_verify.grader.sympy_numeric_eq = _numeric_equal
    return math_verify


def _with_imaginary_unit(value):
    """A free symbol named i is the imaginary unit (latex2sympy only knows `I`)."""
    from sympy import Basic, I, MatrixBase

    if isinstance(value, Basic | MatrixBase):
        symbols = [s for s in getattr(value, "free_symbols", ()) if getattr(s, "name", "") == "i"]
        if symbols:
            return value.xreplace({s: I for s in symbols})
    return value


def _parse_whole(text: str):
    """The sympy value of `text` as one LaTeX formula, or None: never a part of it."""
    from math_verify import LatexExtractionConfig

    found = _math_verify().parse(
        f"$${text}$$",
        [LatexExtractionConfig(boxed_match_priority=-1)],
        fallback_mode="no_fallback",
        extraction_mode="first_match",  # the whole $$...$$ or nothing, never a smaller match
        parsing_timeout=None,
    )
    return _with_imaginary_unit(found[0]) if found else None


def _parse_prose(text: str):
    """The answer math-verify's extraction finds in a sentence, or None."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    from sympy import Basic, MatrixBase

    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    found = _math_verify().parse(text, extraction_config=config, parsing_timeout=None)
    values = [v for v in found if isinstance(v, Basic | MatrixBase)]
    return _with_imaginary_unit(values[0]) if values else None


def _parse_gold(gold: str):
    """A gold is parsed whole; one made of several math spans (`$1$ and $2$`) is read by
    math-verify's extraction, which joins them."""
    return _parse_prose(f"${gold}$") if "$" in gold else _parse_whole(gold)


def _equal(gold_value, given_value) -> bool:
    """math-verify's comparison (with our numbers). A set and a relation describing the same
    values are equal either way round (`x \\in [-2, 7]` and `-2 \\le x \\le 7`), and a
    vector equals a tuple of the same entries (`\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}` and
    `(1, 2)`)."""
    from sympy import MatrixBase

    gold_entries, entries = _vector_entries(gold_value), _vector_entries(given_value)
    one_matrix = isinstance(gold_value, MatrixBase) != isinstance(given_value, MatrixBase)
    if one_matrix and gold_entries is not None and entries is not None:
        return len(gold_entries) == len(entries) and all(
            _equal(g, e) for g, e in zip(gold_entries, entries, strict=True)
        )
    verify = _math_verify().verify
    return bool(
        verify([gold_value], [given_value], allow_set_relation_comp=True, timeout_seconds=None)
    )


def _vector_entries(value) -> list | None:
    """The entries of a one-row or one-column matrix, a tuple, or an open interval `(a, b)`
    (how math-verify reads a pair in parentheses); None for anything else."""
    from sympy import Interval, MatrixBase, Tuple

    if isinstance(value, MatrixBase) and 1 in value.shape:
        return list(value)
    if isinstance(value, Tuple):
        return list(value.args)
    if isinstance(value, Interval) and value.left_open and value.right_open:
        return [value.start, value.end]
    return None


def _numeric_equal(a, b, float_rounding: int = 6, numeric_precision: int = 15) -> bool:
    """math-verify's numeric comparison, replaced (same signature): decimals by
    `decimals_agree`, exact values exactly or to 1e-40 of their size, never chopped to 0."""
    from sympy import Abs, Float, MatrixBase, im
    from sympy import re as real_part

    if isinstance(a, MatrixBase) and isinstance(b, MatrixBase):
        a, b = a.doit(), b.doit()
        if a.shape != b.shape:
            return False
        return all(_numeric_equal(x, y) for x, y in zip(a, b, strict=True))
    try:
        a, b = a.doit(), b.doit()
        if not (getattr(a, "is_number", False) and getattr(b, "is_number", False)):
            return False
        if not (a.is_finite and b.is_finite):  # oo, -oo, zoo, nan: only themselves
            return a == b
        if a.has(Float) or b.has(Float):
            parts = [(real_part(a), real_part(b)), (im(a), im(b))]
            return all(
                decimals_agree(Fraction(str(x.evalf(40))), Fraction(str(y.evalf(40))))
                for x, y in parts
            )
        difference = a - b
        if difference.is_Rational:
            return difference == 0
        value = difference.evalf(60)
        scale = max(Abs(a).evalf(60), Abs(b).evalf(60))
        return bool(value == 0 or Abs(value) <= scale * Float("1e-40", 60))
    except Exception:  # noqa: BLE001 - an expression sympy cannot evaluate is not equal here
        return False


def _split_terms(text: str) -> tuple[str, list[str]]:
    """(separators, terms) of a sequence: `1:4:9:\\ldots` -> (":::", ["1", "4", "9", "\\ldots"]),
    split at top-level `,` `;` `:` only; an outer pair of brackets is kept off the terms."""
    text = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", text).strip()
    brackets = ""
    for open_, close in (("\\{", "\\}"), ("(", ")"), ("[", "]")):
        if len(text) > len(open_ + close) and text.startswith(open_) and text.endswith(close):
            brackets, text = open_ + close, text[len(open_) : len(text) - len(close)]
            break
    terms, separators, depth, start = [], brackets, 0, 0
    for i, c in enumerate(text):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c in ",;:" and depth == 0 and not (i > 0 and text[i - 1] in "\\{"):
            terms.append(text[start:i].strip())
            separators += c
            start = i + 1
    terms.append(text[start:].strip())
    return separators, terms


def _compare_sequences(gold: str, text: str) -> tuple[str, str]:
    """Sequences with an ellipsis: same separators and brackets, the ellipsis in the same
    places, and every written term equal (compared one by one)."""
    gold_separators, gold_terms = _split_terms(gold)
    separators, terms = _split_terms(text)
    if separators != gold_separators or len(terms) != len(gold_terms):
        return ("wrong", f"answered {text[:30]}, expected {gold[:30]}")
    for gold_term, term in zip(gold_terms, terms, strict=True):
        gold_dots, dots = bool(_ELLIPSIS.fullmatch(gold_term)), bool(_ELLIPSIS.fullmatch(term))
        if gold_dots != dots:
            return ("wrong", f"the ellipsis is not where the gold has it ({gold[:30]})")
        if dots or canonical_text(gold_term) == canonical_text(term):
            continue
        gold_value, value = _parse_whole(gold_term), _parse_whole(term)
        if gold_value is None:
            return ("error", f"gold term {gold_term[:40]!r} could not be parsed")
        if value is None:
            return ("unparsable", f"could not parse the term {term[:40]!r}")
        if not _equal(gold_value, value):
            return ("wrong", f"term {term[:20]} differs from {gold_term[:20]}")
    return ("correct", "ok")
