"""The decode paths against each other: the fixed-shape step that a CUDA graph replays on a
GPU (`Engine(decode="static")`, run here without a graph) against eager decoding. (Each test
in tests/test_engine.py runs on every path; these compare paths, so they run once.)"""

import pytest
import torch
from test_engine import PAD, PROMPTS, naive_greedy, tiny_model

from rlvr.sampling.engine import Engine


def test_static_decode_matches_eager():
    """The fixed-shape step (attention over every slot of the cache, unwritten ones masked;
    no rows dropped) gives the same tokens and logprobs as eager decoding: greedy with a stop
    token (eager drops the finished rows, static keeps them), and sampled with top-p. (With
    stops, sampled streams part once eager drops rows: it then draws fewer numbers a step.)"""
    model = tiny_model(seed=3)
    stop = naive_greedy(model, PROMPTS[0], 4)[2]
    settings = [
        dict(temperature=0.0, stop_token_ids=[stop]),
        dict(top_p=0.9, generator=torch.Generator().manual_seed(5)),
    ]
    for kwargs in settings:
        runs = {}
        for mode in ("eager", "static"):
            if "generator" in kwargs:
                kwargs["generator"].manual_seed(5)
            engine = Engine(model, pad_id=PAD, decode=mode)
            runs[mode] = engine.generate(PROMPTS, num_samples=4, max_new_tokens=20, **kwargs)
        if "stop_token_ids" in kwargs:
            assert any(c.finish_reason == "stop" for c in runs["eager"])
        for a, b in zip(runs["eager"], runs["static"]):
            assert (a.token_ids, a.finish_reason) == (b.token_ids, b.finish_reason)
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)  # fmt: skip


def test_static_decode_under_bf16_autocast_matches_eager():
    """Under autocast, keys arrive in float32 (the rotary product) and values in bf16: the
    fixed-shape cache writes each in its own precision, as the eager one does."""
    model = tiny_model(seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        runs = {
            mode: Engine(model, pad_id=PAD, decode=mode).generate(
                PROMPTS, num_samples=2, max_new_tokens=12, temperature=0.0
            )
            for mode in ("eager", "static")
        }
    for a, b in zip(runs["eager"], runs["static"]):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-2, rtol=0)  # fmt: skip


def test_unknown_decode_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="decode 'graph' is not one of auto, eager, static"):
        Engine(tiny_model(), pad_id=PAD, decode="graph")
