"""Injected faults for tests/test_survive.py.

A module, not part of a test file, so that verifier worker processes (fresh interpreters that
import functions by their module path) and subprocess runs can import it: tests/ must be on
their PYTHONPATH (VerifierPool passes the parent's sys.path on, which holds tests/ under
pytest; subprocesses get it from the test).
"""

from __future__ import annotations

import math
import os
import sys
import time
import zlib

from rlvr.tasks.arithmetic import ArithmeticTask

# ----------------------------------------------------------------------------- reward functions


def length_reward(completion: str, problem) -> float:
    """A reward that differs within a group, so GRPO's advantages and updates are non-zero
    even for a model that has not learned the format yet."""
    return min(len(completion), 60) / 60


def slow_length_reward(completion: str, problem) -> float:
    """length_reward after FAULTS_REWARD_SLEEP seconds (default 0), so that a test can kill a
    run whose sampling happens in another process in the middle of a GRPO phase."""
    time.sleep(float(os.environ.get("FAULTS_REWARD_SLEEP", "0")))
    return length_reward(completion, problem)


def _hash(completion: str, problem) -> int:
    return zlib.crc32(f"{problem.prompt}\0{completion}".encode())


def is_nan_item(completion: str, problem) -> bool:
    return _hash(completion, problem) % 3 == 0


def nan_reward(completion: str, problem) -> float:
    """NaN on about a third of the items, the length reward on the others."""
    return math.nan if is_nan_item(completion, problem) else length_reward(completion, problem)


def inf_reward(completion: str, problem) -> float:
    """+inf on about a third of the items, the length reward on the others."""
    return math.inf if is_nan_item(completion, problem) else length_reward(completion, problem)


# ----------------------------------------------------------------------------- a faulty task


def fault_kind(response: str, problem) -> str | None:
    """Which fault FaultyArithmeticTask.verify injects for this item (None: it grades it)."""
    return {0: "hang", 1: "raise", 2: "exit"}.get(_hash(response, problem) % 10)


class FaultyArithmeticTask(ArithmeticTask):
    """Arithmetic whose verifier hangs, raises or kills its process on some items."""

    def verify(self, response: str, problem):
        kind = fault_kind(response, problem)
        if kind == "hang":
            time.sleep(600)
        elif kind == "raise":
            raise RuntimeError("injected verifier crash")
        elif kind == "exit":
            os._exit(3)
        return super().verify(response, problem)


# ----------------------------------------------------------------------------- slow runs


def slow_cli() -> None:
    """`python -c "import faults; faults.slow_cli()" train ...`: rlvr.cli.main with a sleep
    added to every pretraining step and every GRPO rollout, so that a test can send a signal
    in the middle of a phase. Sleeping changes no number the run computes.

    FAULTS_PRETRAIN_SLEEP, FAULTS_GRPO_SLEEP: seconds per step (default 0).
    """
    import rlvr.learning.pretrain
    import rlvr.loop
    import rlvr.sampling.sampler
    from rlvr.cli import main

    pretrain_sleep = float(os.environ.get("FAULTS_PRETRAIN_SLEEP", "0"))
    grpo_sleep = float(os.environ.get("FAULTS_GRPO_SLEEP", "0"))
    pretrain_batch = rlvr.learning.pretrain.pretrain_batch
    rollout = rlvr.sampling.sampler.rollout

    def slow_pretrain_batch(*args, **kwargs):
        time.sleep(pretrain_sleep)
        return pretrain_batch(*args, **kwargs)

    def slow_rollout(*args, **kwargs):
        time.sleep(grpo_sleep)
        return rollout(*args, **kwargs)

    rlvr.learning.pretrain.pretrain_batch = slow_pretrain_batch
    rlvr.sampling.sampler.rollout = slow_rollout
    rlvr.loop.plot_metrics = lambda run_dir: []  # the tests kill the run before it plots
    sys.exit(main(sys.argv[1:]))
