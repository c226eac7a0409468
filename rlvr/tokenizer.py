"""Character-level tokenizer for from-scratch models, and the R1 prompt format.

Every special token (`<think>`, `<answer>`, ...) is one id, and every other id is one
character, so a tiny model sees the structure of a reasoning trace directly. The full text
of one example is

    <bos>{question}\\n<think>{steps}</think><answer>{answer}</answer><eos>

The prompt is `format_prompt(question)` (also `tok.format_prompt(question)`, the method every
tokenizer has; `rlvr.hf.HFTokenizer` writes it through a checkpoint's chat template); everything
after it is the model's response.
Prefilling the response with `EMPTY_THINK` forces the model to answer without thinking.

    tok = CharTokenizer()
    ids = tok.encode(format_prompt("2+3*4=") + EMPTY_THINK)
    tok.decode(ids)  # round-trips the text exactly
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
EMPTY_THINK = THINK_OPEN + THINK_CLOSE

# Order fixes the ids: <pad>=0, <bos>=1, <eos>=2, <think>=3, </think>=4, <answer>=5, </answer>=6.
SPECIAL_TOKENS = (PAD, BOS, EOS, THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
# "\n" then printable ASCII 32..126 (space through "~"), in code-point order.
DEFAULT_CHARS = ("\n",) + tuple(chr(c) for c in range(32, 127))

FILENAME = "rlvr_tokenizer.json"


def format_prompt(question: str) -> str:
    """The prompt text for a question: the model's response starts right after it."""
    return BOS + question + "\n"


class CharTokenizer:
    """Special tokens first (one id each), then one id per character."""

    def __init__(self, chars: Iterable[str] = DEFAULT_CHARS) -> None:
        chars = list(chars)
        for c in chars:
            if len(c) != 1:
                raise ValueError(f"Tokenizer characters must be single characters, got {c!r}.")
        if len(set(chars)) != len(chars):
            raise ValueError("Tokenizer character list contains duplicates.")
        self.chars = chars
        self.tokens = list(SPECIAL_TOKENS) + chars
        self._id = {t: i for i, t in enumerate(self.tokens)}
        # Specials all start with "<", so only a "<" needs a look-ahead during encoding.
        # Longest first, so a special that is a prefix of another could never shadow it.
        self._specials_longest_first = sorted(SPECIAL_TOKENS, key=len, reverse=True)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        return self._id[PAD]

    @property
    def bos_id(self) -> int:
        return self._id[BOS]

    @property
    def eos_id(self) -> int:
        return self._id[EOS]

    @property
    def think_open_id(self) -> int:
        return self._id[THINK_OPEN]

    @property
    def think_close_id(self) -> int:
        return self._id[THINK_CLOSE]

    @property
    def answer_open_id(self) -> int:
        return self._id[ANSWER_OPEN]

    @property
    def answer_close_id(self) -> int:
        return self._id[ANSWER_CLOSE]

    @property
    def special_ids(self) -> list[int]:
        return [self._id[t] for t in SPECIAL_TOKENS]

    @property
    def stop_ids(self) -> list[int]:
        """Token ids that end a completion: [eos_id] (the interface `HFTokenizer` shares)."""
        return [self.eos_id]

    def format_prompt(self, question: str, system_prompt: str | None = None) -> str:
        """The prompt text for a question (module-level `format_prompt`).

        A from-scratch model has never seen a system prompt, so setting one is an error
        rather than text silently dropped or added.
        """
        if system_prompt:
            raise ValueError(
                "The character tokenizer's prompt format has no system prompt; set "
                'system_prompt = "" (system prompts need a model with a chat template).'
            )
        return format_prompt(question)

    def token_to_id(self, token: str) -> int:
        """The id of one token (a special token string or a single character)."""
        return self._id[token]

    def encode(self, text: str) -> list[int]:
        """Text to ids; special token strings become their single ids (greedy, left to right)."""
        ids = []
        i = 0
        while i < len(text):
            if text[i] == "<":
                special = next(
                    (s for s in self._specials_longest_first if text.startswith(s, i)), None
                )
                if special is not None:
                    ids.append(self._id[special])
                    i += len(special)
                    continue
            tid = self._id.get(text[i])
            if tid is None or tid < len(SPECIAL_TOKENS):
                raise ValueError(
                    f"Character {text[i]!r} at position {i} is not in the tokenizer's vocabulary."
                )
            ids.append(tid)
            i += 1
        return ids

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Ids to text; special tokens are written as their strings unless skip_special."""
        num_special = len(SPECIAL_TOKENS)
        out = []
        for i in ids:
            i = int(i)  # accepts numpy/torch integer scalars without importing either
            if not 0 <= i < len(self.tokens):
                raise ValueError(
                    f"Token id {i} is outside the vocabulary (size {self.vocab_size})."
                )
            if skip_special and i < num_special:
                continue
            out.append(self.tokens[i])
        return "".join(out)

    def save(self, path_dir: str | Path) -> Path:
        """Write `rlvr_tokenizer.json` into a folder (created if missing); returns the file."""
        path_dir = Path(path_dir)
        path_dir.mkdir(parents=True, exist_ok=True)
        path = path_dir / FILENAME
        data = {
            "type": "char",
            "special_tokens": list(SPECIAL_TOKENS),
            "tokens": self.tokens,
        }
        path.write_text(json.dumps(data, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path_dir: str | Path) -> CharTokenizer:
        """Read a tokenizer written by `save` from its folder."""
        path = Path(path_dir) / FILENAME
        if not path.exists():
            raise FileNotFoundError(f"No tokenizer at {path}: expected a file written by save().")
        data = json.loads(path.read_text())
        if data.get("special_tokens") != list(SPECIAL_TOKENS):
            raise ValueError(
                f"{path} has special tokens {data.get('special_tokens')}, this version of "
                f"rlvr expects {list(SPECIAL_TOKENS)}."
            )
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or tokens[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
            raise ValueError(
                f"{path} must list the special tokens {list(SPECIAL_TOKENS)} first in 'tokens'; "
                "it was not written by this version of rlvr."
            )
        return cls(chars=tokens[len(SPECIAL_TOKENS) :])

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
