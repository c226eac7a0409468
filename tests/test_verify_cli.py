"""`rlvr verify` end to end on a small JSONL file."""

import json

from rlvr.cli import main

LINES = [
    {"completion": "<answer>42</answer>", "answer": "42"},
    "this line is not json",
    {"completion": "so \\boxed{\\frac{\\sqrt{2}}{2}}", "answer": "\\frac{1}{\\sqrt{2}}"},
    {"completion": "\\boxed{3} or \\boxed{4}", "answer": "3", "id": "hack"},
    {"completion": "no answer here", "answer": "7"},
    {"answer": "1"},
    {"completion": "x", "answer": "1", "verifier": "nonsense"},
    {"completion": "The final answer is 1,000.", "answer": "1000", "verifier": "math"},
]


def write_input(path):
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in LINES)
    path.write_text(text + "\n\n")


def test_verify_end_to_end(tmp_path, capsys):
    source, graded = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source)
    assert main(["verify", str(source), "--output", str(graded), "--workers", "1"]) == 0
    out = [json.loads(line) for line in graded.read_text().splitlines()]
    assert [o["status"] for o in out] == [
        "correct", "error", "correct", "wrong", "unparsable", "error", "error", "correct"
    ]  # fmt: skip
    assert out[0]["completion"] == "<answer>42</answer>" and out[0]["reward"] == 1.0
    assert "line 2" in out[1]["reason"]
    assert out[3]["id"] == "hack" and out[3]["reward"] == 0.0
    assert "line 6" in out[5]["reason"] and "line 7" in out[6]["reason"]
    assert all(set(o) >= {"reward", "status", "reason"} for o in out)
    summary = capsys.readouterr().err
    assert "8 items" in summary and "correct 3" in summary and "items/s" in summary


def test_verify_writes_stdout(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"completion": "\\boxed{5}", "answer": "5"}) + "\n")
    assert main(["verify", str(source)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "correct"


def test_missing_input_is_one_sentence_and_exit_2(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "nope.jsonl does not exist" in err and "Traceback" not in err


def test_verify_code_lines_report_passed_and_total(tmp_path):
    tests = {"inputs": ["2 3\n", "10 -4\n"], "outputs": ["5\n", "6\n"]}
    good = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    bad = "```python\nprint(5)\n```"
    source, graded = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(
        "".join(json.dumps({"completion": c, "tests": tests}) + "\n" for c in (good, bad))
    )
    assert (
        main(["verify", str(source), "--verifier", "code", "--partial", "--output", str(graded)])
        == 0
    )
    out = [json.loads(line) for line in graded.read_text().splitlines()]
    assert [(o["status"], o["passed"], o["total"]) for o in out] == [
        ("correct", 2, 2),
        ("wrong", 1, 2),
    ]
    assert out[1]["reward"] == 0.5  # --partial: the fraction of tests passed
