"""The language model: a Llama-family decoder in one file.

RoPE (Hugging Face convention: `rotate_half` over two halves; optional Llama-3 frequency
scaling), RMSNorm, a SwiGLU MLP, grouped-query attention, optional q/k/v biases (Qwen2),
optional per-head RMSNorm on queries and keys (Qwen3), an explicit head width, and optional
tied embeddings. Parameter names are exactly those of Hugging Face `LlamaForCausalLM`,
`Qwen2ForCausalLM`, `Qwen3ForCausalLM` and `MistralForCausalLM`, so a state dict moves
between them without renaming (`rlvr/hf.py` reads and writes those checkpoints). The model
knows nothing about tasks, text or training: token ids in, logits out. The KV cache belongs
to the sampling engine (`rlvr.sampling.engine.KVCache`); the model only uses it through the
small `Cache` protocol below.

    config = ModelConfig()                     # ~1.1M parameters
    model = Transformer(config)
    logits = model(input_ids)                  # (B, T) -> (B, T, vocab_size)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    """Architecture hyperparameters, named as in a Hugging Face `config.json`."""

    vocab_size: int = 104
    """Number of token ids the embedding and the output layer cover."""
    hidden_size: int = 128
    """Width of the residual stream."""
    intermediate_size: int = 352
    """Width of the SwiGLU MLP's hidden layer."""
    num_hidden_layers: int = 6
    """Number of transformer blocks."""
    num_attention_heads: int = 4
    """Number of query heads; hidden_size must be a multiple of it unless head_dim is set."""
    num_key_value_heads: int = 2
    """Number of key/value heads (grouped-query attention); must divide num_attention_heads."""
    max_position_embeddings: int = 256
    """Longest sequence (prompt + completion) the model accepts, in tokens."""
    rope_theta: float = 10000.0
    """Base of the rotary position embedding frequencies."""
    rms_norm_eps: float = 1e-5
    """Epsilon inside RMSNorm's square root."""
    tie_word_embeddings: bool = True
    """Share one matrix between the input embedding and the output layer (lm_head)."""
    attention_bias: bool = False
    """Give the q/k/v projections a bias (Qwen2 does; Llama does not)."""
    head_dim: int = 0
    """Width of one attention head; 0 means hidden_size // num_attention_heads (Qwen3 and
    some Llama/Mistral checkpoints set it explicitly)."""
    qk_norm: bool = False
    """RMSNorm each query and key head before RoPE (Qwen3)."""
    rope_scaling: dict = field(default_factory=dict)
    """RoPE frequency scaling as in a Hugging Face config.json: {} for none, or Llama 3's
    {rope_type = "llama3", factor, low_freq_factor, high_freq_factor,
    original_max_position_embeddings}."""
    sliding_window: int = 0
    """Local attention window of Mistral-style checkpoints, in tokens; 0 for none. rlvr
    attends to every earlier token, so every sequence must fit inside the window."""

    def __post_init__(self) -> None:
        if not self._head_dim and self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}."
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_key_value_heads {self.num_key_value_heads} must divide "
                f"num_attention_heads {self.num_attention_heads}."
            )


# `config.head_dim` reads as the resolved width, while the dataclass field keeps what was set
# (0 = derive it), so a later change of hidden_size (a config override) still resolves.
def _get_head_dim(config: ModelConfig) -> int:
    return config._head_dim or config.hidden_size // config.num_attention_heads


def _set_head_dim(config: ModelConfig, value: int) -> None:
    config._head_dim = value


ModelConfig.head_dim = property(_get_head_dim, _set_head_dim)  # type: ignore[assignment]


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """RoPE inverse frequencies (head_dim / 2,), float32, with Llama 3 scaling if configured."""
    d = config.head_dim
    inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    scaling = config.rope_scaling
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type != "llama3":
        raise ValueError(
            f"rope_scaling type {rope_type!r} is not supported; rlvr implements 'default' and "
            "'llama3' (use a checkpoint with one of those, or add the scaling to rope_inv_freq)."
        )
    # Llama 3.1: long wavelengths are slowed down by `factor`, short ones kept, and the band
    # between them interpolated (as in Hugging Face's _compute_llama3_parameters).
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, scaled)


def rope_tables(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's rotary angles: two (max_position_embeddings, head_dim)."""
    angles = torch.outer(
        torch.arange(config.max_position_embeddings).float(), rope_inv_freq(config)
    )
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


class Cache(Protocol):
    """What the model needs of a KV cache; the engine's `KVCache` is the one it is given.

    `length` is the number of slots in use: every row's tokens lie in slots [0, length).
    `mask` (B, max_len) marks slots that hold real tokens (padding, and slots a caller took
    back, do not), and `bias` is the same mask as an additive attention bias, rebuilt by the
    cache when set to None. Where a row's next tokens go is the cache's business: the model
    only asks it for the bias of the new tokens (`extend_bias`) and hands it their keys and
    values (`update`). In fixed-shape mode `slot` is the (1,) device tensor of the next slot
    (else None)."""

    length: int
    mask: torch.Tensor
    bias: torch.Tensor | None
    slot: torch.Tensor | None

    @property
    def max_len(self) -> int: ...

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this call's keys/values (B, num_kv_heads, T, head_dim) of `layer`; return
        every key/value the new tokens may attend to."""
        ...

    def extend_bias(self, num_new: int, dtype: torch.dtype) -> torch.Tensor:
        """Mark the slots of the next `num_new` tokens of every row real; return their
        additive attention bias (B, 1, num_new, S) over slots [0, S), S = length + num_new:
        each new token sees its row's real tokens before it, and itself."""
        ...


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension (HF Llama convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Attention of a few new queries per row over a cache: q (B, H, T, D) over keys/values
    (B, KV, S, D) with an additive bias (B, 1, T, S); returns (B, H, T, D).

    The same function as scaled_dot_product_attention, written as two batched matmuls with
    each key/value head's query heads and new tokens stacked as rows (no copy of the cache
    per query head): torch's CPU SDPA kernel takes 1.25-1.4x as long on these few-query
    shapes (`benchmarks/engine_speed.py --compare-sdpa` measures the whole engine both ways).
    T is 1 when decoding, 1 + the drafted tokens when verifying a speculative draft."""
    B, H, T, D = q.shape
    KV = k.shape[1]
    g = H // KV
    scores = torch.matmul(q.reshape(B, KV, g * T, D), k.transpose(-1, -2))  # (B, KV, g*T, S)
    scores.view(B, KV, g, T, -1).mul_(D**-0.5).add_(bias[:, :, None])
    probs = scores.softmax(-1, dtype=torch.float32).to(v.dtype)
    return torch.matmul(probs, v).view(B, H, T, D)


# Batch-invariant kernels (Transformer.batch_invariant): the value computed for one token must
# not depend on how many other rows, tokens or cache slots share its call, so the sampler's
# logprobs equal the learner's bit for bit. Measured on the CPU (MKL): a matmul's rows come
# out the same for any number of rows from 16 up (fewer take other code paths), and a
# reduction over keys padded with masked slots to a multiple of 64 gives the same sum for any
# such multiple; row-wise ops (RMSNorm, SiLU, softmax over the vocabulary) are invariant as
# they are. tests/test_exact_logprobs.py checks the whole model bitwise.
INVARIANT_MIN_ROWS = 16
INVARIANT_SLOT_BLOCK = 64


def invariant_linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer(x) with at least INVARIANT_MIN_ROWS rows per matmul (zero rows added, then cut)."""
    rows = x.numel() // x.shape[-1]
    if rows >= INVARIANT_MIN_ROWS:
        return layer(x)
    flat = x.reshape(rows, x.shape[-1])
    flat = torch.cat((flat, flat.new_zeros(INVARIANT_MIN_ROWS - rows, x.shape[-1])))
    return layer(flat)[:rows].reshape(*x.shape[:-1], -1)


def invariant_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Attention whose result for each query is independent of the batch, of the number of
    queries and of the number of key slots: q (B, H, T, D) over keys/values (B, KV, S, D)
    with an additive bias (B, 1, T, S), or causal if None; returns (B, H, T, D).

    Keys, values and bias are padded to a multiple of INVARIANT_SLOT_BLOCK slots (masked),
    and the query rows of each key/value head to at least INVARIANT_MIN_ROWS, so every call
    reduces over the same slots in the same order, however long the cache or the batch."""
    B, H, T, D = q.shape
    KV, S = k.shape[1], k.shape[2]
    g = H // KV
    if bias is None:
        causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        bias = torch.zeros(T, S, dtype=q.dtype, device=q.device).masked_fill_(~causal, -math.inf)
        bias = bias.expand(B, 1, T, S)
    pad = -S % INVARIANT_SLOT_BLOCK
    if pad:
        k = F.pad(k, (0, 0, 0, pad))
        v = F.pad(v, (0, 0, 0, pad))
        bias = F.pad(bias, (0, pad), value=-math.inf)
    rows = g * T
    qg = q.reshape(B, KV, rows, D)
    if rows < INVARIANT_MIN_ROWS:
        qg = F.pad(qg, (0, 0, 0, INVARIANT_MIN_ROWS - rows))
    scores = torch.matmul(qg, k.transpose(-1, -2))[:, :, :rows]  # (B, KV, g*T, S + pad)
    scores = scores.view(B, KV, g, T, -1) * D**-0.5 + bias[:, :, None]
    probs = scores.softmax(-1, dtype=torch.float32).to(v.dtype).view(B, KV, rows, -1)
    if rows < INVARIANT_MIN_ROWS:
        probs = F.pad(probs, (0, 0, 0, INVARIANT_MIN_ROWS - rows))
    return torch.matmul(probs, v)[:, :, :rows].reshape(B, H, T, D)


@dataclass(frozen=True)
class Kernels:
    """Which attention and matmul kernels a forward uses."""

    extend: bool = False
    """A few new tokens per row over a cache (decoding, verifying drafts): `decode_attention`."""
    invariant: bool = False
    """Batch-invariant kernels (`Transformer.batch_invariant`)."""


def _call(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer(x)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        bias = config.attention_bias
        q_size = self.num_heads * self.head_dim
        kv_size = self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_size, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_size, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_size, bias=bias)
        self.o_proj = nn.Linear(q_size, config.hidden_size, bias=False)
        if config.qk_norm:
            self.q_norm = nn.RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = nn.RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.qk_norm = config.qk_norm

    def forward(
        self,
        x: torch.Tensor,  # (B, T, hidden_size)
        cos: torch.Tensor,  # (B, 1, T, head_dim)
        sin: torch.Tensor,  # (B, 1, T, head_dim)
        attn_mask: torch.Tensor | None,  # (B, 1, T, S) additive: 0 or -inf; None = causal
        cache: Cache | None,
        layer: int,
        kernels: Kernels,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        linear = invariant_linear if kernels.invariant else _call
        q = linear(self.q_proj, x).view(B, T, self.num_heads, self.head_dim)
        k = linear(self.k_proj, x).view(B, T, self.num_kv_heads, self.head_dim)
        v = linear(self.v_proj, x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, heads, T, head_dim)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, num_kv_heads, S, head_dim)
        if kernels.invariant:
            y = invariant_attention(q, k, v, attn_mask)
        elif kernels.extend:  # a few new tokens per row over a cache: decoding, verifying
            y = decode_attention(q, k, v, attn_mask)
        else:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=attn_mask,
                is_causal=attn_mask is None,
                enable_gqa=self.num_kv_heads != self.num_heads,
            )  # (B, num_heads, T, head_dim)
        return linear(self.o_proj, y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, kernels: Kernels) -> torch.Tensor:
        linear = invariant_linear if kernels.invariant else _call
        return linear(self.down_proj, F.silu(linear(self.gate_proj, x)) * linear(self.up_proj, x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, attn_mask, cache, layer, kernels: Kernels):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attn_mask, cache, layer, kernels)
        return x + self.mlp(self.post_attention_layernorm(x), kernels)


class Decoder(nn.Module):
    """The body, named `model` inside `Transformer` as in Hugging Face checkpoints."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)


class Transformer(nn.Module):
    """Llama-family causal language model: token ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = Decoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Rotary tables for every position, computed once in float32 (not saved: HF has none).
        rope_cos, rope_sin = rope_tables(config)
        self.register_buffer("rope_cos", rope_cos, persistent=False)
        self.register_buffer("rope_sin", rope_sin, persistent=False)
        self.batch_invariant = False
        """Compute every token's logits with kernels whose reduction order does not depend on
        the batch, the number of tokens or the cache length (`invariant_linear`,
        `invariant_attention`): the sampler's logprobs then equal the learner's bit for bit
        (sampler.exact_logprobs). Slower; off by default."""
        self.apply(self._init_weights)
        # Scale the residual projections by depth (GPT-2) so the stream's variance stays put.
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.num_hidden_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Number of distinct parameters (a tied embedding counts once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        document_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size), float32, for token ids (B, T).

        attention_mask: (B, T) 1 for real tokens, 0 for padding (left or right); padded keys
            are never attended to. None means no padding.
        position_ids: (B, T); by default each real token's index among the real tokens of
            its row (padding included in the cache, if any), so padding does not shift RoPE.
        cache: if given, attend to the cached tokens too and append these ones to it. With
            position_ids and no attention_mask the tokens continue every row where the cache
            says (`Cache.extend_bias`): one per row when decoding, several when verifying
            drafted tokens.
        document_ids: (B, T) for rows that pack several examples (SFT packing, no cache): a
            token attends only to earlier tokens with the same id, and by default its
            position counts from its example's first token, as if it were alone in its row.
        """
        B, T = input_ids.shape
        if document_ids is not None:
            return self._forward_packed(input_ids, document_ids, position_ids)
        start = cache.length if cache is not None else 0
        end = start + T
        self.check_length(end, cache)

        if attention_mask is None and position_ids is not None and cache is not None:
            # A few new tokens per row after the cached ones (decoding, or verifying drafted
            # tokens): the cache says where they go and what each may see.
            bias = cache.extend_bias(T, self.model.embed_tokens.weight.dtype)
            return self._forward_layers(input_ids, position_ids, bias, cache, end, extend=True)
        if cache is not None:
            cache.bias = None  # this call may write padding: rebuild the bias when next needed

        # Which key slots hold real tokens: (B, S) with S = end, or None if all of them do.
        if cache is not None:
            new = attention_mask.bool() if attention_mask is not None else True
            cache.mask[:, start:end] = new
            key_valid = cache.mask[:, :end]
        else:
            key_valid = attention_mask.bool() if attention_mask is not None else None

        if position_ids is None:
            if key_valid is None:
                position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
            else:
                position_ids = (key_valid.long().cumsum(-1)[:, start:] - 1).clamp(min=0)

        x_dtype = self.model.embed_tokens.weight.dtype
        if key_valid is None:
            attn_mask = None  # plain causal attention: the fast path
        else:
            # Causal and no padded keys; a query may always see itself, so a padded query
            # row (no real key before it) gives finite garbage rather than NaN.
            q_slot = torch.arange(start, end, device=input_ids.device)[:, None]  # (T, 1)
            k_slot = torch.arange(end, device=input_ids.device)[None, :]  # (1, S)
            allowed = (key_valid[:, None, :] & (k_slot <= q_slot)) | (k_slot == q_slot)
            # As an additive float mask built once here (SDPA would convert a bool mask in
            # every layer): 0 where allowed, -inf elsewhere.
            attn_mask = torch.zeros(allowed.shape, dtype=x_dtype, device=input_ids.device)
            attn_mask = attn_mask.masked_fill_(~allowed, float("-inf"))[:, None]  # (B, 1, T, S)

        return self._forward_layers(input_ids, position_ids, attn_mask, cache, end)

    def _forward_packed(
        self, input_ids: torch.Tensor, document_ids: torch.Tensor, position_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """forward() for packed rows: causal attention inside each document only."""
        B, T = input_ids.shape
        same = document_ids[:, :, None] == document_ids[:, None, :]  # (B, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
        allowed = same & causal
        if position_ids is None:  # index of each token within its document
            slot = torch.arange(T, device=input_ids.device).expand(B, T)
            starts = torch.where(allowed, slot[:, None, :], T).amin(dim=-1)  # (B, T)
            position_ids = slot - starts
        # each document must fit the model on its own (a row may hold several)
        self.check_length(int(position_ids.max()) + 1, None)
        x_dtype = self.model.embed_tokens.weight.dtype
        attn_mask = torch.zeros(allowed.shape, dtype=x_dtype, device=input_ids.device)
        attn_mask = attn_mask.masked_fill_(~allowed, float("-inf"))[:, None]  # (B, 1, T, T)
        return self._forward_layers(input_ids, position_ids, attn_mask, None, T)

    def check_length(self, end: int, cache: Cache | None) -> None:
        """Raise ValueError if a sequence of `end` tokens does not fit the cache, the rotary
        table or the sliding window (which rlvr does not implement)."""
        if cache is not None and end > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} tokens; this call needs {end}.")
        if end > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence of {end} tokens exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}."
            )
        if self.config.sliding_window and end > self.config.sliding_window:
            raise ValueError(
                f"Sequence of {end} tokens exceeds the model's sliding_window "
                f"{self.config.sliding_window}; rlvr does not implement sliding-window "
                "attention, so keep prompt + completion within the window."
            )

    def decode_step(
        self, token: torch.Tensor, position: torch.Tensor, cache: Cache
    ) -> torch.Tensor:
        """Logits (B, vocab_size), float32, of one new token per row (token and position:
        (B, 1)) on a cache in fixed-shape mode (`KVCache.make_static`). The token goes into
        slot `cache.slot`, which the caller advances; nothing on the Python side changes,
        so a CUDA graph can capture this call once and replay it for every step (the caller
        checks the length and advances `cache.length`: `check_length`)."""
        cache.bias.index_fill_(1, cache.slot, 0.0)  # the new slot holds a real token
        bias = cache.bias[:, None, None, :]  # (B, 1, 1, max_len)
        return self._forward_layers(token, position, bias, cache, end=None, extend=True)[:, -1]

    def _forward_layers(
        self, input_ids, position_ids, attn_mask, cache, end, extend=False
    ) -> torch.Tensor:
        kernels = Kernels(extend=extend, invariant=self.batch_invariant)
        x = self.model.embed_tokens(input_ids)  # (B, T, hidden_size)
        cos = self.rope_cos[position_ids].to(x.dtype)[:, None]  # (B, 1, T, head_dim)
        sin = self.rope_sin[position_ids].to(x.dtype)[:, None]
        for i, block in enumerate(self.model.layers):
            x = block(x, cos, sin, attn_mask, cache, i, kernels)
        if cache is not None and end is not None:
            cache.length = end
        x = self.model.norm(x)
        logits = invariant_linear(self.lm_head, x) if kernels.invariant else self.lm_head(x)
        return logits.float()
