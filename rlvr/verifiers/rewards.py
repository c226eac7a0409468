"""Rewards: each completion verified by its task and scored as a weighted sum of named parts.

    reward = reward.accuracy_weight * accuracy          the task's verifier (0 or 1)
           + reward.format_weight   * format            <think>...</think><answer>...</answer>
           + reward.overlong_weight * overlong          DAPO's soft overlong punishment
           + sum_f weight_f * f(completion, problem)    user reward functions

Every part is kept on its own (`Scored.parts`), so the training loop logs each one as
`reward/<name>` next to the total.

Verification runs in a `VerifierPool` of worker processes when `reward.workers > 0`: a
verifier that hangs is killed at `reward.timeout_s` (status "timeout"), one that crashes or
whose worker dies gets status "error"; both score 0 and the run goes on. `Scorer.submit`
returns at once, so the rollout hands each completion over the moment the engine finishes it
and verification overlaps the rest of sampling.

Every GRPO group also passes the reward-hacking watch (rlvr/verifiers/hacking.py):
`Scorer.watch` flags its completions, and those flagged by a check listed in
`reward.zero_flagged` score 0 (every part), so the advantages never pay for that pattern.

A judge model (`reward.judge.model`, rlvr/verifiers/judge.py) grades the responses whose
rules verdict is "unparsable" (`reward.judge.when = "unparsable"`) or every response
(`"always"`); its verdict replaces the rules' accuracy and status.

The verdict cache (`reward.verdict_cache`, on by default) grades identical (answer part,
problem) pairs once per run: the task's rules and the judge alike, a repeat while the first is
still being graded included. The answer part is the text after a clean think block
(`answer_part`); the format reward is taken per response. The judge has a cache of its own,
keyed by what its prompt holds (the response's answer, the gold, the question if the template
has it). Timeouts and errors are not kept. `cache_hits` and `judged` count for the logs.

User reward functions are named "module:function" and called as `fn(completion, problem)`,
where completion is the response text (from `<think>` on) and problem a `rlvr.tasks.Problem`;
they return a float or a `Verdict` (its reward is used). A non-finite value scores 0 and is
counted (`bad_rewards`): a NaN must never reach the advantages.
"""

from __future__ import annotations

import importlib
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from rlvr.tasks import Problem
from rlvr.verifiers import Verdict
from rlvr.verifiers.format import answer_part, format_reward
from rlvr.verifiers.hacking import flag_group
from rlvr.verifiers.pool import NON_FINITE, VerifierPool, as_verdict

CACHE_SIZE = 100_000  # verdicts the cache keeps (least recently used ones go first)


def overlong_penalty(length: int, max_length: int, buffer: int) -> float:
    """DAPO's soft overlong punishment (Yu et al. 2025, arXiv:2503.14476, eq. 13).

        0                                 if L <= L_max - B
        (L_max - B - L) / B               if L_max - B < L <= L_max
        -1                                if L > L_max

    L: completion length in tokens; L_max: the longest allowed (grpo.max_new_tokens);
    B: the buffer (reward.overlong_buffer). buffer 0 turns the penalty off.
    """
    if buffer <= 0 or length <= max_length - buffer:
        return 0.0
    if length > max_length:
        return -1.0
    return (max_length - buffer - length) / buffer


def load_function(name: str) -> Callable[..., Any]:
    """Import a user reward function named "package.module:function"."""
    from rlvr.config import ConfigError

    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"Reward function {name!r} must be written as 'module:function', "
            "e.g. 'my_rewards:brevity'."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"Reward function {name!r}: module {module_name!r} cannot be imported ({e}); "
            "put it on PYTHONPATH or install it."
        ) from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"Reward function {name!r}: {module_name} has no function {attr!r}.")
    return fn


@dataclass
class Scored:
    """A completion's verdict (from its task), its reward parts and their weighted sum."""

    verdict: Verdict
    parts: dict[str, float] = field(default_factory=dict)
    reward: float = 0.0
    bad: int = 0
    """How many parts were not finite numbers and were scored 0."""
    failed: int = 0
    """How many verifications (the task's, user functions') timed out or failed: scored 0."""
    flags: tuple[str, ...] = ()
    """The reward-hacking checks this completion tripped (`Scorer.watch`)."""


class _Done:
    """A finished 'future' for in-process verification (reward.workers = 0)."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value

    def done(self) -> bool:
        return True

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class Scorer:
    """Verifies completions (in a pool or in-process) and adds up the weighted reward parts.

    scorer = Scorer(task, cfg.reward, max_new_tokens=64, pool=pool)
    pending = scorer.submit(response, problem)         # returns at once
    scored = scorer.score(pending, num_tokens=37)      # waits for the verdicts
    """

    def __init__(
        self,
        task,
        reward_cfg,
        max_new_tokens: int,
        pool: VerifierPool | None = None,
        system_prompt: str = "",
    ):
        self.task = task
        self.system_prompt = system_prompt
        """The system prompt of the task's prompts (rollout puts it there; "" for none)."""
        self.cfg = reward_cfg
        self.max_new_tokens = max_new_tokens
        self.pool = pool
        self.functions = {name: load_function(name) for name in reward_cfg.functions}
        # the weight of each reward part, by name, in the order of Scored.parts
        self.weights = {"accuracy": reward_cfg.accuracy_weight, "format": reward_cfg.format_weight}
        if reward_cfg.overlong_buffer > 0:
            self.weights["overlong"] = reward_cfg.overlong_weight
        self.weights.update(reward_cfg.functions)
        self.use_cache = getattr(reward_cfg, "verdict_cache", False)
        self.cache_hits = 0
        """Verifications (rules or judge) answered from the verdict cache."""
        self._cache: OrderedDict[tuple, Future | _Done] = OrderedDict()
        self._lock = threading.Lock()  # the cache is read from the pool's thread too
        self.judge = None
        """The judge model (rlvr.verifiers.judge.Judge) when reward.judge.model is set."""
        judge_cfg = getattr(reward_cfg, "judge", None)
        if judge_cfg is not None and judge_cfg.model:
            from rlvr.verifiers.judge import Judge

            self.judge = Judge(judge_cfg)
            self.judge_when = judge_cfg.when

    @property
    def judged(self) -> int:
        """Responses the judge has graded (cache hits not included)."""
        return self.judge.judged if self.judge is not None else 0

    def close(self) -> None:
        """Stop the judge's worker, if there is one."""
        if self.judge is not None:
            self.judge.close()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Future | _Done:
        if self.pool is not None:
            return self.pool.submit(fn, *args)
        try:
            return _Done(fn(*args))
        except Exception as exc:  # noqa: BLE001 - a user function must not stop the run
            return _Done(Verdict(0.0, "error", {}, f"{type(exc).__name__}: {exc}"[:200]))

    def submit(self, response: str, problem: Problem) -> dict[str, Future | _Done]:
        """Start verifying one completion; returns handles for `score`."""
        if not self.use_cache:
            pending = {"task": self._verify(response, problem)}
        else:
            part = answer_part(response)
            meta = json.dumps(problem.meta, sort_keys=True, default=str)
            key = ("task", problem.verifier, problem.answer, meta, part)
            pending = {"task": self._cached(key, lambda: self._verify(response, problem))}
            pending["format"] = _Done(format_reward(response))
        for name, fn in self.functions.items():
            pending[name] = self._call(fn, response, problem)
        return pending

    def _verify(self, response: str, problem: Problem) -> Future | _Done:
        """The task's rules, then the judge where reward.judge.when says."""
        if self.judge is None:
            return self._call(self.task.verify, response, problem)
        if self.judge_when == "always":
            return self._judge(response, problem, rules=None)
        final: Future = Future()

        def after_rules(handle) -> None:
            rules = as_verdict(handle.result())
            if rules.status != "unparsable":
                final.set_result(rules)
                return
            judged = self._judge(response, problem, rules)
            judged.add_done_callback(lambda h: final.set_result(h.result()))

        self._call(self.task.verify, response, problem).add_done_callback(after_rules)
        return final

    def _judge(self, response: str, problem: Problem, rules: Verdict | None) -> Future:
        """The judge's verdict on a response, with the format reward of the rules' verdict
        (or of the response, without one)."""
        from rlvr.verifiers.judge import response_answer

        answer = response_answer(response)
        question = problem.prompt if "{question}" in self.judge.settings.template else ""
        key = ("judge", question, problem.answer, answer)
        if self.use_cache:
            handle = self._cached(key, lambda: self.judge.submit(question, answer, problem.answer))
        else:
            handle = self.judge.submit(question, answer, problem.answer)
        fmt = (rules.components if rules else {}).get("format", format_reward(response))
        final: Future = Future()

        def with_format(h) -> None:
            v = h.result()
            final.set_result(Verdict(v.reward, v.status, {**v.components, "format": fmt}, v.reason))

        handle.add_done_callback(with_format)
        return final

    def _cached(self, key: tuple, verify: Callable[[], Future | _Done]) -> Future | _Done:
        """The handle of `key`'s verdict: the one already made (a hit), or a new one from
        `verify()`. Timeouts and errors leave the cache when they arrive."""
        with self._lock:
            handle = self._cache.get(key)
            if handle is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                return handle
        handle = verify()
        with self._lock:
            self._cache[key] = handle
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)

        def forget_failures(h) -> None:
            if as_verdict(h.result()).status in ("timeout", "error"):
                with self._lock:
                    if self._cache.get(key) is h:
                        del self._cache[key]

        handle.add_done_callback(forget_failures)
        return handle

    def score(self, pending: dict[str, Future | _Done], num_tokens: int) -> Scored:
        """Wait for a completion's verdicts and combine the parts with their weights."""
        c = self.cfg
        verdict = as_verdict(pending["task"].result())
        bad = 0
        accuracy = verdict.components.get("accuracy", verdict.reward)
        fmt = verdict.components.get("format", 0.0)
        if "format" in pending and "format" in verdict.components:
            # A cached verdict came from another response with the same answer part: the
            # format reward is this response's own.
            fmt = pending["format"].result()
            verdict = Verdict(verdict.reward, verdict.status, {**verdict.components,
                              "format": fmt}, verdict.reason, verdict.passed, verdict.total)  # fmt: skip
        if not (_finite(accuracy) and _finite(fmt)):
            bad += 1
            accuracy, fmt = 0.0, 0.0
            verdict = Verdict(0.0, "error", {}, "verifier returned a non-finite score")
        parts = {"accuracy": float(accuracy), "format": float(fmt)}
        if c.overlong_buffer > 0:
            parts["overlong"] = overlong_penalty(num_tokens, self.max_new_tokens, c.overlong_buffer)
        failed = int(verdict.status in ("timeout", "error"))
        for name in c.functions:
            result = as_verdict(pending[name].result())
            value = result.reward
            if not _finite(value) or result.reason == NON_FINITE:
                bad, value = bad + 1, 0.0
            elif result.status in ("timeout", "error"):
                failed += 1
            parts[name] = float(value)
        reward = sum(self.weights[name] * value for name, value in parts.items())
        return Scored(verdict=verdict, parts=parts, reward=reward, bad=bad, failed=failed)

    def watch(
        self,
        problem: Problem,
        responses: list[str],
        finish_reasons: list[str],
        lengths: list[int],
        scored: list[Scored],
    ) -> None:
        """Flag one group's completions (same problem) with the reward-hacking checks and
        score 0 those flagged by a check in reward.zero_flagged; edits `scored` in place."""
        c = self.cfg
        flags = flag_group(problem.prompt, responses, finish_reasons, lengths,
                           reasoning_required=c.reasoning_required,
                           length_ratio=c.length_ratio)  # fmt: skip
        for s, f in zip(scored, flags):
            s.flags = f
            if any(name in c.zero_flagged for name in f):
                s.parts = {name: 0.0 for name in s.parts}
                s.reward = 0.0


def open_pool(reward_cfg, preload: tuple[str, ...] = ()) -> AbstractContextManager:
    """The run's verifier pool, as a context manager; it yields None when reward.workers is 0
    (verify in-process)."""
    if reward_cfg.workers == 0:
        return nullcontext(None)
    return VerifierPool(
        num_workers=reward_cfg.workers,
        timeout_s=reward_cfg.timeout_s,
        memory_mb=reward_cfg.memory_mb,
        preload=preload,
    )
