"""The sampling engine: batched, KV-cached generation that speaks token ids only.

Each distinct prompt is prefilled once (prompts left-padded into one batch), its cache is
copied into `num_samples` rows, and all rows then decode together, one token per step.
On the CPU, rows that finish are dropped from the batch when enough of them have, so late
steps do not pay for finished sequences. On a GPU, a small model's decode step costs the
launches of its ~20 kernels per layer more than their arithmetic, so rlvr's model decodes
there through a CUDA graph: the step is captured once per call, on fixed shapes, and
replayed as one launch per token (finished rows ride along until all rows are done).

With speculative decoding (rlvr/sampling/speculative.py), continuous batching (`max_rows`) or
batch-invariant kernels, the engine decodes in the rows loop instead (rlvr/sampling/
batching.py): rows refilled as completions finish, several drafted tokens verified per
forward; eagerly, on any device.

    engine = Engine(model, pad_id=0)
    completions = engine.generate([[5, 6, 7], [8, 9]], num_samples=4, max_new_tokens=32,
                                  temperature=1.0, stop_token_ids=[eos_id])

Run `python benchmarks/engine_speed.py` for its speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from rlvr.model import Transformer

if TYPE_CHECKING:
    from rlvr.sampling.speculative import Speculation


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


CONTINUOUS_MIN_BATCHES = 3
"""Continuous batching decodes a call only when it needs at least this many batches of
max_rows (more than (CONTINUOUS_MIN_BATCHES - 1) * max_rows rows). What it saves is the tail of each batch (rows idle while the batch's longest
completion finishes); what it costs is per step and row (each row's cache slots written at
its own position, attention over the longest row's slots, the host's bookkeeping). With one
or two batches there is at most one tail to save, and the costs win (docs/speculative.md
measures both sides)."""


class Engine:
    """Samples completions from a `Transformer`; prompts and outputs are token id lists."""

    def __init__(self, model: Transformer, pad_id: int, decode: str = "auto",
                 speculation: Speculation | None = None,
                 continuous_batching: bool = True):  # fmt: skip
        """decode: "auto" (a CUDA graph for rlvr's model on a GPU; "eager" otherwise and
        under autocast, see docs/gpu.md), "eager" (one
        forward per step, finished rows dropped), or "static" (the fixed-shape step a graph
        replays, run without one: on any device, for tests).

        speculation: draft tokens and verify them (rlvr/sampling/speculative.py); None: one
        token per row and step.
        continuous_batching: how `generate` decodes more rows than `max_rows`: in the rows
        loop, a finished completion's row taken by the next waiting sample (True; when the
        rows need at least CONTINUOUS_MIN_BATCHES batches), or a batch of prompts at a time.
        Speculation, continuous batching and a model with batch-invariant kernels decode in
        the rows loop (rlvr/sampling/batching.py), eagerly; they need rlvr's model class (a
        transformers model behind rlvr.hf.HFModel decodes a batch at a time, one token per
        step)."""
        if decode not in ("auto", "eager", "static"):
            raise ValueError(f"decode {decode!r} is not one of auto, eager, static.")
        self.model = model
        self.pad_id = pad_id
        self.decode = decode
        self.speculation = speculation
        self.continuous_batching = continuous_batching
        self.stats = None
        """The last rows loop's `LoopStats` (forwards, drafted and accepted tokens)."""

    @property
    def streams(self) -> bool:
        """Whether `stream` (the rows loop) can decode this model: rlvr's model class."""
        return isinstance(self.model, Transformer)

    def uses_rows_loop(self, num_rows: int, max_rows: int = 0) -> bool:
        """Whether `generate` with this many rows and max_rows decodes in the rows loop:
        with batch-invariant kernels always; for continuous batching when the rows need at
        least CONTINUOUS_MIN_BATCHES batches of max_rows; for speculation alone
        when its policy expects drafting to pay at this many rows
        (`DraftPolicy.use_rows_loop`: the batch engine's plain steps are cheaper)."""
        if not self.streams:
            return False
        many = 0 < max_rows and num_rows > (CONTINUOUS_MIN_BATCHES - 1) * max_rows
        if self.model.batch_invariant or (self.continuous_batching and many):
            return True
        return self.speculation is not None and self.speculation.make_policy().use_rows_loop(
            num_rows
        )

    def stream(
        self,
        prompts: Iterable[list[int]],
        *,
        num_samples: int = 1,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_token_ids: Sequence[int] = (),
        stop_sequences: Sequence[Sequence[int]] = (),
        min_new_tokens: int = 0,
        generator: torch.Generator | None = None,
        max_rows: int,
    ) -> Iterator[Completion]:
        """The completions of `prompts` (read as rows free up, so it may be a generator) in
        the order they finish, decoded on `max_rows` rows by the rows loop: continuous
        batching, with this engine's speculation. Arguments as for `generate`."""
        from rlvr.sampling.batching import RowsLoop  # (batching imports this module)

        if not self.streams:
            raise ValueError("The rows loop needs rlvr's model class, not a transformers model.")
        if num_samples < 1 or max_new_tokens < 1 or max_rows < 1:
            raise ValueError("num_samples, max_new_tokens and max_rows must be at least 1.")
        if not 0 <= min_new_tokens <= max_new_tokens:
            raise ValueError("min_new_tokens must be between 0 and max_new_tokens.")
        loop = RowsLoop(
            self.model, self.pad_id, prompts, num_samples=num_samples,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
            stop_token_ids=stop_token_ids, stop_sequences=stop_sequences,
            min_new_tokens=min_new_tokens, generator=generator, max_rows=max_rows,
            speculation=self.speculation,
        )  # fmt: skip
        self.stats = loop.stats
        with torch.inference_mode():
            yield from loop

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
        max_rows: int = 0,
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
        `</think>` out until the first newline; such calls decode in the batch engine). The
        same `generator` seed gives the same completions.
        `on_complete(completion)` is called as each one finishes, while the others are still
        decoding (the rollout starts verifying there).

        max_rows: decode at most this many rows at a time (0: all of them): by continuous
        batching (`stream`, a finished row takes the next waiting sample) or a batch of
        max_rows // num_samples prompts at a time (continuous_batching=False). Calls go
        through `stream` with batch-invariant kernels, and with speculation when its policy
        expects drafting to pay at this many rows (`uses_rows_loop`); calls with
        suppress_ids always decode in the batch engine.
        """
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("generate needs at least one prompt, and every prompt needs a token.")
        num_rows = len(prompts) * num_samples
        sampling = dict(
            num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature,
            top_p=top_p, top_k=top_k, stop_token_ids=stop_token_ids,
            stop_sequences=stop_sequences, min_new_tokens=min_new_tokens, generator=generator,
        )  # fmt: skip
        if self.uses_rows_loop(num_rows, max_rows) and not suppress_ids:
            rows = min(max_rows or num_rows, num_rows)
            completions = []
            for completion in self.stream(prompts, max_rows=rows, **sampling):
                if on_complete is not None:
                    on_complete(completion)
                completions.append(completion)
            return sorted(completions, key=lambda c: (c.prompt_index, c.sample_index))
        if self.speculation is not None and self.speculation.history is not None:
            # (decoded without drafting: kept all the same, for the calls that will draft)
            history, user = self.speculation.history, on_complete

            def on_complete(c: Completion) -> None:
                history.add(prompts[c.prompt_index], c.token_ids)
                if user is not None:
                    user(c)

        sampling.update(suppress_ids=suppress_ids, suppress_until_ids=suppress_until_ids)
        if 0 < max_rows < num_rows:  # a batch of prompts at a time
            per_call = max(1, max_rows // num_samples)
            completions = []
            for first in range(0, len(prompts), per_call):
                done = None if on_complete is None else _shifted(on_complete, first)
                chunk = self._generate(prompts[first : first + per_call], on_complete=done,
                                       **sampling)  # fmt: skip
                completions += [replace(c, prompt_index=c.prompt_index + first) for c in chunk]
            return completions
        return self._generate(prompts, on_complete=on_complete, **sampling)

    @torch.inference_mode()
    def _generate(
        self,
        prompts: list[list[int]],
        *,
        num_samples: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        stop_token_ids: Sequence[int],
        stop_sequences: Sequence[Sequence[int]],
        min_new_tokens: int,
        suppress_ids: Sequence[int],
        suppress_until_ids: Sequence[int],
        generator: torch.Generator | None,
        on_complete: Callable[[Completion], None] | None,
    ) -> list[Completion]:
        """A batch at a time: `generate` without max_rows, speculation or invariant kernels."""
        model = self.model
        config = model.config
        param = next(model.parameters())
        device = param.device
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


def _shifted(on_complete: Callable[[Completion], None], first: int) -> Callable:
    """on_complete for a call on prompts[first:], called with indices into all prompts."""
    return lambda c: on_complete(replace(c, prompt_index=c.prompt_index + first))


class KVCache:
    """Keys and values of the tokens seen so far, preallocated for `max_len` slots.

    Two layouts. Shared (the default): every row writes its t-th token into slot t, so all
    rows share one `length`; prompts of different lengths are left-padded. Rows
    (`start_rows`): each row fills its own slots from 0, so a token's slot is its position,
    rows may hold different numbers of tokens (`ends`), a row can take back the last tokens it
    wrote (`keep`: rejected draft tokens) and be loaded with a new prompt while the others
    decode (`load_rows`: continuous batching). In both, `mask` marks which slots hold real
    tokens and the others are never attended to. Keys are stored once per key/value head (not
    repeated for grouped-query attention).
    """

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor], mask: torch.Tensor):
        self.k = k  # per layer: (B, num_key_value_heads, max_len, head_dim)
        self.v = v  # per layer: (B, num_key_value_heads, max_len, head_dim)
        self.mask = mask  # (B, max_len) bool: the slot holds a real token
        self.length = 0  # slots in use: every row's tokens lie in [0, length)
        # The same mask as an additive attention bias (0 real, -inf padding), kept up to date
        # from the first extending step on, so decoding does not rebuild it every step.
        self.bias: torch.Tensor | None = None
        # Fixed-shape decoding (`make_static`): the slot the next token is written to, as a
        # (1,) tensor on the cache's device; None otherwise.
        self.slot: torch.Tensor | None = None
        # Rows layout: slots filled per row, (B,) on the device and as a list; None: shared.
        self.ends: torch.Tensor | None = None
        self.ends_list: list[int] = []
        self._new_slots: torch.Tensor | None = None  # (B, T) slots of the tokens being written
        self._new_index: torch.Tensor | None = None  # the same, expanded like a layer's keys

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
        keys, values = self.k[layer], self.v[layer]
        if self.slot is not None:  # fixed shapes: write at the device-side slot, return all
            # (under autocast k and v arrive in different precisions; the cache keeps its own)
            keys.index_copy_(2, self.slot, k.to(keys.dtype))
            values.index_copy_(2, self.slot, v.to(values.dtype))
            return keys, values
        start, end = self.length, self.length + k.shape[2]
        if self.ends is not None:  # rows: token t of row b goes to slot ends[b] + t
            if self._new_index is None or self._new_index.shape != k.shape:
                self._new_index = self._new_slots[:, None, :, None].expand(k.shape)
            keys.scatter_(2, self._new_index, k.to(keys.dtype))
            values.scatter_(2, self._new_index, v.to(values.dtype))
        else:
            keys.narrow(2, start, end - start).copy_(k)
            values.narrow(2, start, end - start).copy_(v)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def extend_bias(self, num_new: int, dtype: torch.dtype) -> torch.Tensor:
        """Mark the slots of the next `num_new` tokens of every row real and return their
        additive bias (B, 1, num_new, length + num_new): each sees its row's real tokens
        before it and itself (the model then writes them through `update`)."""
        start, end = self.length, self.length + num_new
        device = self.mask.device
        if self.bias is None or self.bias.dtype != dtype:
            self.bias = torch.zeros(self.mask.shape, dtype=dtype, device=device)
            self.bias.masked_fill_(~self.mask, float("-inf"))
        if self.ends is None:
            self.mask[:, start:end] = True
            self.bias[:, start:end] = 0.0
            bias = self.bias[:, None, None, :end]  # (B, 1, 1, end)
            if num_new == 1:
                return bias
            query = torch.arange(start, end, device=device)[:, None]  # (T, 1)
            future = torch.arange(end, device=device) > query  # (T, end)
            return bias.masked_fill(future, float("-inf"))  # (B, 1, T, end)
        slots = self.ends[:, None]  # (B, T)
        if num_new > 1:
            slots = slots + torch.arange(num_new, device=device)
        self._new_slots, self._new_index = slots, None
        self.mask.scatter_(1, slots, True)
        self.bias.scatter_(1, slots, 0.0)
        self.ends = self.ends + num_new
        self.ends_list = [e + num_new for e in self.ends_list]
        bias = self.bias[:, None, None, :end]
        if num_new == 1:  # the slots after a row's new one are not real: nothing to add
            return bias
        future = torch.arange(end, device=device) > slots[:, :, None]  # (B, T, end)
        return bias.masked_fill(future[:, None], float("-inf"))

    def start_rows(self) -> None:
        """Switch an empty cache to the rows layout: each row fills its own slots from 0."""
        self.ends = torch.zeros(self.batch_size, dtype=torch.long, device=self.mask.device)
        self.ends_list = [0] * self.batch_size
        self.length = 0

    def keep(self, counts: list[int]) -> None:
        """Of the tokens the last forward wrote (T per row), row b keeps its first counts[b];
        the others' slots are taken back (rows layout: rejected draft tokens)."""
        slots = self._new_slots  # (B, T)
        T = slots.shape[1]
        kept = torch.tensor(counts, device=slots.device)
        keep = torch.arange(T, device=slots.device) < kept[:, None]  # (B, T)
        self.mask.scatter_(1, slots, keep)
        self.bias.scatter_(
            1,
            slots,
            torch.zeros_like(keep, dtype=self.bias.dtype).masked_fill_(~keep, float("-inf")),
        )
        self.ends = self.ends - T + kept
        self.ends_list = [e - T + c for e, c in zip(self.ends_list, counts)]
        self.length = max(self.ends_list, default=0)

    def load_rows(self, rows: list[int], source: KVCache, source_rows: list[int],
                  lengths: list[int]) -> None:  # fmt: skip
        """Put prompts prefilled in `source` (shared layout, right-padded: a prompt's token t
        in slot t) into `rows`: row rows[i] gets source row source_rows[i], lengths[i] tokens
        long; what those rows held before is forgotten."""
        width = source.length
        dst = torch.tensor(rows, device=self.mask.device)
        src = torch.tensor(source_rows, device=self.mask.device)
        for k, v, sk, sv in zip(self.k, self.v, source.k, source.v):
            k[dst, :, :width] = sk[src, :, :width].to(k.dtype)
            v[dst, :, :width] = sv[src, :, :width].to(v.dtype)
        mask = torch.zeros((len(rows), self.max_len), dtype=torch.bool, device=self.mask.device)
        mask[:, :width] = source.mask[src, :width]
        self.mask[dst] = mask
        if self.bias is not None:
            self.bias[dst] = torch.zeros_like(mask, dtype=self.bias.dtype).masked_fill_(
                ~mask, float("-inf")
            )
        self.ends[dst] = torch.tensor(lengths, device=self.mask.device)
        for row, length in zip(rows, lengths):
            self.ends_list[row] = length
        self.length = max(self.ends_list)

    def rewind(self, ends: list[int]) -> None:
        """Take back every row's slots from ends[b] on (rows layout; ends[b] <= its end)."""
        slots = torch.arange(self.max_len, device=self.mask.device)
        new = torch.tensor(ends, device=self.mask.device)
        drop = (slots >= new[:, None]) & (slots < self.ends[:, None])  # (B, max_len)
        self.mask &= ~drop
        self.bias.masked_fill_(drop, float("-inf"))
        self.ends, self.ends_list = new, list(ends)
        self.length = max(ends, default=0)

    def grow(self, max_len: int) -> None:
        """Make room for `max_len` slots per row (the new ones empty)."""
        pad = max_len - self.max_len
        if pad <= 0:
            return
        self.k = [F.pad(t, (0, 0, 0, pad)) for t in self.k]
        self.v = [F.pad(t, (0, 0, 0, pad)) for t in self.v]
        self.mask = torch.cat((self.mask, self.mask.new_zeros((self.batch_size, pad))), 1)
        if self.bias is not None:
            self.bias = F.pad(self.bias, (0, pad), value=float("-inf"))

    def add_rows(self, n: int) -> None:
        """Append `n` empty rows (rows layout)."""
        self._apply(lambda t: torch.cat((t, t.new_zeros((n, *t.shape[1:])))))
        if self.bias is not None:
            self.bias[-n:] = float("-inf")
        self.ends_list += [0] * n

    def repeat_interleave(self, n: int) -> None:
        """Expand each row into `n` consecutive rows (in place): prefill a prompt once, then
        sample `n` completions of it."""
        self._apply(lambda t: t.repeat_interleave(n, dim=0))
        self.ends_list = [e for e in self.ends_list for _ in range(n)]

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep only the rows in `index` (in place), e.g. to drop finished sequences."""
        self._apply(lambda t: t.index_select(0, index))
        if self.ends is not None:
            self.ends_list = [self.ends_list[i] for i in index.tolist()]
            self.length = max(self.ends_list, default=0)

    def _apply(self, fn) -> None:
        self.k = [fn(t) for t in self.k]
        self.v = [fn(t) for t in self.v]
        self.mask = fn(self.mask)
        if self.bias is not None:
            self.bias = fn(self.bias)
        if self.ends is not None:
            self.ends = fn(self.ends)

    def make_static(self, dtype: torch.dtype) -> None:
        """Switch to fixed-shape decoding from slot `length` on (`Transformer.decode_step`):
        each step writes its keys/values at the device tensor `slot` and attends over all
        max_len slots, the unwritten ones masked out by the bias, so that every step runs
        the same kernels on the same memory (what a CUDA graph needs). Rows are not dropped
        from then on."""
        self.slot = torch.tensor([self.length], device=self.mask.device)
        self.bias = torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device)
        self.bias.masked_fill_(~self.mask, float("-inf"))


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
        token = allowed_logits(logits, banned).argmax(-1)
        logprob = F.log_softmax(logits, -1).gather(-1, token[:, None]).squeeze(-1)
        return token, logprob
    logp = tempered_logprobs(logits, temperature)  # (n, V)
    truncated = truncate(logp, top_k, top_p, banned)
    # Drawn where the generator lives (a CPU generator gives the same stream on any device).
    where = generator.device if generator is not None else logits.device
    u = torch.rand((len(logits), 1), generator=generator, device=where).to(logits.device)
    token = draw(truncated, u)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


def tempered_logprobs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log_softmax(logits / temperature) over the last dimension."""
    # (x / 1.0 == x exactly: skip the copy at temperature 1.)
    return F.log_softmax(logits / temperature if temperature != 1.0 else logits, -1)


def allowed_logits(
    logits: torch.Tensor, banned: torch.Tensor | None, ban_rows: torch.Tensor | None = None
) -> torch.Tensor:
    """logits (n, V) with the `banned` token ids at -inf, in every row or in the rows where
    ban_rows (n,) is True; or, for `banned` a bool mask (n, V), where it is True."""
    if banned is None:
        return logits
    if banned.dtype == torch.bool:
        return logits.masked_fill(banned, float("-inf"))
    masked = logits.index_fill(-1, banned, float("-inf"))
    return masked if ban_rows is None else torch.where(ban_rows[:, None], masked, logits)


def truncate(
    logp: torch.Tensor,
    top_k: int,
    top_p: float,
    banned: torch.Tensor | None = None,
    ban_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-probabilities (n, V) with the tokens sampling may not draw at -inf: the banned ids
    (`allowed_logits`), then all but the top_k most likely (0: off), then all but the
    smallest set of most likely tokens whose probability reaches top_p (1.0: off)."""
    truncated = allowed_logits(logp, banned, ban_rows)
    if 0 < top_k < logp.shape[-1]:
        kth = truncated.topk(top_k, dim=-1).values[:, -1:]  # (n, 1), among allowed tokens
        truncated = truncated.masked_fill(truncated < kth, float("-inf"))
    if top_p < 1.0:
        # Keep the smallest set of most likely tokens whose probability reaches top_p.
        sorted_probs, order = truncated.softmax(-1).sort(-1, descending=True)  # (n, V)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        drop = torch.empty_like(order, dtype=torch.bool).scatter_(-1, order, mass_before >= top_p)
        truncated = truncated.masked_fill(drop, float("-inf"))
    return truncated


def draw(truncated: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The token (n,) at each row's uniform number u (n, 1) in [0, 1) on the inverse CDF of
    exp(truncated) (n, V), normalized: a sample of the truncated distribution."""
    # Inverse-CDF sampling: one uniform number per row (drawing one per vocabulary entry,
    # as Gumbel-max does, costs more than the rest of the step's sampling together).
    cdf = truncated.exp().cumsum(-1)  # (n, V), unnormalized after truncation
    u = u * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
