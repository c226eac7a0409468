"""The dataset task: JSONL in, one clear sentence per bad line, disjoint splits, math/code grading."""

from __future__ import annotations

import json
import logging
import pickle

import pytest

from rlvr.errors import ConfigError
from rlvr.tasks import TASKS, DatasetTask, Problem
from rlvr.tasks.base import split_of
from rlvr.tasks.dataset import DatasetError

GOOD = '{"prompt": "What is 1/2?", "answer": "\\\\frac{1}{2}"}\n'


def write(tmp_path, content: str | bytes, name: str = "data.jsonl") -> str:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return str(path)


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def many(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"{i}+{i}=", "answer": str(2 * i)} for i in range(start, start + n)]


def rows(task: DatasetTask, split: str) -> list[Problem]:
    """Every problem of `split`, through the public interface."""
    return task.problems(split, task.num_problems(split), seed=0)


def one_sentence_error(path: str, **options) -> str:
    with pytest.raises(DatasetError) as err:
        DatasetTask(path=path, **options)
    message = str(err.value)
    assert isinstance(err.value, ValueError)  # the CLI's usage-error family
    assert "\n" not in message and message.endswith(".")
    return message


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "content, line, words",
    [
        (GOOD + '{"prompt": "x", "answer": \n', 2, ["not valid JSON", "column"]),
        ("[1, 2]\n", 1, ["not an object", "an array"]),
        ('"just a string"\n', 1, ["not an object", "a string"]),
        (GOOD + '{"question": "q", "answer": "1"}\n', 2, ["'prompt'", "'question'", "prompt_field"]),
        ('{"prompt": "q"}\n', 1, ["'answer'", "answer_field"]),
        ('{"prompt": "   ", "answer": "1"}\n', 1, ["empty 'prompt'"]),
        ('{"prompt": "q", "answer": ""}\n', 1, ["empty 'answer'"]),
        ('{"prompt": "q", "answer": null}\n', 1, ["empty 'answer'"]),
        ('{"prompt": "q", "answer": [1, 2]}\n', 1, ["'answer'", "an array", "string or a number"]),
        ('{"prompt": 7, "answer": "1"}\n', 1, ["'prompt'", "not a string"]),
        ('{"prompt": "q", "answer": true}\n', 1, ["'answer'", "a boolean"]),
        ('{"prompt": "q", "answer": NaN}\n', 1, ["not a finite number"]),
        ('{"prompt": "q\\ud800", "answer": "1"}\n', 1, ["surrogate"]),
        (b'\n\n{"prompt": "caf\xe9", "answer": "1"}\n', 3, ["not UTF-8", "0xe9", "UTF-8"]),
        ('{"prompt": "q", "answer": ' + "9" * 5000 + "}\n", 1, ["not usable JSON"]),
        ("[" * 100_000 + "\n", 1, ["nested too deeply"]),
        (GOOD + GOOD.replace("frac{1}{2}", "frac{2}{4}"), 2, ["repeats the prompt of line 1"]),
    ],
    ids=[
        "not-json", "array", "string", "missing-prompt", "missing-answer", "blank-prompt",
        "empty-answer", "null-answer", "list-answer", "number-prompt", "bool-answer",
        "nan-answer", "lone-surrogate", "not-utf8", "huge-int", "deep-nesting", "conflict",
    ],
)  # fmt: skip
def test_bad_line_names_file_line_and_fix(tmp_path, content, line, words):
    path = write(tmp_path, content)
    message = one_sentence_error(path)
    assert f"{path}:{line} " in message
    assert 'on_bad_line = "skip"' in message  # the way around it
    for word in words:
        assert word in message


def test_bad_files_are_one_sentence(tmp_path):
    assert "does not exist" in one_sentence_error(str(tmp_path / "missing.jsonl"))
    assert "is a directory" in one_sentence_error(str(tmp_path))
    for content in ["", "\n  \n\t\n"]:
        message = one_sentence_error(write(tmp_path, content))
        assert "empty dataset" in message and "data.jsonl" in message
    both = write(tmp_path, jsonl(many(3)))
    message = one_sentence_error(both, test_path=str(tmp_path / "nope.jsonl"))
    assert "nope.jsonl" in message and "test_path" in message


@pytest.mark.parametrize(
    "options, words",
    [
        ({}, ["task.options.path is required"]),
        ({"path": "x.jsonl", "verifier": "sympy"}, ["'sympy'", "math, code"]),
        ({"path": "x.jsonl", "on_bad_line": "ignore"}, ["'ignore'", "stop, skip"]),
        ({"path": 3}, ["task.options.path must be a string"]),
        ({"path": "x.jsonl", "prompt_field": ""}, ["prompt_field is empty"]),
    ],
)
def test_bad_options(options, words):
    with pytest.raises(DatasetError) as err:
        DatasetTask(**options)
    for word in words:
        assert word in str(err.value)


def test_unknown_option_is_a_type_error_that_make_task_reports():
    with pytest.raises(TypeError):
        TASKS["dataset"](path="x.jsonl", shuffle=True)


# ------------------------------------------------------------------ what loads


def test_skip_mode_counts_continues_and_warns_once_per_file(tmp_path, caplog):
    lines = [GOOD, "not json\n", "\n", "[1]\n", '{"prompt": "q2", "answer": "2"}\n']
    lines += ['{"prompt": "q"}\n'] * 6 + [b"\xff\n".decode("latin-1")]
    path = write(tmp_path, "".join(lines).encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="rlvr.tasks.dataset"):
        task = DatasetTask(path=path, on_bad_line="skip")
    assert task.num_skipped == 9
    assert {p.prompt for p in rows(task, "train") + rows(task, "test")} == {"What is 1/2?", "q2"}
    (record,) = caplog.records
    message = record.getMessage()
    assert "skipped 9 bad lines" in message and "\n" not in message
    assert f"{path}:2 is not valid JSON" in message and f"{path}:4 " in message
    assert "and 4 more" in message  # the first five by name, then a count
    assert task.skipped[0].startswith(f"{path}:2 ")


def test_skip_mode_with_nothing_usable_is_still_an_error(tmp_path):
    message = one_sentence_error(write(tmp_path, "x\n[1]\n"), on_bad_line="skip")
    assert "empty dataset" in message and "all 2 non-blank lines are bad" in message


def test_blank_lines_crlf_bom_and_number_answers(tmp_path):
    content = b"\xef\xbb\xbf" + b'{"prompt": "a", "answer": 42}\r\n\r\n   \n'
    content += b'{"prompt": "b", "answer": 0.5, "extra": {"ignored": true}}'  # no final newline
    task = DatasetTask(path=write(tmp_path, content))
    answers = {p.prompt: p.answer for s in ("train", "test") for p in rows(task, s)}
    assert answers == {"a": "42", "b": "0.5"}
    assert task.num_skipped == 0


def test_identical_duplicates_count_once(tmp_path):
    task = DatasetTask(path=write(tmp_path, GOOD * 3 + jsonl(many(2))))
    assert task.num_duplicates == 2
    assert task.space_size() == 3


def test_other_field_names(tmp_path):
    path = write(tmp_path, jsonl([{"question": "2+2=", "solution": "4"}]))
    task = DatasetTask(path=path, prompt_field="question", answer_field="solution")
    (problem,) = rows(task, split_of("2+2="))
    assert (problem.prompt, problem.answer, problem.verifier) == ("2+2=", "4", "math")


# ------------------------------------------------------------------ splits


def test_one_file_splits_by_hash_disjoint_and_deterministic(tmp_path):
    task = DatasetTask(path=write(tmp_path, jsonl(many(300))))
    train, test = rows(task, "train"), rows(task, "test")
    assert len(train) + len(test) == 300
    assert 10 <= len(test) <= 60  # about one in ten
    assert all(p.split == "train" == split_of(p.prompt) for p in train)
    assert all(p.split == "test" == split_of(p.prompt) for p in test)
    assert not {p.prompt for p in train} & {p.prompt for p in test}

    a = task.problems("train", 50, seed=1)
    assert a == task.problems("train", 50, seed=1)
    assert a != task.problems("train", 50, seed=2)
    assert len({p.id for p in a}) == 50 and len({p.prompt for p in a}) == 50
    everything = task.problems("train", len(train), seed=3)
    assert sorted(p.id for p in everything) == sorted(p.id for p in train)
    assert task.problems("test", 0, seed=0) == []


def test_asking_for_more_than_the_split_holds_is_one_clear_error(tmp_path):
    path = write(tmp_path, jsonl(many(30)))
    task = DatasetTask(path=path)
    num_test = task.num_problems("test")
    assert num_test + task.num_problems("train") == 30
    with pytest.raises(DatasetError) as err:
        task.problems("test", num_test + 1, seed=0)
    assert f"holds {num_test} test problems, not {num_test + 1}" in str(err.value)
    assert "test_path" in str(err.value)
    with pytest.raises(DatasetError, match="holds .* train problems, not 1000"):
        task.problems("train", 1000, seed=0)
    with pytest.raises(ValueError, match="Unknown split"):
        task.problems("validation", 1, seed=0)


def test_test_file_is_held_out(tmp_path, caplog):
    train_path = write(tmp_path, jsonl(many(40)), "train.jsonl")
    test_path = write(tmp_path, jsonl(many(10, start=35)), "test.jsonl")  # 5 prompts overlap
    with caplog.at_level(logging.WARNING, logger="rlvr.tasks.dataset"):
        task = DatasetTask(path=train_path, test_path=test_path)
    train, test = rows(task, "train"), rows(task, "test")
    assert len(train) == 35 and len(test) == 10
    assert all(p.split == "train" for p in train) and all(p.split == "test" for p in test)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert "dropped 5 training prompts" in caplog.text
    assert len(task.problems("test", 10, seed=0)) == 10
    message = one_sentence_error(test_path, test_path=test_path)
    assert "no training problem is left" in message


# ------------------------------------------------------------------ grading


@pytest.fixture()
def half(tmp_path) -> tuple[DatasetTask, Problem]:
    task = DatasetTask(path=write(tmp_path, GOOD))
    (problem,) = rows(task, split_of("What is 1/2?"))
    return task, problem


@pytest.mark.parametrize(
    "response, status, fmt",
    [
        ("<think>one half</think><answer>0.5</answer>", "correct", 1.0),
        ("<think>one half</think><answer>\\frac{1}{2}</answer><eos>", "correct", 1.0),
        ("<think>one half</think><answer>\\boxed{1/2}</answer>", "correct", 1.0),
        ("<think>hmm</think>So the final answer is 0.5.", "correct", 0.0),  # math fallback
        ("<think>hmm</think>\\boxed{0.50}", "correct", 0.0),
        ("<think>one half</think><answer>0.25</answer>", "wrong", 1.0),
        ("<think>x</think><answer>0.5</answer><answer>0.25</answer>", "wrong", 0.0),
        ("<think>x</think><answer>0.5 or 0.25</answer>", "wrong", 1.0),
        ("<think>the answer is 0.5", "unparsable", 0.0),  # never closed its think block
        ("<think>x</think>", "unparsable", 0.0),
    ],
)
def test_verify_math(half, response, status, fmt):
    task, problem = half
    verdict = task.verify(response, problem)
    assert verdict.status == status, verdict
    assert verdict.reward == (1.0 if status == "correct" else 0.0)
    assert verdict.components["accuracy"] == verdict.reward
    assert verdict.components["format"] == fmt


def test_verify_never_raises(half):
    task, problem = half
    assert task.verify(None, problem).status == "error"  # type: ignore[arg-type]


def test_latex_answers_grade_in_a_pool_worker(tmp_path):
    from rlvr.verifiers.math import MATH_PRELOAD
    from rlvr.verifiers.pool import VerifierPool

    path = write(tmp_path, jsonl([{"prompt": "side of a square of area 2", "answer": "\\sqrt{2}"}]))
    task = DatasetTask(path=path)
    problem = task.problems(split_of("side of a square of area 2"), 1, seed=0)[0]
    right = "<think>s*s=2</think><answer>\\sqrt 2</answer>"
    wrong = "<think>s*s=2</think><answer>\\sqrt{3}</answer>"
    assert task.verify(right, problem).status == "error"  # sympy never runs in this process
    with VerifierPool(num_workers=1, timeout_s=20.0, memory_mb=2048, preload=MATH_PRELOAD) as pool:
        verdicts = pool.map(task.verify, [(right, problem), (wrong, problem)])
    assert [v.status for v in verdicts] == ["correct", "wrong"]
    assert verdicts[0].components["format"] == 1.0


CODE_ROWS = [
    {"prompt": "Print the sum of two ints.", "tests": {"inputs": ["2 3\n"], "outputs": ["5"]}},
    {"prompt": "Write add(a, b).", "tests": "assert add(2, 3) == 5\n", "answer": "def add..."},
    {"prompt": "Write f.", "tests": {"fn_name": "f", "inputs": [[1]], "outputs": [2]}},
]


def test_code_dataset_loads_tests_into_meta(tmp_path):
    task = DatasetTask(path=write(tmp_path, jsonl(CODE_ROWS)), verifier="code")
    problems = {p.prompt: p for s in ("train", "test") for p in rows(task, s)}
    assert problems["Print the sum of two ints."].meta == {"tests": CODE_ROWS[0]["tests"]}
    assert problems["Write add(a, b)."].answer == "def add..."
    assert all(p.verifier == "code" for p in problems.values())


@pytest.mark.parametrize(
    "tests, words",
    [
        ({"inputs": ["1"], "outputs": []}, ["1 test inputs for 0 outputs"]),
        ({"inputs": "1", "outputs": ["1"]}, ["'inputs' and 'outputs' lists"]),
        ({"asserts": 5}, ["'asserts'"]),
        ({"fn_name": "f", "inputs": [1], "outputs": [2]}, ["fn_name"]),
        (17, ["a number"]),
        ("  ", ["empty 'tests'"]),
    ],
)
def test_bad_code_tests_are_bad_lines(tmp_path, tests, words):
    path = write(tmp_path, jsonl([{"prompt": "p", "tests": tests}]))
    message = one_sentence_error(path, verifier="code")
    assert f"{path}:1 " in message
    for word in words:
        assert word in message


def test_verify_code_reads_the_answer_block(tmp_path):
    task = DatasetTask(path=write(tmp_path, jsonl(CODE_ROWS[:1])), verifier="code")
    (problem,) = rows(task, split_of(CODE_ROWS[0]["prompt"]))
    program = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    right = task.verify(f"<think>read, add</think><answer>{program}</answer>", problem)
    assert right.status == "correct" and right.passed == right.total == 1, right
    assert right.components["format"] == 1.0
    wrong = task.verify(f"<think>x</think>{program.replace('a + b', 'a - b')}", problem)
    assert wrong.status == "wrong" and wrong.components["format"] == 0.0


# ------------------------------------------------------------------ the rest of the interface


def test_pickles_without_its_rows(tmp_path, half):
    task = DatasetTask(path=write(tmp_path, jsonl(many(2000)), "big.jsonl"))
    blob = pickle.dumps(task)
    assert len(blob) < 2000  # the rows stay behind; a worker reloads them only if it must
    again = pickle.loads(blob)
    assert again == task
    assert again.problems("train", 5, seed=4) == task.problems("train", 5, seed=4)
    small, problem = half
    verdict = pickle.loads(pickle.dumps(small)).verify(
        "<think></think><answer>.5</answer>", problem
    )
    assert verdict.status == "correct"


def test_completion_explains_there_are_no_traces(half):
    task, problem = half
    import random

    with pytest.raises(DatasetError, match="pretrain.steps = 0 and init_from"):
        task.completion(problem, random.Random(0), think=True, slip=False)


def test_registered_and_built_from_a_config(tmp_path):
    from rlvr.config import load_config

    data = write(tmp_path, jsonl(many(20)))
    config = tmp_path / "c.toml"
    config.write_text(f'[task]\nname = "dataset"\noptions = {{ path = {json.dumps(data)} }}\n')
    # a dataset has no synthetic solutions: pretraining on it is refused before any work
    with pytest.raises(ConfigError, match="pretrain.steps = 0"):
        load_config(config)
    cfg = load_config(config, ["--pretrain.steps", "0", "--init_from", "runs/x"])
    task = TASKS[cfg.task.name](**cfg.task.options)
    assert isinstance(task, DatasetTask) and task.space_size() == 20
