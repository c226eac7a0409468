"""The sampling engine against a naive decode loop (full forward, no cache, every step).

Every test runs on each decode path: "eager" (one forward per step; finished rows are
dropped), "static" (the fixed-shape step that a CUDA graph captures and replays on a GPU, run
without one), "rows" (the rows loop of continuous batching, on two rows, so later samples
wait for a free row), "speculative" (the rows loop drafting from the context and verifying
every draft) and, where there is a GPU, "graph" (a copy of the model on the GPU, decoded
through the CUDA graph; its outputs are compared with the CPU's as they are).
"""

import copy
import sys

import pytest
import torch

from rlvr.model import ModelConfig, Transformer
from rlvr.sampling.engine import Completion, Engine
from rlvr.sampling.engine import Engine as RealEngine  # (the tests' `Engine` picks a decode path)
from rlvr.sampling.speculative import Speculation

PAD = 0
PROMPTS = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15, 16, 17]]


class TwoRowsEngine(RealEngine):
    """The engine with continuous batching on two rows, for every call (however few its rows:
    `generate` alone would decode calls of one or two batches a batch at a time)."""

    def uses_rows_loop(self, num_rows, max_rows=0):
        return True

    def generate(self, prompts, **kwargs):
        return super().generate(prompts, max_rows=2, **kwargs)


def engine_factory(decode: str):
    """What `Engine(model, pad_id)` makes in these tests: the engine on one decode path."""

    def make(model, pad_id):
        if decode == "graph":
            return RealEngine(copy.deepcopy(model).cuda(), pad_id, decode="auto")
        if decode == "rows":
            return TwoRowsEngine(model, pad_id)
        if decode == "speculative":
            return RealEngine(model, pad_id, speculation=Speculation(3, adaptive=False))
        return RealEngine(model, pad_id, decode=decode)

    return make


DECODES = ["eager", "static", "rows", "speculative"]
DECODES += ["graph"] if torch.cuda.is_available() else []


@pytest.fixture(autouse=True, params=DECODES)
def decode(request, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "Engine", engine_factory(request.param))
    return request.param


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    fields = dict(
        vocab_size=31,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return Transformer(ModelConfig(**{**fields, **overrides})).eval()


def eos_model(eos: int) -> Transformer:
    """A model whose every prediction is `eos`: a large constant feature in the residual
    stream that the output layer reads only into eos's logit."""
    model = tiny_model()
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 100.0
        model.lm_head.weight[eos, 0] = 10.0
    return model


@torch.inference_mode()
def naive_greedy(model: Transformer, prompt: list[int], num_new: int) -> list[int]:
    ids = list(prompt)
    for _ in range(num_new):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


def generate(model, prompts=PROMPTS, **kwargs) -> list[Completion]:
    kwargs.setdefault("max_new_tokens", 10)
    return Engine(model, pad_id=PAD).generate(prompts, **kwargs)


def test_greedy_equals_naive_loop_for_every_prompt_and_sample():
    model = tiny_model()
    completions = generate(model, num_samples=3, max_new_tokens=12, temperature=0.0)
    assert [(c.prompt_index, c.sample_index) for c in completions] == [
        (p, s) for p in range(3) for s in range(3)
    ]
    for c in completions:
        assert c.token_ids == naive_greedy(model, PROMPTS[c.prompt_index], 12)
        assert c.finish_reason == "length" and len(c.logprobs) == 12


@torch.inference_mode()
@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_logprobs_equal_full_forward_log_softmax(temperature):
    model = tiny_model()
    gen = torch.Generator().manual_seed(0)
    completions = generate(model, num_samples=2, temperature=temperature, generator=gen)
    for c in completions:
        prompt = PROMPTS[c.prompt_index]
        logits = model(torch.tensor([prompt + c.token_ids]))[0, len(prompt) - 1 : -1]
        logp = torch.log_softmax(logits / (temperature or 1.0), -1)
        expected = logp.gather(-1, torch.tensor(c.token_ids)[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=0)


def test_logprobs_are_taken_before_truncation():
    model = tiny_model()
    gen = torch.Generator().manual_seed(0)
    plain = generate(model, temperature=0.0)
    top1 = generate(model, temperature=1.0, top_k=1, generator=gen)
    # top_k=1 picks the greedy token, but its logprob is under the untruncated softmax.
    for a, b in zip(plain, top1):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs))
        assert max(b.logprobs) < 0


def test_top_p_tiny_equals_greedy():
    model = tiny_model()
    greedy = generate(model, temperature=0.0)
    nucleus = generate(
        model, temperature=1.0, top_p=1e-6, generator=torch.Generator().manual_seed(1)
    )
    assert [c.token_ids for c in nucleus] == [c.token_ids for c in greedy]


def test_top_k_keeps_only_the_k_most_likely_tokens():
    model = tiny_model()
    completions = generate(
        model, num_samples=8, top_k=3, temperature=2.0, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        for c in completions:
            prompt = PROMPTS[c.prompt_index]
            logits = model(torch.tensor([prompt + c.token_ids]))[0, len(prompt) - 1 : -1]
            top3 = logits.topk(3, dim=-1).indices
            assert all(t in row for t, row in zip(c.token_ids, top3.tolist()))


def test_same_seed_same_samples_different_seed_different_samples():
    model = tiny_model()

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return [c.token_ids for c in generate(model, num_samples=4, generator=gen)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_samples_of_one_prompt_differ():
    model = tiny_model()
    gen = torch.Generator().manual_seed(0)
    completions = generate(model, prompts=[[3, 4]], num_samples=8, generator=gen)
    assert len({tuple(c.token_ids) for c in completions}) > 1


def test_max_new_tokens_gives_finish_reason_length():
    completions = generate(tiny_model(), num_samples=2, max_new_tokens=4)
    assert all(len(c.token_ids) == 4 and c.finish_reason == "length" for c in completions)


def test_stops_at_eos_and_includes_it():
    eos = 7
    completions = generate(eos_model(eos), num_samples=3, stop_token_ids=[eos], temperature=1.0)
    for c in completions:
        assert c.token_ids == [eos] and c.finish_reason == "stop"
        assert len(c.logprobs) == 1


def test_rows_that_stop_early_do_not_disturb_the_others():
    # Greedy with a stop token: every row's tokens equal the naive loop cut at the stop,
    # although finished rows are dropped from the batch along the way.
    model = tiny_model(seed=3)
    naive = {i: naive_greedy(model, p, 16) for i, p in enumerate(PROMPTS)}
    stop = naive[0][2]  # a token prompt 0 emits early
    completions = generate(
        model, num_samples=2, max_new_tokens=16, temperature=0.0, stop_token_ids=[stop]
    )
    for c in completions:
        expected = naive[c.prompt_index]
        if stop in expected:
            expected = expected[: expected.index(stop) + 1]
            assert c.finish_reason == "stop"
        else:
            assert c.finish_reason == "length"
        assert c.token_ids == expected


def test_stop_sequence_ends_a_completion_and_is_included():
    model = tiny_model()
    greedy = naive_greedy(model, PROMPTS[1], 12)
    sequence = greedy[3:5]
    [c] = generate(
        model, prompts=[PROMPTS[1]], max_new_tokens=12, temperature=0.0, stop_sequences=[sequence]
    )
    end = next(i + 2 for i in range(len(greedy) - 1) if greedy[i : i + 2] == sequence)
    assert c.token_ids == greedy[:end] and c.finish_reason == "stop"


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_min_new_tokens_masks_the_stop_tokens_until_then(temperature):
    # The eos model puts nearly all mass on eos: with min_new_tokens 5, the first 5 tokens
    # are drawn from the rest of the distribution, the 6th is eos and ends the completion.
    eos = 7
    model = eos_model(eos)
    gen = torch.Generator().manual_seed(0)
    completions = generate(
        model, num_samples=3, stop_token_ids=[eos], min_new_tokens=5, temperature=temperature,
        generator=gen,
    )  # fmt: skip
    with torch.inference_mode():
        for c in completions:
            assert len(c.token_ids) == 6 and c.finish_reason == "stop"
            assert eos not in c.token_ids[:5] and c.token_ids[5] == eos
            # Logprobs are those of the unmasked distribution, as the learner computes them.
            prompt = PROMPTS[c.prompt_index]
            logits = model(torch.tensor([prompt + c.token_ids]))[0, len(prompt) - 1 : -1]
            expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.token_ids)[:, None])
            torch.testing.assert_close(
                torch.tensor(c.logprobs), expected.squeeze(-1), atol=1e-4, rtol=0
            )
            assert max(c.logprobs[:5]) < -5  # masked steps drew unlikely tokens


def test_min_new_tokens_defers_stop_sequences():
    model = tiny_model()
    greedy = naive_greedy(model, PROMPTS[1], 12)
    sequence = greedy[3:5]

    def expected_length(minimum):  # the first end of `sequence` after `minimum` tokens
        ends = [e for e in range(minimum + 1, 13) if greedy[e - 2 : e] == sequence]
        return ends[0] if ends else 12

    for minimum in range(8):  # 4 and 5 straddle the first occurrence's end (5 tokens)
        [c] = generate(model, prompts=[PROMPTS[1]], max_new_tokens=12, temperature=0.0,
                       stop_sequences=[sequence], min_new_tokens=minimum)  # fmt: skip
        assert c.token_ids == greedy[: expected_length(minimum)], minimum
    assert expected_length(4) == 5 and expected_length(5) > 5


@pytest.mark.parametrize("filters", [dict(top_k=1), dict(top_k=2), dict(top_p=1e-6)])
def test_min_new_tokens_masks_before_top_k_and_top_p(filters):
    # eos is every step's most likely token: the filters must pick among the other tokens
    # (top_k=1 or a tiny top_p: the best non-eos token, i.e. greedy under the same mask).
    eos = 7
    model = eos_model(eos)
    greedy = generate(model, stop_token_ids=[eos], min_new_tokens=5, temperature=0.0)
    sampled = generate(model, stop_token_ids=[eos], min_new_tokens=5, temperature=1.0,
                       generator=torch.Generator().manual_seed(0), **filters)  # fmt: skip
    for g, c in zip(greedy, sampled):
        assert eos not in c.token_ids[:5] and c.token_ids[5:] == [eos]
        if filters != dict(top_k=2):
            assert c.token_ids == g.token_ids


def test_min_new_tokens_above_max_is_a_clear_error():
    with pytest.raises(ValueError, match="min_new_tokens"):
        generate(tiny_model(), max_new_tokens=4, min_new_tokens=5)


def test_top_k_one_equals_greedy():
    model = tiny_model()
    greedy = generate(model, num_samples=2, temperature=0.0)
    top1 = generate(model, num_samples=2, top_k=1, generator=torch.Generator().manual_seed(5))
    assert [c.token_ids for c in top1] == [c.token_ids for c in greedy]


def test_too_long_request_is_a_clear_error():
    with pytest.raises(ValueError, match="max_position_embeddings"):
        generate(tiny_model(), max_new_tokens=60)


def test_uses_the_model_dtype():
    model = tiny_model().to(torch.bfloat16)
    completions = generate(model, num_samples=2, temperature=0.0, max_new_tokens=5)
    assert all(len(c.token_ids) == 5 for c in completions)


def test_sequences_past_the_sliding_window_are_a_clear_error():
    """The fixed-shape step checks the length as the eager forward does, before each step."""
    model = tiny_model(sliding_window=8)
    with pytest.raises(ValueError, match="sliding_window 8"):
        generate(model, prompts=[[3, 4, 5, 6, 7]], max_new_tokens=10, temperature=0.0)
