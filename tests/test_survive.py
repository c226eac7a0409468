"""Runs that survive (issue 6): exact resume after a kill, signals, keep-N checkpoints,
verifier faults, NaN rewards and losses, a full disk, and bad input.

Every run is the smoke recipe at a tiny size with 1 thread (bitwise reproducible), without
plots (matplotlib was half of each run). Runs that are SIGKILLed are subprocesses started
through `faults.slow_cli`, which adds a sleep to every step (no number changes) so that the
kill lands inside the phase under test; everything else runs in-process through
`rlvr.cli.main`, SIGINT/SIGTERM included (sent to this process during a GRPO step). Injected
verifiers and reward functions live in tests/faults.py, which worker processes import.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import faults
import pytest
import torch
from safetensors.torch import load_file

import rlvr.checkpoint
import rlvr.hf
import rlvr.learning.learner
import rlvr.learning.pretrain
import rlvr.loop
import rlvr.sampling.sampler
from rlvr.checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_trainer_state,
    prune_checkpoints,
)
from rlvr.cli import main
from rlvr.config import ConfigError, load_config
from rlvr.report import depends_on_clock
from rlvr.tasks import TASKS

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SMOKE = str(ROOT / "rlvr" / "recipes" / "smoke.toml")
PRETRAIN_STEPS, GRPO_STEPS = 20, 6
TINY = [
    "--pretrain.steps", str(PRETRAIN_STEPS), "--grpo.steps", str(GRPO_STEPS),
    "--eval.num_problems", "8", "--eval.num_samples", "0", "--grpo.eval_every", "3",
    "--checkpoint.every", "2", "--threads", "1",
    # a reward that varies within a group, so that GRPO really changes the weights
    "--reward.functions", '{"faults:length_reward" = 0.5}',
]  # fmt: skip
SHORT = ["--grpo.steps", "3", "--checkpoint.every", "0"]  # for the in-loop fault tests
PATIENCE_S = 180  # polling limit: generous, the machine may be loaded
# picks the kill and signal points; seeded, so that a failure replays (SURVIVE_SEED=n tries others)
RNG = random.Random(int(os.environ.get("SURVIVE_SEED", "6")))


# ----------------------------------------------------------------------------- helpers


def train(out: Path, *extra: str) -> int:
    return main(["train", SMOKE, "--out", str(out), *TINY, *extra])


def resume(out: Path, *extra: str) -> int:
    return main(["train", "--resume", str(out), *extra])


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def grpo_records(run_dir: Path) -> list[dict]:
    return [r for r in records(run_dir) if r["phase"] == "grpo"]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not depends_on_clock(k)} for r in rows]


def assert_same_run(run: Path, baseline: Path) -> None:
    """The same metrics on every non-timing field, bitwise the same final weights, and the
    resumed run's final folder and checkpoints load (their configs name the real model)."""
    assert without_timing(records(run)) == without_timing(records(baseline))
    final = "checkpoint/model.safetensors"
    assert (run / final).read_bytes() == (baseline / final).read_bytes()
    assert not list((run / "checkpoints").glob(".*")), "a killed save's temporary folder is left"
    for folder in [run / "checkpoint", *list_checkpoints(run)]:
        model, tokenizer, cfg, _ = load_checkpoint(folder)
        assert cfg.model == model.config and cfg.model.vocab_size == tokenizer.vocab_size


def all_finite(rows: list[dict]) -> bool:
    numbers = [v for r in rows for v in r.values() if isinstance(v, float)]
    return all(math.isfinite(v) for v in numbers)


def one_error_line(err: str) -> str:
    """The single `rlvr: ...` line of a failed run's stderr (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("rlvr:")]
    assert len(lines) == 1, err
    return lines[0]


def proc_info(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, command line) of a process, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0], cmdline.replace(b"\0", b" ").decode(errors="replace")


def alive(pid: int) -> bool:
    info = proc_info(pid)
    return info is not None and info[1] != "Z"


def pool_workers(parent: int) -> list[int]:
    """Live verifier worker processes started by `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = proc_info(int(entry.name))
            if info and info[0] == parent and info[1] != "Z" and "rlvr.verifiers.pool" in info[2]:
                found.append(int(entry.name))
    return found


def wait_until(condition, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before {what}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def last_grpo_step(run_dir: Path) -> int:
    """The newest GRPO step in metrics.jsonl (0 before GRPO), tolerating a half-written line."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    step = 0
    for line in path.read_text().splitlines():
        if line.startswith('{"phase": "grpo"'):
            try:
                step = max(step, json.loads(line)["step"])
            except json.JSONDecodeError:
                pass
    return step


def start_run(out: Path, pretrain_sleep: float = 0.0, grpo_sleep: float = 0.0):
    """`rlvr train` in a subprocess (through faults.slow_cli); returns it and its stderr file."""
    env = dict(os.environ, FAULTS_PRETRAIN_SLEEP=str(pretrain_sleep),
               FAULTS_GRPO_SLEEP=str(grpo_sleep))  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TESTS), str(ROOT), env.get("PYTHONPATH")) if p
    )
    log = out.with_name(out.name + ".stderr")
    with open(log, "w") as stderr:  # a file, not a pipe: a full pipe would stall the run
        proc = subprocess.Popen(
            [sys.executable, "-c", "import faults; faults.slow_cli()",
             "train", SMOKE, "--out", str(out), *TINY],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    return proc, log


def assert_workers_exit(pids: list[int]) -> None:
    """Verifier workers of a killed run exit by themselves (their stdin closes)."""
    wait_until(lambda: not any(alive(pid) for pid in pids), "the orphaned workers to exit")


def no_plots(run_dir: Path) -> list[Path]:
    return []  # matplotlib took half of each tiny run; plots are not what these tests check


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setattr(rlvr.loop, "plot_metrics", no_plots)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """Run A: the tiny run, never interrupted."""
    out = tmp_path_factory.mktemp("survive") / "A"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rlvr.loop, "plot_metrics", no_plots)
        assert train(out) == 0
    before = load_file(out / "pretrained" / "model.safetensors")
    after = load_file(out / "checkpoint" / "model.safetensors")
    # GRPO moved the weights, so that "bitwise equal after a resume" says something
    assert any(not torch.equal(before[k], after[k]) for k in before)
    return out


@pytest.fixture
def episodes(monkeypatch) -> list[list]:
    """The scored episodes of every GRPO step of an in-process run, in step order."""
    seen: list[list] = []
    real = rlvr.sampling.sampler.rollout

    def rollout(*args, **kwargs):
        result = real(*args, **kwargs)
        seen.append(result)
        return result

    monkeypatch.setattr(rlvr.sampling.sampler, "rollout", rollout)
    return seen


# ----------------------------------------------------------------------------- 1. SIGKILL


def test_sigkill_during_grpo_resumes_exactly(baseline, tmp_path):
    kill_after = RNG.randint(1, GRPO_STEPS - 2)  # this step's line, then somewhere in the next
    out = tmp_path / "B"
    proc, log = start_run(out, grpo_sleep=0.15)
    wait_until(lambda: last_grpo_step(out) >= kill_after, f"GRPO step {kill_after}", proc, log)
    time.sleep(RNG.uniform(0.0, 0.15))
    workers = pool_workers(proc.pid)
    assert workers, "the run has verifier workers"
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "checkpoint").exists(), "the kill came after the run finished"
    assert_workers_exit(workers)

    assert resume(out) == 0
    assert_same_run(out, baseline)


def test_sigkill_during_pretraining_resumes_exactly(baseline, tmp_path):
    kill_after = 2 * RNG.randint(1, 6)  # a pretraining checkpoint, then somewhere after it
    out = tmp_path / "B"
    proc, log = start_run(out, pretrain_sleep=0.08)
    first = checkpoint_dir(out, "pretrain", kill_after)
    wait_until(first.exists, f"checkpoint {first.name}", proc, log)
    time.sleep(RNG.uniform(0.0, 0.2))
    proc.kill()
    proc.wait()
    last = latest_checkpoint(out)
    assert last is not None and last.name.startswith("pretrain-")
    assert load_trainer_state(last)["step"] < PRETRAIN_STEPS, "the kill came after pretraining"

    assert resume(out) == 0
    assert_same_run(out, baseline)


# ----------------------------------------------------------------------------- 2. signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_at_a_step_boundary_and_resumes_exactly(
    baseline, tmp_path, monkeypatch, capsys, sig
):
    """The signal is real (sent to this process while a GRPO step samples); the run is
    in-process only to spare a subprocess start."""
    signal_in = RNG.randint(2, GRPO_STEPS - 1)  # the step during which the signal arrives
    real, calls = rlvr.sampling.sampler.rollout, []

    def rollout(*args, **kwargs):
        calls.append(1)
        if len(calls) == signal_in:
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(rlvr.sampling.sampler, "rollout", rollout)
    handler = signal.getsignal(sig)
    out = tmp_path / "B"
    assert train(out) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if f"rlvr train --resume {out}`" in line]) == 1
    assert signal.getsignal(sig) == handler  # the run's own handler is gone again

    assert last_grpo_step(out) == signal_in  # the step in progress finished, no other began
    last = latest_checkpoint(out)
    assert last == checkpoint_dir(out, "grpo", signal_in)  # written at that boundary
    assert load_trainer_state(last)["step"] == signal_in
    assert not (out / "checkpoint").exists()

    monkeypatch.undo()
    assert resume(out) == 0
    assert_same_run(out, baseline)


# ----------------------------------------------------------------------------- 3. keep-N


def test_only_the_newest_checkpoints_are_kept(baseline):
    kept = ["grpo-000004", "grpo-000006"]  # checkpoint.keep = 2 of the smoke recipe
    assert sorted(os.listdir(baseline / "checkpoints")) == kept  # nothing else is left over
    assert [p.name for p in list_checkpoints(baseline)] == kept
    assert latest_checkpoint(baseline) == baseline / "checkpoints" / "grpo-000006"


def test_latest_checkpoint_skips_incomplete_folders(tmp_path):
    def make(name: str, complete: bool = True) -> None:
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        if complete:
            (tmp_path / "checkpoints" / name / "trainer_state.pt").write_bytes(b"")

    for name in ["pretrain-000150", "grpo-000002", "grpo-000010", "grpo-000004"]:
        make(name)
    make(".grpo-000012.tmp-123")  # a save that was killed before its rename
    make(".grpo-000010.old-123")  # an overwritten checkpoint a kill left behind
    make("grpo-000014", complete=False)  # no trainer_state.pt: not a finished save
    make("grpo-latest")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "grpo-000010"
    prune_checkpoints(tmp_path, 2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["grpo-000004", "grpo-000010"]
    assert (tmp_path / "checkpoints" / ".grpo-000012.tmp-123").exists()  # not ours to delete


def test_resume_ignores_leftover_and_incomplete_checkpoints(baseline, tmp_path):
    out = tmp_path / "B"
    shutil.copytree(baseline, out)
    folder = out / "checkpoints"
    # the save of grpo-000006 was killed before its rename; grpo-000008 never got its state
    (folder / "grpo-000006").rename(folder / ".grpo-000006.tmp-123")
    shutil.copytree(folder / ".grpo-000006.tmp-123", folder / "grpo-000008")
    (folder / "grpo-000008" / "trainer_state.pt").unlink()
    shutil.rmtree(out / "checkpoint")

    assert resume(out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from"] == str(folder / "grpo-000004")
    assert_same_run(out, baseline)


# ----------------------------------------------------------------------------- 4. verifier faults


def test_verifier_hangs_and_crashes_score_zero_and_are_counted(tmp_path, monkeypatch, episodes):
    monkeypatch.setitem(TASKS, "faulty", faults.FaultyArithmeticTask)
    pools, killed = [], []
    real_open_pool = rlvr.loop.open_pool

    def open_pool(*args, **kwargs):
        pools.append(real_open_pool(*args, **kwargs))
        return pools[-1]

    record_rollout = rlvr.sampling.sampler.rollout

    def rollout(*args, **kwargs):
        if len(episodes) == 1:  # before GRPO step 2: a worker is killed from outside
            victim = pool_workers(os.getpid())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            wait_until(lambda: not alive(victim) and len(pool_workers(os.getpid())) == 2,
                       "the killed worker to be replaced")  # fmt: skip
        return record_rollout(*args, **kwargs)

    monkeypatch.setattr(rlvr.loop, "open_pool", open_pool)
    monkeypatch.setattr(rlvr.sampling.sampler, "rollout", rollout)
    out = tmp_path / "run"
    assert train(out, *SHORT, "--task.name", "faulty", "--reward.functions", "{}",
                 "--reward.timeout_s", "1", "--reward.workers", "2",
                 "--eval.num_problems", "4") == 0  # fmt: skip
    assert (out / "summary.json").exists()

    steps = grpo_records(out)
    assert [r["step"] for r in steps] == [1, 2, 3] and len(episodes) == 3
    kinds: Counter = Counter()
    for record, batch in zip(steps, episodes):
        expected = {"hang": "timeout", "raise": "error", "exit": "error"}
        for ep in batch:
            kind = faults.fault_kind(ep.response, ep.problem)
            kinds[kind] += 1
            if kind is None:
                assert ep.verdict.status not in ("timeout", "error"), ep.verdict
            else:
                assert ep.verdict.status == expected[kind], (kind, ep.verdict)
                assert ep.reward == 0.0 and ep.parts == {"accuracy": 0.0, "format": 0.0}
        failures = sum(faults.fault_kind(ep.response, ep.problem) is not None for ep in batch)
        assert record["verifier_failures"] == failures
    assert kinds["hang"] and kinds["raise"] and kinds["exit"], kinds  # every fault was injected
    # every timeout and every dead worker was replaced, the one killed from outside too
    assert pools[0].num_replaced >= kinds["hang"] + kinds["exit"] + 1
    assert killed and not alive(killed[0])


# ----------------------------------------------------------------------------- 5. NaN rewards


@pytest.mark.parametrize("fn", ["nan_reward", "inf_reward"])
def test_non_finite_rewards_score_zero_and_are_counted(tmp_path, episodes, fn):
    out = tmp_path / "run"
    name = f"faults:{fn}"
    assert train(out, *SHORT, "--reward.functions", f'{{"{name}" = 1.0}}') == 0
    assert all_finite(records(out))  # no NaN in any loss, reward or statistic

    expected = []
    for batch in episodes:
        expected.append(sum(faults.is_nan_item(ep.response, ep.problem) for ep in batch))
        for ep in batch:
            assert math.isfinite(ep.reward)
            if faults.is_nan_item(ep.response, ep.problem):
                assert ep.parts[name] == 0.0 and ep.bad_rewards == 1
            else:
                assert ep.parts[name] == faults.length_reward(ep.response, ep.problem)
                assert ep.bad_rewards == 0
    assert sum(expected) > 0
    assert [r["bad_rewards"] for r in grpo_records(out)] == expected


# ----------------------------------------------------------------------------- 6. NaN losses


def nan_loss(monkeypatch, calls_to_spoil) -> None:
    """Make the learner's policy loss NaN on the calls whose index (from 0) passes the test."""
    name = "policy_loss"
    real = getattr(rlvr.learning.learner, name)
    calls = []

    def loss_fn(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        calls.append(1)
        return (loss * math.nan if calls_to_spoil(len(calls) - 1) else loss), stats

    monkeypatch.setattr(rlvr.learning.learner, name, loss_fn)


def test_one_nan_loss_skips_that_update(tmp_path, monkeypatch):
    nan_loss(monkeypatch, lambda i: i == 0)
    out = tmp_path / "run"
    assert train(out, *SHORT) == 0
    steps = grpo_records(out)
    assert [r["skipped_updates"] for r in steps] == [1, 0, 0]
    assert all_finite(records(out))
    assert (out / "checkpoint" / "model.safetensors").exists()


def test_one_nan_pretraining_loss_skips_that_step(tmp_path, monkeypatch):
    real = torch.nn.functional.cross_entropy
    calls = []

    def cross_entropy(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * math.nan if len(calls) == 1 else loss

    monkeypatch.setattr(rlvr.learning.pretrain.F, "cross_entropy", cross_entropy)
    out = tmp_path / "run"
    assert train(out, *SHORT) == 0
    pretrain = [r for r in records(out) if r["phase"] == "pretrain"]
    assert [(r["step"], r["skipped_updates"]) for r in pretrain] == [(PRETRAIN_STEPS, 1)]
    assert all_finite(records(out))


def test_nan_loss_every_step_stops_the_run(tmp_path, monkeypatch, capsys):
    nan_loss(monkeypatch, lambda i: True)
    out = tmp_path / "run"
    assert train(out) == 1  # max_bad_steps = 3
    line = one_error_line(capsys.readouterr().err)
    assert "NaN" in line and "rlvr train --resume" in line
    steps = grpo_records(out)
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(r["skipped_updates"] == 2 for r in steps)  # num_iterations = 2 updates a step
    assert not (out / "checkpoint").exists()

    last = latest_checkpoint(out)
    assert last == checkpoint_dir(out, "grpo", 2) and str(last) in line
    model, _, _, state = load_checkpoint(last)
    assert state["step"] == 2 and load_trainer_state(last)["step"] == 2
    weights = model.state_dict()
    assert all(torch.isfinite(w).all() for w in weights.values())
    pretrained, *_ = load_checkpoint(out / "pretrained")  # every update was skipped
    assert all(torch.equal(w, pretrained.state_dict()[k]) for k, w in weights.items())


def test_nan_stop_message_names_the_run_folder(tmp_path, monkeypatch, capsys):
    nan_loss(monkeypatch, lambda i: True)
    out = tmp_path / "run"
    assert train(out, *SHORT, "--max_bad_steps", "1") == 1
    assert f"rlvr train --resume {out}`" in one_error_line(capsys.readouterr().err)


# ----------------------------------------------------------------------------- 7. full disk


def full_disk(monkeypatch, folder_name: str) -> None:
    """safetensors' save_file fails with ENOSPC while writing `folder_name` (as the checkpoint
    code calls it: from rlvr.checkpoint, or rlvr.hf where the Hugging Face layout is written)."""
    patched = [m for m in (rlvr.checkpoint, rlvr.hf) if hasattr(m, "save_file")]
    assert patched, "no save_file to patch"
    for module in patched:
        real = module.save_file

        def save_file(tensors, filename, *args, _real=real, **kwargs):
            if Path(filename).parent.name.startswith(f".{folder_name}.tmp"):
                raise OSError(errno.ENOSPC, "No space left on device")
            return _real(tensors, filename, *args, **kwargs)

        monkeypatch.setattr(module, "save_file", save_file)


def test_full_disk_while_saving_a_checkpoint(baseline, tmp_path, monkeypatch, capsys):
    full_disk(monkeypatch, "grpo-000004")
    out = tmp_path / "run"
    assert train(out) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(checkpoint_dir(out, "grpo", 4)) in line and "No space left" in line
    assert f"rlvr train --resume {out}" in line

    previous = checkpoint_dir(out, "grpo", 2)
    assert sorted(os.listdir(out / "checkpoints")) == ["grpo-000002", "pretrain-000020"]
    assert latest_checkpoint(out) == previous
    _, _, _, state = load_checkpoint(previous)
    assert state["step"] == 2 and load_trainer_state(previous)["step"] == 2

    monkeypatch.undo()  # space was freed
    assert resume(out) == 0
    assert_same_run(out, baseline)


@pytest.mark.parametrize("folder", ["pretrained", "checkpoint"])
def test_full_disk_while_saving_a_final_folder(tmp_path, monkeypatch, capsys, folder):
    full_disk(monkeypatch, folder)
    out = tmp_path / "run"
    assert train(out, *SHORT) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(out / folder) in line and "No space left" in line


# ----------------------------------------------------------------------------- 8. bad input


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def dataset_args(path: Path, baseline: Path) -> list[str]:
    return ["--task.name", "dataset", "--task.options", f'{{path = "{path}"}}',
            "--pretrain.steps", "0", "--init_from", str(baseline / "checkpoint")]  # fmt: skip


BAD_INPUTS = {
    # case: (argv from (tmp_path, baseline), words the message must hold)
    "run folder already holds a run": (
        lambda t, b: ["train", SMOKE, "--out", str(write(t / "run" / "config.toml", "").parent)],
        ["already holds a run", "--resume"],
    ),
    "resume a folder that is not a run": (
        lambda t, b: ["train", "--resume", str(write(t / "x" / "notes.txt", "").parent)],
        ["not a run folder"],
    ),
    "resume a folder that does not exist": (
        lambda t, b: ["train", "--resume", str(t / "missing")],
        ["not a run folder"],
    ),
    "init_from is not a checkpoint": (
        lambda t, b: [
            "train",
            SMOKE,
            "--out",
            str(t / "run"),
            "--init_from",
            str(write(t / "x" / "notes.txt", "").parent),
        ],  # fmt: skip
        ["holds no checkpoint"],
    ),
    "unknown key in the config file": (
        lambda t, b: [
            "train",
            str(write(t / "bad.toml", "[grpo]\nstepz = 3\n")),
            "--out",
            str(t / "run"),
        ],  # fmt: skip
        ["stepz"],
    ),
    "unknown key on the command line": (
        lambda t, b: ["train", SMOKE, "--out", str(t / "run"), "--grpo.stepz", "3"],
        ["grpo.stepz"],
    ),
    "dataset with a malformed line": (
        lambda t, b: [
            "train",
            SMOKE,
            "--out",
            str(t / "run"),
            *dataset_args(
                write(t / "data.jsonl", '{"prompt": "1+2=", "answer": "3"}\n{"prompt": "2+\n'), b
            ),
        ],
        ["data.jsonl:2"],
    ),
    "dataset with an empty file": (
        lambda t, b: [
            "train",
            SMOKE,
            "--out",
            str(t / "run"),
            *dataset_args(write(t / "data.jsonl", ""), b),
        ],  # fmt: skip
        ["data.jsonl", "empty"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_code_2(baseline, tmp_path, capsys, case):
    make_argv, words = BAD_INPUTS[case]
    capsys.readouterr()
    assert main(make_argv(tmp_path, baseline)) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlvr: "), captured.err
    for word in words:
        assert word in lines[0], lines[0]
    if case not in ("run folder already holds a run", "init_from is not a checkpoint"):
        assert not (tmp_path / "run" / "metrics.jsonl").exists()  # stopped before any work

    with pytest.raises(ConfigError):  # --debug shows the traceback instead
        main(["--debug", *make_argv(tmp_path / "debug", baseline)])


def test_a_bad_init_from_leaves_no_run_behind(baseline, tmp_path):
    out, bad = tmp_path / "run", tmp_path / "not-a-checkpoint"
    bad.mkdir()
    argv = ["train", SMOKE, "--out", str(out), *TINY, *SHORT, "--pretrain.steps", "0"]
    assert main([*argv, "--init_from", str(bad)]) == 2
    assert main([*argv, "--init_from", str(baseline / "checkpoint")]) == 0  # fixed: it runs
    # what it wrote loads, its configs naming the model it started from
    model, _, cfg, _ = load_checkpoint(out / "checkpoint")
    assert cfg.model == model.config == load_checkpoint(baseline / "checkpoint")[0].config
    assert load_config(out / "config.toml").model == model.config


def tokenizer_without_think(baseline: Path, folder: Path, where: tuple[str, ...]) -> Path:
    shutil.copytree(baseline / "checkpoint", folder)
    path = folder / "rlvr_tokenizer.json"
    data = json.loads(path.read_text())
    for key in where:
        data[key] = [t for t in data[key] if t != "<think>"]
    path.write_text(json.dumps(data))
    return folder


def test_tokenizer_without_the_format_tokens_is_bad_input(baseline, tmp_path, capsys):
    model = tokenizer_without_think(baseline, tmp_path / "model", ("special_tokens", "tokens"))
    argv = ["train", SMOKE, "--out", str(tmp_path / "run"), *TINY, *SHORT,
            "--pretrain.steps", "0", "--init_from", str(model)]  # fmt: skip
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "rlvr_tokenizer.json" in line and "<think>" in line


def test_tokenizer_whose_token_list_lacks_think_is_bad_input(baseline, tmp_path, capsys):
    model = tokenizer_without_think(baseline, tmp_path / "model", ("tokens",))
    argv = ["train", SMOKE, "--out", str(tmp_path / "run"), *TINY, *SHORT,
            "--pretrain.steps", "0", "--init_from", str(model)]  # fmt: skip
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "rlvr_tokenizer.json" in line
