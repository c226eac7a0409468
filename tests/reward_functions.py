"""User reward functions for the tests (importable by verifier workers)."""

import time


def length_bonus(completion, problem):
    return len(completion) / 100


def not_a_number(completion, problem):
    return float("nan")


def raises(completion, problem):
    raise RuntimeError("boom")


def hangs(completion, problem):
    time.sleep(60)


def text_parity(completion, problem):
    """0 or 1 by the parity of the characters' sum: varies within a random model's groups."""
    return float(sum(map(ord, completion)) % 2)
