"""Where the model trains and samples: `device` = "auto", "cpu", "cuda" or "cuda:N".

On every machine: the key's validation, "auto" resolving to what torch sees, and a GPU that is
not there being a one-sentence config error before any run folder is written. On a machine
with a CUDA GPU (skipped elsewhere: CI has none; run there with `pytest tests/test_device.py`):
the model's logits on the GPU equal the CPU's, the engine draws the same tokens from the same
CPU generator, transformers' models run there too, and `rlvr train` pretrains and runs GRPO on
the GPU (fp32 and bf16, full weights and LoRA, with a reference model), writes checkpoints the
CPU loads, and a run stopped on the GPU resumes on the CPU.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

import rlvr.loop
import rlvr.sampling.sampler
from rlvr.checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint
from rlvr.cli import main
from rlvr.config import ConfigError, load_config
from rlvr.device import resolve_device
from rlvr.model import ModelConfig, Transformer
from rlvr.report import read_metrics
from rlvr.sampling.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "rlvr" / "recipes" / "smoke.toml")
TINY = [
    "--pretrain.steps", "20", "--grpo.steps", "4", "--grpo.eval_every", "0",
    "--eval.num_problems", "8", "--eval.num_samples", "0", "--checkpoint.every", "2",
    "--threads", "1", "--reward.workers", "0", "--plots", "false",
    "--reward.functions", '{"faults:length_reward" = 0.5}',
]  # fmt: skip
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ----------------------------------------------------------------------------- any machine


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:1"])
def test_device_names_are_accepted(name):
    assert load_config(SMOKE, ["--device", name]).device == name


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:01", "mps:0", ""])
def test_unknown_device_names_are_config_errors(name):
    with pytest.raises(ConfigError, match="is not one of auto, cpu, cuda, cuda:N"):
        load_config(SMOKE, ["--device", name])


def test_auto_is_the_gpu_when_torch_sees_one():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_missing_gpu_is_a_config_error_before_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", SMOKE, "--out", str(out), *TINY, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "sees no CUDA GPU" in err and 'device = "cpu"' in err
    assert not out.exists()


def test_a_gpu_index_beyond_the_count_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"sees 2 CUDA GPU\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


# ----------------------------------------------------------------------------- on a GPU


def tiny_model(**overrides) -> Transformer:
    torch.manual_seed(0)
    fields = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip
    model = Transformer(ModelConfig(**{**fields, **overrides}))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.copy_(1.0 + 0.3 * noise if "norm" in name else 0.15 * noise)
    return model.eval()


@cuda
@torch.inference_mode()
def test_logits_on_the_gpu_equal_the_cpu():
    model = tiny_model(qk_norm=True, attention_bias=True)
    ids = torch.randint(0, 64, (3, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding
    on_cpu = model(ids, mask)
    on_gpu = model.to("cuda")(ids.cuda(), mask.cuda()).cpu()
    assert on_cpu[1:].abs().max() > 0.5
    torch.testing.assert_close(on_gpu[1:], on_cpu[1:], atol=1e-4, rtol=0)
    torch.testing.assert_close(on_gpu[0, 5:], on_cpu[0, 5:], atol=1e-4, rtol=0)


@cuda
@pytest.mark.parametrize("gpu_decode, cpu_decode", [("auto", "static"), ("eager", "eager")])
def test_engine_on_the_gpu_samples_what_the_cpu_samples(gpu_decode, cpu_decode):
    """Greedy, and sampled from the same seeded CPU generator (temperature 1, top-p), with
    stop tokens, so rows finish early. On the GPU, "auto" replays the decode step as a CUDA
    graph; it matches the same fixed-shape step on the CPU ("static"), and eager matches
    eager (which drops finished rows, and so draws a different random stream)."""
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18, 19]]
    results = {}
    for device, decode in (("cpu", cpu_decode), ("cuda", gpu_decode)):
        engine = Engine(tiny_model().to(device), pad_id=0, decode=decode)
        greedy = engine.generate(prompts, max_new_tokens=24, temperature=0.0)
        sampled = engine.generate(prompts, num_samples=8, max_new_tokens=24, top_p=0.95,
                                  stop_token_ids=[3], generator=torch.Generator().manual_seed(0))  # fmt: skip
        again = engine.generate(prompts, num_samples=8, max_new_tokens=24, top_p=0.95,
                                stop_token_ids=[3], generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert [c.token_ids for c in again] == [c.token_ids for c in sampled]  # a new graph
        results[device] = (greedy, sampled)
    for a, b in zip(*(greedy + sampled for greedy, sampled in results.values())):
        assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)  # fmt: skip
    assert any(c.finish_reason == "stop" for c in results["cuda"][1])


@cuda
@torch.inference_mode()
def test_bf16_decoding_on_the_gpu(monkeypatch):
    """A bf16 model decodes through the CUDA graph and gives the tokens of the same step run
    without one; under bf16 autocast the engine decodes eagerly (no graph: capturing
    autocast's casts is not verified yet) and agrees with the fixed-shape step."""
    import rlvr.sampling.engine

    graphs = []
    real = rlvr.sampling.engine.FixedShapeDecode
    monkeypatch.setattr(rlvr.sampling.engine, "FixedShapeDecode",
                        lambda *a, graph: graphs.append(graph) or real(*a, graph=graph))  # fmt: skip
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    cases = [(torch.autocast("cuda", enabled=False), tiny_model().cuda().bfloat16(), [True]),
             (torch.autocast("cuda", dtype=torch.bfloat16), tiny_model().cuda(), [])]  # fmt: skip
    for context, model, expected_graphs in cases:
        graphs.clear()
        with context:
            auto = Engine(model, pad_id=0).generate(prompts, num_samples=4, max_new_tokens=16, temperature=0.0)  # fmt: skip
            assert graphs == expected_graphs
            static = Engine(model, pad_id=0, decode="static").generate(prompts, num_samples=4, max_new_tokens=16, temperature=0.0)  # fmt: skip
        for a, b in zip(auto, static):
            assert a.token_ids == b.token_ids
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-2, rtol=0)  # fmt: skip


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_cuda_graph_on_a_second_gpu():
    """Capture and replay happen on the model's GPU, not on the current one (cuda:0)."""
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    kwargs = dict(num_samples=4, max_new_tokens=16, top_p=0.95, stop_token_ids=[3])
    on_cpu = Engine(tiny_model(), pad_id=0, decode="static").generate(prompts, generator=torch.Generator().manual_seed(0), **kwargs)  # fmt: skip
    on_gpu1 = Engine(tiny_model().to("cuda:1"), pad_id=0).generate(prompts, generator=torch.Generator().manual_seed(0), **kwargs)  # fmt: skip
    assert [c.token_ids for c in on_gpu1] == [c.token_ids for c in on_cpu]


@cuda
@torch.inference_mode()
def test_transformers_models_run_on_the_gpu(tmp_path):
    transformers = pytest.importorskip("transformers")
    from test_hf import hf_greedy, hf_model, randomize, save_checkpoint

    from rlvr.hf import HFCausalLM, load_hf_model

    theirs = hf_model("qwen2")
    save_checkpoint(theirs, tmp_path / "qwen2")
    ours, _ = load_hf_model(tmp_path / "qwen2")
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    expected = hf_greedy(theirs, prompts, 16)
    completions = Engine(ours.cuda(), pad_id=0).generate(
        prompts, max_new_tokens=16, temperature=0.0
    )
    assert [c.token_ids for c in completions] == expected
    # An architecture rlvr has no model of runs through transformers and its cache.
    gpt2 = randomize(transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64)))  # fmt: skip
    save_checkpoint(gpt2, tmp_path / "gpt2")
    expected = hf_greedy(gpt2, prompts, 12)
    wrapped, _ = load_hf_model(tmp_path / "gpt2")
    assert isinstance(wrapped, HFCausalLM)
    completions = Engine(wrapped.cuda(), pad_id=0).generate(
        prompts, max_new_tokens=12, temperature=0.0
    )
    assert [c.token_ids for c in completions] == expected


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@cuda
def test_train_on_the_gpu_and_resume_on_the_cpu(tmp_path, monkeypatch):
    real, calls = rlvr.sampling.sampler.rollout, []

    def rollout(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # SIGINT during GRPO step 3: it finishes, checkpoints, stops
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(rlvr.sampling.sampler, "rollout", rollout)
    out = tmp_path / "run"
    assert main(["train", SMOKE, "--out", str(out), *TINY, "--device", "cuda", "--grpo.beta", "0.04"]) == 0  # fmt: skip
    assert latest_checkpoint(out) == checkpoint_dir(out, "grpo", 3)
    model, _, cfg, _ = load_checkpoint(latest_checkpoint(out))  # written on the GPU, read here
    assert next(model.parameters()).device.type == "cpu" and cfg.device == "cuda"
    monkeypatch.setattr(rlvr.sampling.sampler, "rollout", real)
    assert main(["train", "--resume", str(out), "--device", "cpu"]) == 0
    assert summary(out)["device"] == "cpu"
    grpo = [r for r in read_metrics(out) if r["phase"] == "grpo"]
    assert [r["step"] for r in grpo] == [1, 2, 3, 4]
    assert all(r["kl"] >= 0 for r in grpo)
    final, _, _, _ = load_checkpoint(out / "checkpoint")
    assert all(torch.isfinite(p).all() for p in final.parameters())
    assert main(["eval", str(out), "--device", "cuda", "--eval.num_problems", "8"]) == 0


@cuda
@pytest.mark.parametrize(
    "extra", [[], ["--lora.rank", "4", "--lora.dropout", "0.1"]], ids=["full", "lora"]
)
def test_bf16_training_on_the_gpu(tmp_path, extra):
    if extra:
        pytest.importorskip("peft")
    out = tmp_path / "run"
    assert main(["train", SMOKE, "--out", str(out), *TINY, "--device", "cuda", "--dtype", "bfloat16",
                 "--grpo.beta", "0.04", *extra]) == 0  # fmt: skip
    assert summary(out)["device"] == "cuda"
    grpo = [r for r in read_metrics(out) if r["phase"] == "grpo"]
    assert len(grpo) == 4 and all(r["skipped_updates"] == 0 for r in grpo)
    assert all(abs(r["loss"]) < 100 for r in grpo)
