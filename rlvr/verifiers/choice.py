"""Multiple-choice answers (GPQA, MMLU, MMLU-Pro style): find the option letter a completion
chose and compare it with the gold letter.

Pure regular expressions: no eval, no sympy, so it runs in any process, the trainer included.

    verify_choice("Let me think... Answer: B", "B").status        # "correct"
    verify_choice("The answer is (C) Berlin.", "(B) Paris").status  # "wrong"

The gold is an option letter A-J (`C`, `(C)`), optionally followed by its option text
(`(B) Paris`, `B. Paris`, `B Paris`); `gold_letter` says whether a gold is one.
`verify_math` hands such golds to `verify_choice`, and `rlvr verify --verifier choice` grades
with it alone.

Where the letter is looked for, after dropping everything up to the last `</think>`:
  1. `<answer>...</answer>`, then `\\boxed{...}` (several different ones are wrong);
  2. the last anchored letter: "answer is C", "Answer: (B)", "Final answer: **D**",
     "the correct option is E", "I choose A", and the same in French, Spanish, Portuguese,
     Italian, German, Russian, Chinese, Japanese and Korean ("la réponse est C", "答案是 B");
  3. without an anchor: a letter that is the whole reply (`(B)`, `\\textbf{D}`, `\\mathrm{A}`),
     a letter that opens it (`D. it can't be A or B`, `B。不是 A`), a letter that ends its last
     sentence (`... so I think it's B`), or the only option letter named anywhere.
Rules that keep it honest:
  - only capitals count: a lowercase `c` is not an option, nor is the article "A" before a
    word ("A triangle has ...") or the pronoun "I";
  - naming several letters as the answer (`A or B`, `A, B`, `\\boxed{A}\\boxed{B}`) is wrong;
  - when no letter is found but the gold has option text, an answer equal to that text
    ("The answer is Paris." for gold `(B) Paris`) is correct.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from rlvr.verifiers.base import Verdict, guarded

OPTION_LETTERS = "ABCDEFGHIJ"  # MMLU-Pro has ten options
_L = f"[{OPTION_LETTERS}]"
# What may wrap a letter: spaces, markdown bold, quotes, $, parentheses, \text{ and friends.
_OPEN = r"(?:\s|\*\*|[\"“(\[{$]|\\[(\[]|\\(?:text|textbf|mathrm|mathbf|mathcal|boxed)\s*\{)*"
_CLOSE = r"(?:\s|\*\*|[\"”)\]}$]|\\[)\]])*"
# After a letter: not another letter or digit (so "Cecile" or "B2" is no option), and not an
# operator (so "A = 5" is an equation, not option A).
_END = r"(?![A-Za-z0-9])(?!\s*[=+*/^<>])"
# Words allowed between an anchor and its letter ("the answer is definitely C").
_FILLER = (
    r"(?i:(?:definitely|clearly|certainly|probably|likely|most likely|for sure|surely|indeed|"
    r"therefore|thus|option|choice|letter|answer|the|la|el|le|die|der|opción|opção|opzione)"
    r"\s+)*"
)
_ANCHORS = (
    r"(?i:(?:final\s+)?answer(?:\s+(?:is|should\s+be|would\s+be|will\s+be|must\s+be))?"
    r"|(?:correct|right|best)\s+(?:answer|option|choice)(?:\s+is)?"
    r"|(?:option|choice)\s+is|I\s+(?:choose|pick|select|go\s+with)"
    r"|réponse(?:\s+(?:correcte|finale))?(?:\s+est)?|respuesta(?:\s+correcta)?(?:\s+es)?"
    r"|resposta(?:\s+correta)?(?:\s+é)?|risposta(?:\s+corretta)?(?:\s+è)?"
    r"|Antwort(?:\s+ist)?|ответ|правильный\s+ответ|"
    r"正确答案(?:是|为)?|答案(?:是|为|應為|应为)?|答え(?:は)?|정답(?:은|는)?)"
)
_JOINER = r"(?i:,|、|/|&|\bor\b|\band\b|\bou\b|\bo\b|\boder\b|或|和)"  # "A or B", "A, B"
_ANCHORED = re.compile(
    rf"(?:{_ANCHORS})\s*(?:[:：=\-—]\s*)?{_FILLER}{_OPEN}(?P<letter>{_L}){_END}{_CLOSE}"
    rf"(?P<more>(?:\s*{_JOINER}\s*{_OPEN}{_L}{_END})*)"
)
_LETTER_ONLY = re.compile(rf"^\W*?{_OPEN}(?P<letter>{_L}){_CLOSE}[.。!:)]*\s*$")
_LETTER_FIRST = re.compile(
    rf"^{_OPEN}(?P<letter>{_L})(?!\s*[=+*/^<>])(?P<after>[.。:：)、,，]|\s+|(?=[^\x00-\x7f]))"
)
_LETTER_LAST = re.compile(rf"(?<![A-Za-z0-9'’])(?P<letter>{_L}){_CLOSE}[.。!]?\s*$")
_STANDALONE = re.compile(rf"(?<![A-Za-z0-9'’\\{{_^])(?P<letter>{_L})(?![A-Za-z0-9'’}}_^])")
_ARTICLE_A = re.compile(r"A\s+(?!(?:is|was|would|should|seems|must|can|could|and|or)\b)[a-z]")
_GOLD_FORMS = (
    re.compile(rf"^\(?(?P<letter>{_L})\)?$"),
    re.compile(rf"^\((?P<letter>{_L})\)\s*(?P<text>.+)$", re.DOTALL),
    re.compile(rf"^(?P<letter>{_L})[.)]\s*(?P<text>.+)$", re.DOTALL),
    re.compile(rf"^(?P<letter>{_L})\s+(?!(?:and|or)\b)(?P<text>[^\W\d_].*)$", re.DOTALL),
)
_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mathcal|boxed)\s*\{([^{}]*)\}")


def _unwrap(text: str) -> str:
    """Drop `$`, `\\(`/`\\)` and `\\text{...}`-style wrappers around a short answer."""
    text = text.strip()
    for _ in range(3):
        text = _WRAPPERS.sub(r"\1", text)
    text = re.sub(r"^(?:\$+|\\[(\[])|(?:\$+|\\[)\]])$", "", text.strip())
    return text.strip().strip("*").strip()


def gold_letter(gold: object) -> tuple[str, str] | None:
    """(letter, option text) when a gold answer is an option letter, else None.

    `C`, `(C)`, `\\text{(C)}` -> ("C", ""); `(B) Paris`, `B. Paris`, `B Paris` -> ("B", "Paris").
    A gold that says "... the answer is (C) Cecile" names its letter after the anchor. An
    equation such as `A = 5` or a list `A and B` is not an option letter.
    """
    return _gold_letter(gold) if isinstance(gold, str) else None


@functools.lru_cache(maxsize=4096)  # golds repeat across the k samples of a group
def _gold_letter(gold: str) -> tuple[str, str] | None:
    text = _unwrap(gold)
    for form in _GOLD_FORMS:
        match = form.match(text)
        if match:
            return match.group("letter"), (match.groupdict().get("text") or "").strip()
    anchored = [m for m in _ANCHORED.finditer(text) if not m.group("more")]
    if anchored:
        rest = text[anchored[-1].end() :].strip()
        return anchored[-1].group("letter"), rest
    return None


@dataclass(frozen=True)
class Choice:
    """The option a completion chose.

    letter: the chosen letter, None when none was found.
    candidates: every letter offered where one was asked (several boxes, "A or B"); empty
        when the answer names just one.
    source: "answer_tag", "boxed", "anchored", "alone", "first", "last" or "only".
    """

    letter: str | None
    candidates: tuple[str, ...] = ()
    source: str = ""


def _is_option(text: str, pos: int) -> bool:
    """Whether the capital at text[pos] can be an option: not the pronoun "I", and not the
    article "A" before a word ("A triangle ...")."""
    letter = text[pos]
    return letter != "I" and not (letter == "A" and _ARTICLE_A.match(text, pos))


def _letters_in(text: str) -> list[str]:
    """Option letters standing alone in a text, such as "(C) 42" or "A, B"."""
    return [m.group("letter") for m in _STANDALONE.finditer(text) if _is_option(text, m.start())]


def _from_short(text: str) -> list[str]:
    """The letters of a short answer (a tag's or a box's content): the letter that opens it,
    or all letters when it is only letters and separators ("A, B")."""
    text = _unwrap(text)
    alone = _LETTER_ONLY.match(text)
    if alone:
        return [alone.group("letter")]
    if re.fullmatch(rf"(?:\W|\\text|or|and|{_L})*", text):
        return list(dict.fromkeys(_letters_in(text)))
    first = _LETTER_FIRST.match(text)
    return [first.group("letter")] if first else []


def extract_choice(completion: str) -> Choice:
    """The option letter a completion chose; see the module docstring for the order of rules."""
    from rlvr.verifiers.math import boxed_contents  # math imports this module at its top

    text = completion.rsplit("</think>", 1)[-1]
    for source, parts in (
        ("answer_tag", re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)),
        ("boxed", boxed_contents(text)),
    ):
        letters = list(dict.fromkeys(letter for part in parts for letter in _from_short(part)))
        if len(letters) > 1:
            return Choice(letters[-1], tuple(letters), source)
        if letters:
            return Choice(letters[0], (), source)
    anchored = list(_ANCHORED.finditer(text))
    if anchored:
        last = anchored[-1]
        letter = last.group("letter")
        if last.group("more"):
            more = _letters_in(last.group("more"))
            return Choice(letter, tuple(dict.fromkeys([letter, *more])), "anchored")
        return Choice(letter, (), "anchored")
    stripped = text.strip()
    alone = _LETTER_ONLY.match(_unwrap(stripped))
    if alone:
        return Choice(alone.group("letter"), (), "alone")
    first = _LETTER_FIRST.match(stripped)
    if first and _is_option(stripped, first.start("letter")):
        return Choice(first.group("letter"), (), "first")
    last_line = stripped.splitlines()[-1] if stripped else ""
    last = _LETTER_LAST.search(last_line)
    if last and last.group("letter") != "I":
        return Choice(last.group("letter"), (), "last")
    named = list(dict.fromkeys(_letters_in(stripped)))
    if len(named) == 1 and len(stripped.split()) >= 3:  # prose naming one option
        return Choice(named[0], (), "only")
    return Choice(None)


_FINAL_PHRASE = re.compile(
    r"(?:answer\s*(?:is|:)|réponse\s*(?:est|:)|respuesta\s*(?:es|:)|答案(?:是|为|：|:))"
    r"\s*(?P<text>[^\n]+)",
    re.IGNORECASE,
)


def _same_option_text(completion: str, option_text: str) -> bool:
    """Whether the completion's final answer is the option's text ("The answer is Paris.")."""
    from rlvr.verifiers.math import boxed_contents

    text = completion.rsplit("</think>", 1)[-1]
    phrases = boxed_contents(text) or [m.group("text") for m in _FINAL_PHRASE.finditer(text)]
    if not phrases or not option_text:
        return False

    def norm(s: str) -> str:
        return re.sub(r"[\s.。!]+$", "", _unwrap(s)).casefold()

    return norm(phrases[-1]) == norm(option_text)


def _verdict(status: str, reason: str) -> Verdict:
    reward = 1.0 if status == "correct" else 0.0
    return Verdict(reward=reward, status=status, components={"accuracy": reward}, reason=reason)


@guarded
def verify_choice(completion: str, answer: str) -> Verdict:
    """Grade a multiple-choice completion against a gold option letter (see the module docstring).

    >>> verify_choice("It is not A. Final answer: (B)", "B").status
    'correct'
    >>> verify_choice("The answer is A or B.", "A").status
    'wrong'
    """
    gold = gold_letter(answer)
    if gold is None:
        return _verdict("error", f"gold answer {str(answer)[:40]!r} is not an option letter A-J")
    if not isinstance(completion, str):
        return _verdict("error", f"completion is {type(completion).__name__}, not a string")
    letter, option_text = gold
    choice = extract_choice(completion)
    if choice.candidates:
        shown = ", ".join(choice.candidates)
        return _verdict("wrong", f"several options named ({shown}); one is asked")
    if choice.letter is None:
        if _same_option_text(completion, option_text):
            return _verdict("correct", "ok (the option's text)")
        return _verdict("unparsable", "no option letter found")
    if choice.letter == letter:
        return _verdict("correct", "ok")
    return _verdict("wrong", f"answered {choice.letter}, expected {letter}")
