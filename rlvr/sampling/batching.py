"""Continuous batching and speculative decoding: the engine's rows loop.

`Engine.generate` (rlvr/sampling/engine.py) decodes a batch of prompts at a time. This loop,
which it uses when asked for `max_rows`, speculation or batch-invariant kernels, keeps a fixed
number of rows busy instead: each row decodes one completion, and when a completion finishes
the next waiting sample (of the same prompt, or of the next prompt in the stream) takes its
row, so the long tail of one batch no longer holds the engine. Each prompt is prefilled once
(right-padded: a token's cache slot is its position) and copied into the rows of its samples.

Per step, every row feeds its last token and, with speculation, the tokens a drafter proposes
for it (rlvr/sampling/speculative.py) in one forward over the KV cache (`KVCache` in the rows
layout); `speculative.verify` keeps each row's draft up to the first token the target would
not have produced, and the cache takes back the rest (`KVCache.keep`).

Every completion draws its max_new_tokens uniform numbers when it is admitted, one per
position, and each emitted token is the target's sample at its position with that number: so
a completion depends on its prompt, its numbers and the logits, not on which rows it shared a
forward with or how many tokens a forward verified. With batch-invariant kernels
(`Transformer.batch_invariant`) the logits do not depend on those either, and the output is
bitwise the same with or without speculation and continuous batching.

    loop = RowsLoop(model, pad_id, prompts, num_samples=8, max_new_tokens=64, ...)
    for completion in loop:        # in the order they finish
        ...
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rlvr.model import Transformer
from rlvr.sampling import speculative
from rlvr.sampling.engine import (
    Completion,
    KVCache,
    allowed_logits,
    tempered_logprobs,
    truncate,
)
from rlvr.sampling.speculative import (
    PROBE_EVERY,
    ContextDrafter,
    DraftPolicy,
    ModelDrafter,
    Speculation,
)


@dataclass
class _Row:
    """One completion being decoded in a row of the batch."""

    prompt_index: int
    sample_index: int
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    """New tokens so far; the last one is not in the cache yet (the next forward feeds it)."""
    logprobs: list[float] = field(default_factory=list)
    draft: list[int] = field(default_factory=list)
    """What the drafter proposed for the coming positions, and its kind (for the policy)."""
    kind: object = None

    @property
    def key(self) -> tuple[int, int]:
        return self.prompt_index, self.sample_index


@dataclass
class _Prefilled:
    """A prompt whose samples are not all admitted yet: its cache row and next-token logits."""

    cache: KVCache
    row: int
    length: int
    logits: torch.Tensor  # (V,)
    waiting: int


@dataclass
class LoopStats:
    """What a rows loop did: forwards, tokens and drafts (for benchmarks and metrics)."""

    forwards: int = 0
    """Forwards of the rows (prefills not counted)."""
    row_steps: int = 0
    """Sum over those forwards of the rows that were decoding."""
    verify_forwards: int = 0
    """Forwards that verified at least one drafted token."""
    verify_rows: int = 0
    """Sum over those forwards of the rows that had a draft."""
    new_tokens: int = 0
    drafted: int = 0
    """Drafted tokens fed to the target."""
    accepted: int = 0
    """Of those, accepted."""
    prefills: int = 0

    def add(self, other: LoopStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class RowsLoop:
    """Decodes `num_samples` completions of each prompt of `prompts` (any iterable, read as
    rows free up) on `max_rows` rows; iterate it for the completions, as each finishes.

    The sampling arguments mean what they mean for `Engine.generate`. `speculation` None
    decodes one token per row and step; `exact` computes logprobs by the learner's formula
    (rlvr.learning.algorithms.token_logprobs) for batch-invariant models."""

    def __init__(self, model: Transformer, pad_id: int, prompts: Iterable[list[int]], *,
                 num_samples: int, max_new_tokens: int, temperature: float, top_p: float,
                 top_k: int, stop_token_ids: Sequence[int], stop_sequences: Sequence[Sequence[int]],
                 min_new_tokens: int, generator: torch.Generator | None, max_rows: int,
                 speculation: Speculation | None) -> None:  # fmt: skip
        self.model, self.pad_id = model, pad_id
        self.prompts = iter(prompts)
        self.num_samples, self.max_new_tokens = num_samples, max_new_tokens
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.min_new_tokens, self.generator = min_new_tokens, generator
        self.device = next(model.parameters()).device
        self.stop_ids = set(stop_token_ids)
        self.stop_tensor = torch.tensor(sorted(self.stop_ids), dtype=torch.long, device=self.device)
        self.stop_sequences = [list(s) for s in stop_sequences if len(s) > 0]
        self.exact = bool(getattr(model, "batch_invariant", False))
        self.speculation = speculation
        self.num_draft = speculation.num_tokens if speculation is not None else 0
        self.policy: DraftPolicy | None = None
        self.drafter: ContextDrafter | ModelDrafter | None = None
        if speculation is not None:
            self.policy = speculation.make_policy()
            if speculation.draft_model is not None:
                self.drafter = ModelDrafter(speculation.draft_model, pad_id)
            else:  # other prompts' texts draft weakly: only where verifying is nearly free
                others = self.policy.cost.overhead_bound(model, max_rows)
                self.drafter = ContextDrafter(speculation.history, others=others)
        self.stats = LoopStats()
        self.steps = 0
        self.max_rows = max_rows

        self.rows: list[_Row | None] = [None] * max_rows
        self.cache = KVCache.create(model, max_rows, 1)
        self.cache.start_rows()
        self.uniforms = torch.zeros((max_rows, max_new_tokens))  # per row, per position
        self.waiting: deque[tuple[int, int]] = deque()  # (prompt index, sample index)
        self.prompt_tokens: dict[int, list[int]] = {}
        self.prefilled: dict[int, _Prefilled] = {}
        self.unfinished: dict[int, int] = {}  # prompt index -> samples not finished yet
        self.num_prompts = 0
        self.exhausted = False

    # ------------------------------------------------------------------------- the loop

    def __iter__(self) -> Iterator[Completion]:
        yield from self._admit()
        while any(row is not None for row in self.rows):
            yield from self._step()
            yield from self._admit()
            self._compact()
        if self.policy is not None:
            self.policy.end_call(self.max_rows)

    def _step(self) -> list[Completion]:
        """One forward of every row's last token and draft; emit what it accepts."""
        active = [i for i, row in enumerate(self.rows) if row is not None]
        k = self._plan(active)
        T = 1 + k
        table = [[self.pad_id] * T for _ in self.rows]  # (B, T): last token, draft, padding
        drafts = []
        for i in active:
            row = self.rows[i]
            draft = row.draft[:k]
            table[i][0] = row.tokens[-1]
            table[i][1 : 1 + len(draft)] = draft
            drafts.append(draft)
        ids = torch.tensor(table, device=self.device)
        positions = self.cache.ends[:, None]  # a token's slot is its position
        if T > 1:
            positions = positions + torch.arange(T, device=self.device)
        logits = self.model(ids, position_ids=positions, cache=self.cache)  # (B, T, V)
        self.stats.forwards += 1
        self.stats.row_steps += len(active)
        if len(active) < len(self.rows):
            logits = logits.index_select(0, torch.tensor(active, device=self.device))
        padded = [d + [-1] * (k - len(d)) for d in drafts]  # -1: nothing drafted there
        draft_ids = torch.tensor(padded, dtype=torch.long, device=self.device).view(len(active), k)
        accepted, emitted = self._verify(active, logits, draft_ids)
        if T > 1 or len(active) < len(self.rows):  # take back rejected drafts and free rows
            counts = [0] * len(self.rows)
            for i, a in zip(active, accepted):
                counts[i] = 1 + a
            self.cache.keep(counts)
        if k:
            self.stats.verify_forwards += 1
            self.stats.verify_rows += sum(1 for draft in drafts if draft)
        return self._emit(active, emitted, drafts)

    def _plan(self, active: list[int]) -> int:
        """Propose drafts for the active rows; return how many tokens each verifies."""
        if self.drafter is None:
            return 0
        self.steps += 1
        for i in active:
            self.rows[i].draft = []
        if not self.policy.proposing(self.steps):
            return 0
        asked = active
        if not self.policy.pays() and isinstance(self.drafter, ContextDrafter):
            # a probe: the rows of one prompt in PROBE_EVERY (a group is indexed as a whole),
            # different prompts each probe
            turn = self.steps // PROBE_EVERY
            asked = [
                i for i in active if self.rows[i].prompt_index % PROBE_EVERY == turn % PROBE_EVERY
            ]
            if not asked:
                chosen = self.rows[active[turn % len(active)]].prompt_index
                asked = [i for i in active if self.rows[i].prompt_index == chosen]
        room = min(self.cache.max_len, self.model.config.max_position_embeddings)
        room -= self.cache.length + 1  # slots left after every row's last token
        limits = []
        for i in asked:
            row = self.rows[i]
            limits.append(
                max(0, min(self.num_draft, self.max_new_tokens - len(row.tokens) - 1, room))
            )
        keys = [self.rows[i].key for i in asked]
        proposals = self.drafter.propose_all(asked, keys, limits)
        drafting = []
        for i, (draft, kind) in zip(asked, proposals):
            row = self.rows[i]
            row.draft, row.kind = draft, kind
            if draft:
                drafting.append((len(draft), kind))
        spent = 0.0
        if isinstance(self.drafter, ModelDrafter) and drafting:
            longest = max(length for length, _ in drafting)
            spent = self.drafter.modelled_seconds(self.policy.cost, len(self.rows), longest)
        share = len(asked) / len(active)
        return self.policy.choose(self.model, len(self.rows), drafting, spent, share)

    def _verify(self, active: list[int], logits: torch.Tensor, drafts: torch.Tensor):
        """Accepted drafts per row and what each row emits: per row (tokens, logprobs,
        accepted) at its T positions. logits (R, T, V) of the rows `active`."""
        R, T, V = logits.shape
        flat = logits.reshape(R * T, V)
        where = None  # (R, T) completion index of each position, when needed
        ban_rows = None
        if self.min_new_tokens > 0 and len(self.stop_tensor):
            starts = [len(self.rows[i].tokens) for i in active]
            where = torch.tensor(starts)[:, None] + torch.arange(T)
            if min(starts) < self.min_new_tokens:
                ban_rows = (where < self.min_new_tokens).reshape(-1).to(self.device)
        banned = self.stop_tensor if ban_rows is not None else None
        if self.temperature == 0:
            truncated, uniforms, logp = allowed_logits(flat, banned, ban_rows), None, None
        else:
            logp = tempered_logprobs(flat, self.temperature)
            truncated = truncate(logp, self.top_k, self.top_p, banned, ban_rows)
            if where is None:
                where = torch.tensor([len(self.rows[i].tokens) for i in active])[:, None]
                where = where + torch.arange(T)
            cols = where.clamp(max=self.max_new_tokens - 1)
            uniforms = self.uniforms[torch.tensor(active)[:, None], cols].to(self.device)
        accepted, tokens = speculative.verify(truncated.view(R, T, V), drafts, uniforms)
        logprobs = self._logprobs(flat, logp, tokens.reshape(-1)).view(R, T)
        accepted = accepted.tolist() if T > 1 else [0] * R
        return accepted, list(zip(tokens.tolist(), logprobs.tolist(), accepted))

    def _logprobs(self, flat: torch.Tensor, logp: torch.Tensor | None, tokens: torch.Tensor):
        """Logprob of each token under softmax(logits / temperature) (raw logits when greedy),
        before truncation; with exact kernels by the learner's formula."""
        index = tokens[:, None]
        if self.exact:
            z = flat / self.temperature if self.temperature not in (0.0, 1.0) else flat
            return z.gather(-1, index).squeeze(-1) - torch.logsumexp(z, dim=-1)
        if logp is None:
            logp = F.log_softmax(flat, -1)
        return logp.gather(-1, index).squeeze(-1)

    def _emit(self, active: list[int], emitted, drafts: list[list[int]]) -> list[Completion]:
        """Append each row's emitted tokens up to a stop or max_new_tokens; finish rows."""
        done = []
        for i, (tokens, logprobs, accepted), verified in zip(active, emitted, drafts):
            row = self.rows[i]
            came = tokens[: accepted + 1]
            if self.policy is not None and row.draft:
                self.policy.observe(row.kind, row.draft, came)
                self.stats.drafted += len(verified)
                self.stats.accepted += accepted
            reason = None
            added = 0
            for token, logprob in zip(came, logprobs):
                row.tokens.append(token)
                row.logprobs.append(logprob)
                added += 1
                reason = self._finish_reason(row)
                if reason is not None:
                    break
            self.stats.new_tokens += added
            if reason is not None:
                done.append(self._finish(i, reason))
        return done

    def _finish_reason(self, row: _Row) -> str | None:
        n = len(row.tokens)
        if n > self.min_new_tokens:
            if row.tokens[-1] in self.stop_ids:
                return "stop"
            for seq in self.stop_sequences:
                if n >= len(seq) and row.tokens[-len(seq) :] == seq:
                    return "stop"
        return "length" if n == self.max_new_tokens else None

    def _finish(self, i: int, reason: str) -> Completion:
        row = self.rows[i]
        self.rows[i] = None
        self.unfinished[row.prompt_index] -= 1
        last = self.unfinished[row.prompt_index] == 0
        if last:
            del self.unfinished[row.prompt_index]
            del self.prompt_tokens[row.prompt_index]
        if self.drafter is not None:
            self.drafter.finish(i, row.key, row.prompt, row.tokens, last)
        return Completion(row.prompt_index, row.sample_index, row.tokens, row.logprobs, reason)

    # ------------------------------------------------------------------------- admission

    def _admit(self) -> list[Completion]:
        """Fill free rows with waiting samples (prefilling new prompts); sample their first
        tokens. Returns the completions that a first token already finished."""
        done: list[Completion] = []
        while self.waiting or not self.exhausted:  # (the tail: nothing left to admit)
            free = [i for i, row in enumerate(self.rows) if row is None]
            if not free:
                return done
            while len(self.waiting) < len(free) and not self.exhausted:
                self._read_prompt()
            if not self.waiting:
                return done
            take = [self.waiting.popleft() for _ in range(min(len(free), len(self.waiting)))]
            if any(p not in self.prefilled for p, _ in take):
                self._prefill_ahead([p for p, _ in take])
            rows = free[: len(take)]
            logits = self._load(rows, take)[:, None]  # (n, 1, V)
            no_drafts = torch.empty((len(rows), 0), dtype=torch.long, device=self.device)
            _, emitted = self._verify(rows, logits, no_drafts)
            done += self._emit(rows, emitted, [[] for _ in rows])
        return done

    def _read_prompt(self) -> None:
        try:
            prompt = list(next(self.prompts))
        except StopIteration:
            self.exhausted = True
            return
        if not prompt:
            raise ValueError("every prompt needs a token.")
        limit = self.model.config.max_position_embeddings
        if len(prompt) + self.max_new_tokens > limit:
            raise ValueError(
                f"Prompt of {len(prompt)} tokens + max_new_tokens ({self.max_new_tokens}) "
                f"exceeds the model's max_position_embeddings ({limit}); shorten the prompt "
                "or lower max_new_tokens."
            )
        index = self.num_prompts
        self.num_prompts += 1
        self.prompt_tokens[index] = prompt
        self.unfinished[index] = self.num_samples
        self.waiting.extend((index, s) for s in range(self.num_samples))

    def _prefill_ahead(self, taken: list[int]) -> None:
        """Prefill the taken prompts not prefilled yet, with the next waiting ones (read from
        the stream if need be) up to the prompts that fill max_rows rows: one prefill forward
        per batch of prompts, not per free row."""
        batch = max(1, len(self.rows) // self.num_samples)
        new = list(dict.fromkeys(p for p in taken if p not in self.prefilled))
        while len(new) < batch:
            ahead = [p for p, _ in self.waiting if p not in self.prefilled and p not in new]
            new += list(dict.fromkeys(ahead))[: batch - len(new)]
            if len(new) >= batch or self.exhausted:
                break
            self._read_prompt()
        self._prefill(new)

    def _prefill(self, order: list[int]) -> None:
        """One forward over these prompts, right-padded; keep their caches and logits."""
        lengths = [len(self.prompt_tokens[p]) for p in order]
        width = max(lengths)
        ids = torch.full((len(order), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(order), width), dtype=torch.long)
        for j, p in enumerate(order):
            ids[j, : lengths[j]] = torch.tensor(self.prompt_tokens[p], dtype=torch.long)
            mask[j, : lengths[j]] = 1
        cache = KVCache.create(self.model, len(order), width)
        logits = self.model(ids.to(self.device), mask.to(self.device), cache=cache)  # (n, W, V)
        last = logits[torch.arange(len(order)), torch.tensor(lengths) - 1]  # (n, V)
        self.stats.prefills += 1
        for j, p in enumerate(order):
            self.prefilled[p] = _Prefilled(cache, j, lengths[j], last[j], self.num_samples)

    def _load(self, rows: list[int], take: list[tuple[int, int]]) -> torch.Tensor:
        """Copy each taken sample's prompt cache into its row and draw its uniform numbers;
        return the logits (n, V) of each one's first token."""
        need = max(self.prefilled[p].length for p, _ in take) + self.max_new_tokens
        need += self.num_draft
        if need > self.cache.max_len:
            self.cache.grow(need)
        logits = []
        by_cache: dict[int, tuple[KVCache, list, list, list]] = {}
        for row, (p, s) in zip(rows, take):
            pre = self.prefilled[p]
            group = by_cache.setdefault(id(pre.cache), (pre.cache, [], [], []))
            group[1].append(row)
            group[2].append(pre.row)
            group[3].append(pre.length)
            logits.append(pre.logits)
            pre.waiting -= 1
            if pre.waiting == 0:
                del self.prefilled[p]
            prompt = self.prompt_tokens[p]
            self.rows[row] = _Row(p, s, prompt)
            if self.temperature > 0:
                where = self.generator.device if self.generator is not None else "cpu"
                u = torch.rand(self.max_new_tokens, generator=self.generator, device=where)
                self.uniforms[row] = u.cpu()
        for cache, dst, src, lengths in by_cache.values():
            self.cache.load_rows(dst, cache, src, lengths)
        if self.drafter is not None:
            new = [self.rows[r] for r in rows]
            self.drafter.load(rows, [row.key for row in new], [row.prompt for row in new],
                              [row.tokens for row in new], self.cache.max_len)  # fmt: skip
        return torch.stack(logits)

    def _compact(self) -> None:
        """Once no work waits, drop free rows when they are a quarter of the batch:
        select_rows copies the whole cache, so compacting on every finish would not pay."""
        if self.waiting or not self.exhausted:
            return
        active = [i for i, row in enumerate(self.rows) if row is not None]
        if not active or (len(self.rows) - len(active)) * 4 < len(self.rows):
            return
        index = torch.tensor(active, device=self.device)
        self.cache.select_rows(index)
        self.uniforms = self.uniforms[torch.tensor(active)]
        self.rows = [self.rows[i] for i in active]
        if self.drafter is not None:
            self.drafter.select_rows(active)
