"""runtime = "ray": sampler, verifier and learner actors on a local Ray, the same GRPO loop.

- the same seed and staleness give the same metrics and weights with 1 sampler and with 2
  samplers plus a verifier actor (every step has its own random streams);
- a sampler actor killed with SIGKILL and a verifier actor killed with ray.kill are restarted,
  their work is sent again and counted, and the run comes out the same;
- the learner actor's death stops the run with the resume line; the resume (which trains on
  the steps the checkpoint stored) gives the same run as one never stopped;
- bad input stops before any work: an address that does not answer, ray not installed.

One local Ray serves the whole module (a run joins a running Ray instead of starting one).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

pytest.importorskip("ray")

import ray  # noqa: E402
from test_async import SMOKE, STALENESS, TINY, assert_same, numbers, train  # noqa: E402
from test_survive import last_grpo_step, records  # noqa: E402

import rlvr.config  # noqa: E402
from rlvr.cli import main  # noqa: E402
from rlvr.cluster import ray_session  # noqa: E402
from rlvr.config import Config  # noqa: E402
from rlvr.learning.ray_learner import RayLearner  # noqa: E402
from rlvr.sampling.ray_sampler import RaySampler  # noqa: E402

RAY = ["--runtime", "ray", "--grpo.max_staleness", str(STALENESS)]
TWO = [*RAY, "--ray.num_samplers", "2", "--ray.num_verifiers", "1"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    cfg = Config(runtime="ray")
    cfg.ray.num_samplers, cfg.ray.num_verifiers = 2, 1
    with ray_session(cfg):
        yield


@pytest.fixture(scope="module")
def one_sampler(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "one"
    assert train(out, *RAY) == 0
    return out


def recorded(monkeypatch, cls) -> list:
    """Instances of `cls` created from now on (so a test can reach a run's actors)."""
    made, init = [], cls.__init__

    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(cls, "__init__", record)
    return made


def in_background(fn) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def wait_for_step(out, step: int) -> None:
    deadline = time.monotonic() + 180
    while last_grpo_step(out) < step and time.monotonic() < deadline:
        time.sleep(0.01)


def test_one_and_two_samplers_give_the_same_run(one_sampler, tmp_path):
    steps = [r for r in records(one_sampler) if r["phase"] == "grpo"]
    assert [r["staleness"] for r in steps] == [0, 1, 2, 2, 2, 2]
    assert all(r["sampler_restarts"] == 0 for r in steps)
    assert len({r["reward"] for r in steps}) > 1 and steps[-1]["loss"] != 0
    assert train(tmp_path / "two", *TWO) == 0
    assert_same(tmp_path / "two", one_sampler)


def test_killed_sampler_and_verifier_actors_are_restarted(one_sampler, tmp_path, monkeypatch):
    monkeypatch.setenv("FAULTS_REWARD_SLEEP", "0.05")  # steps long enough to kill one mid-way
    samplers = recorded(monkeypatch, RaySampler)
    out = tmp_path / "killed"

    def kill() -> None:
        # The sampler dies first (it takes the count of the verifications it had sent with
        # it), then the verifier actor, while it grades: its items are sent again and counted.
        wait_for_step(out, 1)
        pids = samplers[0].pids()
        while not samplers[0].running:  # a step is being sampled (and verified)
            time.sleep(0.001)
        busy = [entry[1] for entry in list(samplers[0].running.values())]
        os.kill(pids[busy[0]], signal.SIGKILL)
        verifier = samplers[0].verifiers[0]
        while ray.get(verifier.busy.remote()) == 0:
            time.sleep(0.001)
        ray.kill(verifier, no_restart=False)

    killer = in_background(kill)
    assert train(out, *TWO) == 0
    killer.join()
    last = [r for r in records(out) if r["phase"] == "grpo"][-1]
    assert last["sampler_restarts"] >= 1 and last["lost_sampling_seconds"] > 0
    assert last["lost_verifications"] >= 1
    assert_same(out, one_sampler)


def test_learner_failure_stops_with_the_resume_line_and_resumes_exactly(
    one_sampler, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FAULTS_REWARD_SLEEP", "0.02")
    learners = recorded(monkeypatch, RayLearner)
    out = tmp_path / "stopped"

    def kill() -> None:
        wait_for_step(out, 3)  # after the checkpoint of step 2
        ray.kill(learners[0].actor)

    killer = in_background(kill)
    assert train(out, *RAY) == 1
    killer.join()
    err = capsys.readouterr().err
    assert "learner failed" in err and f"rlvr train --resume {out}" in err
    assert not (out / "checkpoint").exists()
    assert main(["train", "--resume", str(out)]) == 0
    assert_same(out, one_sampler)


def test_a_ray_run_resumes_on_ray_only(one_sampler, tmp_path, capsys):
    # one_sampler's last checkpoint, resumed for 2 more steps under runtime = "local"
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(one_sampler, copy)
    assert main(["train", "--resume", str(copy), "--runtime", "local", "--grpo.steps", "8"]) == 2
    assert "resume it with --runtime ray" in capsys.readouterr().err
    assert numbers(copy) == numbers(one_sampler)


def test_an_address_that_does_not_answer_stops_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, *RAY, "--ray.address", "127.0.0.1:9") == 2
    err = capsys.readouterr().err
    assert "ray.address '127.0.0.1:9' does not answer" in err and "Traceback" not in err
    assert not out.exists()


def test_a_ray_client_address_is_a_config_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, *RAY, "--ray.address", "ray://127.0.0.1:10001") == 2
    err = capsys.readouterr().err
    assert "is a Ray client address" in err and "HOST:PORT" in err and "Traceback" not in err
    assert not out.exists()


def test_runtime_ray_without_ray_installed_is_a_config_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(rlvr.config, "ray_installed", lambda: False)
    out = tmp_path / "run"
    assert main(["train", SMOKE, "--out", str(out), *TINY, "--runtime", "ray"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "rlvr[ray]"' in err and "Traceback" not in err
    assert not out.exists()
