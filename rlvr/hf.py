"""Hugging Face checkpoints in and out: weights, config, tokenizer and chat template.

A folder written by `save_pretrained` of a Llama, Qwen2, Qwen3 or Mistral model loads into
rlvr's own `Transformer` (the parameter names already match); any other causal LM that
transformers knows runs through transformers itself behind the same interface (slower).
Our from-scratch model goes out as a `LlamaForCausalLM` folder with a tokenizer that
`PreTrainedTokenizerFast` reads.

    model, tokenizer = load_hf_model("path/to/Qwen2.5-0.5B-Instruct")
    prompt = tokenizer.encode(tokenizer.format_prompt("2+3*4=", R1_SYSTEM_PROMPT))
    save_hf(model, tokenizer, "out/")   # AutoModelForCausalLM.from_pretrained("out/") works

Needs `transformers` (for tokenizers and the fallback path); rlvr's core does not.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlvr.model import ModelConfig, Transformer, rope_tables
from rlvr.tokenizer import CharTokenizer

log = logging.getLogger(__name__)

R1_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think> <answer> answer here </answer>."
)
"""The DeepSeek-R1-Zero instruction, for `HFTokenizer.format_prompt(question, system_prompt)`."""

# The model types rlvr's own Transformer represents, and the class each is saved as.
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mistral": "MistralForCausalLM",
}

# The chat template of a saved CharTokenizer: exactly rlvr.tokenizer.format_prompt's text
# (<bos>{question}\n); a from-scratch model has never seen a system prompt, so it is dropped.
CHAR_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ message['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n' }}{% endif %}"
)


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ImportError(
            "Hugging Face checkpoints need the transformers package; "
            "install it with `pip install transformers`."
        ) from e
    return transformers


# ----------------------------------------------------------------------------- config


def model_config_from_hf(hf: dict, where: str = "config.json") -> ModelConfig:
    """Our ModelConfig for a Hugging Face config.json of a llama/qwen2/qwen3/mistral model."""
    model_type = hf.get("model_type")

    def unsupported(what: str) -> ValueError:
        return ValueError(f"{where}: {what} is not supported by rlvr's {model_type} model.")

    if model_type not in ARCHITECTURES:
        raise ValueError(f"{where}: model_type {model_type!r} is not one of {list(ARCHITECTURES)}.")
    if hf.get("hidden_act", "silu") != "silu":
        raise unsupported(f"hidden_act {hf['hidden_act']!r}")
    if hf.get("mlp_bias"):
        raise unsupported("mlp_bias")
    if model_type != "qwen2" and hf.get("attention_bias"):
        raise unsupported("attention_bias (a bias on o_proj too)")
    # transformers 5 writes rope_parameters (theta included); older files rope_theta + rope_scaling.
    rope = {**(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}
    rope_theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = rope.pop("rope_type", rope.pop("type", "default"))
    if rope_type not in ("default", "llama3"):
        raise unsupported(f"rope type {rope_type!r} (rlvr implements 'default' and 'llama3')")
    if rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise unsupported("partial_rotary_factor")
    llama3_keys = ("factor", "low_freq_factor", "high_freq_factor")
    rope_scaling = {}
    if rope_type == "llama3":
        rope_scaling = {"rope_type": "llama3", **{k: rope[k] for k in llama3_keys}}
        rope_scaling["original_max_position_embeddings"] = rope["original_max_position_embeddings"]
    if model_type == "mistral":
        sliding_window = hf.get("sliding_window") or 0
    elif model_type in ("qwen2", "qwen3") and hf.get("use_sliding_window"):
        sliding_window = hf.get("sliding_window") or 0
    else:
        sliding_window = 0
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=hf["num_attention_heads"],
        num_key_value_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        max_position_embeddings=hf["max_position_embeddings"],
        rope_theta=float(rope_theta),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        attention_bias=model_type == "qwen2",  # Qwen2 always has q/k/v biases
        head_dim=hf.get("head_dim") or 0,
        qk_norm=model_type == "qwen3",
        rope_scaling=rope_scaling,
        sliding_window=sliding_window,
    )


def hf_model_type(config: ModelConfig) -> str:
    """The Hugging Face family a ModelConfig is: qwen3 (q/k norm), qwen2 (q/k/v biases),
    mistral (sliding window) or llama."""
    if config.qk_norm and config.attention_bias:
        raise ValueError(
            "A model with both qk_norm and attention_bias has no Hugging Face family; "
            "turn one of them off to save it."
        )
    if config.qk_norm:
        return "qwen3"
    if config.attention_bias:
        return "qwen2"
    return "mistral" if config.sliding_window else "llama"


def hf_config(config: ModelConfig, tokenizer=None, dtype: torch.dtype = torch.float32) -> dict:
    """A Hugging Face config.json for our model; token ids come from `tokenizer` if given."""
    model_type = hf_model_type(config)
    out = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "rope_theta": config.rope_theta,
        "rms_norm_eps": config.rms_norm_eps,
        "tie_word_embeddings": config.tie_word_embeddings,
        "dtype": str(dtype).removeprefix("torch."),
    }
    if config.rope_scaling:
        out["rope_scaling"] = dict(config.rope_scaling)
    if model_type in ("llama", "qwen3"):
        out["attention_bias"] = False
    if model_type == "llama":
        out["mlp_bias"] = False
    if model_type in ("qwen2", "qwen3"):
        out["use_sliding_window"] = False
    if model_type == "mistral":
        out["sliding_window"] = config.sliding_window
    if tokenizer is not None:
        out |= {
            "bos_token_id": tokenizer.bos_id,
            "eos_token_id": tokenizer.eos_id,
            "pad_token_id": tokenizer.pad_id,
        }
    return out


# ----------------------------------------------------------------------------- tokenizer


class HFTokenizer:
    """A transformers tokenizer with the interface rlvr's loops use of `CharTokenizer`.

    encode/decode never add or drop special tokens on their own: the prompt text (from
    `format_prompt`, through the checkpoint's chat template) already holds them.
    """

    def __init__(self, tokenizer, stop_ids: list[int] | None = None) -> None:
        self.hf = tokenizer
        eos = [self.eos_id] if self.eos_id is not None else []
        self._stop_ids = list(dict.fromkeys(eos + list(stop_ids or [])))

    @classmethod
    def from_folder(cls, path: str | Path) -> HFTokenizer:
        """Load the tokenizer files of a checkpoint folder (tokenizer.json preferred)."""
        path = Path(path)
        transformers = _transformers()
        if (path / "tokenizer.json").is_file():
            # Not AutoTokenizer: with transformers 5 it may pick the model family's tokenizer
            # class and replace a custom pre-tokenizer (spaces vanish without a word).
            tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(str(path))
        elif (path / "tokenizer_config.json").is_file():
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        else:
            raise ValueError(
                f"{path} holds no tokenizer (tokenizer.json or tokenizer_config.json); copy "
                "the tokenizer files of the original checkpoint into it."
            )
        # Chat models often stop on more than the tokenizer's eos (e.g. <|eot_id|>, <|im_end|>).
        stop_ids = []
        generation = path / "generation_config.json"
        if generation.is_file():
            eos = json.loads(generation.read_text()).get("eos_token_id")
            stop_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        return cls(tokenizer, stop_ids)

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def eos_id(self) -> int | None:
        return self.hf.eos_token_id

    @property
    def eos_token(self) -> str | None:
        return self.hf.eos_token

    @property
    def bos_id(self) -> int | None:
        """The beginning-of-sequence id, or None (Qwen has none)."""
        return self.hf.bos_token_id

    @property
    def pad_id(self) -> int:
        """The padding id; the eos id when the tokenizer has no pad token (Llama 3)."""
        return self.hf.pad_token_id if self.hf.pad_token_id is not None else self.eos_id

    @property
    def stop_ids(self) -> list[int]:
        """Token ids that end a completion: eos plus generation_config.json's eos ids."""
        return list(self._stop_ids)

    def token_to_id(self, token: str) -> int:
        return self.hf.convert_tokens_to_ids(token)

    def encode(self, text: str) -> list[int]:
        """Text to ids; special token strings in the text become their ids, none are added."""
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids, skip_special: bool = False) -> str:
        """Ids to text; special tokens are written as their strings unless skip_special."""
        return self.hf.decode(
            [int(i) for i in ids],
            skip_special_tokens=skip_special,
            clean_up_tokenization_spaces=False,
        )

    def format_prompt(self, question: str, system_prompt: str | None = None) -> str:
        """The prompt text for a question, through the checkpoint's chat template with the
        assistant turn opened; without a chat template: [bos][system\\n]question\\n."""
        if not self.hf.chat_template:
            system = system_prompt + "\n" if system_prompt else ""
            return (self.hf.bos_token or "") + system + question + "\n"
        messages = [{"role": "user", "content": question}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        return self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def save(self, path: str | Path) -> None:
        self.hf.save_pretrained(str(path))

    def __repr__(self) -> str:
        return f"HFTokenizer({type(self.hf).__name__}, vocab_size={self.vocab_size})"


def char_tokenizer_to_hf(tokenizer: CharTokenizer):
    """A `PreTrainedTokenizerFast` that encodes text to the same ids as `tokenizer`: one
    WordLevel id per character (split one by one, no normalizer) and the special tokens
    as added tokens, with a chat template that writes rlvr's prompt format."""
    transformers = _transformers()
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(tokenizer.tokens)}
    backend = Tokenizer(models.WordLevel(vocab=vocab))
    # [\s\S]: any character, newline included ("." would skip "\n").
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()  # join the characters with nothing in between
    specials = [tokenizer.tokens[i] for i in tokenizer.special_ids]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tokenizer.tokens[tokenizer.bos_id],
        eos_token=tokenizer.tokens[tokenizer.eos_id],
        pad_token=tokenizer.tokens[tokenizer.pad_id],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAR_CHAT_TEMPLATE
    return fast


# ----------------------------------------------------------------------------- models


class HFCache:
    """rlvr's KV-cache interface over a transformers `DynamicCache`: the mask of real slots
    and the filled length live here, the keys and values in transformers' cache."""

    def __init__(self, cache, mask: torch.Tensor) -> None:
        self.hf = cache
        self.mask = mask  # (B, max_len) bool: the slot holds a real token
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    @property
    def max_len(self) -> int:
        return self.mask.shape[1]

    def repeat_interleave(self, n: int) -> None:
        self.hf.batch_repeat_interleave(n)
        self.mask = self.mask.repeat_interleave(n, dim=0)

    def select_rows(self, index: torch.Tensor) -> None:
        self.hf.batch_select_indices(index)
        self.mask = self.mask.index_select(0, index)


class HFCausalLM(nn.Module):
    """A transformers causal LM behind `Transformer`'s forward interface, for model types
    rlvr does not implement. Correct but slower: transformers' DynamicCache grows by
    concatenation every step, where rlvr's KVCache is preallocated."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.hf = model
        self.config = model.config
        # transformers 5.x renamed forward's past_key_values to cache; accept either release.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch_size: int, max_len: int) -> HFCache:
        cache = _transformers().DynamicCache(config=self.config)
        device = next(self.parameters()).device
        return HFCache(cache, torch.zeros(batch_size, max_len, dtype=torch.bool, device=device))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: HFCache | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size), float32; the arguments mean what they do for Transformer."""
        B, T = input_ids.shape
        start = cache.length if cache is not None else 0
        end = start + T
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if cache is not None:
            if end > cache.max_len:
                raise ValueError(f"KV cache holds {cache.max_len} tokens; this call needs {end}.")
            cache.mask[:, start:end] = attention_mask.bool()
            key_valid = cache.mask[:, :end]
        else:
            key_valid = attention_mask.bool()
        if position_ids is None:
            position_ids = (key_valid.long().cumsum(-1)[:, start:] - 1).clamp(min=0)
        out = self.hf(
            input_ids=input_ids,
            attention_mask=key_valid.long(),
            position_ids=position_ids,
            use_cache=cache is not None,
            **({self._cache_arg: cache.hf} if cache is not None else {}),
        )
        if cache is not None:
            cache.length = end
        return out.logits.float()


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / name for name in names]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    raise ValueError(
        f"{path} holds no model.safetensors (or model.safetensors.index.json); point at a "
        "Hugging Face checkpoint folder, or re-save the model with save_pretrained()."
    )


def load_hf_model(
    path: str | Path, dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, HFTokenizer]:
    """Model and tokenizer of a Hugging Face checkpoint folder.

    llama, qwen2, qwen3 and mistral load into rlvr's `Transformer`; other model types (or
    those with a feature rlvr lacks, e.g. yarn RoPE) that transformers can load come back as
    an `HFCausalLM` (same interface, slower sampling), with one warning line saying so.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(
            f"{path} is not a Hugging Face checkpoint (no config.json); point at the folder "
            "that holds config.json and the *.safetensors weights."
        )
    hf = json.loads(config_file.read_text())
    model_type = hf.get("model_type")
    try:
        config = model_config_from_hf(hf, where=str(config_file))
    except ValueError as unsupported:  # not a family rlvr implements, or a feature it lacks
        model = _load_with_transformers(path, model_type, dtype, reason=str(unsupported))
        return model, HFTokenizer.from_folder(path)

    weights: dict[str, torch.Tensor] = {}
    for file in _weight_files(path):
        weights |= load_file(str(file))
    weights = {k: v.to(dtype) for k, v in weights.items() if not k.endswith("rotary_emb.inv_freq")}
    if config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    tokenizer = HFTokenizer.from_folder(path)

    with torch.device("meta"):  # no random init of weights about to be replaced
        model = Transformer(config)
    if config.tie_word_embeddings:
        weights["lm_head.weight"] = weights.get("model.embed_tokens.weight")
    expected = set(model.state_dict())
    missing, unexpected = expected - set(weights), set(weights) - expected
    if missing or unexpected or any(v is None for v in weights.values()):
        raise ValueError(
            f"{path}: weights do not match its config.json (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}); the checkpoint is incomplete or not a "
            f"plain {model_type} model."
        )
    model.load_state_dict(weights, assign=True)
    if config.tie_word_embeddings:  # assign=True made two Parameters; share one again
        model.lm_head.weight = model.model.embed_tokens.weight
    with torch.device("cpu"):
        model.rope_cos, model.rope_sin = rope_tables(config)
    return model.eval(), tokenizer


def _load_with_transformers(path: Path, model_type, dtype: torch.dtype, reason: str) -> HFCausalLM:
    transformers = _transformers()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except (ValueError, KeyError, OSError) as e:
        raise ValueError(
            f"{path}: model_type {model_type!r} is neither one rlvr implements "
            f"({', '.join(ARCHITECTURES)}) nor a causal LM this transformers can load ({e})."
        ) from e
    log.warning(
        "%s (rlvr implements %s models without it): running the checkpoint through "
        "transformers (DynamicCache), correct but slower than rlvr's own model.",
        reason.rstrip("."),
        "/".join(ARCHITECTURES),
    )
    return HFCausalLM(model.eval())


def save_hf(model: nn.Module, tokenizer, path: str | Path, save_file=save_file) -> Path:
    """Write `model` and `tokenizer` as a folder `AutoModelForCausalLM.from_pretrained` and
    `PreTrainedTokenizerFast.from_pretrained` read back (not atomically; callers that need
    that write into a temporary folder first). Returns the folder.

    save_file: what writes the safetensors file of rlvr's own model (safetensors' by default;
    rlvr.checkpoint passes its own name for it, which tests replace to fake a full disk)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(model, HFCausalLM):
        model.hf.save_pretrained(str(path))
    else:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            weights.pop("lm_head.weight", None)  # Hugging Face omits the tied copy too
        save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
        dtype = next(model.parameters()).dtype
        config = hf_config(model.config, tokenizer, dtype)
        (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if isinstance(tokenizer, CharTokenizer):
        tokenizer.save(path)  # rlvr_tokenizer.json, so load_checkpoint reads the folder
        try:
            fast = char_tokenizer_to_hf(tokenizer)
        except ImportError:  # rlvr's core runs without transformers; tokenizer.json needs it
            log.warning("transformers is not installed: %s gets no tokenizer.json.", path)
        else:
            fast.save_pretrained(str(path))
    else:
        tokenizer.save(path)
        # The tokens that end a completion (a chat model's <|im_end|> and eos) go where
        # HFTokenizer.from_folder and transformers' generate read them.
        generation = path / "generation_config.json"
        settings = json.loads(generation.read_text()) if generation.is_file() else {}
        if tokenizer.stop_ids:
            settings["eos_token_id"] = tokenizer.stop_ids
            generation.write_text(json.dumps(settings, indent=2) + "\n")
    return path
