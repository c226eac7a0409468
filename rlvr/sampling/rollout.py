"""Where sampling meets verification: problems in, scored episodes out.

The engine speaks token ids, the tasks speak text; this room turns one into the other.
Each problem is prompted once and sampled `num_samples` times (a GRPO group). As each
completion finishes, it is decoded and handed to the `Scorer` (rlvr/verifiers/rewards.py), whose
verifier workers grade it while the engine decodes the rest; the episode's reward is the
weighted sum of its reward parts.

Every episode carries the `policy_version` that sampled it, so a learner can tell how stale
it is (synchronous training is staleness 0).

Prompts come from `tokenizer.format_prompt(question, scorer.system_prompt)`: the character
tokenizer's `<bos>{question}\n`, or a Hugging Face checkpoint's chat template with the
assistant turn opened. Completions stop at `tokenizer.stop_ids`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from rlvr.errors import ConfigError
from rlvr.sampling.engine import Completion, Engine
from rlvr.tasks import Problem
from rlvr.tokenizer import EMPTY_THINK, EOS, THINK_CLOSE, THINK_OPEN, CharTokenizer
from rlvr.verifiers import Verdict
from rlvr.verifiers.rewards import Scorer


@dataclass
class Episode:
    problem: Problem
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    """Per completion token, from the sampler (the "old" policy of the PPO ratio)."""
    finish_reason: str
    policy_version: int
    response: str
    """The response text after the prompt, starting at <think> (prefill included)."""
    verdict: Verdict
    reward: float
    parts: dict[str, float] = field(default_factory=dict)
    """The named reward parts (accuracy, format, overlong, user functions), unweighted."""
    bad_rewards: int = 0
    """Reward parts that were NaN or infinite and were scored 0."""
    verifier_failures: int = 0
    """Verifications (task or reward function) that timed out or crashed, scored 0."""
    flags: tuple[str, ...] = ()
    """Reward-hacking checks the completion tripped (rlvr/verifiers/hacking.py)."""

    def to_dict(self) -> dict:
        """Plain data (lists, numbers, strings): what a checkpoint stores of an episode."""
        data = dataclasses.asdict(self)
        data["problem"] = self.problem.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Episode:
        data = dict(data)
        data["problem"] = Problem.from_dict(data["problem"])
        data["verdict"] = Verdict(**data["verdict"])
        return cls(**data)

    @property
    def thought(self) -> bool:
        """Whether the response has a non-empty think block."""
        start = self.response.find("<think>")
        end = self.response.find("</think>")
        return start == 0 and end > len("<think>") and self.response[7:end].strip() != ""


def think_prefill(think: bool | None) -> str:
    """The response text a thinking mode writes for the model: none (think=None: the model
    decides), an empty think block (False: the ablation) or `<think>` (True: forced)."""
    return {None: "", False: EMPTY_THINK, True: THINK_OPEN}[think]


def prompt_text(
    tokenizer: CharTokenizer, problem: Problem, think: bool | None, system_prompt: str = ""
) -> str:
    """The prompt for a problem, with the prefill of the thinking mode `think`."""
    return tokenizer.format_prompt(problem.prompt, system_prompt or None) + think_prefill(think)


@functools.lru_cache(maxsize=4)
def forced_think_ids(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(suppressed, releasing) token ids of forced thinking: `</think>` (its first token, where
    a tokenizer splits it) stays out of sampling until a token holding a newline is sampled,
    so the thinking has at least one step (a line) before it can close."""
    suppressed = (tokenizer.encode(THINK_CLOSE)[0],)
    releasing = tuple(i for i in range(tokenizer.vocab_size) if "\n" in tokenizer.decode([i]))
    return suppressed, releasing


def response_text(tokenizer: CharTokenizer, token_ids: list[int], prefill: str = "") -> str:
    """The response text of a completion, prefill first. A final stop token other than the
    format's own <eos> (a chat model's <|im_end|>, say) is left out, so the format check
    reads every model's responses alike."""
    if token_ids and token_ids[-1] in tokenizer.stop_ids:
        if tokenizer.decode(token_ids[-1:]) != EOS:
            token_ids = token_ids[:-1]
    return prefill + tokenizer.decode(token_ids)


def encode_prompt(tokenizer: CharTokenizer, scorer: Scorer, problem: Problem,
                  think: bool | None) -> list[int]:  # fmt: skip
    """The prompt's token ids; a problem the tokenizer cannot write is a ConfigError."""
    try:
        return tokenizer.encode(prompt_text(tokenizer, problem, think, scorer.system_prompt))
    except ValueError as e:
        raise ConfigError(
            f"Problem {problem.id} cannot be tokenized ({e}); remove it from the data or use a "
            "model whose tokenizer covers its characters."
        ) from e


def score_groups(scorer: Scorer, problems: Sequence[Problem], prompts: list[list[int]],
                 completions: list[Completion], pending: dict, num_samples: int,
                 policy_version: int) -> list[Episode]:  # fmt: skip
    """The episodes of whole groups of completions (group-major), their verdicts waited for
    (`pending`: (prompt index, sample index) -> (response, verifier handles)), each group
    watched for reward hacking."""
    responses = [pending[c.prompt_index, c.sample_index][0] for c in completions]
    scores = [scorer.score(pending[c.prompt_index, c.sample_index][1], len(c.token_ids))
              for c in completions]  # fmt: skip
    for i in range(0, len(completions), num_samples):  # each group: the reward-hacking watch
        group = completions[i : i + num_samples]
        scorer.watch(problems[group[0].prompt_index], responses[i : i + num_samples],
                     [c.finish_reason for c in group], [len(c.token_ids) for c in group],
                     scores[i : i + num_samples])  # fmt: skip
    episodes = []
    for c, response, scored in zip(completions, responses, scores):
        episodes.append(
            Episode(
                problem=problems[c.prompt_index],
                prompt_ids=prompts[c.prompt_index],
                completion_ids=c.token_ids,
                logprobs=c.logprobs,
                finish_reason=c.finish_reason,
                policy_version=policy_version,
                response=response,
                verdict=scored.verdict,
                reward=scored.reward,
                parts=scored.parts,
                bad_rewards=scored.bad,
                verifier_failures=scored.failed,
                flags=scored.flags,
            )
        )
    return episodes


def rollout(
    engine: Engine,
    tokenizer: CharTokenizer,
    scorer: Scorer,
    problems: Sequence[Problem],
    *,
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    policy_version: int = 0,
    think: bool | None = None,
    prefill_ids: Sequence[list[int]] | None = None,
    ignore_eos: bool = False,
    min_new_tokens: int = 0,
    timings: dict | None = None,
    max_rows: int = 0,
) -> list[Episode]:
    """Sample `num_samples` completions per problem and score each; group-major order.

    The prompts carry `scorer.system_prompt` (empty: none). `timings`, if given, receives
    how verification kept up with decoding: "decode_seconds", "verify_tail_seconds" (waiting
    for verdicts after the last token), "verify_items", "verify_seconds" (first hand-over to
    last verdict) and "verify_backlog" (completions still unverified when decoding ended).
    max_rows: the most rows the engine decodes at a time (`Engine.generate`; 0: all).
    think: None lets the model decide, False prefills an empty think block, True prefills
    `<think>` and keeps `</think>` out of sampling until the thinking has a first line
    (`forced_think_ids`). prefill_ids: per problem, response tokens already written after its
    prompt (the model continues them; the response text starts with them), e.g. thinking cut
    at a budget."""
    if prefill_ids is not None and (think is not None or len(prefill_ids) != len(problems)):
        raise ValueError("prefill_ids needs think=None and one list of ids per problem.")
    prompts = [encode_prompt(tokenizer, scorer, p, think) for p in problems]
    if prefill_ids is None:
        prefills = [think_prefill(think)] * len(problems)
    else:
        prompts = [prompt + list(ids) for prompt, ids in zip(prompts, prefill_ids)]
        prefills = [tokenizer.decode(ids) for ids in prefill_ids]
    suppress, release = forced_think_ids(tokenizer) if think else ((), ())
    pending: dict[tuple[int, int], tuple[str, dict]] = {}
    hits, judged = scorer.cache_hits, scorer.judged
    t_start = time.perf_counter()
    first_submit: list[float] = []

    def verify_now(c: Completion) -> None:
        if not first_submit:
            first_submit.append(time.perf_counter())
        response = response_text(tokenizer, c.token_ids, prefills[c.prompt_index])
        pending[c.prompt_index, c.sample_index] = (
            response,
            scorer.submit(response, problems[c.prompt_index]),
        )

    completions = engine.generate(
        prompts,
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        stop_token_ids=[] if ignore_eos else tokenizer.stop_ids,
        min_new_tokens=min_new_tokens,
        suppress_ids=suppress,
        suppress_until_ids=release,
        generator=generator,
        on_complete=verify_now,
        max_rows=max_rows,
    )
    t_decoded = time.perf_counter()
    backlog = sum(not all(h.done() for h in handles.values()) for _, handles in pending.values())
    episodes = score_groups(scorer, problems, prompts, completions, pending, num_samples,
                            policy_version)  # fmt: skip
    if timings is not None:
        t_end = time.perf_counter()
        _add_timings(timings, t_decoded - t_start, t_end - t_decoded, len(completions),
                     t_end - first_submit[0], backlog, scorer.cache_hits - hits,
                     scorer.judged - judged)  # fmt: skip
    return episodes


def rollout_rounds(
    engine: Engine,
    tokenizer: CharTokenizer,
    scorer: Scorer,
    next_batch: Callable[[], Sequence[Problem] | None],
    *,
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    policy_version: int = 0,
    ignore_eos: bool = False,
    min_new_tokens: int = 0,
    timings: dict | None = None,
    max_rows: int,
) -> Iterator[list[Episode]]:
    """Rounds of problems on `max_rows` rows that never wait for a round's slowest sample:
    the next round's samples take the rows of the last round's finished ones (continuous
    batching, `Engine.stream`). `next_batch()` gives a round's problems (None: no more),
    called only when rows free up. Yields each round's scored episodes (group-major) once all
    of them are in, in round order; stop iterating when enough came (the next round's started
    samples are dropped). Determined by the seed: rounds start at points of the decoding,
    never of the clock. Arguments otherwise as for `rollout`."""
    rounds: list[tuple[Sequence[Problem], int]] = []  # (problems, index of its first prompt)
    prompts: list[list[int]] = []
    problems: list[Problem] = []

    def read_prompts() -> Iterator[list[int]]:
        while (batch := next_batch()) is not None:
            rounds.append((batch, len(prompts)))
            for problem in batch:
                problems.append(problem)
                prompts.append(encode_prompt(tokenizer, scorer, problem, think=None))
                yield prompts[-1]

    pending: dict[tuple[int, int], tuple[str, dict]] = {}
    finished: dict[tuple[int, int], Completion] = {}
    hits, judged = scorer.cache_hits, scorer.judged
    t_start = time.perf_counter()
    first_submit: list[float] = []
    waited, items = 0.0, 0  # seconds spent waiting for verdicts; episodes scored
    stream = engine.stream(
        read_prompts(), num_samples=num_samples, max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=top_p, top_k=top_k,
        stop_token_ids=[] if ignore_eos else tokenizer.stop_ids,
        min_new_tokens=min_new_tokens, generator=generator, max_rows=max_rows,
    )  # fmt: skip
    done = 0  # rounds yielded
    try:
        for c in stream:
            if not first_submit:
                first_submit.append(time.perf_counter())
            response = response_text(tokenizer, c.token_ids)
            key = c.prompt_index, c.sample_index
            pending[key] = (response, scorer.submit(response, problems[c.prompt_index]))
            finished[key] = c
            while done < len(rounds) and _round_complete(rounds[done], finished, num_samples):
                t_wait = time.perf_counter()
                batch, first = rounds[done]
                keys = [(i, s) for i in range(first, first + len(batch))
                        for s in range(num_samples)]  # fmt: skip
                episodes = score_groups(scorer, problems, prompts,
                                        [finished.pop(k) for k in keys], pending, num_samples,
                                        policy_version)  # fmt: skip
                for k in keys:
                    del pending[k]
                waited += time.perf_counter() - t_wait
                items += len(episodes)
                done += 1
                yield episodes
    finally:
        stream.close()
        if timings is not None and first_submit:
            t_end = time.perf_counter()
            _add_timings(timings, t_end - t_start - waited, waited, items,
                         t_end - first_submit[0], 0, scorer.cache_hits - hits,
                         scorer.judged - judged)  # fmt: skip


def _round_complete(round_: tuple[Sequence[Problem], int], finished: dict, k: int) -> bool:
    batch, first = round_
    return all((i, s) in finished for i in range(first, first + len(batch)) for s in range(k))


def _add_timings(timings: dict, decode: float, tail: float, items: int, verify: float,
                 backlog: int, cache_hits: int, judged: int) -> None:  # fmt: skip
    timings["decode_seconds"] = timings.get("decode_seconds", 0.0) + decode
    timings["verify_tail_seconds"] = timings.get("verify_tail_seconds", 0.0) + tail
    timings["verify_items"] = timings.get("verify_items", 0) + items
    timings["verify_seconds"] = timings.get("verify_seconds", 0.0) + verify
    timings["verify_backlog"] = timings.get("verify_backlog", 0) + backlog
    # the verdict cache's hits and the judge's gradings of these completions
    timings["verdict_cache_hits"] = timings.get("verdict_cache_hits", 0) + cache_hits
    timings["judged"] = timings.get("judged", 0) + judged
