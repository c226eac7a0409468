"""The Verdict a verifier returns, and the guard that keeps verifier faults out of the loop.

A verifier never raises into the training loop: `guarded` turns any exception into a
Verdict with status "error", so one bad response cannot stop a run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec

STATUSES = ("correct", "wrong", "unparsable", "timeout", "error")

P = ParamSpec("P")


@dataclass
class Verdict:
    """What a verifier says about one response.

    reward: the scalar the verifier grades with. For the built-in verifiers it equals
        components["accuracy"]; the training loop mixes in "format" with its own weights.
    status: one of STATUSES.
    components: named partial scores in [0, 1], e.g. {"accuracy": 1.0, "format": 1.0}.
    reason: a short human-readable explanation, for logs and debugging.
    passed/total: for test-based verifiers (code), how many tests passed of how many;
        None for the others.
    """

    reward: float
    status: str
    components: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    passed: int | None = None
    total: int | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Verdict status {self.status!r} is not one of {STATUSES}.")


def grade(status: str, well_formed: bool, reason: str) -> Verdict:
    """A Verdict with components {"accuracy", "format"}; reward is the accuracy."""
    accuracy = 1.0 if status == "correct" else 0.0
    components = {"accuracy": accuracy, "format": 1.0 if well_formed else 0.0}
    return Verdict(reward=accuracy, status=status, components=components, reason=reason)


def error_verdict(exc: BaseException) -> Verdict:
    """The Verdict for a verifier that failed: zero reward, the exception as the reason."""
    reason = f"verifier raised {type(exc).__name__}: {exc}"[:200]
    return Verdict(0.0, "error", {"accuracy": 0.0, "format": 0.0}, reason)


def guarded(fn: Callable[P, Verdict]) -> Callable[P, Verdict]:
    """Decorate a verifier so that any exception it raises becomes an "error" Verdict."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Verdict:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the point is to catch everything
            return error_verdict(exc)

    return wrapper
