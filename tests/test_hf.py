"""Hugging Face checkpoints in and out: tiny models built in code, no downloads.

Each family's checkpoint, written by transformers, must give the same logits in rlvr's
Transformer; our model written by save_hf must give the same logits in transformers; the
saved character tokenizer must give the same ids through PreTrainedTokenizerFast.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

from rlvr.hf import (  # noqa: E402
    R1_SYSTEM_PROMPT,
    HFCausalLM,
    HFTokenizer,
    char_tokenizer_to_hf,
    load_hf_model,
    save_hf,
)
from rlvr.model import ModelConfig, Transformer  # noqa: E402
from rlvr.sampling.engine import Engine  # noqa: E402
from rlvr.tokenizer import CharTokenizer, format_prompt  # noqa: E402

VOCAB = 128
CLASSES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
}


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights far from the init (norm gains != 1, biases != 0), so every one of them
    shows in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.copy_(1.0 + 0.3 * noise if "norm" in name else 0.15 * noise)
    return model.eval()


def hf_model(family: str, tie: bool = False, **overrides) -> torch.nn.Module:
    config_cls, model_cls = CLASSES[family]
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
        **({"head_dim": 32} if family == "qwen3" else {}),  # != hidden_size / heads
    )
    config = getattr(transformers, config_cls)(**{**fields, **overrides})
    return randomize(getattr(transformers, model_cls)(config))


def save_checkpoint(model: torch.nn.Module, path) -> None:
    """A checkpoint folder as transformers writes it, with rlvr's character tokenizer."""
    model.save_pretrained(str(path))
    char_tokenizer_to_hf(CharTokenizer()).save_pretrained(str(path))


def padded_batch(vocab: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (3, width), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    return ids, mask


def assert_same_logits(ours: torch.nn.Module, theirs: torch.nn.Module, width: int = 12) -> None:
    ids, mask = padded_batch(ours.config.vocab_size, width)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        a = ours(ids, mask)
        b = theirs(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    assert a.abs().max() > 0.5  # logits are not trivially near zero
    torch.testing.assert_close(a[1:], b[1:], atol=1e-4, rtol=0)
    torch.testing.assert_close(a[0, 4:], b[0, 4:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("family", list(CLASSES))
def test_each_family_loads_with_the_same_logits(tmp_path, family, tie):
    theirs = hf_model(family, tie=tie)
    save_checkpoint(theirs, tmp_path)
    ours, tokenizer = load_hf_model(tmp_path)
    assert isinstance(ours, Transformer) and isinstance(tokenizer, HFTokenizer)
    assert ours.config.tie_word_embeddings == tie
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == tie
    assert ours.config.qk_norm == (family == "qwen3")
    assert ours.config.attention_bias == (family == "qwen2")
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    assert_same_logits(ours, theirs)


def test_llama3_rope_scaling_gives_the_same_logits(tmp_path):
    rope = dict(
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=32,  # wavelengths 8..32 fall in the smoothed band
    )
    theirs = hf_model("llama", rope_scaling=rope, rope_theta=10000.0)
    save_checkpoint(theirs, tmp_path)
    ours, _ = load_hf_model(tmp_path)
    assert ours.config.rope_scaling["rope_type"] == "llama3"
    assert_same_logits(ours, theirs, width=100)  # long enough for low frequencies to matter


def test_bfloat16_loading_casts_the_weights(tmp_path):
    save_checkpoint(hf_model("qwen2"), tmp_path)
    ours, _ = load_hf_model(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    assert torch.isfinite(ours(torch.randint(0, VOCAB, (2, 6)))).all()


@torch.inference_mode()
def test_engine_greedy_equals_transformers_generate(tmp_path):
    theirs = hf_model("qwen2")
    save_checkpoint(theirs, tmp_path)
    ours, _ = load_hf_model(tmp_path)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18, 19]]
    completions = Engine(ours, pad_id=0).generate(prompts, max_new_tokens=20, temperature=0.0)
    assert [c.token_ids for c in completions] == hf_greedy(theirs, prompts, 20)


def hf_greedy(model, prompts: list[list[int]], num_new: int) -> list[list[int]]:
    """transformers' greedy generate on left-padded prompts, never stopping early."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=num_new,
        min_new_tokens=num_new,
        pad_token_id=0,
        eos_token_id=None,
    )
    return out[:, width:].tolist()


@torch.inference_mode()
def test_other_architectures_run_through_transformers(tmp_path, caplog):
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=None,
        eos_token_id=None,
    )
    theirs = randomize(transformers.GPT2LMHeadModel(config))
    save_checkpoint(theirs, tmp_path)
    with caplog.at_level(logging.WARNING, logger="rlvr.hf"):
        ours, _ = load_hf_model(tmp_path)
    assert isinstance(ours, HFCausalLM)
    assert "slower" in caplog.text and "model_type 'gpt2'" in caplog.text
    assert_same_logits(ours, theirs)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18, 19]]
    engine = Engine(ours, pad_id=0)
    completions = engine.generate(prompts, max_new_tokens=12, temperature=0.0)
    assert [c.token_ids for c in completions] == hf_greedy(theirs, prompts, 12)
    # Sampling copies each prompt's cache into rows and drops finished rows.
    sampled = engine.generate(prompts, num_samples=3, max_new_tokens=12, stop_token_ids=[7, 9])
    assert len(sampled) == 9 and all(len(c.token_ids) <= 12 for c in sampled)


# ----------------------------------------------------------------------------- save_hf


def our_model(**overrides) -> Transformer:
    fields = dict(
        vocab_size=CharTokenizer().vocab_size,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    return randomize(Transformer(ModelConfig(**{**fields, **overrides})))


ROUND_TRIPS = {
    "llama-tied": ({}, "LlamaForCausalLM"),
    "llama-untied": ({"tie_word_embeddings": False}, "LlamaForCausalLM"),
    "qwen2": ({"attention_bias": True, "tie_word_embeddings": False}, "Qwen2ForCausalLM"),
    "qwen3": ({"qk_norm": True, "head_dim": 32}, "Qwen3ForCausalLM"),
    "llama3-rope": (
        {
            "rope_scaling": dict(
                rope_type="llama3",
                factor=4.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            )
        },
        "LlamaForCausalLM",
    ),
}


@pytest.mark.parametrize("name", list(ROUND_TRIPS))
def test_save_hf_loads_in_transformers_with_the_same_logits(tmp_path, name):
    overrides, architecture = ROUND_TRIPS[name]
    ours = our_model(**overrides)
    save_hf(ours, CharTokenizer(), tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert type(theirs).__name__ == architecture
    assert_same_logits(ours, theirs, width=60)
    # ... and back into rlvr: identical logits, our prompt format through the chat template.
    again, tokenizer = load_hf_model(tmp_path)
    ids = torch.randint(0, CharTokenizer().vocab_size, (2, 9))
    assert torch.equal(again(ids), ours(ids))
    assert tokenizer.format_prompt("12+3*4=") == format_prompt("12+3*4=")


def test_saved_char_tokenizer_gives_the_same_ids(tmp_path):
    char = CharTokenizer()
    save_hf(our_model(), char, tmp_path)
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    text = (
        format_prompt("  12 + 3*4=\n") + "<think>3*4=12\n12+12=24</think><answer>24</answer><eos>"
    )
    ids = char.encode(text)
    assert fast.encode(text, add_special_tokens=False) == ids
    assert fast.decode(ids) == text
    assert (fast.bos_token_id, fast.eos_token_id, fast.pad_token_id) == (
        char.bos_id,
        char.eos_id,
        char.pad_id,
    )
    # AutoTokenizer picks the same class from tokenizer_config.json.
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert auto.encode(text, add_special_tokens=False) == ids
    tokenizer = HFTokenizer.from_folder(tmp_path)
    assert tokenizer.encode(text) == ids and tokenizer.decode(ids) == text
    assert tokenizer.decode(ids, skip_special=True) == char.decode(ids, skip_special=True)
    assert (tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id) == (0, 2, 1)
    assert CharTokenizer.load(tmp_path).tokens == char.tokens  # rlvr_tokenizer.json too
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["eos_token_id"] == char.eos_id and config["model_type"] == "llama"


# ----------------------------------------------------------------------------- HFTokenizer


CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chat_tokenizer_folder(path):
    """A tiny byte-level BPE tokenizer with ChatML special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator([R1_SYSTEM_PROMPT, "What is 2+3*4? Think first."] * 5, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", clean_up_tokenization_spaces=False
    )
    fast.chat_template = CHATML
    fast.save_pretrained(str(path))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))


def test_hf_tokenizer_formats_prompts_through_the_chat_template(tmp_path):
    chat_tokenizer_folder(tmp_path)
    tokenizer = HFTokenizer.from_folder(tmp_path)
    prompt = tokenizer.format_prompt("What is 2+3*4?", R1_SYSTEM_PROMPT)
    assert prompt == (
        f"<|im_start|>system\n{R1_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3*4?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.format_prompt("hi").startswith("<|im_start|>user\nhi")
    ids = tokenizer.encode(prompt)
    start, end = tokenizer.token_to_id("<|im_start|>"), tokenizer.token_to_id("<|im_end|>")
    assert ids.count(start) == 3 and ids.count(end) == 2  # special tokens are single ids
    assert tokenizer.decode(ids) == prompt
    assert tokenizer.eos_id == end and tokenizer.pad_id == end  # no pad token: eos pads
    assert tokenizer.bos_id is None
    assert tokenizer.stop_ids == [end, 0]  # eos, then generation_config's other eos ids
    assert tokenizer.vocab_size == len(tokenizer.hf)


def test_hf_tokenizer_without_chat_template_uses_the_plain_format(tmp_path):
    char_tokenizer_to_hf(CharTokenizer()).save_pretrained(str(tmp_path))
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer = HFTokenizer.from_folder(tmp_path)
    assert not tokenizer.hf.chat_template
    assert tokenizer.format_prompt("1+1=") == "<bos>1+1=\n"
    assert tokenizer.format_prompt("1+1=", "Be brief.") == "<bos>Be brief.\n1+1=\n"


# ----------------------------------------------------------------------------- bad folders


def test_folders_that_are_not_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_hf_model(tmp_path)
    hf_model("llama").config.save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="no model.safetensors"):
        load_hf_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ValueError, match="model_type 'no-such-model'"):
        load_hf_model(tmp_path)


def test_a_checkpoint_without_tokenizer_is_a_clear_error(tmp_path):
    hf_model("llama").save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="holds no tokenizer"):
        load_hf_model(tmp_path)


def test_unsupported_rope_scaling_runs_through_transformers(tmp_path, caplog):
    theirs = hf_model("llama", rope_scaling={"rope_type": "yarn", "factor": 4.0})
    save_checkpoint(theirs, tmp_path)
    with caplog.at_level(logging.WARNING, logger="rlvr.hf"):
        ours, _ = load_hf_model(tmp_path)
    assert isinstance(ours, HFCausalLM) and "rope type 'yarn'" in caplog.text
    assert_same_logits(ours, theirs)
    with pytest.raises(ValueError, match="rope_scaling type 'yarn' is not supported"):
        Transformer(ModelConfig(rope_scaling={"rope_type": "yarn"}))


def test_sequences_longer_than_the_sliding_window_are_a_clear_error(tmp_path):
    save_checkpoint(hf_model("mistral", sliding_window=16), tmp_path)
    ours, _ = load_hf_model(tmp_path)
    assert ours.config.sliding_window == 16
    ours(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="sliding_window 16"):
        ours(torch.zeros(1, 17, dtype=torch.long))
