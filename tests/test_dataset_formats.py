"""The dataset task reads JSON, Parquet, CSV and save_to_disk folders through `datasets`, and
extracts GSM8K (`#### 42`), MATH (`\\boxed{}`) and plain answers; files written here."""

from __future__ import annotations

import csv
import json

import pytest

from rlvr.tasks import DatasetTask
from rlvr.tasks.dataset import DatasetError, extract_answer

datasets = pytest.importorskip("datasets")

GSM8K = [
    {"question": f"Tom has {i} apples and buys {i} more. How many now?",
     "answer": f"He has {i} + {i} = <<{i}+{i}={2 * i}>>{2 * i} apples.\n#### {2 * i}"}
    for i in range(1, 41)
]  # fmt: skip
MATH = [
    {"problem": f"What is $\\frac{{1}}{{{i}}} + \\frac{{1}}{{{i}}}$?",
     "solution": f"Add: $\\frac{{2}}{{{i}}}$, so the answer is $\\boxed{{\\frac{{2}}{{{i}}}}}$."}
    for i in range(2, 42)
]  # fmt: skip
PLAIN = [{"prompt": f"{i}*3=", "answer": 3 * i} for i in range(40)]


def answers(task: DatasetTask) -> dict[str, str]:
    problems = []
    for split in ("train", "test"):
        problems += task.problems(split, task.num_problems(split), seed=0)
    return {p.prompt: p.answer for p in problems}


def test_extract_answer():
    assert extract_answer("so 5 + 7 = 12\n#### 12") == "12"
    assert extract_answer("#### 1,000 ") == "1,000"
    assert extract_answer("so $\\boxed{\\frac{1}{2}}$; check: \\boxed{3}") == "3"
    assert extract_answer("x = \\boxed{\\sqrt{2}}") == "\\sqrt{2}"
    assert extract_answer("42") == "42"
    assert extract_answer("see #### 12", "plain") == "see #### 12"
    assert extract_answer("no box here", "auto") == "no box here"


def test_json_array_with_gsm8k_answers(tmp_path):
    path = tmp_path / "gsm8k.json"
    path.write_text(json.dumps(GSM8K))
    task = DatasetTask(path=str(path), prompt_field="question")
    got = answers(task)
    assert len(got) == 40
    assert got["Tom has 7 apples and buys 7 more. How many now?"] == "14"
    assert task.num_problems("test") > 0 and task.num_problems("train") > 0


def test_parquet_with_math_solutions(tmp_path):
    path = tmp_path / "math.parquet"
    datasets.Dataset.from_list(MATH).to_parquet(str(path))
    task = DatasetTask(path=str(path), prompt_field="problem", answer_field="solution")
    got = answers(task)
    assert got["What is $\\frac{1}{5} + \\frac{1}{5}$?"] == "\\frac{2}{5}"
    problem = _problem(task, "\\frac{1}{5}")
    assert (
        task.verify("<think>add</think><answer>\\frac{2}{5}</answer>", problem).status == "correct"
    )
    assert task.verify("<think>add</think><answer>\\frac{1}{5}</answer>", problem).status == "wrong"


def _problem(task, needle):
    for split in ("train", "test"):
        for p in task.problems(split, task.num_problems(split), seed=0):
            if needle in p.prompt:
                return p
    raise AssertionError(needle)


def test_csv_with_plain_answers(tmp_path):
    path = tmp_path / "plain.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "answer"])
        writer.writeheader()
        writer.writerows(PLAIN)
    got = answers(DatasetTask(path=str(path)))
    assert got["13*3="] == "39" and len(got) == 40


def test_save_to_disk_folders(tmp_path):
    single = tmp_path / "single"
    datasets.Dataset.from_list(PLAIN).save_to_disk(str(single))
    assert answers(DatasetTask(path=str(single)))["5*3="] == "15"

    both = tmp_path / "both"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(GSM8K[:30]),
        "test": datasets.Dataset.from_list(GSM8K[30:]),
    }).save_to_disk(str(both))  # fmt: skip
    task = DatasetTask(path=str(both), prompt_field="question")
    assert task.num_problems("train") == 30 and task.num_problems("test") == 10
    assert {p.answer for p in task.problems("test", 10, 0)} == {str(2 * i) for i in range(31, 41)}

    only_test = tmp_path / "only_test"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(PLAIN)}).save_to_disk(str(only_test))
    with pytest.raises(DatasetError, match="splits test, not 'train'"):
        DatasetTask(path=str(only_test))


def test_bad_rows_are_named_by_row(tmp_path):
    path = tmp_path / "bad.parquet"
    rows = [{"question": "q1", "answer": "#### 1"}, {"question": "q2", "answer": "no marker"}]
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    with pytest.raises(DatasetError, match=r"bad\.parquet: row 2 has no '####'"):
        DatasetTask(path=str(path), prompt_field="question", answer_format="gsm8k")
    task = DatasetTask(path=str(path), prompt_field="question", answer_format="gsm8k",
                       on_bad_line="skip")  # fmt: skip
    assert task.num_skipped == 1
    with pytest.raises(DatasetError, match="has no 'prompt' field"):
        DatasetTask(path=str(path))
    with pytest.raises(DatasetError, match="answer_format 'latex' is not a format"):
        DatasetTask(path=str(path), prompt_field="question", answer_format="latex")


def test_unreadable_table_is_one_sentence(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match="cannot be read by the datasets library") as err:
        DatasetTask(path=str(path))
    assert "\n" not in str(err.value)
