"""sampler.exact_logprobs: the sampler's logprobs bit for bit the learner's (rlvr.model's
batch-invariant kernels, `Transformer.batch_invariant`).

The learner scores a minibatch of right-padded episodes in one full forward; the engine
scored each token in a forward of its own shape (a prefill, one token per row, a verify of
several). With the default kernels the two differ in the last bits (matmuls of 1-3 rows and
reductions over a different number of slots round differently, shown below), so mismatch_kl
is small but not 0; with batch-invariant kernels they are equal and mismatch_kl is exactly 0.
"""

from types import SimpleNamespace

import pytest
import torch

from rlvr.learning.algorithms import kl_k3, masked_mean
from rlvr.learning.learner import make_batch, sequence_logprobs
from rlvr.model import ModelConfig, Transformer
from rlvr.sampling.engine import Engine
from rlvr.sampling.speculative import Speculation

PAD = 0
STOPS = [2, 3, 4, 5, 6, 7]
PROMPTS = [[1, 5, 6, 7, 8, 9], [1, 10, 11], [1, 12, 13, 14, 15, 16, 17, 18, 19], [1, 20, 21, 22]]


def demo_like_model(seed: int = 0) -> Transformer:
    """The demo's shapes (hidden 128, 4 heads, 2 key/value heads), two layers."""
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=40, num_hidden_layers=2, max_position_embeddings=96, tie_word_embeddings=False
    )
    model = Transformer(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # distributions far from uniform: drafts get accepted
    return model


def sample(model, speculation=None, **kwargs):
    engine = Engine(model, PAD, speculation=speculation)
    completions = engine.generate(
        PROMPTS, num_samples=3, max_new_tokens=30, temperature=0.9, top_p=0.95,
        stop_token_ids=STOPS, generator=torch.Generator().manual_seed(0), **kwargs,
    )  # fmt: skip
    if speculation is not None:
        assert engine.stats.accepted > 0  # drafts were verified and accepted
    return completions


def learner_logprobs(model, completions, order):
    """The learner's logprobs of the completions, batched in `order` (its minibatch)."""
    episodes = [
        SimpleNamespace(
            prompt_ids=PROMPTS[c.prompt_index], completion_ids=c.token_ids, logprobs=c.logprobs
        )  # fmt: skip
        for c in (completions[i] for i in order)
    ]
    batch = make_batch(episodes, PAD)
    model.train()  # as the learner runs it, with autograd
    logprobs, _ = sequence_logprobs(model, batch, temperature=0.9)
    model.eval()
    mask = batch["completion_mask"].bool()
    return batch["old_logprobs"], logprobs.detach(), mask


@pytest.mark.parametrize("decoding", ["plain", "speculative", "continuous"])
def test_sampler_logprobs_equal_the_learners_bit_for_bit(decoding):
    model = demo_like_model()
    model.batch_invariant = True
    kwargs = {"continuous": {"max_rows": 5}}.get(decoding, {})
    speculation = Speculation(4, adaptive=False) if decoding == "speculative" else None
    completions = sample(model, speculation, **kwargs)
    assert len({len(c.token_ids) for c in completions}) > 1  # padding in the learner's batch
    for order in (range(len(completions)), [5, 0, 7, 3], [11]):
        sampler, learner, mask = learner_logprobs(model, completions, list(order))
        assert torch.equal(sampler[mask], learner[mask])
        mismatch = masked_mean(kl_k3(sampler, learner), mask)
        assert mismatch.item() == 0.0


def test_exact_kernels_change_the_samples_not_at_all_by_speculating():
    model = demo_like_model(1)
    model.batch_invariant = True
    plain = sample(model, max_rows=4)
    fast = sample(model, Speculation(4, adaptive=False))
    assert [(c.token_ids, c.logprobs) for c in plain] == [(c.token_ids, c.logprobs) for c in fast]


def test_without_exact_kernels_the_logprobs_differ_in_the_last_bits():
    """What the option removes: the default kernels' mismatch, tiny but not 0."""
    model = demo_like_model()
    completions = sample(model)
    sampler, learner, mask = learner_logprobs(model, completions, range(len(completions)))
    difference = (sampler[mask] - learner[mask]).abs().max().item()
    assert 0.0 < difference < 1e-4


def test_a_matmul_row_rounds_differently_with_fewer_rows():
    """The minimal example: one token's projection computed alone (a decode step) and
    inside a batch of rows (the learner's forward) is not always the same float."""
    torch.manual_seed(0)
    weight, x = torch.randn(352, 128), torch.randn(64, 128)
    batched = torch.nn.functional.linear(x, weight)
    alone = torch.cat([torch.nn.functional.linear(x[i : i + 1], weight) for i in range(64)])
    assert torch.allclose(alone, batched, atol=1e-4)
    # (on an MKL CPU a one-row matmul takes another code path: the rows differ in the last
    # bits; on a BLAS that rounds the same way this holds with equality: then the
    # sampler's default path may already be exact for this model)
    padded = torch.cat([model_rows(weight, x[i : i + 1]) for i in range(64)])
    assert torch.equal(padded, batched)


def model_rows(weight, row):
    from rlvr.model import invariant_linear

    return invariant_linear(lambda x: torch.nn.functional.linear(x, weight), row)


def test_invariant_kernels_compute_the_same_function():
    model = demo_like_model(2)
    ids = torch.randint(3, 40, (3, 17))
    with torch.no_grad():
        default = model(ids)
        model.batch_invariant = True
        invariant = model(ids)
    assert torch.allclose(default, invariant, atol=1e-5)
