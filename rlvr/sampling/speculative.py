"""Speculative decoding: drafts from the text already there, verified losslessly by the target.

A drafter proposes up to `Speculation.num_tokens` next tokens for a row; the engine's rows
loop (rlvr/sampling/batching.py) feeds the row's last token and its draft to the target model
in one forward over the KV cache, and `verify` keeps the draft up to the first token the
target would not have produced there, plus the target's own token at that place. The cache
then takes back the rejected tokens' slots (`KVCache.keep`).

Drafters, none of which needs a second model:
- `ContextDrafter`: the longest suffix (up to MAX_NGRAM tokens) of the row's text found
  earlier in its own prompt and completion, in its siblings (the other samples of the same
  prompt in this call, running or finished), and in completions of the same prompt kept
  from earlier calls (`DraftHistory`: the same problems come back across GRPO steps and
  evaluations), then in the texts of other prompts finished earlier in the call (where a
  step's cost is mostly overhead); the tokens that followed it there are the draft.
- `ModelDrafter`: the greedy continuation of a small draft model with the same tokenizer.

The rule is the speculative sampling rule of Leviathan et al. 2023 ("Fast Inference from
Transformers via Speculative Decoding") and Chen et al. 2023 ("Accelerating Large Language
Model Decoding with Speculative Sampling") for a deterministic draft: q is a point mass on the
drafted token d, so d is accepted with probability min(1, p(d) / q(d)) = p(d), and on
rejection the token is drawn from the normalized residual max(0, p - q), which is p without d,
renormalized. `verify` realizes it by drawing the target's own token x from p (the
distribution after temperature, top-k, top-p and the min_new_tokens ban: the one sampling
uses) with the uniform number reserved for that position, and accepting d iff x == d: that
happens with probability p(d), and when it does not, x is distributed as p restricted to the
other tokens. So every emitted token is the target's own sample, drawn with the uniform number
of its position: with equal logits, speculation changes how many forwards a completion takes,
never the completion (tests/test_speculative.py checks both the distribution and this).

Whether drafting pays depends on the batch: on a CPU a decode step of a small model at a few
rows costs its per-layer overhead more than its arithmetic, so verifying several tokens costs
about one step; at many rows the matmuls are already busy and extra tokens cost their FLOPs.
`DraftPolicy` measures each kind of draft's acceptance (also for drafts it did not verify:
it compares them with the tokens that came) and, per step, verifies the draft length that
gives the most expected tokens per unit of modelled cost (`StepCost`), down to none.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rlvr.sampling.engine import KVCache, draw

MAX_NGRAM = 4
"""Longest suffix a context draft is matched on, in tokens (longer matches are tried first)."""
CANDIDATES_PER_NGRAM = 4
"""Occurrences remembered per n-gram; the one with the longest continuation is drafted."""


def verify(
    truncated: torch.Tensor, drafts: torch.Tensor, uniforms: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The speculative sampling rule for point-mass drafts, for R rows at once.

    truncated: (R, T, V) log-probabilities after temperature, top-k, top-p and bans (-inf:
        never drawn), at T consecutive positions of each row: the row's last token and its
        drafted tokens were fed, so position t is the distribution of the token after t drafts.
    drafts: (R, T - 1) drafted token ids, -1 where a row drafted fewer.
    uniforms: (R, T) the uniform numbers of those positions; None for greedy decoding.
    Returns (accepted (R,), tokens (R, T)): row r emits tokens[r, : accepted[r] + 1], which
    are its first accepted[r] drafts followed by the target's own token after them.
    """
    R, T, V = truncated.shape
    if uniforms is None:
        tokens = truncated.argmax(-1)  # (R, T)
    else:
        tokens = draw(truncated.reshape(R * T, V), uniforms.reshape(R * T, 1)).view(R, T)
    if T == 1:
        return torch.zeros(R, dtype=torch.long, device=tokens.device), tokens
    matches = (tokens[:, :-1] == drafts).long()  # (R, T - 1)
    return matches.cumprod(1).sum(1), tokens


# ----------------------------------------------------------------------------- drafting from context


class DraftHistory:
    """Finished completions kept across engine calls, by prompt: the same problems come back
    across GRPO steps and evaluations, and a completion of a problem drafts the next one.
    Keeps the newest `per_prompt` completions of the newest `max_prompts` prompts."""

    def __init__(self, per_prompt: int = 8, max_prompts: int = 20_000) -> None:
        self.per_prompt, self.max_prompts = per_prompt, max_prompts
        self._by_prompt: OrderedDict[tuple[int, ...], list[list[int]]] = OrderedDict()

    def add(self, prompt: Sequence[int], completion: Sequence[int]) -> None:
        key = tuple(prompt)
        kept = self._by_prompt.pop(key, [])
        kept = (kept + [list(completion)])[-self.per_prompt :]
        self._by_prompt[key] = kept
        while len(self._by_prompt) > self.max_prompts:
            self._by_prompt.popitem(last=False)

    def get(self, prompt: Sequence[int]) -> list[list[int]]:
        return self._by_prompt.get(tuple(prompt), [])

    def state_dict(self) -> list:
        return [[list(prompt), kept] for prompt, kept in self._by_prompt.items()]

    def load_state_dict(self, state: list) -> None:
        self._by_prompt = OrderedDict((tuple(prompt), kept) for prompt, kept in state)

    def __len__(self) -> int:
        return len(self._by_prompt)


class _GroupIndex:
    """Every n-gram (1..MAX_NGRAM tokens) of a group's texts (the samples of one prompt and
    its kept completions), mapped to where it occurred with a continuation after it. A text
    is its prompt and its completion, the completion being the rows loop's own list of the
    row's tokens (it grows as the row decodes: nothing is copied per step). Texts are indexed
    when a draft is asked for (steps and rows that do not draft pay nothing)."""

    def __init__(self) -> None:
        self.texts: dict[object, tuple[list[int], list[int]]] = {}
        self.indexed: dict[object, int] = {}  # positions of each text indexed so far
        self.where: dict[tuple[int, ...], list[tuple[object, int]]] = {}

    def add_text(self, key: object, prompt: list[int], completion: list[int]) -> None:
        self.texts[key] = (prompt, completion)
        self.indexed[key] = 1  # (position 0 has no n-gram before it)

    def _catch_up(self) -> None:
        for key, (prompt, completion) in self.texts.items():
            start = self.indexed[key]
            if len(prompt) + len(completion) <= start:
                continue
            text = prompt + completion
            for i in range(start, len(text)):  # position i has a continuation: register
                for n in range(1, min(MAX_NGRAM, i) + 1):  # the n-grams that end before it
                    places = self.where.setdefault(tuple(text[i - n : i]), [])
                    places.append((key, i))
                    if len(places) > CANDIDATES_PER_NGRAM:
                        del places[0]
            self.indexed[key] = len(text)

    def _slice(self, key: object, start: int, length: int) -> list[int]:
        prompt, completion = self.texts[key]
        if start >= len(prompt):
            return completion[start - len(prompt) : start - len(prompt) + length]
        return (prompt + completion)[start : start + length]

    def propose(self, key: object, max_tokens: int,
                others: _OthersIndex | None = None) -> tuple[list[int], object]:  # fmt: skip
        """The draft for text `key` and its kind: (source, length of the suffix matched),
        source "own", "sibling", "kept" or "other" (a text of another prompt, `others`);
        ([], None) if nothing matched. Longer matches first; at one length, this group's
        texts before other prompts'."""
        self._catch_up()
        prompt, completion = self.texts[key]
        end = len(prompt) + len(completion)
        for n in range(min(MAX_NGRAM, end), 0, -1):
            suffix = tuple(self._slice(key, end - n, n))
            best: list[int] = []
            source: object = None
            for where, i in reversed(self.where.get(suffix, ())):  # newest first; the
                found = self._slice(where, i, max_tokens)  # longest continuation wins
                if len(found) > len(best):
                    best, source = found, where
                if len(best) == max_tokens:
                    break
            if best:
                kind = "own" if source == key else "kept" if source[0] == "kept" else "sibling"
                return best, (kind, n)
            if others is not None:
                best = others.propose(suffix, max_tokens)
                if best:
                    return best, ("other", n)
        return [], None


class _OthersIndex:
    """Every n-gram (1..MAX_NGRAM tokens) of the texts (prompt and completion) that finished
    earlier in the call, whatever their prompt, with the text and place of its newest
    occurrence. Problems of one task share their wording and many of their steps (the same
    product, the same sum), so a finished completion drafts the next problem's like a
    suffix index over earlier outputs (SuffixDecoding, Oliaro et al. 2024). Texts are indexed
    when a draft looks here."""

    def __init__(self) -> None:
        self.where: dict[tuple[int, ...], tuple[list[int], int]] = {}
        self.pending: list[list[int]] = []

    def add(self, text: list[int]) -> None:
        self.pending.append(text)

    def propose(self, suffix: tuple[int, ...], max_tokens: int) -> list[int]:
        for text in self.pending:
            for i in range(1, len(text)):  # position i has a continuation: register
                for n in range(1, min(MAX_NGRAM, i) + 1):
                    self.where[tuple(text[i - n : i])] = (text, i)
        self.pending.clear()
        found = self.where.get(suffix)
        return found[0][found[1] : found[1] + max_tokens] if found else []


class ContextDrafter:
    """Drafts for the rows of one engine call from their own text, their siblings' and the
    kept completions of the same prompt (`DraftHistory`). Texts are keyed by (prompt index,
    sample index); row numbers are not needed here."""

    def __init__(self, history: DraftHistory | None, others: bool = True) -> None:
        """others: also draft from the texts of other prompts finished in this call
        (`_OthersIndex`; the rows loop turns it on where steps are overhead-bound)."""
        self.history = history
        self.groups: dict[int, _GroupIndex] = {}
        self.others = _OthersIndex() if others else None

    def load(self, rows: list[int], keys: list[tuple[int, int]], prompts: list[list[int]],
             completions: list[list[int]], max_len: int) -> None:  # fmt: skip
        """New rows: each sample's key, its prompt's tokens and the list its new tokens go
        to (the rows loop appends to it; it is read when a draft is asked for)."""
        for key, prompt, completion in zip(keys, prompts, completions):
            group = self.groups.get(key[0])
            if group is None:
                group = self.groups[key[0]] = _GroupIndex()
                for i, old in enumerate(self.history.get(prompt) if self.history else []):
                    group.add_text(("kept", i), prompt, old)
            group.add_text(key, prompt, completion)

    def propose_all(self, rows: list[int], keys: list[tuple[int, int]],
                    limits: list[int]) -> list[tuple[list[int], int]]:  # fmt: skip
        """Per row (draft tokens, kind): kind is (source, length of the matched suffix)."""
        return [
            self.groups[key[0]].propose(key, limit, self.others) if limit > 0 else ([], None)
            for key, limit in zip(keys, limits)
        ]

    def finish(self, row: int, key: tuple[int, int], prompt: Sequence[int],
               completion: Sequence[int], last_of_group: bool) -> None:  # fmt: skip
        """A row finished: keep its completion for later calls and for the other prompts of
        this call; drop the group when done."""
        if self.history is not None:
            self.history.add(prompt, completion)
        if self.others is not None:
            self.others.add(list(prompt) + list(completion))
        if last_of_group:
            del self.groups[key[0]]

    def select_rows(self, rows: list[int]) -> None:
        """The engine kept only these rows (nothing here is kept by row)."""


class ModelDrafter:
    """Drafts the greedy continuation of a small model with the target's tokenizer (rlvr's
    model class). Its cache mirrors the target's rows; each step first feeds the tokens each
    row emitted since, then drafts token by token, then takes the drafted tokens back (the
    accepted ones come again as emitted tokens)."""

    KIND = ("model", 0)
    """The kind of its drafts for `DraftPolicy`."""

    def __init__(self, model, pad_id: int) -> None:
        self.model, self.pad_id = model, pad_id
        self.device = next(model.parameters()).device
        self.cache = KVCache.create(model, 0, 1)
        self.cache.start_rows()
        self.completions: list[list[int]] = []  # per row: the rows loop's list of its tokens
        self.fed: list[int] = []  # per row: how many of them are in the cache

    def load(self, rows: list[int], keys: list[tuple[int, int]], prompts: list[list[int]],
             completions: list[list[int]], max_len: int) -> None:  # fmt: skip
        needed = max(rows) + 1
        if needed > self.cache.batch_size:
            self.cache.add_rows(needed - self.cache.batch_size)
            self.completions += [[] for _ in range(needed - len(self.completions))]
            self.fed += [0] * (needed - len(self.fed))
        if max_len > self.cache.max_len:
            self.cache.grow(max_len)
        lengths = [len(p) for p in prompts]
        width = max(lengths)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, prompt in enumerate(prompts):
            ids[j, : lengths[j]] = torch.tensor(prompt, dtype=torch.long)
            mask[j, : lengths[j]] = 1
        prefill = KVCache.create(self.model, len(rows), width)
        self.model(ids.to(self.device), mask.to(self.device), cache=prefill)
        self.cache.load_rows(rows, prefill, list(range(len(rows))), lengths)
        for row, completion in zip(rows, completions):
            self.completions[row], self.fed[row] = completion, 0

    def propose_all(self, rows: list[int], keys: list[tuple[int, int]],
                    limits: list[int]) -> list[tuple[list[int], int]]:  # fmt: skip
        B = self.cache.batch_size
        pending = {r: self.completions[r][self.fed[r] :] for r in rows}
        width = max(len(tokens) for tokens in pending.values())
        ids = torch.full((B, width), self.pad_id, dtype=torch.long)
        counts = [0] * B
        for r, tokens in pending.items():
            ids[r, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            counts[r] = len(tokens)
            self.fed[r] += len(tokens)
        logits = self._forward(ids)  # (B, width, V)
        self.cache.keep(counts)
        last = torch.tensor([max(c - 1, 0) for c in counts], device=self.device)
        token = logits[torch.arange(B, device=self.device), last].argmax(-1)  # (B,)
        fed = list(self.cache.ends_list)
        drafted = [token]
        for _ in range(max(limits) - 1):
            token = self._forward(token[:, None].cpu())[:, -1].argmax(-1)
            drafted.append(token)
        self.cache.rewind(fed)
        table = torch.stack(drafted, 1).tolist()  # (B, max(limits))
        return [(table[r][:limit], self.KIND) for r, limit in zip(rows, limits)]

    def modelled_seconds(self, cost: StepCost, rows: int, tokens: int) -> float:
        """What drafting `tokens` tokens for `rows` rows costs (`StepCost` of this model)."""
        return cost.seconds(self.model, rows, 2) + (tokens - 1) * cost.seconds(self.model, rows, 1)

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        positions = self.cache.ends[:, None] + torch.arange(T, device=self.device)
        return self.model(ids.to(self.device), position_ids=positions, cache=self.cache)

    def finish(self, row: int, key: tuple[int, int], prompt: Sequence[int],
               completion: Sequence[int], last_of_group: bool) -> None:  # fmt: skip
        self.completions[row], self.fed[row] = [], 0

    def select_rows(self, rows: list[int]) -> None:
        self.cache.select_rows(torch.tensor(rows, device=self.device))
        self.completions = [self.completions[r] for r in rows]
        self.fed = [self.fed[r] for r in rows]


# ----------------------------------------------------------------------------- when drafting pays


@dataclass
class StepCost:
    """Modelled seconds of one step of the target over `rows` rows of `new` tokens each:
    fixed + rows * (first + (new - 1) * per_token), plus the host's bookkeeping per row of a
    step that verifies drafts (a wider verify, the cache taking back rejected slots, several
    tokens to emit). Deterministic on purpose: the decision to draft must not depend on a
    clock, or the same seed would not give the same forwards.

    The defaults are for rlvr's model on a CPU core in float32, measured on the demo's model
    and expressed per layer and parameter so that they
    scale with the model: a forward pays `op_seconds` for each of its ~30 small ops per
    layer, a token 2 FLOPs per parameter at `flops` per second, and the first token of a row
    `first_token` times that (its attention over the cache and the row's own work)."""

    op_seconds: float = 8e-6
    ops_per_layer: int = 30
    flops: float = 6e10
    first_token: float = 2.0
    host_seconds_per_row: float = 2.5e-5

    def overhead_bound(self, model, rows: int) -> bool:
        """Whether a step of this many rows costs its fixed per-layer overhead more than its
        rows' arithmetic: where verifying a few tokens per row costs about one step, and even
        weak drafts can pay."""
        fixed, per_token = self._parts(model)
        return rows * per_token * self.first_token <= fixed

    def seconds(self, model, rows: int, new: int) -> float:
        fixed, per_token = self._parts(model)
        host = rows * self.host_seconds_per_row if new > 1 else 0.0
        return fixed + rows * per_token * (self.first_token + new - 1) + host

    def _parts(self, model) -> tuple[float, float]:
        """(seconds of a step's fixed per-layer overhead, seconds of one token's arithmetic)."""
        fixed = model.config.num_hidden_layers * self.ops_per_layer * self.op_seconds
        return fixed, 2.0 * _matmul_parameters(model) / self.flops


def _matmul_parameters(model) -> int:
    cached = getattr(model, "_rlvr_matmul_parameters", None)
    if cached is None:
        embed = model.model.embed_tokens.weight.numel()
        cached = sum(p.numel() for p in model.parameters()) - embed
        if getattr(model.config, "tie_word_embeddings", False):
            cached += embed  # the tied matrix is also the output layer's
        model._rlvr_matmul_parameters = cached
    return cached


PROBE_EVERY = 8
"""While drafting does not pay, drafts are still proposed (and scored against the tokens that
come) every PROBE_EVERY-th step: by a context drafter for the rows of one prompt in
PROBE_EVERY (prompt index modulo PROBE_EVERY, a different residue each time: it indexes a
prompt's texts only when asked for a draft, so prompts never probed cost nothing), by a draft
model for every row (it drafts them all in one forward anyway). The rows loop still runs
every PROBE_EVERY-th call."""
PAYS = 1.02
"""Expected speed-up of a step below which drafting is said not to pay (proposals then cost
their host time for nothing)."""
ROWS_LOOP_PAYS = 1.2
"""Expected speed-up a call must show for speculation to run it in the rows loop rather than
the batch engine (whose plain steps are cheaper: no per-row bookkeeping)."""


@dataclass
class DraftPolicy:
    """Acceptance measured per kind of draft, and the per-step choice of how many drafted
    tokens to verify (`choose`), from it and the modelled cost of a step (`StepCost`)."""

    num_tokens: int
    """The most tokens a row may draft per step."""
    adaptive: bool = True
    """Choose per step (False: always verify every draft, up to num_tokens)."""
    cost: StepCost = field(default_factory=StepCost)
    decay: float = 0.995
    """Weight of older outcomes after each new one (an effective memory of ~200 drafts)."""
    accepted: dict = field(default_factory=dict)
    rejected: dict = field(default_factory=dict)
    gain: float = 1.0
    """Moving average of the expected speed-up of the steps that proposed drafts. It starts
    under PAYS: a fresh policy probes before it drafts, so drafts that do not pay cost a
    probe's bookkeeping, never a verify forward of every row. It carries over from call to
    call (and through checkpoints)."""
    call_gain: dict = field(default_factory=dict)
    """The gain at the end of the last rows-loop call, by rows (rounded up to a power of 2)."""
    calls_since_probe: dict = field(default_factory=dict)

    def rate(self, kind: object) -> float:
        """Probability that a drafted token of this kind is accepted, given the ones before it
        were (a prior of 1 accepted in 4 before any outcome: most kinds of draft fail)."""
        a, r = self.accepted.get(kind, 0.0), self.rejected.get(kind, 0.0)
        return (a + 1.0) / (a + r + 4.0)

    def observe(self, kind: object, draft: Sequence[int], came: Sequence[int]) -> None:
        """Score a draft against the tokens that came after it, verified or not: each
        leading match is an accepted token, a mismatch within what came is a rejection."""
        n = min(len(draft), len(came))
        matched = 0
        while matched < n and draft[matched] == came[matched]:
            matched += 1
        a = self.accepted.get(kind, 0.0) * self.decay + matched
        r = self.rejected.get(kind, 0.0) * self.decay + (1.0 if matched < n else 0.0)
        self.accepted[kind], self.rejected[kind] = a, r

    def pays(self) -> bool:
        """Whether drafting pays at present (every step proposes drafts for every row)."""
        return not self.adaptive or self.gain >= PAYS

    def proposing(self, step: int) -> bool:
        """Whether to propose drafts at this step of a call: always while drafting pays,
        else every PROBE_EVERY-th step (to keep measuring)."""
        return self.pays() or step % PROBE_EVERY == 0

    def choose(self, model, rows: int, drafts: list[tuple[int, object]],
               draft_seconds: float = 0.0, asked: float = 1.0) -> int:  # fmt: skip
        """How many drafted tokens each row verifies this step (0: a plain decode step).

        rows: rows in the forward; drafts: (length, kind) of each drafting row's proposal;
        draft_seconds: the modelled cost of having drafted them (a draft model's forwards);
        asked: the share of the rows asked for a draft (below 1 on a probe step).
        Every row's forward takes the same number of tokens, so a step verifies k tokens of
        every draft: the k that gives the most expected tokens per modelled second. The
        speed-up over a plain step that did not draft at all, had every row been asked as
        these were, goes into `gain`."""
        if not drafts:
            self.gain = 0.9 * self.gain + 0.1
            return 0
        longest = max(length for length, _ in drafts)
        if not self.adaptive:
            return longest
        groups: dict[tuple[int, float], int] = {}
        for length, kind in drafts:
            key = (length, self.rate(kind))
            groups[key] = groups.get(key, 0) + 1
        best_k, gain = self._best(model, rows, groups, longest, draft_seconds, 1.0)
        if asked < 1.0:
            _, gain = self._best(model, rows, groups, longest, draft_seconds, 1.0 / asked)
        self.gain = 0.9 * self.gain + 0.1 * gain
        return best_k

    def _best(self, model, rows: int, groups: dict[tuple[int, float], int], longest: int,
              draft_seconds: float, scale: float) -> tuple[int, float]:  # fmt: skip
        """The k with the most expected tokens per modelled second, with each group of
        drafts counted `scale` times, and its speed-up over a plain step that drafted
        nothing (the drafting's own cost included)."""
        plain = rows / self.cost.seconds(model, rows, 1)
        best_k, best, drafted = 0, plain, 0.0
        for k in range(1, longest + 1):
            expected = rows + scale * sum(
                count * _expected_accepted(rate, min(length, k))
                for (length, rate), count in groups.items()
            )
            seconds = self.cost.seconds(model, rows, 1 + k)
            if expected / seconds > best:
                best_k, best = k, expected / seconds
                drafted = expected / (seconds + draft_seconds)
        floor = rows / (self.cost.seconds(model, rows, 1) + draft_seconds)
        return best_k, max(drafted, floor) / plain

    def use_rows_loop(self, rows: int) -> bool:
        """Whether a call of this many rows, which the batch engine could decode, should go
        through the rows loop to draft: if its last such call showed a gain worth the loop's
        bookkeeping, and every PROBE_EVERY-th call anyway (deterministic: no clock)."""
        if not self.adaptive:
            return True
        bucket = 1 << max(0, rows - 1).bit_length()
        if bucket not in self.call_gain:
            return True
        since = self.calls_since_probe.get(bucket, 0) + 1
        self.calls_since_probe[bucket] = since % PROBE_EVERY
        return since % PROBE_EVERY == 0 or self.call_gain[bucket] >= ROWS_LOOP_PAYS

    def end_call(self, rows: int) -> None:
        """A rows-loop call of this many rows ended: remember its gain for `use_rows_loop`."""
        self.call_gain[1 << max(0, rows - 1).bit_length()] = self.gain


def _expected_accepted(rate: float, length: int) -> float:
    """Expected accepted tokens of a draft of `length` when each is accepted with
    probability `rate` given the ones before it: rate + rate^2 + ... + rate^length."""
    if rate >= 1.0 - 1e-9:
        return float(length)
    return rate * (1.0 - rate**length) / (1.0 - rate)


@dataclass
class Speculation:
    """What an `Engine` drafts with (None on the Engine: no speculative decoding)."""

    num_tokens: int = 4
    """The most tokens drafted per row and step (sampler.speculate_tokens)."""
    draft_model: torch.nn.Module | None = None
    """A small model with the target's tokenizer that drafts greedily; None: drafts come
    from the context (`ContextDrafter`)."""
    history: DraftHistory | None = field(default_factory=DraftHistory)
    """Completions kept across calls for context drafting (None: keep none)."""
    adaptive: bool = True
    """Decide per step whether verifying drafts pays (`DraftPolicy.choose`)."""
    policy: DraftPolicy | None = None
    """The acceptance measured so far (made on first use, kept across calls)."""

    def __post_init__(self) -> None:
        if self.num_tokens < 1:
            raise ValueError(f"num_tokens must be at least 1, got {self.num_tokens}.")

    def make_policy(self) -> DraftPolicy:
        if self.policy is None:
            self.policy = DraftPolicy(self.num_tokens, adaptive=self.adaptive)
        return self.policy

    def state_dict(self) -> dict:
        """What a resumed run needs to make the same decisions (and so the same forwards):
        the acceptance measured so far and the kept completions."""
        p = self.make_policy()
        kinds = sorted(set(p.accepted) | set(p.rejected), key=repr)
        return {
            "kinds": [[list(k), p.accepted.get(k, 0.0), p.rejected.get(k, 0.0)] for k in kinds],
            "gain": p.gain,
            "calls": [[b, g, p.calls_since_probe.get(b, 0)] for b, g in p.call_gain.items()],
            "history": self.history.state_dict() if self.history is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        p = self.make_policy()
        p.accepted = {tuple(k): a for k, a, _ in state["kinds"]}
        p.rejected = {tuple(k): r for k, _, r in state["kinds"]}
        p.gain = state["gain"]
        p.call_gain = {b: g for b, g, _ in state["calls"]}
        p.calls_since_probe = {b: n for b, _, n in state["calls"]}
        if self.history is not None and state["history"] is not None:
            self.history.load_state_dict(state["history"])
