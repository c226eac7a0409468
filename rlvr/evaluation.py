"""Evaluation on the held-out split: greedy accuracy, the thinking ablation, pass@k and maj@k.

- accuracy: greedy decoding, the model decides whether to think.
- accuracy_no_think: greedy, with the prompt prefilled by an empty think block
  (`<think></think>`), so the model must answer at once. The gap between the two is how
  much the thinking carries the answer.
- pass@1 / pass@k: k samples per problem at `eval.temperature`, with the unbiased estimator
  of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code").
- maj@k: the most common extracted answer among the k samples, then verified.
- format_rate, think_rate, response_length: of the greedy responses.

    rlvr eval RUN_DIR        # re-evaluates a saved checkpoint
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch

from rlvr.config import EvalConfig
from rlvr.sampling.engine import Engine
from rlvr.sampling.rollout import Episode, rollout
from rlvr.tasks import Problem
from rlvr.tokenizer import CharTokenizer
from rlvr.verifiers.format import parse_response
from rlvr.verifiers.rewards import Scorer


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 < k <= n:
        raise ValueError(f"pass@k needs 0 < k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(group: Sequence[Episode]) -> bool:
    """maj@k for one problem: vote on the extracted answers, then verify the winner."""
    votes: Counter[str] = Counter()
    first: dict[str, Episode] = {}
    for ep in group:
        answer = parse_response(ep.response).answer
        if answer is None:
            continue
        key = answer.strip()
        votes[key] += 1
        first.setdefault(key, ep)
    if not votes:
        return False
    winner, _ = votes.most_common(1)[0]
    return first[winner].verdict.status == "correct"


def _greedy(
    engine, tokenizer, scorer: Scorer, problems, cfg: EvalConfig, think: bool | None
) -> list[Episode]:
    # eval.batch_size rows at a time: refilled as completions finish, or a batch at a time
    # (Engine.continuous_batching)
    return rollout(
        engine, tokenizer, scorer, problems, num_samples=1, temperature=0.0,
        max_new_tokens=cfg.max_new_tokens, think=think, max_rows=cfg.batch_size,
    )  # fmt: skip


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    tokenizer: CharTokenizer,
    scorer: Scorer,
    problems: Sequence[Problem],
    cfg: EvalConfig,
    *,
    seed: int = 0,
    sampled: bool = True,
    engine: Engine | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Metrics on `problems` and a few logged samples. Fractions are in 0..1.

    `scorer` verifies the responses (rlvr/verifiers/rewards.py); only the verdicts count here, not the
    reward weights. `engine`: the sampling engine on `model` (rlvr.sampling.sampler.make_engine:
    speculation, continuous batching); by default a plain one.
    """
    was_training = model.training
    model.eval()
    engine = engine or Engine(model, pad_id=tokenizer.pad_id)
    greedy = _greedy(engine, tokenizer, scorer, problems, cfg, think=None)
    no_think = _greedy(engine, tokenizer, scorer, problems, cfg, think=False)

    def correct(episodes: Sequence[Episode]) -> float:
        return sum(ep.verdict.status == "correct" for ep in episodes) / len(episodes)

    metrics = {
        "accuracy": correct(greedy),
        "accuracy_no_think": correct(no_think),
        "format_rate": sum(ep.verdict.components.get("format", 0.0) for ep in greedy) / len(greedy),
        "think_rate": sum(ep.thought for ep in greedy) / len(greedy),
        "response_length": sum(len(ep.completion_ids) for ep in greedy) / len(greedy),
        "truncated_rate": sum(ep.finish_reason == "length" for ep in greedy) / len(greedy),
    }

    k = cfg.num_samples
    if sampled and k >= 2:
        generator = torch.Generator().manual_seed(seed)
        pass1, passk, majk = [], [], []
        episodes = rollout(
            engine, tokenizer, scorer, problems, num_samples=k, temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens, generator=generator, max_rows=cfg.batch_size,
        )  # fmt: skip
        for i in range(len(problems)):
            group = episodes[i * k : (i + 1) * k]
            c = sum(ep.verdict.status == "correct" for ep in group)
            pass1.append(c / k)
            passk.append(pass_at_k(k, c, k))
            majk.append(float(majority_correct(group)))
        metrics["pass@1"] = sum(pass1) / len(pass1)
        metrics[f"pass@{k}"] = sum(passk) / len(passk)
        metrics[f"maj@{k}"] = sum(majk) / len(majk)

    samples = [
        {
            "prompt": ep.problem.prompt,
            "answer": ep.problem.answer,
            "response": ep.response,
            "status": ep.verdict.status,
            "no_think_response": nt.response,
            "no_think_status": nt.verdict.status,
        }
        for ep, nt in list(zip(greedy, no_think))[: cfg.num_logged_samples]
    ]
    model.train(was_training)
    return metrics, samples
