"""Smoke test: the real `rlvr demo` entry point at a tiny size, then `rlvr eval` on its run."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from rlvr.cli import main
from rlvr.config import load_config
from rlvr.report import depends_on_clock

TINY = [
    "--model.hidden_size", "32", "--model.intermediate_size", "64", "--model.num_hidden_layers", "2",
    "--model.num_attention_heads", "2", "--model.num_key_value_heads", "1",
    "--pretrain.steps", "20", "--pretrain.batch_size", "16",
    "--grpo.steps", "3", "--grpo.num_prompts", "4", "--grpo.group_size", "4", "--grpo.eval_every", "2",
    "--grpo.max_new_tokens", "24", "--grpo.num_minibatches", "2",
    "--eval.num_problems", "16", "--eval.num_samples", "4", "--eval.max_new_tokens", "24",
]  # fmt: skip


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny demo run that the tests below read (each test works alone, e.g. under xdist);
    what it printed is kept in stdout.txt beside the run folder."""
    out = tmp_path_factory.mktemp("demo") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--out", str(out), *TINY]) == 0
    (out.parent / "stdout.txt").write_text(printed.getvalue())
    return out


def test_demo_writes_a_complete_run_folder(demo_run):
    stdout = (demo_run.parent / "stdout.txt").read_text().strip().splitlines()
    assert stdout[-1] == str(demo_run)  # the last line printed is the run folder
    assert stdout[-2] == str(demo_run / "report.html")  # the line before it, the report
    page = (demo_run / "report.html").read_text()
    assert "Before and after GRPO" in page and "Reward-hacking watch" in page
    assert (demo_run / "plots" / "headline.png").stat().st_size > 0

    summary = json.loads((demo_run / "summary.json").read_text())
    for key in ["pretrain_accuracy", "final_accuracy", "final_accuracy_no_think",
                "pretrain_accuracy_no_think", "grpo_seconds_per_step", "wall_seconds"]:  # fmt: skip
        assert key in summary, key
    for key in ["pretrain_accuracy", "final_accuracy", "final_accuracy_no_think"]:
        assert 0.0 <= summary[key] <= 1.0

    lines = [json.loads(line) for line in (demo_run / "metrics.jsonl").read_text().splitlines()]
    grpo = [line for line in lines if line["phase"] == "grpo"]
    assert [line["step"] for line in grpo] == [1, 2, 3]
    for key in ["reward", "accuracy", "format_rate", "kl", "entropy", "clip_fraction",
                "response_length", "step_seconds", "tokens_per_second", "hacking/any",
                "hacking/copied_answer"]:  # fmt: skip
        assert key in grpo[0], key
    assert [line["step"] for line in lines if line["phase"] == "eval"] == [0, 2, 3]

    assert load_config(demo_run / "config.toml").grpo.steps == 3
    assert list((demo_run / "tensorboard").iterdir())
    assert (demo_run / "plots" / "grpo.png").stat().st_size > 0
    assert (demo_run / "samples" / "after-grpo.jsonl").exists()
    assert (demo_run / "checkpoint" / "model.safetensors").exists()
    assert (demo_run / "pretrained" / "model.safetensors").exists()


def test_eval_reproduces_the_final_numbers(demo_run, capsys):
    summary = json.loads((demo_run / "summary.json").read_text())
    assert main(["eval", str(demo_run)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["accuracy"] == summary["final_accuracy"]
    assert metrics["accuracy_no_think"] == summary["final_accuracy_no_think"]


def test_same_seed_same_numbers(demo_run, tmp_path, capsys):
    again = tmp_path / "again"
    assert main(["demo", "--out", str(again), *TINY]) == 0
    first = [json.loads(x) for x in (demo_run / "metrics.jsonl").read_text().splitlines()]
    second = [json.loads(x) for x in (again / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if not depends_on_clock(k)} for r in rows]  # noqa: E731
    assert strip(first) == strip(second)
