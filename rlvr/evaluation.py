"""Evaluation on the held-out split: greedy accuracy, the thinking ablation, pass@k and maj@k.

- accuracy: greedy decoding, the model decides whether to think.
- accuracy_no_think: greedy, with the prompt prefilled by an empty think block
  (`<think></think>`), so the model must answer at once. The gap between the two is how
  much the thinking carries the answer.
- accuracy_think: greedy, with thinking forced on: `<think>` prefilled and `</think>` kept
  out of sampling until the thinking has a first line (one step). How good the thinking
  is, whether or not the model would have chosen to think.
- backtrack_rate_think, tries_think (countdown): how the forced search went
  (`rlvr.tasks.countdown.search_metrics`).
- accuracy_budget_B (for each B in `eval.think_budgets`): budget forcing as in s1
  (Muennighoff et al. 2025, "s1: Simple test-time scaling"): the forced thinking is cut
  after B tokens and `</think><answer>` appended, and the model answers from there. A
  response that closes its thinking within B tokens is kept as it is. Accuracy against B is
  the test-time compute curve.
- pass@1 / pass@k: k samples per problem at `eval.temperature`, with the unbiased estimator
  of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code").
- maj@k: the most common extracted answer among the k samples, then verified.
- format_rate, think_rate, response_length: of the greedy responses (response_length_think:
  of the forced-think ones).

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
from rlvr.tasks.countdown import search_metrics
from rlvr.tokenizer import ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, CharTokenizer
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


# What a budget-forced response may write after `</think><answer>`: its answer and `</answer>`.
ANSWER_TOKENS = 32


def _greedy(
    engine, tokenizer, scorer: Scorer, problems, cfg: EvalConfig, think: bool | None,
    prefill_ids: Sequence[list[int]] | None = None, max_new_tokens: int | None = None,
) -> list[Episode]:  # fmt: skip
    # eval.batch_size rows at a time: refilled as completions finish, or a batch at a time
    # (Engine.continuous_batching)
    return rollout(
        engine, tokenizer, scorer, problems, num_samples=1, temperature=0.0,
        max_new_tokens=max_new_tokens or cfg.max_new_tokens, think=think,
        prefill_ids=prefill_ids, max_rows=cfg.batch_size,
    )  # fmt: skip


def thinking_length(episode: Episode, think_close_id: int) -> int | None:
    """How many tokens a forced-think episode thought for (its completion starts inside the
    think block): up to `</think>`, or up to the stop token when it stopped without closing
    the block; None when it was cut off at the length limit still thinking."""
    ids = episode.completion_ids
    if think_close_id in ids:
        return ids.index(think_close_id)
    return len(ids) - 1 if episode.finish_reason == "stop" else None


def budget_forced(
    engine, tokenizer, scorer: Scorer, thinking: Sequence[Episode], budget: int, cfg: EvalConfig
) -> list[Episode]:
    """The forced-think episodes with their thinking cut at `budget` tokens (s1's budget
    forcing): an episode that thought longer (or was still thinking at the length limit) is
    continued from its first `budget` thinking tokens + `</think><answer>`; the others are
    kept as they are. Greedy decoding is deterministic, so the first `budget` tokens of the
    full-length thinking are the thinking a budget-`budget` run would have written."""
    think_close_id = tokenizer.encode(THINK_CLOSE)[0]
    close = tokenizer.encode(THINK_CLOSE + ANSWER_OPEN)
    opening = tokenizer.encode(THINK_OPEN)
    cut = [
        i for i, ep in enumerate(thinking)
        if (length := thinking_length(ep, think_close_id)) is None or length > budget
    ]  # fmt: skip
    prefills = [opening + thinking[i].completion_ids[:budget] + close for i in cut]
    answered = _greedy(engine, tokenizer, scorer, [thinking[i].problem for i in cut], cfg,
                       think=None, prefill_ids=prefills, max_new_tokens=ANSWER_TOKENS)  # fmt: skip
    out = list(thinking)
    for i, ep in zip(cut, answered):
        out[i] = ep
    return out


def budget_curve(metrics: dict[str, float]) -> dict[int, float]:
    """{B: accuracy} from the `accuracy_budget_B` entries of evaluate's metrics."""
    prefix = "accuracy_budget_"
    return {int(k[len(prefix) :]): v for k, v in metrics.items() if k.startswith(prefix)}


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
    speculation, continuous batching); by default a plain one. sampled=False (the evaluations
    during GRPO) skips the costly parts: pass@k, maj@k and the thinking-budget curve.
    """
    was_training = model.training
    model.eval()
    engine = engine or Engine(model, pad_id=tokenizer.pad_id)
    greedy = _greedy(engine, tokenizer, scorer, problems, cfg, think=None)
    no_think = _greedy(engine, tokenizer, scorer, problems, cfg, think=False)
    think = _greedy(engine, tokenizer, scorer, problems, cfg, think=True)

    def correct(episodes: Sequence[Episode]) -> float:
        return sum(ep.verdict.status == "correct" for ep in episodes) / len(episodes)

    metrics = {
        "accuracy": correct(greedy),
        "accuracy_no_think": correct(no_think),
        "accuracy_think": correct(think),
        "format_rate": sum(ep.verdict.components.get("format", 0.0) for ep in greedy) / len(greedy),
        "think_rate": sum(ep.thought for ep in greedy) / len(greedy),
        "response_length": sum(len(ep.completion_ids) for ep in greedy) / len(greedy),
        "truncated_rate": sum(ep.finish_reason == "length" for ep in greedy) / len(greedy),
        "response_length_think": sum(len(ep.completion_ids) for ep in think) / len(think),
    }
    if problems[0].verifier == "countdown":  # how the forced search went: backtracks, tries
        found = search_metrics([ep.response for ep in think])
        metrics.update({f"{key}_think": value for key, value in found.items()})
    if sampled:
        for budget in cfg.think_budgets:
            cut = budget_forced(engine, tokenizer, scorer, think, budget, cfg)
            metrics[f"accuracy_budget_{budget}"] = correct(cut)

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
            "think_response": th.response,
            "think_status": th.verdict.status,
        }
        for ep, nt, th in list(zip(greedy, no_think, think))[: cfg.num_logged_samples]
    ]
    model.train(was_training)
    return metrics, samples
