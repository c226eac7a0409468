"""The vLLM sampling backend (sampler.backend = "vllm") on tiny models built in code.

These run wherever vLLM imports (`make test-vllm` builds a venv with `rlvr[vllm]` and runs
this file there); elsewhere only the "not installed" check runs. vLLM must see
head_dim >= 32, so the models here have 2 heads of 32.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from rlvr.cli import main, recipe_path
from rlvr.config import Config
from rlvr.errors import ConfigError
from rlvr.model import ModelConfig, Transformer
from rlvr.tokenizer import CharTokenizer

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (make test-vllm)")


def tiny(seed: int = 0, heads: int = 2) -> Transformer:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=CharTokenizer().vocab_size, hidden_size=64,
                         intermediate_size=128, num_hidden_layers=2, num_attention_heads=heads,
                         num_key_value_heads=heads, max_position_embeddings=128)  # fmt: skip
    model = Transformer(config).eval()
    with torch.no_grad():  # larger weights than the init: peaked, varied distributions
        for p in model.parameters():
            p.mul_(3.0)
    return model


def own_logprobs(model, prompt: list[int], tokens: list[int], temperature: float) -> torch.Tensor:
    """log-softmax(logits / T) of `tokens` after `prompt`, by rlvr's model: the learner's."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens]))[0, len(prompt) - 1 : -1] / temperature
    return logits.log_softmax(-1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]


@pytest.fixture(scope="module")
def engine_and_model():
    from rlvr.sampling.vllm_engine import VLLMEngine

    model, tokenizer = tiny(), CharTokenizer()
    engine = VLLMEngine(model, tokenizer, Config())
    yield engine, model, tokenizer
    engine.close()


def test_not_installed_is_one_sentence_and_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails as if not installed
    code = main(["train", str(recipe_path("smoke")), "--out", str(tmp_path / "run"),
                 "--sampler.backend", "vllm", "--model.num_attention_heads", "2"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "not installed" in err and "rlvr[vllm]" in err
    assert not (tmp_path / "run").exists()  # before any work


@needs_vllm
def test_head_dim_below_32_is_one_sentence():
    from rlvr.sampling.vllm_engine import check_vllm

    with pytest.raises(ConfigError, match="head_dim >= 32"):
        check_vllm(tiny(heads=4))  # 64 / 4 = 16


@needs_vllm
def test_samples_group_major_with_the_learners_logprobs(engine_and_model):
    engine, model, tokenizer = engine_and_model
    prompts = [tokenizer.encode(tokenizer.format_prompt(q)) for q in ("1+2*3=", "45+6*7-8=")]
    seen = []
    kwargs = dict(num_samples=3, max_new_tokens=20, temperature=0.8,
                  stop_token_ids=[tokenizer.token_to_id("=")])  # fmt: skip
    out = engine.generate(prompts, generator=torch.Generator().manual_seed(1),
                          on_complete=seen.append, **kwargs)  # fmt: skip
    assert [(c.prompt_index, c.sample_index) for c in out] == [(i, j) for i in range(2)
                                                               for j in range(3)]  # fmt: skip
    assert sorted(id(c) for c in seen) == sorted(id(c) for c in out)  # each reported once
    for c in out:
        assert len(c.token_ids) == len(c.logprobs) >= 1
        stopped = c.token_ids[-1] == tokenizer.token_to_id("=")
        assert (c.finish_reason == "stop") == stopped and (stopped or len(c.token_ids) == 20)
        learner = own_logprobs(model, prompts[c.prompt_index], c.token_ids, 0.8)
        assert torch.allclose(torch.tensor(c.logprobs), learner, atol=1e-4)
    again = engine.generate(prompts, generator=torch.Generator().manual_seed(1), **kwargs)
    assert [c.token_ids for c in again] == [c.token_ids for c in out]  # seeded


@needs_vllm
def test_min_tokens_top_k_and_stop_sequences(engine_and_model):
    engine, model, tokenizer = engine_and_model
    prompt = tokenizer.encode(tokenizer.format_prompt("3*4="))
    eq = tokenizer.token_to_id("=")
    g = torch.Generator().manual_seed(0)
    forced = engine.generate([prompt], num_samples=4, max_new_tokens=12, min_new_tokens=12,
                             stop_token_ids=[eq], generator=g)  # fmt: skip
    assert all(len(c.token_ids) == 12 and c.finish_reason == "length" for c in forced)
    # top_k = 1 is greedy: every sample is the argmax path, as rlvr's engine decodes it
    from rlvr.sampling.engine import Engine

    greedy = Engine(model, pad_id=tokenizer.pad_id).generate(
        [prompt], max_new_tokens=10, temperature=0.0
    )[0]
    top1 = engine.generate([prompt], num_samples=2, max_new_tokens=10, top_k=1, generator=g)
    assert all(c.token_ids == greedy.token_ids for c in top1)
    # a stop sequence cuts the completion after its first occurrence
    pair = greedy.token_ids[3:5]
    cut = engine.generate([prompt], max_new_tokens=10, top_k=1, stop_sequences=[pair],
                          generator=g)[0]  # fmt: skip
    first = next(i for i in range(1, 10) if greedy.token_ids[i - 1 : i + 1] == pair)
    assert cut.token_ids == greedy.token_ids[: first + 1] and cut.finish_reason == "stop"


@needs_vllm
def test_new_weights_are_loaded_in_place(engine_and_model):
    engine, model, tokenizer = engine_and_model
    prompt = tokenizer.encode(tokenizer.format_prompt("9+9="))
    with torch.no_grad():  # every tensor moves, the tied embedding / output layer included
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    engine.load_weights(model, version=1)
    assert engine.version == 1
    for c in engine.generate([prompt], num_samples=4, max_new_tokens=16,
                             generator=torch.Generator().manual_seed(2)):  # fmt: skip
        learner = own_logprobs(model, prompt, c.token_ids, 1.0)
        assert torch.allclose(torch.tensor(c.logprobs), learner, atol=1e-4)


@needs_vllm
@pytest.mark.slow
def test_grpo_through_vllm_from_scratch_and_from_a_checkpoint_async(tmp_path):
    smoke = ["--model.num_attention_heads", "2", "--pretrain.steps", "30", "--grpo.steps", "2",
             "--eval.num_problems", "8", "--eval.num_samples", "0", "--plots", "false",
             "--sampler.backend", "vllm"]  # fmt: skip
    run = tmp_path / "scratch"
    assert main(["train", str(recipe_path("smoke")), "--out", str(run), *smoke]) == 0
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    grpo = [s for s in steps if s.get("phase") == "grpo"]
    assert [s["step"] for s in grpo] == [1, 2]
    # vLLM's logprobs are the learner's: the sampler-learner mismatch is float noise
    assert all(abs(s["mismatch_kl"]) < 1e-4 and s["sampled_tokens"] > 0 for s in grpo)
    # --model (the run's own checkpoint as a Hugging Face folder), sampled asynchronously: the
    # sampler process's vLLM must load the policy's weights, not its fresh model's
    again = tmp_path / "from-model"
    args = ["train", str(recipe_path("smoke")), "--out", str(again), "--model",
            str(run / "checkpoint"), *smoke[4:], "--grpo.max_staleness", "1",
            "--sampler.threads", "1", "--learner.threads", "1"]  # fmt: skip
    assert main(args) == 0
    steps = [json.loads(line) for line in (again / "metrics.jsonl").read_text().splitlines()]
    grpo = [s for s in steps if s.get("phase") == "grpo"]
    assert [(s["step"], s["staleness"]) for s in grpo] == [(1, 0), (2, 1)]
    assert abs(grpo[0]["mismatch_kl"]) < 1e-4
