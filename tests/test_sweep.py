"""`rlvr sweep`: a tiny grid end to end through the CLI, a killed sweep that resumes without
rerunning finished runs, FLOP counts against hand-computed numbers, the fitted curves, and bad
sweep files (one sentence, exit code 2).

The runs are the smoke recipe at a tiny size with 1 thread, no plots of their own, and
verification in-process (reward.workers = 0) so that each run takes a second or two.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlvr.cli import main
from rlvr.config import load_config
from rlvr.sweep import count_flops, fit_curve, load_sweep

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

TINY_SWEEP = """
base = "smoke"

[set]
threads = 1
plots = false
"grpo.steps" = 2
"grpo.eval_every" = 0
"eval.num_problems" = 12
"eval.num_samples" = 0
"reward.workers" = 0
checkpoint = {{ every = 4, keep = 2 }}

[grid]
model = [
  {{ hidden_size = 32, intermediate_size = 64, num_hidden_layers = 1, num_attention_heads = 2, num_key_value_heads = 1 }},
  {{ hidden_size = 48, intermediate_size = 96, num_hidden_layers = 2, num_attention_heads = 2, num_key_value_heads = 1 }},
]
"pretrain.steps" = [{steps}]
"""


def write_sweep(folder: Path, steps: str = "8, 16", text: str | None = None) -> Path:
    path = folder / "tiny.toml"
    path.write_text(text if text is not None else TINY_SWEEP.format(steps=steps))
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path, capsys):
    sweep_file = write_sweep(tmp_path)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--out", str(out)]) == 0

    rows = read_csv(out / "sweep.csv")
    assert len(rows) == 4  # 2 model sizes x 2 pretraining budgets, in grid order
    assert [r["pretrain.steps"] for r in rows] == ["8", "16", "8", "16"]
    assert [r["model.hidden_size"] for r in rows] == ["32", "32", "48", "48"]
    small, large = int(rows[0]["parameters"]), int(rows[2]["parameters"])
    assert large > small > 0
    for row in rows:
        params, tokens = int(row["parameters"]), int(row["pretrain_tokens"])
        assert tokens > 0
        assert float(row["pretrain_flops"]) == 6 * params * tokens
        assert float(row["total_flops"]) > float(row["pretrain_flops"])  # GRPO counted too
        for key in ("accuracy", "think", "no_think"):
            for when in ("before", "after"):
                assert 0.0 <= float(row[f"{key}_{when}"]) <= 1.0
        gain = float(row["accuracy_after"]) - float(row["accuracy_before"])
        assert float(row["rl_gain"]) == pytest.approx(gain)
    # twice the pretraining steps, about twice the tokens
    assert 1.6 < int(rows[1]["pretrain_tokens"]) / int(rows[0]["pretrain_tokens"]) < 2.4

    table = (out / "sweep.md").read_text()
    assert table.startswith("| name | model.hidden_size | model.intermediate_size |")
    assert "Fitted curves" in table
    for png in ("scaling_params.png", "scaling_compute.png"):
        assert (out / png).stat().st_size > 10_000
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 4 and all((r / "sweep_result.json").is_file() for r in runs)
    assert load_config(runs[0] / "config.toml").pretrain.steps in (8, 16)
    printed = capsys.readouterr().out
    assert "| name |" in printed and "Fitted curves" in printed


def start_sweep(sweep_file: Path, out: Path, pretrain_sleep: float) -> subprocess.Popen:
    """`rlvr sweep` in a subprocess whose pretraining steps sleep (no number changes)."""
    env = dict(os.environ, FAULTS_PRETRAIN_SLEEP=str(pretrain_sleep))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TESTS), str(ROOT), env.get("PYTHONPATH")) if p
    )
    return subprocess.Popen(
        [sys.executable, "-c", "import faults; faults.slow_cli()",
         "sweep", str(sweep_file), "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_finished_runs(tmp_path, capsys):
    sweep_file = write_sweep(tmp_path, steps="16")
    out = tmp_path / "out"
    first, second = [run.name for run in load_sweep(sweep_file)[0]]
    first_dir, second_dir = out / "runs" / first, out / "runs" / second

    proc = start_sweep(sweep_file, out, pretrain_sleep=0.25)
    # kill it in the second run's pretraining, after that run's first checkpoint
    wait_for(lambda: (second_dir / "checkpoints" / "pretrain-000004").is_dir(), proc,
             "the second run's first checkpoint")  # fmt: skip
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (first_dir / "sweep_result.json").is_file()
    assert not (second_dir / "sweep_result.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in first_dir.rglob("*") if p.is_file()}

    assert main(["sweep", str(sweep_file), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{first}: finished earlier" in err
    assert "resuming from" in err and "pretrain-00000" in err  # the second run, not restarted
    # nothing of the finished run was touched
    assert {p: p.stat().st_mtime_ns for p in first_dir.rglob("*") if p.is_file()} == finished
    rows = read_csv(out / "sweep.csv")
    assert [r["name"] for r in rows] == [first, second]
    # the resumed run logged each pretraining step once, up to the last
    steps = [json.loads(line) for line in (second_dir / "metrics.jsonl").read_text().splitlines()]
    pretrain = [r["step"] for r in steps if r["phase"] == "pretrain"]
    assert pretrain == sorted(set(pretrain)) and pretrain[-1] == 16

    # a third start finds every run finished and reruns nothing
    assert main(["sweep", str(sweep_file), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{first}: finished earlier" in err and f"{second}: finished earlier" in err


def test_flop_counts_match_hand_computed_numbers():
    cfg = load_config(None, ["--grpo.group_size", "8", "--grpo.num_iterations", "2",
                             "--grpo.beta", "0.04"])  # fmt: skip
    # one GRPO step: 32 sequences (4 prompts x 8) of 10 completion tokens, prompts 12 tokens
    steps = [{"sampled_tokens": 320, "response_length": 10.0, "dropped_fraction": 0.0}]
    flops = count_flops(1000, 5000, steps, prompt_tokens=12.0, cfg=cfg)
    assert flops["pretrain_flops"] == 6 * 1000 * 5000  # 3.0e7
    # sampling: 4 prompts prefilled once each + 320 completion tokens, forward only
    assert flops["rl_sample_flops"] == 2 * 1000 * (320 + 4 * 12)  # 736,000
    # learner: 32 rows of 12 + 10 tokens, 2 passes forward and backward + 1 reference forward
    assert flops["rl_train_flops"] == (6 * 2 + 2) * 1000 * (320 + 32 * 12)  # 9,856,000
    assert flops["total_flops"] == 30_000_000 + 736_000 + 9_856_000

    # no reference (beta 0), one pass, half the groups dropped by dynamic sampling
    cfg = load_config(None, ["--grpo.group_size", "8", "--grpo.num_iterations", "1",
                             "--grpo.beta", "0"])  # fmt: skip
    steps = [{"sampled_tokens": 320, "response_length": 10.0, "dropped_fraction": 0.5}]
    flops = count_flops(1000, 0, steps, prompt_tokens=12.0, cfg=cfg)
    assert flops["rl_train_flops"] == 6 * 1000 * 0.5 * (320 + 32 * 12)  # 2,112,000
    assert flops["rl_sample_flops"] == 736_000 and flops["pretrain_flops"] == 0


def test_fit_recovers_a_power_law_and_declines_what_it_cannot_fit():
    xs = [1e3, 1e4, 1e5, 1e6]
    a, b, r2 = fit_curve(xs, [1 - 2.0 * x**-0.3 for x in xs], saturating=True)
    assert a == pytest.approx(2.0, rel=1e-6) and b == pytest.approx(-0.3, rel=1e-6)
    assert r2 == pytest.approx(1.0)
    a, b, r2 = fit_curve(xs, [0.5 * x**0.2 for x in xs], saturating=False)
    assert (a, b) == (pytest.approx(0.5), pytest.approx(0.2)) and r2 == pytest.approx(1.0)
    noisy = fit_curve(xs, [0.2, 0.6, 0.3, 0.7], saturating=True)
    assert noisy is not None and noisy[2] < 0.5  # a poor fit says so
    assert fit_curve(xs[:2], [0.1, 0.2], saturating=True) is None  # too few points
    assert fit_curve(xs, [0.1, -0.1, 0.2, 0.3], saturating=False) is None  # not positive
    assert fit_curve(xs, [0.5] * 4, saturating=True) is None  # constant


@pytest.mark.parametrize(
    "text, words",
    [
        ('base = "smoke"\n[grid]\n"pretrain.stepz" = [1, 2]\n', ["pretrain.stepz", "steps"]),
        ('base = "smoke"\n[grid]\n"pretrain.steps" = []\n', ["pretrain.steps", "non-empty"]),
        ('base = "smoke"\n[grid]\n', ["no grid"]),
        ('base = "smoke"\n', ["no grid"]),
        ('base = "smoke"\ngrids = {}\n[grid]\nseed = [1]\n', ["grids", "base, out, set"]),
        ('base = "smoke"\n[set]\n"grpo.betta" = 1\n[grid]\nseed = [1]\n', ["grpo.betta"]),
        ('base = "nope"\n[grid]\nseed = [1]\n', ["nope", "demo"]),
        ('base = "smoke"\n[grid]\nseed = 3\n', ["seed", "list"]),
        ('base = "smoke"\n[grid]\n"grpo.group_size" = [1]\n', ["grpo.group_size"]),
        ('base = "smoke"\n[grid]\nrun_dir = ["a"]\n', ["run_dir"]),
        ("[grid\n", ["not valid"]),
    ],
)
def test_bad_sweep_files_get_one_sentence_and_exit_2(tmp_path, capsys, text, words):
    sweep_file = write_sweep(tmp_path, text=text)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlvr: ") and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    assert not out.exists()  # refused before any work


def test_missing_sweep_file_and_stray_arguments(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    sweep_file = write_sweep(tmp_path)
    assert main(["sweep", str(sweep_file), "--grpo.steps", "3"]) == 2
    assert "[set]" in capsys.readouterr().err
