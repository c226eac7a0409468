"""Math answers: extract the final answer from a completion and decide if it equals the gold.

Two layers:

1. Pure Python for what needs no algebra (`fast_math_verdict`): multiple-choice golds (handed to
   `rlvr.verifiers.choice`), answers identical to the gold, and plain numbers. It is safe to run
   anywhere, the training process included: no eval, no sympy, no big-integer blow-up.
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
  3. "final answer is ..." / "the answer is ..." / "Answer: ..." (the last one), also in French,
     Spanish, Portuguese, Italian, German, Russian, Chinese, Japanese and Korean
     ("la réponse est 12", "答案是 12");
  4. a bare answer: the last non-empty line.
A boxed answer, and any answer that looks like a formula (no words), is parsed as one formula,
whole: a parse that would drop part of it (math-verify falls back to a smaller match, e.g. the
leading `1` of `1 + \\frac{1}{\\mathrm{e}}`) makes the answer unparsable. An answer in prose
("Il a donc 12 pommes") is read by math-verify's own extraction, and failing that its last
number is the answer (first, in scripts written without spaces: "总共有99颗").

Policies (each has a test in tests/test_math_verifier.py):
- Identical answers: after dropping spaces, `$` / `\\(` delimiters, `\\left` / `\\right`,
  `\\text{}`-style wrappers and `\\dfrac` / `\\tfrac` spellings, an answer equal to the gold is
  correct whatever a parser makes of it (`(2, 5)`, `{4,5,6}`, `even $k$`).
- Multiple choice: a gold that is an option letter (`C`, `(B) Paris`) is graded by
  `rlvr.verifiers.choice.verify_choice` (letters only, several letters are wrong).
- Plain-text math is turned into LaTeX by string rewriting (never eval): `sqrt(2)/2`,
  `3**(1/3)`, `y^2 - 3*y + 2`, `2π`, `x²`, `sin(x)`; a braceless exponent of several digits is
  one exponent (`5x^12` is `5x^{12}`). An answer followed by `\\approx 0.71` is its exact part.
- Constants: `e`, `\\mathrm{e}` are Euler's number, `i`, `\\mathrm{i}` the imaginary unit, `\\pi`.
- Numbers: compared symbolically first (the difference simplifies to 0), then numerically, never
  with an absolute tolerance alone. Integers and fractions compare exactly. When either side is
  written as a decimal or in scientific notation, both must agree to 6 decimal places *and*
  within a relative 5e-6 (about 6 significant digits), so `1/3` accepts `0.333333` while
  `\\frac{1}{2^{61}}` is not `\\frac{1}{2^{60}}` (math-verify's 6-place rounding makes every tiny
  number 0). Other exact values (roots, pi, factorials) that simplify cannot settle agree when
  their difference is below 1e-40 of their size; `oo` equals only `oo`.
- Sequences with an ellipsis (`1, 3, \\ldots, 2k-1`, `1:4:9:\\ldots`) compare term by term: the
  same separators, the ellipsis in the same places, and every written term equal.
- Percent: "%" is a unit and is dropped on both sides before comparing, so gold `33.5\\%`
  accepts `33.5`, `33.5\\%`, `33.5 percent`, `33.5 pct`, and gold `28` accepts `28\\%`. A
  percentage is not its fraction: gold `33.5\\%` rejects `0.335`, and gold `0.335` rejects
  `33.5%`. Some graders accept both; we do not, because a question asking for a percentage
  and one asking for a fraction have different answers, and a grader that accepts both lets a
  policy hedge between two numbers (one number per answer is the predictable rule).
- Thousands separators: `1,000,000`, `1{,}000`, `1,\\!000` are one number (with `{,}` or `,\\!`
  any grouping, so Indian `56,\\!01,\\!78,\\!760`). One plain comma that is not a clean 3-digit
  grouping (`1,22`, `0,111`, `1000,99`) is read both ways: against a number it may be a decimal
  comma (`1,22` accepts `1.22`), and otherwise math-verify reads it as a list.
  A whole number before a proper fraction is a mixed number: `918\\frac{1}{2}`, `3128 1/2`.
- Ordered vs unordered: a gold tuple `(1, 2)` is ordered, so `(2, 1)` is wrong and a bare
  list `1, 2` in the same order is right; a gold set `\\{1, 2\\}` or a bare list `1, 2` is
  unordered, so `2, 1` and `\\{2, 1\\}` are right. A vector `\\begin{pmatrix}1\\\\2\\end{pmatrix}`
  equals the tuple `(1, 2)`.
- Equations: an assignment `x = 3` and the bare value `3` are equal either way round; `3=y` is
  `y=3` and `3<y` is `y>3`; a set and a relation with the same values are equal either way round
  (`x \\in [-2, 7]`, `-2 \\le x \\le 7`).
- Several answers (anti-hacking): listing candidates is wrong, never a lucky hit.
  * Several different `<answer>` blocks, or several different `\\boxed{}` answers, are wrong
    when the gold is one value. When the gold has several elements (`1, -2` or `\\{1, -2\\}`),
    the boxed answers together form the answer (`\\boxed{-2} and \\boxed{1}` is right).
    Identical repeats count once (so a thousand `\\boxed{9}` is just 9, and cheap).
  * An answer joining values with "or" (`3 or 4`, `3 \\text{ or } 4`, `3 \\lor 4`) or listing
    several numbers (`12 and 13`, `12, 13`) is wrong when the gold is one value, unless the gold
    itself is written that way. For a gold with several elements, `x = 2 or x = 3` lists them.
- The gold: its `\\boxed{}` parts are unwrapped (several boxes form one answer); a gold that is
  empty, or that math-verify cannot parse whole, is status "error" (never reward 1) unless the
  answer is identical to it.
- Sizes: a plain number of any length (a million digits) is decided by the fast path in
  linear time; any other answer longer than MAX_ANSWER_CHARS is "unparsable" (sympy never
  sees it); anything that makes sympy hang (a tower of exponents) ends as status "timeout" by
  the pool's hard kill.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from rlvr.verifiers.base import Verdict, guarded
from rlvr.verifiers.choice import gold_letter, verify_choice

if TYPE_CHECKING:
    from rlvr.verifiers.pool import VerifierPool

MAX_ANSWER_CHARS = 2000  # longer "answers" are not one answer; sympy never sees them
MAX_EXACT_DIGITS = 2000  # beyond this a number is never converted to an int or Fraction
DECIMAL_PLACES = 6  # decimals agree to this many places ...
RELATIVE_TOLERANCE = Fraction(5, 10**6)  # ... and to about 6 significant digits
# Modules a pool worker should import before its first item (so no item pays for the import).
MATH_PRELOAD = ("rlvr.verifiers.math", "rlvr.verifiers.math_symbolic", "math_verify")


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
    context: for "final_answer" and "bare", the text math-verify reads when the answer is
        prose (its own extraction finds the expression in a sentence); a formula-like answer
        is parsed whole instead.
    """

    answer: str | None
    candidates: tuple[str, ...] = ()
    source: str = "bare"
    context: str = ""


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_FINAL_ANSWER = re.compile(
    r"(?:final\s+answer|the\s+answer|\banswer(?=\**\s*[:：])|####"
    r"|réponse|respuesta|resposta|risposta|antwort|ответ|答案|解答|答え|정답)(?![a-zà-ÿ])"
    r"\**\s*(?:(?:is|est|es|é|è|ist)(?![a-zà-ÿ])|是|为|為|は|은|는)?"
    r"\s*[:：=]?\**\s*(?P<answer>[^\n]+)",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|。|\s+I hope\b", re.IGNORECASE)
_LAST_DISPLAY = re.compile(
    r"(?:\\\[|\$\$)(?P<body>(?:(?!\\\]|\$\$).)*)(?:\\\]|\$\$)[\s.,;]*$", re.DOTALL
)


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
        if answer.strip(" *:."):  # "**Final Answer**" on a line of its own: look further
            return Extraction(answer.strip(), (), "final_answer", finals[-1].group(0))
    display = _LAST_DISPLAY.search(text)
    if display and display.group("body").strip():  # "Answer \\[ \n 9 \n \\]": a display at the end
        return Extraction(display.group("body").strip(), (), "bare", text)
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
# "12 and 13", "12, 13": several numbers where one is asked (a "1,000" grouping is no list).
_NUMBER_LIST = re.compile(r"^[-+]?\d[\d.,]*\s*(?:,\s+|\s+and\s+|\s*&\s*)[-+]?\d")
_ALTERNATIVES = re.compile(r"(?:\\text\{\s*or\s*\}|\\(?:lor|vee)\b|\bor\b)")
_ASSIGNMENT = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?P<value>[^=]+)$")
_APPROX = re.compile(r"\\approx|≈")
_WHOLE_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{.*\}", re.DOTALL)
_LAYOUT = re.compile(
    r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])|\\displaystyle|\\[!,;: ]|[~$\s]"
)
_FRAC_SPELLING = re.compile(r"\\[dtc]frac(?![A-Za-z])")
_WRAPPER = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|operatorname)\s*"
    r"\{([^{}]*)\}"
)


def clean_answer(text: str) -> str:
    """Strip math delimiters, trailing punctuation, a stray trailing backslash and the percent
    unit (see the policy)."""
    text = text.strip()
    changed = True
    while changed and text:
        changed = False
        text = text.strip()
        if not text.endswith("..."):  # an ellipsis is part of the answer
            text = text.rstrip(".,;").strip()
        if text.startswith("**") or text.endswith("**"):  # markdown bold (or half of it)
            text, changed = text.removeprefix("**").removesuffix("**"), True
        if text.endswith("\\") and not text.endswith("\\\\"):
            text, changed = text[:-1], True  # "185\\": a stray backslash, not a command
        for open_, close in _DELIMITERS:
            if (
                len(text) >= len(open_) + len(close)
                and text.startswith(open_)
                and text.endswith(close)
            ):
                text, changed = text[len(open_) : len(text) - len(close)], True
                break
        if _WHOLE_BOX.fullmatch(text):
            boxed = boxed_contents(text)
            if len(boxed) == 1:
                text, changed = boxed[0], True
    return _PERCENT.sub("", text).strip()


@functools.lru_cache(maxsize=4096)  # golds repeat across the k samples of a group
def canonical_text(text: str) -> str:
    """The text an "identical answer" is compared by: no spaces, `$`, `\\left`/`\\right`,
    spacing commands or `\\text{}`-style wrappers; `\\dfrac`/`\\tfrac` are `\\frac`."""
    text = clean_answer(text)
    if "\\" not in text:
        return _LAYOUT.sub("", text)
    text = _FRAC_SPELLING.sub(r"\\frac", _LAYOUT.sub("", text))
    for _ in range(3):  # nested wrappers
        text = _WRAPPER.sub(r"\1", text)
    return text.replace("\\{", "{").replace("\\}", "}")


def _balanced(text: str) -> bool:
    """Whether braces (other than \\{ \\}) are balanced: a gold like `\\frac{` is malformed."""
    depth = 0
    for c in re.sub(r"\\[{}]", "", text):
        depth += (c == "{") - (c == "}")
        if depth < 0:
            return False
    return depth == 0


def drop_approximation(text: str) -> str:
    """`\\frac{\\sqrt{2}}{2} \\approx 0.71` -> the exact part; `x \\approx 0.71` -> `0.71`."""
    parts = _APPROX.split(text)
    if len(parts) < 2:
        return text
    exact = parts[0].strip()
    value = re.sub(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*", "", exact)
    if not value or re.fullmatch(r"[A-Za-z](?:_\{?\w+\}?)?", value):
        return parts[-1].strip()
    return exact


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
    if body.startswith(("\\{", "{")) and body.endswith(("\\}", "}")):
        return "," in body
    return _top_level_commas(body) > 0 and parse_plain_number(body) is None


# --- plain-text math to LaTeX (string rewriting only: safe in any process) ------------------

UNICODE_MATH = {
    "−": "-", "×": "\\times ", "÷": "\\div ", "·": "\\cdot ", "π": "\\pi ", "∞": "\\infty ",
    "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "…": "\\ldots ", "⋯": "\\cdots ",
    "°": "^{\\circ}",
}  # fmt: skip
_E_NOTATION = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)[eE]([+-]?\d+)(?![\w.])")
_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_FUNCTIONS = "arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|cot|sec|csc|log|ln|exp|pi|infty"
_MATH_WORDS = set(_FUNCTIONS.split("|")) | {"sqrt", "cbrt", "inf", "infinity", "e", "i"}


def _closing_paren(text: str, open_at: int) -> int:
    """Index of the ")" matching the "(" at open_at, or -1."""
    depth = 0
    for i in range(open_at, len(text)):
        depth += (text[i] == "(") - (text[i] == ")")
        if depth == 0:
            return i
    return -1


def _calls_to_braces(text: str, name: str, latex: str) -> str:
    """`sqrt(x+1)` -> `\\sqrt{x+1}` (and `^(1/3)` -> `^{1/3}` with name "^"), nesting included."""
    after_word = r"(?<![A-Za-z\\])" if name[0].isalpha() else ""  # "sqrt" but not "\\sqrt"
    pattern = re.compile(after_word + re.escape(name) + r"\s*\(")
    for _ in range(50):  # each pass rewrites the first call left; nested calls need more passes
        match = pattern.search(text)
        if not match:
            break
        close = _closing_paren(text, match.end() - 1)
        if close < 0:
            break
        inner = text[match.end() : close]
        text = f"{text[: match.start()]}{latex}{{{inner}}}{text[close + 1 :]}"
    return text


def to_latex(text: str) -> str:
    """Rewrite plain-text math as LaTeX: `sqrt(2)/2` -> `\\sqrt{2}/2`, `3**(1/3)` -> `3^{1/3}`,
    `x^12` -> `x^{12}`, `2π` -> `2\\pi`, `x²` -> `x^{2}`, `sin(x)` -> `\\sin(x)`,
    `\\mathrm{e}` -> `e`. Only string rewriting; LaTeX already written is left as it is."""
    for char, latex in UNICODE_MATH.items():
        text = text.replace(char, latex)
    text = re.sub(
        r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+", lambda m: "^{" + m.group(0).translate(_SUPERSCRIPT) + "}", text
    )
    text = re.sub(r"(?<=[\w)])\s*\*\*\s*(?=[\w(.-])", "^", text)  # 3**2, (x+1)**(1/3)
    text = re.sub(r"√\s*(\d+(?:\.\d+)?|[A-Za-z])", r"\\sqrt{\1}", text)
    text = _E_NOTATION.sub(r"\1\\times 10^{\2}", text)  # 1.6e-19 (LaTeX would read e as Euler's)
    for name, latex in (("sqrt", "\\sqrt"), ("√", "\\sqrt"), ("cbrt", "\\sqrt[3]"), ("^", "^")):
        text = _calls_to_braces(text, name, latex)
    # A braceless exponent of several characters is one exponent: x^12, x^-2, e^-x.
    text = re.sub(r"\^\s*(-?\d+(?:\.\d+)?|-[A-Za-z])(?!\d|\.\d)", r"^{\1}", text)
    text = re.sub(rf"(?<![A-Za-z\\])({_FUNCTIONS})(?![A-Za-z])", r"\\\1", text)
    text = re.sub(r"(?<![A-Za-z\\])(?:infinity|inf)(?![A-Za-z])", r"\\infty", text)
    return re.sub(r"\\(?:mathrm|text|operatorname|mathit|rm)\s*\{\s*([ei])\s*\}", r"\1", text)


def looks_like_formula(text: str) -> bool:
    """Whether an answer is one formula (parsed whole) rather than prose (read by
    math-verify's extraction): no words other than math function names outside `\\text{}`."""
    text = to_latex(text)
    text = re.sub(r"\\(?:text\w*|mbox|mathrm|operatorname|begin|end)\s*\{[^{}]*\}", " ", text)
    text = re.sub(r"\\[A-Za-z]+", " ", text)
    if re.search(r"[^\x00-\x7f]", text):
        return False
    return all(word.lower() in _MATH_WORDS for word in re.findall(r"[A-Za-z]{2,}", text))


# --- plain numbers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlainNumber:
    """A number written plainly. Exactly one of `decimal` / `fraction` is set.

    decimal: (sign, digits, exponent), value = sign * int(digits) * 10**exponent, digits with
        no leading or trailing zeros ("0" for zero, sign +1). Equal numbers have equal tuples,
        so huge integers compare without ever building an int.
    fraction: an exact Fraction, for a/b that is not a terminating decimal literal.
    exact: written as an integer or a fraction (compared exactly); False for decimals and
        scientific notation (compared by `decimals_agree`).
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
    r"(?P<sign>[+-]?)(?:(?P<whole>\d+)(?:\s+|(?=\\)))?"
    r"(?:(?P<a>\d+)\s*/\s*(?P<b>\d+)"
    r"|\\[dt]?frac\s*\{\s*(?P<c>[+-]?\d+)\s*\}\s*\{\s*(?P<d>\d+)\s*\}"
    r"|\\[dt]?frac(?P<e>\d)(?P<f>\d))",
    re.ASCII,
)
# One comma that does not group thousands ("1,22", "0,111", "1000,99"): a decimal comma.
_DECIMAL_COMMA = re.compile(r"(?P<sign>[+-]?)(?P<whole>\d+),(?P<frac>\d+)", re.ASCII)
_LAST_NUMBER = re.compile(r"(?<![0-9A-Za-z.])-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?(?![0-9])")


def parse_plain_number(text: str) -> PlainNumber | None:
    """Parse integers, decimals, a/b, \\frac{a}{b}, mixed numbers (`2\\frac{1}{2}`, `2 1/2`),
    1.5e3, 1.5\\times10^{3}; else None.

    Thousands separators (`,` in 3-digit groups; any grouping with `{,}` or `,\\!`), thin
    spaces (`\\,`), a leading currency `\\$` and an `x =` in front are accepted. Unicode digits
    are not.
    """
    text = clean_answer(text)
    assignment = _ASSIGNMENT.match(text)
    if assignment:
        text = assignment.group("value").strip()
    if "{,}" in text or ",\\!" in text:  # LaTeX thousands markup: every comma groups digits
        text = text.replace("{,}", "").replace(",\\!", "").replace(",", "")
    text = text.replace("\\!", "").replace("\\,", "").replace("\\ ", "")
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
        whole = match.group("whole") or ""
        if len(whole + numerator + denominator) > MAX_EXACT_DIGITS or int(denominator) == 0:
            return None
        value = Fraction(int(numerator), int(denominator))
        if whole:
            if not 0 <= value < 1:  # "2\\frac{3}{2}" is no mixed number: leave it to sympy
                return None
            value += int(whole)
        return PlainNumber(None, -value if match.group("sign") == "-" else value, exact=True)
    return None


def decimal_comma(text: str) -> PlainNumber | None:
    """The decimal-comma reading of `1,22` / `0,111` / `1000,99` (one comma that groups no
    thousands), or None. Such a text may also be a list; `fast_math_verdict` tries both."""
    match = _DECIMAL_COMMA.fullmatch(clean_answer(text))
    if not match:
        return None
    return PlainNumber(_canonical(match["sign"], match["whole"], match["frac"], 0), None, False)


def last_number(text: str) -> str | None:
    """The last number written in a piece of prose (any language): "有12个苹果" -> "12"."""
    found = _LAST_NUMBER.findall(text)
    return found[-1] if found else None


def decimals_agree(a: Fraction, b: Fraction) -> bool:
    """Whether two values agree to DECIMAL_PLACES places and within a relative RELATIVE_TOLERANCE
    (about 6 significant digits): the rule when either side was written as a decimal. Places
    alone would make every tiny number 0; the relative part alone would let 16386.169 pass for
    16386.17."""
    if round(a, DECIMAL_PLACES) != round(b, DECIMAL_PLACES):
        return False
    return abs(a - b) <= RELATIVE_TOLERANCE * max(abs(a), abs(b))


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
    return decimals_agree(a, b)


# --- grading ------------------------------------------------------------------------------------


def _prepare(completion: str, answer: str) -> tuple[str, Extraction, str] | Verdict:
    """Checks shared by both paths: (gold, extraction, answer text) or a final Verdict."""
    if not isinstance(answer, str):
        answer = ""
    gold_boxes = _distinct(boxed_contents(answer))
    gold = drop_approximation(clean_answer(", ".join(gold_boxes) if gold_boxes else answer))
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
    text = drop_approximation(clean_answer(text))
    if not text and not extraction.context:
        return _verdict("unparsable", "the answer is empty")
    if text and _balanced(gold) and canonical_text(text) == canonical_text(gold):
        return _verdict("correct", "ok (identical to the gold)")
    if lists_alternatives(text) and not lists_alternatives(gold):
        if not has_several_elements(gold):
            return _verdict("wrong", f"answer lists alternatives ({text[:40]!r}); one is asked")
        text = _ALTERNATIVES.sub(",", text)  # "x = 2 or x = 3" for gold "2, 3": the solutions
    if _NUMBER_LIST.match(text) and "," not in gold and " and " not in gold:  # one value asked
        return _verdict("wrong", f"answer lists several numbers ({text[:40]!r}); one is asked")
    return gold, extraction, text


@guarded
def fast_math_verdict(completion: str, answer: str) -> Verdict | None:
    """Grade in pure Python when no algebra is needed (a multiple-choice gold, an identical
    answer, two plain numbers); None when sympy is needed.

    Safe in any process: no eval, no sympy, linear time in the input length.
    """
    if gold_letter(answer) is not None:
        return verify_choice(completion, answer)
    prepared = _prepare(completion, answer)
    if isinstance(prepared, Verdict):
        return prepared
    gold, _, text = prepared
    gold_number = parse_plain_number(gold)
    given_number = parse_plain_number(text)
    if gold_number is None or given_number is None:
        # "1,22" against 1.22: when the decimal-comma reading matches it is correct; otherwise
        # the list reading ({1, 22}) is math-verify's to judge.
        gold_number = gold_number or decimal_comma(gold)
        given_number = given_number or decimal_comma(text)
        if gold_number and given_number and numbers_equal(gold_number, given_number):
            return _verdict("correct", "ok (decimal comma)")
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
    # A box or a lone math span holds one formula; other answers (an <answer> tag, a final
    # answer, a last line) are parsed whole when they look like one, else read as prose.
    one_formula = extraction.source == "boxed" or (
        extraction.source == "bare" and not extraction.context
    )
    whole = one_formula or extraction.candidates or looks_like_formula(text)
    if not whole:
        # Prose: math-verify's own extraction reads it (percent unit dropped, as above).
        text = _PERCENT.sub("", (extraction.context or text).strip())[-MAX_ANSWER_CHARS:]
    if len(text) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return _verdict("unparsable", f"answer longer than {MAX_ANSWER_CHARS} characters")
    from rlvr.verifiers.math_symbolic import symbolic_verdict  # sympy: workers only

    return symbolic_verdict(gold, text, bool(whole))


def verify_math_many(pool: VerifierPool, items: Sequence[tuple[str, str]]) -> list[Verdict]:
    """Grade (completion, gold) pairs: plain numbers here, the rest in the pool's workers."""
    verdicts: list[Verdict | None] = [fast_math_verdict(c, a) for c, a in items]
    todo = [i for i, v in enumerate(verdicts) if v is None]
    for i, verdict in zip(todo, pool.map(verify_math, [items[i] for i in todo])):
        verdicts[i] = verdict
    return verdicts  # type: ignore[return-value]
