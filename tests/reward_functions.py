"""User reward functions for tests/test_rewards.py (importable by verifier workers)."""

import time


def length_bonus(completion, problem):
    return len(completion) / 100


def not_a_number(completion, problem):
    return float("nan")


def raises(completion, problem):
    raise RuntimeError("boom")


def hangs(completion, problem):
    time.sleep(60)
