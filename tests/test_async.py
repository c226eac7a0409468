"""Asynchronous GRPO (grpo.max_staleness > 0): the sampler in a process of its own, a fixed
number of policy versions behind the learner, and still exact.

- the process arrangement at staleness 0 gives the in-process loop's numbers bitwise;
- an asynchronous run is deterministic, and no episode is staler than max_staleness;
- SIGKILL at a random GRPO step, then --resume: the same metrics and weights as a run never
  stopped (the checkpoint holds the steps sampled ahead);
- a sampler process killed from outside is restarted and the run comes out the same;
- bad settings stop before any work with one sentence.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from test_survive import alive, last_grpo_step, proc_info, records, wait_until

import rlvr.loop
from rlvr.checkpoint import latest_checkpoint, load_trainer_state
from rlvr.cli import main
from rlvr.errors import ConfigError
from rlvr.report import depends_on_clock
from rlvr.sampling.process import SamplerProcess, check_async

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SMOKE = str(ROOT / "rlvr" / "recipes" / "smoke.toml")
GRPO_STEPS, STALENESS = 6, 2
TINY = [
    "--pretrain.steps", "20", "--grpo.steps", str(GRPO_STEPS),
    "--eval.num_problems", "8", "--eval.num_samples", "0", "--grpo.eval_every", "3",
    "--checkpoint.every", "2", "--threads", "1", "--sampler.threads", "1",
    "--learner.threads", "1", "--plots", "false",
    # a reward that varies within a group (so the weights move), and can be slowed down
    "--reward.functions", '{"faults:slow_length_reward" = 0.5}',
]  # fmt: skip
ASYNC = ["--grpo.max_staleness", str(STALENESS)]
RNG = random.Random(int(os.environ.get("SURVIVE_SEED", "6")))


def train(out: Path, *extra: str) -> int:
    return main(["train", SMOKE, "--out", str(out), *TINY, *extra])


def numbers(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing-dependent fields."""
    return [{k: v for k, v in r.items() if not depends_on_clock(k)} for r in records(run_dir)]


def assert_same(run: Path, baseline: Path) -> None:
    assert numbers(run) == numbers(baseline)
    final = "checkpoint/model.safetensors"
    assert (run / final).read_bytes() == (baseline / final).read_bytes()


def sampler_children(parent: int) -> list[int]:
    """Live sampler processes (multiprocessing spawn children) of `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = proc_info(int(entry.name))
            if info and info[0] == parent and info[1] != "Z" and "multiprocessing" in info[2]:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def async_run(tmp_path_factory) -> Path:
    """An asynchronous tiny run (staleness 2), never interrupted."""
    out = tmp_path_factory.mktemp("async") / "A"
    assert train(out, *ASYNC) == 0
    return out


def test_async_run_is_deterministic_and_respects_the_staleness_bound(async_run, tmp_path):
    steps = [r for r in records(async_run) if r["phase"] == "grpo"]
    assert [r["step"] for r in steps] == list(range(1, GRPO_STEPS + 1))
    for r in steps:  # version v(n) = max(0, n - 1 - k): never older than k versions
        assert r["sampled_version"] == max(0, r["step"] - 1 - STALENESS)
        assert r["staleness"] == r["step"] - 1 - r["sampled_version"] <= STALENESS
    assert steps[-1]["staleness"] == STALENESS
    assert all(f"mismatch_kl/staleness_{r['staleness']}" in r for r in steps)
    assert (async_run / "timeline.jsonl").is_file()

    again = tmp_path / "B"
    assert train(again, *ASYNC) == 0
    assert_same(again, async_run)


def test_sampler_process_at_staleness_0_equals_the_in_process_loop(tmp_path, monkeypatch):
    """The same loop with the sampler in its own process (weights through shared memory)
    gives bitwise the in-process loop's numbers: the hand-over loses nothing."""
    assert train(tmp_path / "local") == 0

    def process_sampler(policy, tokenizer, task, scorer, cfg, first_step, resume):
        return SamplerProcess(policy, tokenizer, task, cfg, scorer.system_prompt, first_step,
                              resume)  # fmt: skip

    monkeypatch.setattr(rlvr.loop, "make_sampler", process_sampler)
    assert train(tmp_path / "process") == 0
    assert_same(tmp_path / "process", tmp_path / "local")


def test_sigkill_during_async_grpo_resumes_exactly(async_run, tmp_path):
    kill_after = RNG.randint(1, GRPO_STEPS - 2)
    out = tmp_path / "B"
    env = dict(os.environ, FAULTS_REWARD_SLEEP="0.01")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TESTS), str(ROOT), env.get("PYTHONPATH")) if p
    )
    log = tmp_path / "B.stderr"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlvr.cli", "train", SMOKE, "--out", str(out), *TINY, *ASYNC],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    wait_until(lambda: last_grpo_step(out) >= kill_after, f"GRPO step {kill_after}", proc, log)
    time.sleep(RNG.uniform(0.0, 0.3))
    children = sampler_children(proc.pid)
    assert children, "the run has a sampler process"
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "checkpoint").exists(), "the kill came after the run finished"
    wait_until(lambda: not any(alive(pid) for pid in children), "the sampler process to exit")
    last = latest_checkpoint(out)
    if last is not None and last.name.startswith("grpo-"):
        state = load_trainer_state(last)
        pending = [r["step"] for r in state["pending_rollouts"]]
        assert pending == list(
            range(state["step"] + 1, min(state["step"] + STALENESS, GRPO_STEPS) + 1)
        )

    assert main(["train", "--resume", str(out)]) == 0
    assert_same(out, async_run)


def test_killed_sampler_process_is_restarted_and_the_run_is_unchanged(
    async_run, tmp_path, monkeypatch
):
    monkeypatch.setenv("FAULTS_REWARD_SLEEP", "0.01")
    started: list[int] = []
    real_start = SamplerProcess._start

    def start(self):
        real_start(self)
        started.append(self._process.pid)

    monkeypatch.setattr(SamplerProcess, "_start", start)
    out = tmp_path / "B"

    def kill_sampler() -> None:
        deadline = time.monotonic() + 180
        while last_grpo_step(out) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(started[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_sampler, daemon=True)
    killer.start()
    assert train(out, *ASYNC) == 0
    killer.join()
    assert len(started) >= 2, "the killed sampler process was started again"
    last = [r for r in records(out) if r["phase"] == "grpo"][-1]
    assert last["sampler_restarts"] >= 1 and last["lost_sampling_seconds"] > 0
    assert_same(out, async_run)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--grpo.max_staleness", "-1"], "grpo.max_staleness must be 0"),
        ([*ASYNC, "--sampler.threads", "2", "--learner.threads", str(os.cpu_count() or 1)],
         "more than this machine's"),
        ([*ASYNC, "--lora.rank", "4"], "not supported with LoRA"),
    ],
    ids=["negative", "threads", "lora"],
)  # fmt: skip
def test_bad_async_settings_stop_before_any_work(tmp_path, capsys, extra, words):
    out = tmp_path / "run"
    assert train(out, *extra) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not out.exists()


def test_async_trains_a_hugging_face_checkpoint(tmp_path):
    """A --model checkpoint (Qwen2, loaded into rlvr's model) samples in the sampler process
    with its own tokenizer and chat template."""
    from test_byo_model import RUN, qwen2_checkpoint

    folder = qwen2_checkpoint(tmp_path / "qwen2")
    out = tmp_path / "run"
    args = ["train", SMOKE, "--model", str(folder), "--out", str(out), *RUN,
            "--grpo.steps", "3", "--grpo.max_staleness", "1", "--sampler.threads", "1",
            "--learner.threads", "1"]  # fmt: skip
    assert main(args) == 0
    steps = [r for r in records(out) if r["phase"] == "grpo"]
    assert [r["staleness"] for r in steps] == [0, 1, 1]


def test_async_refuses_a_model_it_cannot_hand_over():
    with pytest.raises(ConfigError, match="rlvr's own model class"):
        check_async(torch.nn.Linear(2, 2))
