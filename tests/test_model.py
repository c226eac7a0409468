"""The model: Hugging Face parameter names, shapes, KV-cache and padding equivalences."""

import pytest
import torch

from rlvr.model import ModelConfig, Transformer, decode_attention
from rlvr.sampling.engine import KVCache


def tiny_config(**overrides) -> ModelConfig:
    fields = dict(
        vocab_size=23,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return ModelConfig(**{**fields, **overrides})


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny_config(**overrides)).eval()


def hf_keys(num_layers: int, attention_bias: bool) -> set[str]:
    keys = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(num_layers):
        p = f"model.layers.{i}."
        keys |= {p + f"self_attn.{n}_proj.weight" for n in "qkvo"}
        if attention_bias:
            keys |= {p + f"self_attn.{n}_proj.bias" for n in "qkv"}
        keys |= {p + f"mlp.{n}_proj.weight" for n in ("gate", "up", "down")}
        keys |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
    return keys


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_keys_are_hugging_face_names(tie, bias):
    model = tiny_model(tie_word_embeddings=tie, attention_bias=bias)
    assert set(model.state_dict()) == hf_keys(2, bias)
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    assert tied == tie
    # A state dict loads back strictly (tied: both names present, as in HF checkpoints).
    other = tiny_model(seed=1, tie_word_embeddings=tie, attention_bias=bias)
    other.load_state_dict(model.state_dict(), strict=True)
    ids = torch.randint(0, 23, (2, 5))
    torch.testing.assert_close(other(ids), model(ids))


def test_default_config_is_about_one_million_parameters():
    model = Transformer(ModelConfig())
    assert 1.0e6 <= model.num_parameters() <= 1.3e6
    untied = Transformer(ModelConfig(tie_word_embeddings=False))
    vocab, hidden = ModelConfig().vocab_size, ModelConfig().hidden_size
    assert untied.num_parameters() == model.num_parameters() + vocab * hidden


def test_config_rejects_bad_head_counts():
    with pytest.raises(ValueError, match="num_key_value_heads"):
        tiny_config(num_key_value_heads=3)
    with pytest.raises(ValueError, match="num_attention_heads"):
        tiny_config(hidden_size=30)


def test_forward_shapes_and_dtype():
    model = tiny_model()
    logits = model(torch.randint(0, 23, (3, 7)))
    assert logits.shape == (3, 7, 23) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_causal_future_tokens_do_not_change_past_logits():
    model = tiny_model()
    ids = torch.randint(0, 23, (2, 9))
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 23
    torch.testing.assert_close(model(ids)[:, :6], model(changed)[:, :6])


@torch.inference_mode()
def test_incremental_decode_with_cache_equals_full_forward():
    model = tiny_model(attention_bias=True)
    ids = torch.randint(0, 23, (3, 12))
    full = model(ids)
    cache = KVCache.create(model, batch_size=3, max_len=12)
    pieces = [model(ids[:, :5], cache=cache)]  # prefill 5, then decode one by one
    for t in range(5, 12):
        pieces.append(model(ids[:, t : t + 1], cache=cache))
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (6, 1)])
def test_decode_attention_equals_sdpa(heads, kv_heads):
    torch.manual_seed(0)
    B, S, D = 5, 9, 8
    q = torch.randn(B, heads, 1, D)
    k, v = torch.randn(B, kv_heads, S, D), torch.randn(B, kv_heads, S, D)
    bias = torch.zeros(B, 1, 1, S)
    bias[1, ..., :4] = float("-inf")  # a left-padded row
    bias[3, ..., 2] = float("-inf")
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, enable_gqa=heads != kv_heads
    )
    torch.testing.assert_close(decode_attention(q, k, v, bias), expected, atol=1e-6, rtol=1e-5)


@torch.inference_mode()
def test_incremental_decode_with_left_padding_equals_unpadded_forward():
    model = tiny_model()
    prompts = [torch.randint(0, 23, (n,)) for n in (4, 7, 2)]
    continuation = torch.randint(0, 23, (3, 5))
    width = 7
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = p
        mask[i, width - len(p) :] = 1
    cache = KVCache.create(model, batch_size=3, max_len=width + 5)
    prefill = model(ids, mask, cache=cache)
    steps = [model(continuation[:, t : t + 1], cache=cache) for t in range(5)]
    for i, p in enumerate(prompts):
        alone = model(torch.cat([p, continuation[i]])[None])[0]  # (len(p) + 5, V)
        torch.testing.assert_close(prefill[i, width - len(p) :], alone[: len(p)], atol=1e-5, rtol=0)
        decoded = torch.cat([s[i] for s in steps])
        torch.testing.assert_close(decoded, alone[len(p) :], atol=1e-5, rtol=0)


@torch.inference_mode()
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_real_tokens_logits(side):
    model = tiny_model()
    lengths = (6, 3, 9)
    seqs = [torch.randint(0, 23, (n,)) for n in lengths]
    width = max(lengths)
    ids = torch.full((3, width), 5, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, span], mask[i, span] = s, 1
    logits = model(ids, mask)
    assert torch.isfinite(logits).all()  # padded query rows included
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        torch.testing.assert_close(logits[i, span], model(s[None])[0], atol=1e-5, rtol=0)


@torch.inference_mode()
def test_grouped_query_attention_equals_repeated_heads():
    gqa = tiny_model(num_key_value_heads=2)
    mha = Transformer(tiny_config(num_key_value_heads=4)).eval()
    state = gqa.state_dict()
    head_dim = gqa.config.head_dim
    for name, tensor in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            # Each kv head serves two query heads: repeat its rows head by head.
            heads = tensor.view(2, head_dim, -1)
            state[name] = heads.repeat_interleave(2, dim=0).reshape(4 * head_dim, -1)
    mha.load_state_dict(state)
    ids = torch.randint(0, 23, (2, 8))
    torch.testing.assert_close(mha(ids), gqa(ids), atol=1e-5, rtol=0)


@torch.inference_mode()
def test_cache_repeat_interleave_and_select_rows():
    model = tiny_model()
    ids = torch.randint(0, 23, (2, 4))
    cache = KVCache.create(model, batch_size=2, max_len=6)
    model(ids, cache=cache)
    cache.repeat_interleave(3)  # rows: a a a b b b
    assert cache.batch_size == 6 and cache.length == 4
    cache.select_rows(torch.tensor([1, 4]))  # one copy of a, one of b
    nxt = torch.randint(0, 23, (2, 1))
    step = model(nxt, cache=cache)[:, 0]
    full = model(torch.cat([ids, nxt], dim=1))[:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=0)


def test_too_long_input_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.zeros(1, 65, dtype=torch.long))
    cache = KVCache.create(model, batch_size=1, max_len=4)
    with pytest.raises(ValueError, match="KV cache"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_logits_match_hugging_face(arch):
    transformers = pytest.importorskip("transformers")
    # Llama: no biases, tied embeddings. Qwen2: q/k/v biases, untied.
    model = tiny_model(attention_bias=arch == "qwen2", tie_word_embeddings=arch == "llama")
    c = model.config
    fields = dict(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        max_position_embeddings=c.max_position_embeddings,
        rope_theta=c.rope_theta,
        rms_norm_eps=c.rms_norm_eps,
        tie_word_embeddings=c.tie_word_embeddings,
    )
    if arch == "llama":
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields))
    else:
        hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**fields))
    hf.eval().load_state_dict(model.state_dict(), strict=True)
    ids = torch.randint(0, c.vocab_size, (2, 10))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ours = model(ids, mask)
        theirs = hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[0, 3:], theirs[0, 3:], atol=1e-5, rtol=0)
