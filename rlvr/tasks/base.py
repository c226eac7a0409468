"""Problems and the Task interface: a task owns its problem generator, grader and traces.

Splits are disjoint by construction: a problem's canonical key (its prompt) is hashed with a
stable hash, and the problem belongs to "test" iff that hash % 10 == 0. `Task.problems`
rejection-samples until it has `num` distinct problems of the requested split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rlvr.verifiers.base import Verdict

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Problem:
    """One problem, as tasks make it and every later stage reads it.

    id: stable identifier derived from the task name and the prompt.
    prompt: the question text, without special tokens (see tokenizer.format_prompt).
    answer: a gold answer (for countdown one valid expression among many).
    verifier: which verifier grades it, e.g. "arithmetic" or "countdown".
    split: "train" or "test".
    meta: what the verifier needs beyond the answer, e.g. countdown numbers and target.
    """

    id: str
    prompt: str
    answer: str
    verifier: str
    split: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(
                f"Problem has unknown fields {sorted(unknown)}; expected {sorted(names)}."
            )
        return cls(**data)


def split_of(key: str) -> str:
    """The split a canonical key belongs to: "test" for one key in ten, by a stable hash."""
    digest = hashlib.sha256(key.encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % 10 == 0 else "train"


def problem_id(task_name: str, key: str) -> str:
    return f"{task_name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


class Task:
    """A problem source with its grader. Subclasses set `name` and implement the hooks."""

    name: ClassVar[str]

    def sample(self, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
        """One random problem as (prompt, answer, meta); the prompt is its canonical key."""
        raise NotImplementedError

    def space_size(self) -> int:
        """How many distinct prompts this task can make (an upper bound is fine)."""
        raise NotImplementedError

    def verify(self, response: str, problem: Problem) -> Verdict:
        """Grade a model response (the text from `<think>` on); never raises."""
        raise NotImplementedError

    def completion(self, problem: Problem, rng: random.Random, think: bool, slip: bool) -> str:
        """Synthetic target text for pretraining, from `<think>` to `</answer>` (no <eos>)."""
        raise NotImplementedError

    def problems(self, split: str, num: int, seed: int) -> list[Problem]:
        """`num` distinct problems of `split`, the same ones for the same seed."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}: use one of {SPLITS}.")
        # About one key in ten is a test key; asking for more than the split holds would loop.
        capacity = self.space_size() * (0.1 if split == "test" else 0.9)
        if num > capacity:
            raise ValueError(
                f"Task {self!r} can make about {int(capacity)} {split} problems, not {num}: "
                "ask for fewer or widen the task's parameters."
            )
        # A string seed is hashed by random (sha512), so this is stable across runs.
        rng = random.Random(f"{self.name}/{split}/{seed}")
        out: list[Problem] = []
        seen: set[str] = set()
        attempts = 0
        max_attempts = 100 * num + 10_000
        while len(out) < num:
            attempts += 1
            if attempts > max_attempts:
                raise ValueError(
                    f"Task {self!r} found only {len(out)} distinct {split} problems of the "
                    f"{num} asked for: ask for fewer or widen the task's parameters."
                )
            prompt, answer, meta = self.sample(rng)
            if prompt in seen or split_of(prompt) != split:
                continue
            seen.add(prompt)
            out.append(
                Problem(problem_id(self.name, prompt), prompt, answer, self.name, split, meta)
            )
        return out
