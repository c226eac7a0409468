"""Thinking forced on and cut at a budget: the engine's suppression of a token until another
has appeared, forced-think prompting, and s1-style budget forcing that cuts at exactly B
thinking tokens."""

from __future__ import annotations

import pytest
import torch

from rlvr.config import EvalConfig, RewardConfig
from rlvr.evaluation import budget_curve, budget_forced, evaluate, thinking_length
from rlvr.model import ModelConfig, Transformer
from rlvr.sampling.engine import Completion, Engine
from rlvr.sampling.rollout import Episode, forced_think_ids, prompt_text, rollout
from rlvr.tasks import CountdownTask
from rlvr.tokenizer import CharTokenizer
from rlvr.verifiers import Verdict
from rlvr.verifiers.rewards import Scorer

TOK = CharTokenizer()
THINK_CLOSE = TOK.think_close_id
NEWLINE = TOK.token_to_id("\n")


def tiny_model(seed: int = 0, vocab_size: int = 31) -> Transformer:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=48,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=False)  # fmt: skip
    return Transformer(config).eval()


def favouring(model: Transformer, token: int, strength: float, *more: tuple[int, float]):
    """The model with a large constant feature in the residual stream that the output layer
    reads into `token`'s logit (and into each (token, strength) of `more`): with a large
    strength, `token` is every step's most likely next token."""
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 100.0
        for t, s in [(token, strength), *more]:
            model.lm_head.weight[t, 0] = s
    return model


@torch.inference_mode()
def naive_greedy(model, prompt, num_new, suppress=(), until=()) -> list[int]:
    """Greedy decoding with a full forward per token and the suppression rule written out."""
    ids, held = list(prompt), bool(suppress)
    for _ in range(num_new):
        logits = model(torch.tensor([ids]))[0, -1].clone()
        if held:
            logits[list(suppress)] = float("-inf")
        ids.append(int(logits.argmax()))
        held = held and ids[-1] not in until
    return ids[len(prompt) :]


@pytest.mark.parametrize("decode", ["eager", "static"])
def test_suppressed_tokens_wait_for_the_releasing_token(decode):
    # The favoured token 7 is kept out of each row until that row draws one of the releasing
    # tokens; rows are released at different steps (or never), and the greedy tokens equal a
    # naive loop that applies the same rule.
    model = favouring(tiny_model(), 7, 0.05)
    prompts = [[3, 4, 5, 6], [8, 9], [10, 11, 12, 13, 14], [20, 21, 22]]
    plain = [naive_greedy(model, p, 12, suppress=[7]) for p in prompts]
    until = [plain[0][2], plain[1][5]]  # released at the 3rd and 6th token of rows 0 and 1
    engine = Engine(model, pad_id=0, decode=decode)
    completions = engine.generate(prompts, max_new_tokens=12, temperature=0.0,
                                  suppress_ids=[7], suppress_until_ids=until)  # fmt: skip
    for prompt, c in zip(prompts, completions):
        expected = naive_greedy(model, prompt, 12, suppress=[7], until=until)
        assert c.token_ids == expected
        released = next((i for i, t in enumerate(expected) if t in until), None)
        assert 7 not in expected[: None if released is None else released + 1]
    assert 7 in completions[0].token_ids  # after its release the favoured token comes back
    # Sampling: never drawn while held, logprobs of the unmasked distribution.
    sampled = engine.generate(prompts, num_samples=4, max_new_tokens=12, temperature=1.0,
                              suppress_ids=[7], suppress_until_ids=[5],
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
    for c in sampled:
        first = c.token_ids.index(5) if 5 in c.token_ids else len(c.token_ids)
        assert 7 not in c.token_ids[: first + 1]


def test_suppression_with_stops_and_dropped_rows():
    # Rows stop at eos (id 2) at different steps, so the eager engine drops finished rows
    # while the others are still held: the suppression must follow each row.
    model = favouring(tiny_model(1), 7, 0.05)
    prompts = [[3, 4, 5, 6], [8, 9], [10, 11, 12, 13, 14], [20, 21, 22], [15, 16]]
    plain = [naive_greedy(model, p, 16, suppress=[7]) for p in prompts]
    until = [plain[2][4]]
    stop = plain[0][1]  # row 0 stops at its 2nd token
    for decode in ("eager", "static"):
        engine = Engine(model, pad_id=0, decode=decode)
        completions = engine.generate(prompts, max_new_tokens=16, temperature=0.0,
                                      stop_token_ids=[stop], suppress_ids=[7],
                                      suppress_until_ids=until)  # fmt: skip
        for prompt, c in zip(prompts, completions):
            expected = naive_greedy(model, prompt, 16, suppress=[7], until=until)
            end = expected.index(stop) + 1 if stop in expected else 16
            assert c.token_ids == expected[:end], decode


def scorer(task=None) -> Scorer:
    return Scorer(task or CountdownTask(), RewardConfig(workers=0), 64, None)


def test_forced_think_prefills_think_and_holds_the_close_until_a_newline():
    task = CountdownTask()
    problems = task.problems("test", 6, seed=0)
    assert prompt_text(TOK, problems[0], True).endswith("\n<think>")
    assert forced_think_ids(TOK) == ((THINK_CLOSE,), (NEWLINE,))
    # A model that would close its thinking at once, or else write a newline: forced, it
    # writes the newline first and then closes.
    model = favouring(tiny_model(vocab_size=TOK.vocab_size), THINK_CLOSE, 0.2, (NEWLINE, 0.1))
    engine = Engine(model, pad_id=TOK.pad_id)
    free = rollout(engine, TOK, scorer(task), problems, num_samples=1, temperature=0.0,
                   max_new_tokens=40)  # fmt: skip
    forced = rollout(engine, TOK, scorer(task), problems, num_samples=1, temperature=0.0,
                     max_new_tokens=40, think=True)  # fmt: skip
    assert all(ep.completion_ids[0] == THINK_CLOSE for ep in free)
    for ep in forced:
        assert ep.response.startswith("<think>\n</think>")
        assert ep.prompt_ids[-1] == TOK.think_open_id
        assert ep.completion_ids[:2] == [NEWLINE, THINK_CLOSE]


class ScriptedEngine:
    """Stands in for the engine: records the prompts and answers each with `answer` ids."""

    def __init__(self, answer: list[int]):
        self.answer, self.prompts = answer, []

    def generate(self, prompts, *, max_new_tokens, on_complete=None, **_):
        self.prompts += prompts
        out = []
        for i in range(len(prompts)):
            c = Completion(i, 0, self.answer[:max_new_tokens], [0.0] * len(self.answer), "stop")
            if on_complete:
                on_complete(c)
            out.append(c)
        return out


def forced_episode(problem, completion: str, finish: str) -> Episode:
    ids = TOK.encode(completion)
    prompt = TOK.encode(prompt_text(TOK, problem, True))
    return Episode(problem, prompt, ids, [0.0] * len(ids), finish, 0, "<think>" + completion,
                   Verdict(0.0, "wrong", {}, ""), 0.0)  # fmt: skip


@pytest.mark.parametrize("budget", [1, 5, 8, 12, 30])
def test_budget_forcing_cuts_at_exactly_b_thinking_tokens(budget):
    task = CountdownTask()
    problems = task.problems("test", 4, seed=0)
    thinking = [
        forced_episode(
            problems[0], "9*7=63 63-3=60 yes\n</think><answer>(9*7)-3</answer><eos>", "stop"
        ),  # closes after 19 thinking tokens
        forced_episode(problems[1], "9*3=27 27+7=34 no\n9+7=16 16*3=48 no\n9*7", "length"),
        forced_episode(problems[2], "7*3=21<eos>", "stop"),  # stopped after 6, never closed
        forced_episode(problems[3], "12*12=1", "length"),  # only 7 tokens, but still thinking
    ]
    answer = TOK.encode("(9*7)-3</answer><eos>")
    engine = ScriptedEngine(answer)
    out = budget_forced(engine, TOK, scorer(task), thinking, budget, EvalConfig())
    lengths = [thinking_length(ep, THINK_CLOSE) for ep in thinking]
    assert lengths == [19, None, 6, None]
    cut = [i for i, n in enumerate(lengths) if n is None or n > budget]
    assert len(engine.prompts) == len(cut)
    for i, prompt in zip(cut, engine.prompts):
        # the prompt, <think>, the first B thinking tokens, then </think><answer>: no more
        head = TOK.encode(prompt_text(TOK, problems[i], None)) + [TOK.think_open_id]
        assert prompt[: len(head)] == head
        assert prompt[len(head) :] == (
            thinking[i].completion_ids[:budget] + [THINK_CLOSE, TOK.answer_open_id]
        )
        think = out[i].response.split("</think>")[0][len("<think>") :]
        assert len(TOK.encode(think)) == min(budget, len(thinking[i].completion_ids))
        assert out[i].response.endswith("</think><answer>(9*7)-3</answer><eos>")
    for i in set(range(4)) - set(cut):
        assert out[i] is thinking[i]  # closed (or stopped) within the budget: kept as it is


def test_evaluate_reports_forced_think_and_the_budget_curve():
    task = CountdownTask()
    problems = task.problems("test", 6, seed=0)
    model = tiny_model(vocab_size=TOK.vocab_size)
    cfg = EvalConfig(num_problems=6, num_samples=0, max_new_tokens=24, think_budgets=[4, 24])
    metrics, samples = evaluate(model, TOK, scorer(task), problems, cfg)
    for key in ["accuracy_think", "response_length_think", "accuracy_budget_4",
                "accuracy_budget_24", "backtrack_rate_think", "tries_think"]:  # fmt: skip
        assert 0 <= metrics[key] <= (24 if key.startswith(("resp", "tries")) else 1), key
    assert budget_curve(metrics) == {4: metrics["accuracy_budget_4"],
                                     24: metrics["accuracy_budget_24"]}  # fmt: skip
    assert all(s["think_response"].startswith("<think>") for s in samples)
    # The evaluations during GRPO skip the curve.
    metrics, _ = evaluate(model, TOK, scorer(task), problems, cfg, sampled=False)
    assert budget_curve(metrics) == {} and "accuracy_think" in metrics
