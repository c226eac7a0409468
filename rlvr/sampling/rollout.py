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

import functools
from collections.abc import Sequence
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
) -> list[Episode]:
    """Sample `num_samples` completions per problem and score each; group-major order.

    The prompts carry `scorer.system_prompt` (empty: none). think: None lets the model
    decide, False prefills an empty think block, True prefills `<think>` and keeps `</think>`
    out of sampling until the thinking has a first line (`forced_think_ids`). prefill_ids:
    per problem, response tokens already written after its prompt (the model continues
    them; the response text starts with them), e.g. thinking cut at a budget."""
    if prefill_ids is not None and (think is not None or len(prefill_ids) != len(problems)):
        raise ValueError("prefill_ids needs think=None and one list of ids per problem.")
    prompts, prefills = [], []
    for i, p in enumerate(problems):
        try:
            prompt = tokenizer.encode(prompt_text(tokenizer, p, think, scorer.system_prompt))
        except ValueError as e:
            raise ConfigError(
                f"Problem {p.id} cannot be tokenized ({e}); remove it from the data or use a "
                "model whose tokenizer covers its characters."
            ) from e
        if prefill_ids is None:
            prompts.append(prompt)
            prefills.append(think_prefill(think))
        else:
            prompts.append(prompt + list(prefill_ids[i]))
            prefills.append(tokenizer.decode(prefill_ids[i]))
    suppress, release = forced_think_ids(tokenizer) if think else ((), ())
    pending: dict[tuple[int, int], tuple[str, dict]] = {}

    def verify_now(c: Completion) -> None:
        prefill = prefills[c.prompt_index]
        response = response_text(tokenizer, c.token_ids, prefill)
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
    )
    episodes = []
    for c in completions:
        response, handles = pending[c.prompt_index, c.sample_index]
        scored = scorer.score(handles, num_tokens=len(c.token_ids))
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
            )
        )
    return episodes
