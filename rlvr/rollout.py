"""Where sampling meets verification: problems in, scored episodes out.

The engine speaks token ids, the tasks speak text; this room turns one into the other.
Each problem is prompted once and sampled `num_samples` times (a GRPO group). As each
completion finishes, it is decoded and handed to the `Scorer` (rlvr/rewards.py), whose
verifier workers grade it while the engine decodes the rest; the episode's reward is the
weighted sum of its reward parts.

Every episode carries the `policy_version` that sampled it, so a learner can tell how stale
it is (synchronous training is staleness 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rlvr.engine import Completion, Engine
from rlvr.errors import ConfigError
from rlvr.rewards import Scorer
from rlvr.tasks import Problem
from rlvr.tokenizer import EMPTY_THINK, CharTokenizer, format_prompt
from rlvr.verifiers import Verdict


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

    @property
    def thought(self) -> bool:
        """Whether the response has a non-empty think block."""
        start = self.response.find("<think>")
        end = self.response.find("</think>")
        return start == 0 and end > len("<think>") and self.response[7:end].strip() != ""


def prompt_text(problem: Problem, think: bool | None) -> str:
    """The prompt for a problem; think=False prefills an empty think block (the ablation)."""
    text = format_prompt(problem.prompt)
    return text + EMPTY_THINK if think is False else text


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
) -> list[Episode]:
    """Sample `num_samples` completions per problem and score each; group-major order."""
    prefill = EMPTY_THINK if think is False else ""
    prompts = []
    for p in problems:
        try:
            prompts.append(tokenizer.encode(prompt_text(p, think)))
        except ValueError as e:
            raise ConfigError(
                f"Problem {p.id} cannot be tokenized ({e}); remove it from the data or use a "
                "model whose tokenizer covers its characters."
            ) from e
    pending: dict[tuple[int, int], tuple[str, dict]] = {}

    def verify_now(c: Completion) -> None:
        response = prefill + tokenizer.decode(c.token_ids)
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
        stop_token_ids=[tokenizer.eos_id],
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
            )
        )
    return episodes
