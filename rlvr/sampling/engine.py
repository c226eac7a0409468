"""The sampling engine: batched, KV-cached generation that speaks token ids only.

Each distinct prompt is prefilled once (prompts left-padded into one batch), its cache is
copied into `num_samples` rows, and all rows then decode together, one token per step.
On the CPU, rows that finish are dropped from the batch when enough of them have, so late
steps do not pay for finished sequences. On a GPU, a small model's decode step costs the
launches of its ~20 kernels per layer more than their arithmetic, so rlvr's model decodes
there through a CUDA graph: the step is captured once per call, on fixed shapes, and
replayed as one launch per token (finished rows ride along until all rows are done).

    engine = Engine(model, pad_id=0)
    completions = engine.generate([[5, 6, 7], [8, 9]], num_samples=4, max_new_tokens=32,
                                  temperature=1.0, stop_token_ids=[eos_id])

Run `python benchmarks/engine_speed.py` for its speed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlvr.model import Transformer


@dataclass
class Completion:
    """One sampled continuation of one prompt."""

    prompt_index: int
    """Index of the prompt in the list given to `generate`."""
    sample_index: int
    """Which of that prompt's `num_samples` samples this is."""
    token_ids: list[int]
    """The new tokens, including the stop token or stop sequence that ended them."""
    logprobs: list[float]
    """Per new token: log-softmax of logits / temperature at the chosen token, taken before
    top-k/top-p truncation (of the raw logits when temperature is 0)."""
    finish_reason: str
    """"stop" (a stop token or stop sequence) or "length" (max_new_tokens reached)."""


class Engine:
    """Samples completions from a `Transformer`; prompts and outputs are token id lists."""

    def __init__(self, model: Transformer, pad_id: int, decode: str = "auto"):
        """decode: "auto" (a CUDA graph for rlvr's model on a GPU, "eager" otherwise and
        under autocast, whose capture in a graph is not yet verified on a GPU), "eager" (one
        forward per step, finished rows dropped), or "static" (the fixed-shape step a graph
        replays, run without one: on any device, for tests)."""
        if decode not in ("auto", "eager", "static"):
            raise ValueError(f"decode {decode!r} is not one of auto, eager, static.")
        self.model = model
        self.pad_id = pad_id
        self.decode = decode

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[list[int]],
        *,
        num_samples: int = 1,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_token_ids: Sequence[int] = (),
        stop_sequences: Sequence[Sequence[int]] = (),
        min_new_tokens: int = 0,
        suppress_ids: Sequence[int] = (),
        suppress_until_ids: Sequence[int] = (),
        generator: torch.Generator | None = None,
        on_complete: Callable[[Completion], None] | None = None,
    ) -> list[Completion]:
        """`num_samples` completions per prompt, ordered prompt by prompt (group-major).

        temperature 0 is greedy decoding; top_k 0 and top_p 1.0 turn those filters off. A
        completion ends at a stop token, at the end of a stop sequence, or after
        `max_new_tokens` tokens. The first `min_new_tokens` tokens never end a completion:
        until then the stop tokens are masked out of the sampling distribution before top-k
        and top-p (as transformers' min_new_tokens and vLLM's min_tokens do; the returned
        logprobs stay those of the unmasked distribution) and stop sequences are not checked
        (as vLLM does). The token ids in `suppress_ids` are kept out of a row's sampling the
        same way until that row has sampled one of `suppress_until_ids` (forced thinking keeps
        `</think>` out until the first newline). The same `generator` seed gives the same
        completions.
        `on_complete(completion)` is called as each one finishes, while the others are still
        decoding (the rollout starts verifying there).
        """
        model = self.model
        config = model.config
        param = next(model.parameters())
        device = param.device
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("generate needs at least one prompt, and every prompt needs a token.")
        if num_samples < 1 or max_new_tokens < 1:
            raise ValueError("num_samples and max_new_tokens must be at least 1.")
        if not 0 <= min_new_tokens <= max_new_tokens:
            raise ValueError("min_new_tokens must be between 0 and max_new_tokens.")
        prompt_len = max(len(p) for p in prompts)
        if prompt_len + max_new_tokens > config.max_position_embeddings:
            raise ValueError(
                f"Longest prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) "
                f"exceeds the model's max_position_embeddings ({config.max_position_embeddings}); "
                "shorten the prompt or lower max_new_tokens."
            )

        # Prefill every distinct prompt once, left-padded so all of them end in the same slot.
        num_prompts = len(prompts)
        input_ids = torch.full((num_prompts, prompt_len), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((num_prompts, prompt_len), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, prompt_len - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention_mask[i, prompt_len - len(p) :] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        if isinstance(model, Transformer):
            cache = KVCache.create(model, num_prompts, prompt_len + max_new_tokens)
        else:  # a transformers model behind rlvr.hf.HFModel brings its own cache
            cache = model.new_cache(num_prompts, prompt_len + max_new_tokens)
        logits = model(input_ids, attention_mask, cache=cache)[:, -1]  # (P, V)

        # Copy each prompt's cache into num_samples rows; all N rows decode from here.
        cache.repeat_interleave(num_samples)
        logits = logits.repeat_interleave(num_samples, dim=0)  # (N, V)
        num_rows = num_prompts * num_samples
        position = attention_mask.sum(-1).repeat_interleave(num_samples)[:, None]  # (N, 1)

        stop_ids = torch.tensor(list(stop_token_ids), dtype=torch.long, device=device)
        stop_seqs = [torch.tensor(list(s), dtype=torch.long, device=device) for s in stop_sequences]
        stop_seqs = [s for s in stop_seqs if len(s) > 0]
        tokens = torch.full(
            (num_rows, max_new_tokens), self.pad_id, dtype=torch.long, device=device
        )
        logprobs = torch.zeros((num_rows, max_new_tokens), device=device)
        lengths = torch.full((num_rows,), max_new_tokens, dtype=torch.long, device=device)
        stopped = torch.zeros(num_rows, dtype=torch.bool, device=device)  # ended by a stop

        graph = (
            self.decode == "auto"
            and device.type == "cuda"
            and not torch.is_autocast_enabled(device.type)
        )
        fixed = isinstance(model, Transformer) and (self.decode == "static" or graph)
        step_fn = None  # the fixed-shape decode step (made at the first step that needs it)
        rows = torch.arange(num_rows, device=device)  # original row of each active row
        all_rows = True  # no row dropped yet: `rows` is every row, in order
        done = torch.zeros(num_rows, dtype=torch.bool, device=device)  # per active row
        one_stop_id = int(stop_ids[0]) if len(stop_ids) == 1 else None
        suppress = torch.tensor(list(suppress_ids), dtype=torch.long, device=device)
        release = torch.tensor(list(suppress_until_ids), dtype=torch.long, device=device)
        held = torch.full((num_rows,), len(suppress) > 0, device=device)  # per active row
        finished: dict[int, Completion] = {}  # row -> its completion (with on_complete only)
        for step in range(max_new_tokens):
            banned = stop_ids if step < min_new_tokens and len(stop_ids) else None
            if len(suppress) and bool(held.any()):  # (n, V) mask: per row, unlike the stops
                mask = torch.zeros(logits.shape, dtype=torch.bool, device=device)
                mask[:, suppress] = held[:, None]
                if banned is not None:
                    mask[:, banned] = True
                banned = mask
            token, logprob = sample(logits, temperature, top_k, top_p, generator, banned)
            if len(suppress):
                held &= ~torch.isin(token, release)
            if all_rows:  # a plain column write is cheaper than scattering into `rows`
                tokens[:, step] = token
                logprobs[:, step] = logprob
            else:
                tokens[rows, step] = token
                logprobs[rows, step] = logprob

            # Without stops every row runs to max_new_tokens; none ends before min_new_tokens.
            if (len(stop_ids) or stop_seqs) and step >= min_new_tokens:
                if one_stop_id is not None:
                    hit = token == one_stop_id
                elif len(stop_ids):
                    hit = torch.isin(token, stop_ids)
                else:
                    hit = torch.zeros_like(done)
                for seq in stop_seqs:
                    if step + 1 >= len(seq):
                        recent = tokens[rows, step + 1 - len(seq) : step + 1]  # (n, len(seq))
                        hit |= (recent == seq).all(-1)
                hit &= ~done
                if hit.any():
                    lengths[rows[hit]] = step + 1
                    stopped[rows[hit]] = True
                    done |= hit
                    if on_complete is not None:
                        for row in rows[hit].tolist():
                            finished[row] = self._completion(
                                row, num_samples, tokens, logprobs, step + 1, "stop"
                            )
                            on_complete(finished[row])
                    if bool(done.all()):
                        break
                    # Drop finished rows once they are a quarter of the batch: select_rows
                    # copies the whole cache, so compacting on every finish would not pay.
                    if not fixed and int(done.sum()) * 4 >= len(done):
                        keep = (~done).nonzero().squeeze(1)
                        rows, done, token = rows[keep], done[keep], token[keep]
                        held = held[keep]
                        all_rows = False
                        position = position[keep]
                        cache.select_rows(keep)
            if step + 1 == max_new_tokens:
                break
            if fixed:
                if step_fn is None:
                    step_fn = FixedShapeDecode(model, cache, graph=graph)
                logits = step_fn(token, position)
            else:
                logits = model(token[:, None], position_ids=position, cache=cache)[:, -1]
            position = position + 1

        if on_complete is not None:
            for row in (~stopped).nonzero().squeeze(1).tolist():
                finished[row] = self._completion(
                    row, num_samples, tokens, logprobs, max_new_tokens, "length"
                )
                on_complete(finished[row])
            return [finished[row] for row in range(num_rows)]
        token_lists, logprob_lists = tokens.tolist(), logprobs.tolist()
        lengths_list, stopped_list = lengths.tolist(), stopped.tolist()
        return [
            Completion(
                prompt_index=row // num_samples,
                sample_index=row % num_samples,
                token_ids=token_lists[row][: lengths_list[row]],
                logprobs=logprob_lists[row][: lengths_list[row]],
                finish_reason="stop" if stopped_list[row] else "length",
            )
            for row in range(num_rows)
        ]

    @staticmethod
    def _completion(row, num_samples, tokens, logprobs, length, reason) -> Completion:
        return Completion(
            prompt_index=row // num_samples,
            sample_index=row % num_samples,
            token_ids=tokens[row, :length].tolist(),
            logprobs=logprobs[row, :length].tolist(),
            finish_reason=reason,
        )


class KVCache:
    """Keys and values of the tokens seen so far, preallocated for `max_len` slots.

    Every row writes its t-th token into slot t, so all rows share one `length`. Prompts
    of different lengths are left-padded; `mask` marks which slots hold real tokens, and
    padded slots are never attended to. Keys are stored once per key/value head (not
    repeated for grouped-query attention).
    """

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor], mask: torch.Tensor):
        self.k = k  # per layer: (B, num_key_value_heads, max_len, head_dim)
        self.v = v  # per layer: (B, num_key_value_heads, max_len, head_dim)
        self.mask = mask  # (B, max_len) bool: the slot holds a real token
        self.length = 0  # slots filled so far
        # The same mask as an additive attention bias (0 real, -inf padding), kept up to date
        # from the first one-token step on, so decoding does not rebuild it every step.
        self.bias: torch.Tensor | None = None
        # Fixed-shape decoding (`make_static`): the slot the next token is written to, as a
        # (1,) tensor on the cache's device; None otherwise.
        self.slot: torch.Tensor | None = None

    @classmethod
    def create(
        cls,
        model: Transformer,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty cache for `batch_size` rows of up to `max_len` tokens each."""
        config = model.config
        param = next(model.parameters())
        dtype = dtype or param.dtype
        shape = (batch_size, config.num_key_value_heads, max_len, config.head_dim)
        layers = range(config.num_hidden_layers)
        k = [torch.zeros(shape, dtype=dtype, device=param.device) for _ in layers]
        v = [torch.zeros(shape, dtype=dtype, device=param.device) for _ in layers]
        mask = torch.zeros(batch_size, max_len, dtype=torch.bool, device=param.device)
        return cls(k, v, mask)

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    @property
    def max_len(self) -> int:
        return self.mask.shape[1]

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, num_kv_heads, T, head_dim) keys/values after the filled slots; return all
        keys/values up to and including them. `Transformer.forward` advances `length`."""
        if self.slot is not None:  # fixed shapes: write at the device-side slot, return all
            keys, values = self.k[layer], self.v[layer]
            # (under autocast k and v arrive in different precisions; the cache keeps its own)
            keys.index_copy_(2, self.slot, k.to(keys.dtype))
            values.index_copy_(2, self.slot, v.to(values.dtype))
            return keys, values
        start, end = self.length, self.length + k.shape[2]
        keys, values = self.k[layer], self.v[layer]
        keys.narrow(2, start, end - start).copy_(k)
        values.narrow(2, start, end - start).copy_(v)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def repeat_interleave(self, n: int) -> None:
        """Expand each row into `n` consecutive rows (in place): prefill a prompt once, then
        sample `n` completions of it."""
        self._apply(lambda t: t.repeat_interleave(n, dim=0))

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep only the rows in `index` (in place), e.g. to drop finished sequences."""
        self._apply(lambda t: t.index_select(0, index))

    def _apply(self, fn) -> None:
        self.k = [fn(t) for t in self.k]
        self.v = [fn(t) for t in self.v]
        self.mask = fn(self.mask)
        if self.bias is not None:
            self.bias = fn(self.bias)

    def make_static(self, dtype: torch.dtype) -> None:
        """Switch to fixed-shape decoding from slot `length` on (`Transformer.decode_step`):
        each step writes its keys/values at the device tensor `slot` and attends over all
        max_len slots, the unwritten ones masked out by the bias, so that every step runs
        the same kernels on the same memory (what a CUDA graph needs). Rows are not dropped
        from then on."""
        self.slot = torch.tensor([self.length], device=self.mask.device)
        self.bias = torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device)
        self.bias.masked_fill_(~self.mask, float("-inf"))

    def decode_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """Mark slot `length` real and return the additive bias of slots [0, length]:
        (B, 1, 1, length + 1), what one new token per row may attend to."""
        start = self.length
        self.mask[:, start] = True
        if self.bias is None or self.bias.dtype != dtype:
            self.bias = torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device)
            self.bias.masked_fill_(~self.mask, float("-inf"))
        else:
            self.bias[:, start] = 0.0
        return self.bias[:, None, None, : start + 1]


class FixedShapeDecode:
    """Decode steps of rlvr's model on a fixed-shape cache (`Transformer.decode_step`): with
    graph=True captured once as a CUDA graph and replayed for every step (inputs copied into
    its static buffers), else run eagerly (the same kernels, on any device)."""

    def __init__(self, model: Transformer, cache, graph: bool):
        self.model, self.cache = model, cache
        cache.make_static(model.model.embed_tokens.weight.dtype)
        rows, self.device = cache.batch_size, cache.mask.device
        self.token = torch.zeros((rows, 1), dtype=torch.long, device=self.device)
        self.position = torch.zeros((rows, 1), dtype=torch.long, device=self.device)
        self.graph = self._capture() if graph else None

    def _capture(self) -> torch.cuda.CUDAGraph:
        # Streams, capture and replay belong to the current GPU: make it the model's.
        with torch.cuda.device(self.device):
            # Warm up on a side stream (kernel choices, allocator blocks), then capture. Both
            # write the slot that the first real step writes again, so they change nothing.
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self.model.decode_step(self.token, self.position, self.cache)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.logits = self.model.decode_step(self.token, self.position, self.cache)
        return graph

    def __call__(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Logits (N, V) after feeding token (N,) at position (N, 1); advances the slot."""
        self.model.check_length(self.cache.length + 1, self.cache)
        self.token.copy_(token[:, None])
        self.position.copy_(position)
        if self.graph is None:
            logits = self.model.decode_step(self.token, self.position, self.cache)
        else:
            with torch.cuda.device(self.device):
                self.graph.replay()
            logits = self.logits
        self.cache.slot.add_(1)
        self.cache.length += 1
        return logits


def sample(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
    banned: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of logits (n, V); return the tokens (n,) and their logprobs (n,)
    under softmax(logits / temperature) before truncation (raw logits when greedy). Tokens
    `banned` (ids (k,) for every row, or a bool mask (n, V) per row) are never drawn (a
    truncation like top-k: their mass is not in the logprobs)."""
    if temperature == 0:
        allowed = _ban(logits, banned)
        token = allowed.argmax(-1)
        logprob = F.log_softmax(logits, -1).gather(-1, token[:, None]).squeeze(-1)
        return token, logprob
    # (x / 1.0 == x exactly: skip the copy at temperature 1.)
    logp = F.log_softmax(logits / temperature if temperature != 1.0 else logits, -1)  # (n, V)
    truncated = _ban(logp, banned)
    if 0 < top_k < logp.shape[-1]:
        kth = truncated.topk(top_k, dim=-1).values[:, -1:]  # (n, 1), among allowed tokens
        truncated = truncated.masked_fill(truncated < kth, float("-inf"))
    if top_p < 1.0:
        # Keep the smallest set of most likely tokens whose probability reaches top_p.
        sorted_probs, order = truncated.softmax(-1).sort(-1, descending=True)  # (n, V)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        drop = torch.empty_like(order, dtype=torch.bool).scatter_(-1, order, mass_before >= top_p)
        truncated = truncated.masked_fill(drop, float("-inf"))
    # Inverse-CDF sampling: one uniform number per row (drawing one per vocabulary entry,
    # as Gumbel-max does, costs more than the rest of the step's sampling together).
    cdf = truncated.exp().cumsum(-1)  # (n, V), unnormalized after truncation
    # Drawn where the generator lives (a CPU generator gives the same stream on any device).
    where = generator.device if generator is not None else cdf.device
    u = torch.rand((len(cdf), 1), generator=generator, device=where).to(cdf.device) * cdf[:, -1:]
    token = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


def _ban(x: torch.Tensor, banned: torch.Tensor | None) -> torch.Tensor:
    """x (n, V) with the banned tokens at -inf: ids (k,) in every row, or a bool mask (n, V)."""
    if banned is None:
        return x
    if banned.dtype == torch.bool:
        return x.masked_fill(banned, float("-inf"))
    return x.index_fill(-1, banned, float("-inf"))
