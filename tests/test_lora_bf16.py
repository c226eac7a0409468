"""bf16 autocast (`dtype = "bfloat16"`) and LoRA through peft (`[lora] rank > 0`), issue 4.

Tiny smoke-recipe runs through `rlvr.cli.main` with 1 thread (bitwise reproducible), verified
in-process and without plots. A LoRA run must change the adapters only (the base weights stay
bitwise as pretrained until the final merge), take its reference as the base model, resume
exactly after a stop, and write a merged Hugging Face folder with the adapted policy's logits.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rlvr.device
import rlvr.loop
import rlvr.sampling.sampler
from rlvr.checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint, load_trainer_state
from rlvr.cli import main
from rlvr.config import Config, LoraConfig
from rlvr.model import ModelConfig, Transformer
from rlvr.report import depends_on_clock, read_metrics

peft = pytest.importorskip("peft")

from rlvr.lora import (  # noqa: E402
    adapter_state,
    adapters_disabled,
    base_layers,
    inject_lora,
    load_adapter_state,
    merged_copy,
)

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "rlvr" / "recipes" / "smoke.toml")
GRPO_STEPS = 4
TINY = [
    "--pretrain.steps", "20", "--grpo.steps", str(GRPO_STEPS), "--grpo.eval_every", "0",
    "--eval.num_problems", "8", "--eval.num_samples", "0", "--checkpoint.every", "2",
    "--threads", "1", "--reward.workers", "0", "--plots", "false",
    # a reward that varies within a group, so that GRPO really changes the weights
    "--reward.functions", '{"faults:length_reward" = 0.5}',
]  # fmt: skip
LORA = ["--lora.rank", "4", "--lora.dropout", "0.1", "--lora.target_modules", '["q_proj", "v_proj", "down_proj"]']  # fmt: skip


def train(out: Path, *extra: str) -> int:
    return main(["train", SMOKE, "--out", str(out), *TINY, *extra])


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not depends_on_clock(k)} for r in rows]


def adapted_policy(run_dir: Path) -> torch.nn.Module:
    """The policy as GRPO left it: the last resumable checkpoint's base weights + adapters."""
    last = latest_checkpoint(run_dir)
    model, _, cfg, _ = load_checkpoint(last)
    inject_lora(model, cfg.lora)
    load_adapter_state(model, load_trainer_state(last)["lora"])
    return model.eval()


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lora") / "A"
    assert train(out, *LORA) == 0
    return out


def tiny_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1))  # fmt: skip


# ----------------------------------------------------------------------------- bf16


def test_autocast_computes_in_bf16_and_returns_float32_logits():
    model, cfg = tiny_model(), Config()
    ids = torch.randint(0, 104, (2, 12))
    with rlvr.device.autocast(cfg, model):  # float32: a no-op
        full = model(ids)
    assert torch.equal(full, model(ids))
    cfg.dtype = "bfloat16"
    with rlvr.device.autocast(cfg, model):
        half = model(ids)
        assert model.lm_head(torch.zeros(1, 32)).dtype == torch.bfloat16
    assert half.dtype == torch.float32  # log-softmax and the loss see float32
    assert not torch.equal(half, full) and torch.allclose(half, full, atol=0.05)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_run_has_finite_metrics_and_float32_weights(tmp_path):
    out = tmp_path / "bf16"
    assert train(out, "--dtype", "bfloat16") == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows if r["phase"] == "grpo"] == list(range(1, GRPO_STEPS + 1))
    numbers = [v for r in rows for v in r.values() if isinstance(v, float)]
    assert numbers and all(math.isfinite(v) for v in numbers)
    for folder in ("pretrained", "checkpoint"):
        weights = load_file(out / folder / "model.safetensors")
        assert all(w.dtype == torch.float32 for w in weights.values()), folder
    assert json.loads((out / "checkpoint" / "config.json").read_text())["dtype"] == "float32"
    state = load_trainer_state(latest_checkpoint(out))["optimizer"]["state"]
    assert state and all(t.dtype == torch.float32 for s in state.values() for t in s.values()
                         if t.dim() > 0)  # fmt: skip
    pre = load_file(out / "pretrained" / "model.safetensors")
    post = load_file(out / "checkpoint" / "model.safetensors")
    assert any(not torch.equal(pre[k], post[k]) for k in pre)  # GRPO trained


# ----------------------------------------------------------------------------- LoRA


def test_reference_with_adapters_disabled_is_the_base_model_exactly():
    base = tiny_model()
    policy = tiny_model()
    inject_lora(policy, LoraConfig(rank=4, target_modules=["q_proj", "o_proj", "up_proj"]))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_()  # B = 0 at injection; make the adapters do something
    ids = torch.randint(0, 104, (3, 10))
    assert not torch.equal(policy(ids), base(ids))
    with adapters_disabled(policy):
        assert torch.equal(policy(ids), base(ids))  # bitwise, not just close
    assert not torch.equal(policy(ids), base(ids))
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # the context restored them
    with base_layers(policy):
        assert policy.state_dict().keys() == base.state_dict().keys()
    merged = merged_copy(policy)
    assert merged.state_dict().keys() == base.state_dict().keys()
    torch.testing.assert_close(merged(ids), policy(ids), atol=1e-5, rtol=0)
    assert adapter_state(policy) and not adapter_state(merged)


def test_lora_trains_only_the_adapters(lora_run):
    pretrained = load_file(lora_run / "pretrained" / "model.safetensors")
    last = latest_checkpoint(lora_run)
    assert last == checkpoint_dir(lora_run, "grpo", GRPO_STEPS)
    base = load_file(last / "model.safetensors")
    assert base.keys() == pretrained.keys()
    assert all(torch.equal(base[k], pretrained[k]) for k in base)  # bitwise unchanged
    state = load_trainer_state(last)
    adapters = state["lora"]
    assert adapters and all("lora_" in k for k in adapters)
    assert any(
        k.endswith("lora_B.default.weight") and v.abs().sum() > 0 for k, v in adapters.items()
    )
    assert state["reference"] is None  # the reference is the policy with its adapters off
    # the optimizer holds the adapters only: 2 matrices per adapted layer
    assert len(state["optimizer"]["state"]) == len(adapters) == 2 * 3 * 2
    merged = load_file(lora_run / "checkpoint" / "model.safetensors")
    assert merged.keys() == pretrained.keys()  # a plain folder, the usual names
    changed = {k for k in merged if not torch.equal(merged[k], pretrained[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight", "down_proj.weight"))
                           for k in changed)  # fmt: skip


def test_merged_checkpoint_has_the_adapted_policy_logits(lora_run):
    policy = adapted_policy(lora_run)
    ids = torch.randint(4, 100, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = policy(ids)
        with adapters_disabled(policy):
            assert not torch.allclose(policy(ids), expected, atol=1e-4)  # the adapters matter
        ours = load_checkpoint(lora_run / "checkpoint")[0](ids)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(lora_run / "checkpoint")).eval()
    with torch.no_grad():
        theirs = hf(ids).logits
    torch.testing.assert_close(theirs, expected, atol=1e-5, rtol=0)


def test_stopped_lora_run_resumes_exactly(lora_run, tmp_path, monkeypatch):
    real, calls = rlvr.sampling.sampler.rollout, []

    def rollout(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # SIGINT during step 3: it finishes, checkpoints, stops
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(rlvr.sampling.sampler, "rollout", rollout)
    out = tmp_path / "B"
    assert train(out, *LORA) == 0
    assert latest_checkpoint(out) == checkpoint_dir(out, "grpo", 3)
    assert not (out / "checkpoint").exists()
    monkeypatch.setattr(rlvr.sampling.sampler, "rollout", real)
    assert main(["train", "--resume", str(out)]) == 0
    assert without_timing(read_metrics(out)) == without_timing(read_metrics(lora_run))
    final = "checkpoint/model.safetensors"
    assert (out / final).read_bytes() == (lora_run / final).read_bytes()
    last = load_trainer_state(latest_checkpoint(out))["lora"]
    expected = load_trainer_state(latest_checkpoint(lora_run))["lora"]
    assert all(torch.equal(last[k], expected[k]) for k in expected)


def test_lora_on_a_hugging_face_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")
    from test_byo_model import RUN, qwen2_checkpoint

    source = qwen2_checkpoint(tmp_path / "qwen2")
    out = tmp_path / "run"
    code = main(["train", SMOKE, "--model", str(source), "--out", str(out), *RUN,
                 "--lora.rank", "2", "--lora.alpha", "8", "--plots", "false"])  # fmt: skip
    assert code == 0
    original = load_file(source / "model.safetensors")
    merged = load_file(out / "checkpoint" / "model.safetensors")
    assert merged.keys() == original.keys()
    base = load_file(latest_checkpoint(out) / "model.safetensors")
    assert all(torch.equal(base[k], original[k]) for k in base)
    policy = adapted_policy(out)
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(2))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out / "checkpoint")).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, policy(ids), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, words",
    [
        (["--lora.rank", "-1"], "lora.rank"),
        (["--lora.rank", "4", "--lora.target_modules", '["q_proj", "qproj"]'], "qproj"),
        (["--lora.rank", "4", "--lora.target_modules", "[]"], "lora.target_modules"),
        (["--lora.rank", "4", "--grpo.ref_update_every", "2"], "ref_update_every"),
        (["--lora.alpha", "0"], "lora.alpha"),
        (["--dtype", "float16"], "dtype"),
    ],
)
def test_bad_lora_and_dtype_settings_exit_2(tmp_path, capsys, args, words):
    out = tmp_path / "run"
    assert train(out, *args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and words in err
    assert not out.exists()
