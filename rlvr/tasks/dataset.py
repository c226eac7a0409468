"""Dataset: problems read from local files (JSONL, JSON, Parquet, CSV, or a folder written by
`datasets`' `save_to_disk`), no hub.

    [task]
    name = "dataset"
    options = { path = "data/train.jsonl", test_path = "data/test.jsonl" }
    # or: options = { path = "gsm8k/train.parquet", prompt_field = "question" }  # "#### 42"

JSONL is read line by line, so a bad line is named `file:line`. The other formats are read
through the `datasets` library (`load_dataset("json" | "parquet" | "csv", data_files=...)`,
`load_from_disk`) and a bad row is named `file: row N`; every row passes the same checks as
a JSONL line. A `save_to_disk` folder holding several splits (a DatasetDict) gives its
"train" split for `path` and, without `test_path`, its "test" split as the held-out set.

A line looks like `{"prompt": "What is 1/2 + 1/4?", "answer": "\\frac{3}{4}"}` (math) or
`{"prompt": "Read two ints, print their sum.", "tests": {"inputs": ["1 2\\n"],
"outputs": ["3"]}}` (code; `tests` takes any format of verifiers/code.py). Other keys are
ignored. Relative paths are relative to the working directory.

Options (keyword arguments, from the config's `[task] options`):
  path           the JSONL file of problems (required).
  test_path      a held-out JSONL file. Without it the one file is split by the stable hash
                 of each prompt (one prompt in ten is "test", as for the procedural tasks).
                 With it, every line of `path` is "train" and every line of `test_path` is
                 "test"; a training prompt that also appears in the test file is dropped
                 from training (with one warning), so the held-out set stays held out.
  prompt_field   the key holding the prompt, "prompt" by default. The rule is exact: no
                 other key is guessed; a line without it is a bad line whose message lists
                 the line's keys and names this option.
  answer_field   the key holding the gold answer (math), "answer" by default: a non-empty
                 string or a finite number.
  answer_format  how the gold answer is read from that field: "auto" (default: the text
                 after GSM8K's last `####` if there is one, else the last `\\boxed{}` of a
                 MATH-style solution if there is one, else the whole field), "gsm8k",
                 "boxed" or "plain" (the field as it is). A row whose field lacks the marker
                 its format names is a bad row.
  tests_field    the key holding the tests (code), "tests" by default: a non-empty string
                 of assert code, or an object in one of verifiers/code.py's formats.
  verifier       "math" (default; verifiers/math.py's verify_math) or "code"
                 (verifiers/code.py's verify_code in the sandbox).
  on_bad_line    "stop" (default): the first bad line raises DatasetError naming the file,
                 the line and the fix. "skip": bad lines are skipped and counted, and one
                 warning per file lists the first few (`num_skipped`, `skipped`).

Blank lines are skipped silently. A line repeating an earlier prompt with the same answer
(and tests) is a duplicate and is dropped, counted in `num_duplicates`; the same prompt with
a different answer is a bad line. A file with no usable line is an error ("empty dataset").

`problems(split, num, seed)` is a seeded sample without replacement of that split's rows:
asking for more than the split holds (`num_problems(split)`) is an error, never a silent
repeat. A dataset has no
synthetic reasoning traces, so `completion` raises: pretrain on a generated task or start
from a checkpoint (`init_from`).

Grading: the answer is read from the text after the last `</think>` (a response that never
closes its think block is unparsable): the `<answer>` block first, then the math fallbacks
(`\\boxed{}`, "the answer is ...", the last line). Plain numbers (`0.5`, `\\frac{1}{2}`,
`1,000`) are graded in any process; other LaTeX needs math-verify and so a VerifierPool
worker (`pool.map(task.verify, ...)`); elsewhere it gets status "error". The task pickles
without its rows, so sending `task.verify` to a worker is cheap.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rlvr.errors import ConfigError
from rlvr.tasks.base import SPLITS, Problem, Task, problem_id, split_of
from rlvr.tokenizer import THINK_CLOSE
from rlvr.verifiers.base import Verdict, guarded
from rlvr.verifiers.code import verify_code
from rlvr.verifiers.format import format_reward, parse_response
from rlvr.verifiers.hacking import boxed_contents
from rlvr.verifiers.math import verify_math

log = logging.getLogger(__name__)

VERIFIERS = ("math", "code")
ON_BAD_LINE = ("stop", "skip")
ANSWER_FORMATS = ("auto", "gsm8k", "boxed", "plain")
TABLE_FORMATS = {".json": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "csv"}
"""File suffixes read through `datasets.load_dataset`, and the builder for each."""
NUM_LISTED = 5  # bad lines listed by name in the skip warning
_SKIP_HINT = 'or set task.options.on_bad_line = "skip" to skip bad lines'


class DatasetError(ConfigError):
    """A problem with a dataset file the user can fix; its message is one sentence."""


class _BadLine(Exception):
    """One line that cannot become a problem; `str()` is the rest of a sentence."""


@dataclass
class DatasetTask(Task):
    """Problems from a local JSONL file; see the module docstring for the options."""

    name: ClassVar[str] = "dataset"

    path: str = ""
    test_path: str = ""
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    tests_field: str = "tests"
    verifier: str = "math"
    on_bad_line: str = "stop"
    answer_format: str = "auto"

    def __post_init__(self) -> None:
        for option in ("path", "test_path", "prompt_field", "answer_field", "tests_field",
                       "verifier", "on_bad_line", "answer_format"):  # fmt: skip
            value = getattr(self, option)
            if not isinstance(value, str):
                raise DatasetError(
                    f"task.options.{option} must be a string, got {value!r}; quote it."
                )
        if not self.path:
            raise DatasetError(
                'task.options.path is required for task "dataset"; set it to a JSONL file '
                'with one {"prompt": ..., "answer": ...} object per line.'
            )
        if self.verifier not in VERIFIERS:
            raise DatasetError(
                f"task.options.verifier {self.verifier!r} is not a verifier; "
                f"use one of {', '.join(VERIFIERS)}."
            )
        if self.on_bad_line not in ON_BAD_LINE:
            raise DatasetError(
                f"task.options.on_bad_line {self.on_bad_line!r} is not a policy; "
                f"use one of {', '.join(ON_BAD_LINE)}."
            )
        if self.answer_format not in ANSWER_FORMATS:
            raise DatasetError(
                f"task.options.answer_format {self.answer_format!r} is not a format; "
                f"use one of {', '.join(ANSWER_FORMATS)}."
            )
        for option in ("prompt_field", "answer_field", "tests_field"):
            if not getattr(self, option):
                raise DatasetError(f"task.options.{option} is empty; name a key of the lines.")
        self._load()

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        # Workers only verify: the rows stay behind and reload if a worker asks for problems.
        return {k: v for k, v in self.__dict__.items() if k != "_splits"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        self.num_skipped = 0
        self.num_duplicates = 0
        self.skipped: list[str] = []  # "file:line reason" of the first NUM_LISTED per file
        if self.test_path:
            train = self._read(Path(self.path), "path")
            test = self._read(Path(self.test_path), "test_path")
            held_out = {p.prompt for p in test}
            overlap = sum(p.prompt in held_out for p in train)
            if overlap == len(train):
                raise DatasetError(
                    f"Every prompt of {self.path} also appears in {self.test_path}, so no "
                    "training problem is left; point task.options.test_path at a held-out file."
                )
            if overlap:
                log.warning(
                    "%s: dropped %d training prompts that also appear in %s (held out).",
                    self.path, overlap, self.test_path,
                )  # fmt: skip
            splits = {
                "train": [_relabel(p, "train") for p in train if p.prompt not in held_out],
                "test": [_relabel(p, "test") for p in test],
            }
        else:
            rows = self._read(Path(self.path), "path")
            held_out = self._read(Path(self.path), "path", split="test") if _is_dataset_dict(
                Path(self.path), "test") else None  # fmt: skip
            if held_out is not None:  # a saved DatasetDict brings its own test split
                test_prompts = {p.prompt for p in held_out}
                splits = {
                    "train": [_relabel(p, "train") for p in rows if p.prompt not in test_prompts],
                    "test": [_relabel(p, "test") for p in held_out],
                }
            else:
                splits = {s: [p for p in rows if p.split == s] for s in SPLITS}
        self._splits = splits

    def _split(self, split: str) -> list[Problem]:
        if "_splits" not in self.__dict__:  # unpickled in a worker
            self._load()
        return self._splits[split]

    def _read(self, path: Path, option: str, split: str = "train") -> list[Problem]:
        """Every usable row of `path` as a Problem; bad rows raise or are skipped."""
        if not path.exists():
            raise DatasetError(
                f"Dataset file {path} does not exist; set task.options.{option} to a JSONL, "
                "JSON, Parquet or CSV file or a save_to_disk folder."
            )
        saved = ("dataset_info.json", "state.json", "dataset_dict.json")
        if path.is_dir() and not any((path / name).is_file() for name in saved):
            raise DatasetError(
                f"Dataset path {path} is a directory but not a folder written by save_to_disk; "
                f"set task.options.{option} to a data file inside it."
            )
        if path.is_dir() or path.suffix.lower() in TABLE_FORMATS:
            return self._collect(path, self._table_rows(path, option, split), "row")
        return self._collect(path, self._jsonl_rows(path), "line")

    def _jsonl_rows(self, path: Path):
        """(line number, row dict or _BadLine) for each non-blank line of a JSONL file."""
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DatasetError(
                f"Dataset file {path} cannot be read ({e.strerror or e}); check its permissions."
            ) from e
        if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, as some editors write
            data = data[3:]
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if raw.strip():
                try:
                    yield number, _json_row(raw, self._example)
                except _BadLine as bad:
                    yield number, bad

    def _table_rows(self, path: Path, option: str, split: str):
        """(row number, row dict) for each row of a file or folder `datasets` reads."""
        try:
            import datasets
        except ImportError as e:
            raise DatasetError(
                f"Reading {path} needs the datasets library: pip install datasets "
                "(or convert it to JSONL)."
            ) from e
        datasets.disable_progress_bars()
        try:
            if path.is_dir():
                table = datasets.load_from_disk(str(path))
                if isinstance(table, datasets.DatasetDict):
                    if split not in table:
                        raise DatasetError(
                            f"The saved dataset {path} has the splits "
                            f"{', '.join(table)}, not {split!r}; save the split to use with "
                            f"save_to_disk and point task.options.{option} at it."
                        )
                    table = table[split]
            else:
                builder = TABLE_FORMATS[path.suffix.lower()]
                extra = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
                table = datasets.load_dataset(builder, data_files=str(path), split="train",
                                              **extra)  # fmt: skip
        except DatasetError:
            raise
        except Exception as e:  # noqa: BLE001 - pyarrow, pandas and json raise many kinds
            why = " ".join(str(e).split())[:160] or type(e).__name__
            raise DatasetError(
                f"Dataset {path} cannot be read by the datasets library ({why}); check that "
                f"it is a valid {path.suffix.lstrip('.') or 'save_to_disk'} dataset."
            ) from None
        yield from enumerate(table, start=1)

    def _collect(self, path: Path, rows, unit: str) -> list[Problem]:
        """Problems from (number, row dict or _BadLine) pairs: duplicates dropped, bad rows
        raised or skipped according to on_bad_line."""
        where = (lambda n: f"{path}:{n}") if unit == "line" else (lambda n: f"{path}: row {n}")
        problems: list[Problem] = []
        first_line: dict[str, tuple[int, Problem]] = {}  # prompt -> (line number, problem)
        skipped: list[str] = []
        num_skipped = 0
        for number, row in rows:
            try:
                if isinstance(row, _BadLine):
                    raise row
                problem = self._parse_row(row)
                seen = first_line.get(problem.prompt)
                if seen is not None:
                    if (seen[1].answer, seen[1].meta) != (problem.answer, problem.meta):
                        raise _BadLine(
                            f"repeats the prompt of {unit} {seen[0]} with a different answer; "
                            "keep one of the two lines"
                        )
                    self.num_duplicates += 1
                    continue
            except _BadLine as bad:
                if self.on_bad_line == "stop":
                    raise DatasetError(f"{where(number)} {bad}, {_SKIP_HINT}.") from None
                num_skipped += 1
                if len(skipped) < NUM_LISTED:
                    skipped.append(f"{where(number)} {str(bad).split(';')[0]}")
                continue
            first_line[problem.prompt] = (number, problem)
            problems.append(problem)
        if num_skipped:
            more = f" and {num_skipped - len(skipped)} more" if num_skipped > len(skipped) else ""
            log.warning(
                "%s: skipped %d bad lines: %s%s.", path, num_skipped, "; ".join(skipped), more
            )
            self.num_skipped += num_skipped
            self.skipped += skipped
        if not problems:
            what = f"all {num_skipped} non-blank {unit}s are bad" if num_skipped else f"no {unit}s"
            raise DatasetError(
                f"Dataset file {path} holds no problems (empty dataset: {what}); add lines "
                f'like {{"{self.prompt_field}": "...", "{self._gold_field}": ...}}.'
            )
        return problems

    @property
    def _example(self) -> str:
        return f'{{"{self.prompt_field}": "...", "{self._gold_field}": ...}}'

    @property
    def _gold_field(self) -> str:
        return self.tests_field if self.verifier == "code" else self.answer_field

    def _parse_row(self, row: dict) -> Problem:
        prompt = self._field(row, self.prompt_field, "prompt_field")
        if not isinstance(prompt, str):
            raise _BadLine(
                f"has a {self.prompt_field!r} that is {_json_type(prompt)}, not a string; "
                "write the prompt as a string"
            )
        _check_text(prompt, self.prompt_field)
        meta: dict[str, Any] = {}
        if self.verifier == "code":
            tests = self._field(row, self.tests_field, "tests_field")
            _check_tests(tests, self.tests_field)
            meta["tests"] = tests
            answer = row.get(self.answer_field, "")  # a reference solution, if any; unused
            answer = answer if isinstance(answer, str) and _is_utf8(answer) else ""
        else:
            answer = _answer_text(self._field(row, self.answer_field, "answer_field"), self)
        return Problem(
            problem_id(self.name, prompt), prompt, answer, self.verifier, split_of(prompt), meta
        )

    def _field(self, row: dict, key: str, option: str) -> Any:
        if key not in row:
            keys = ", ".join(repr(k)[:40] for k in list(row)[:8]) or "none"
            raise _BadLine(
                f"has no {key!r} field (its keys: {keys}); add it, or name the right key "
                f"with task.options.{option}"
            )
        value = row[key]
        if value is None or value == "" or value == {} or value == []:
            raise _BadLine(f"has an empty {key!r} field; fill it in or delete the line")
        return value

    # ------------------------------------------------------------------ the Task interface

    def num_problems(self, split: str) -> int:
        """How many distinct problems `split` holds: the most `problems` can return."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}: use one of {SPLITS}.")
        return len(self._split(split))

    def space_size(self) -> int:
        return sum(len(self._split(s)) for s in SPLITS)

    def problems(self, split: str, num: int, seed: int) -> list[Problem]:
        """`num` distinct problems of `split`: a seeded sample without replacement."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}: use one of {SPLITS}.")
        rows = self._split(split)
        if not 0 <= num <= len(rows):
            source = self.test_path if split == "test" and self.test_path else self.path
            if split == "test" and not self.test_path:
                hint = "(eval.num_problems) or set task.options.test_path to a held-out file"
            elif split == "test":
                hint = f"(eval.num_problems) or add lines to {source}"
            else:
                hint = f"or add lines to {source}"
            raise DatasetError(
                f"Dataset {source} holds {len(rows)} {split} problems, not {num}: ask for "
                f"fewer {hint}."
            )
        rng = random.Random(f"{self.name}/{split}/{seed}")  # string seeds are stable
        return rng.sample(rows, num)

    @guarded
    def verify(self, response: str, problem: Problem) -> Verdict:
        well_formed = format_reward(response)
        if THINK_CLOSE not in response:
            verdict = Verdict(0.0, "unparsable", {"accuracy": 0.0}, "the think block never closes")
        elif self.verifier == "code":
            parsed = parse_response(response)
            text = parsed.answer if parsed.answer is not None else response.rsplit(THINK_CLOSE)[-1]
            verdict = verify_code(text, problem.meta["tests"])
        else:
            verdict = verify_math(response, problem.answer)
        verdict.components = {**verdict.components, "format": well_formed}
        return verdict

    def completion(self, problem: Problem, rng: random.Random, think: bool, slip: bool) -> str:
        raise DatasetError(
            f"Task 'dataset' ({self.path}) has no synthetic solutions to pretrain on; set "
            "pretrain.steps = 0 and init_from to a checkpoint, or pretrain on a generated task."
        )


# ---------------------------------------------------------------------- line checks


def _json_row(raw: bytes, example: str) -> dict:
    """One JSONL line as a dict; raises _BadLine saying what is wrong with it (`example`: a
    good line, for the message)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadLine(
            f"is not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); "
            "save the file as UTF-8"
        ) from None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise _BadLine(
            f"is not valid JSON ({e.msg} at column {e.colno}); fix or delete the line"
        ) from None
    except (ValueError, RecursionError) as e:  # e.g. a 5000-digit integer, deep nesting
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:80]
        raise _BadLine(f"is not usable JSON ({why}); fix or delete the line") from None
    if not isinstance(row, dict):
        raise _BadLine(
            f"is JSON but not an object (it is {_json_type(row)}); write one object per "
            f"line, like {example}"
        )
    return row


def _is_dataset_dict(path: Path, split: str) -> bool:
    """Whether `path` is a save_to_disk folder of several splits, `split` among them."""
    info = path / "dataset_dict.json"
    if not (path.is_dir() and info.is_file()):
        return False
    try:
        return split in json.loads(info.read_text(encoding="utf-8")).get("splits", [])
    except (OSError, ValueError, AttributeError):
        return False


def _relabel(problem: Problem, split: str) -> Problem:
    if problem.split == split:
        return problem
    return Problem(problem.id, problem.prompt, problem.answer, problem.verifier, split,
                   problem.meta)  # fmt: skip


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_utf8(text: str) -> bool:
    """False for strings holding lone surrogates (JSON "\\ud800"), which cannot be encoded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(value: str, key: str) -> None:
    if not value.strip():
        raise _BadLine(f"has an empty {key!r} field; fill it in or delete the line")
    if not _is_utf8(value):
        raise _BadLine(
            f"has a {key!r} with an unpaired \\u surrogate escape; fix the escape sequence"
        )


def _answer_text(value: Any, task: DatasetTask) -> str:
    key = task.answer_field
    if isinstance(value, str):
        _check_text(value, key)
        return extract_answer(value, task.answer_format, key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise _BadLine(f"has a {key!r} that is not a finite number; write it as a string")
        return str(value)
    raise _BadLine(
        f"has a {key!r} that is {_json_type(value)}; write the answer as a string or a number"
    )


def extract_answer(text: str, answer_format: str = "auto", key: str = "answer") -> str:
    r"""The gold answer in an answer field: after GSM8K's last `####`, the last `\boxed{}` of a
    MATH solution, or the field itself (see the module docstring's answer_format).

    >>> extract_answer("Natalia sold 48/2 = 24 clips in May.\n#### 72")
    '72'
    >>> extract_answer("So $x = \\boxed{\\frac{1}{2}}$.")
    '\\frac{1}{2}'
    """
    if answer_format in ("auto", "gsm8k") and "####" in text:
        answer = text.rsplit("####", 1)[1].strip()
        if not answer:
            raise _BadLine(f"has nothing after '####' in its {key!r} field; write the answer there")
        return answer
    if answer_format == "gsm8k":
        raise _BadLine(
            f"has no '####' in its {key!r} field (answer_format \"gsm8k\"); add '#### ANSWER' "
            'or set task.options.answer_format = "plain"'
        )
    if answer_format in ("auto", "boxed"):
        boxed = boxed_contents(text)
        if boxed and boxed[-1].strip():
            return boxed[-1].strip()
        if answer_format == "boxed":
            raise _BadLine(
                f'has no \\boxed{{...}} in its {key!r} field (answer_format "boxed"); box the '
                'answer or set task.options.answer_format = "plain"'
            )
    return text


def _check_tests(tests: Any, key: str) -> None:
    """The shapes verify_code accepts, checked at load time so no run grades against junk."""
    if isinstance(tests, str):
        _check_text(tests, key)
        return
    if not isinstance(tests, dict):
        raise _BadLine(
            f"has a {key!r} that is {_json_type(tests)}; write assert code as a string or an "
            'object like {"inputs": [...], "outputs": [...]}'
        )
    if "asserts" in tests:
        if not isinstance(tests["asserts"], str) or not tests["asserts"].strip():
            raise _BadLine(f"has a {key!r} whose 'asserts' is not a string of Python code")
        _check_text(tests["asserts"], key)
        return
    inputs, outputs = tests.get("inputs"), tests.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise _BadLine(
            f"has a {key!r} object without 'inputs' and 'outputs' lists (or 'asserts'); "
            "see verifiers/code.py for the formats"
        )
    if not inputs or len(inputs) != len(outputs):
        raise _BadLine(
            f"has {len(inputs)} test inputs for {len(outputs)} outputs; give one output per input"
        )
    fn_name = tests.get("fn_name")
    if fn_name is not None and (
        not isinstance(fn_name, str) or not all(isinstance(a, list) for a in inputs)
    ):
        raise _BadLine(
            f"has a {key!r} whose 'fn_name' is not a name or whose inputs are not argument lists"
        )
