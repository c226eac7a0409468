"""Speculative decoding and continuous batching (rlvr/sampling/speculative.py, batching.py).

Lossless: greedy decoding gives the same tokens with and without speculation; sampling gives
the target model's distribution (a chi-square goodness-of-fit test over every sequence of a
small vocabulary, which a wrong acceptance rule fails: see the tests of the test); logprobs
are the target's; stops inside an accepted draft stop the row where they are; max_new_tokens
holds. Continuous batching gives each prompt the completions the batch-at-a-time engine does.
"""

import itertools
import math
import shutil
from pathlib import Path

import pytest
import torch
from test_survive import records

from rlvr.checkpoint import load_trainer_state
from rlvr.cli import main
from rlvr.model import ModelConfig, Transformer
from rlvr.report import depends_on_clock
from rlvr.sampling import speculative
from rlvr.sampling.engine import Engine, draw
from rlvr.sampling.speculative import (
    ContextDrafter,
    DraftHistory,
    DraftPolicy,
    Speculation,
)

PAD = 0
RIGHT_VERIFY = speculative.verify


def peaked_model(seed: int = 0, vocab: int = 8, layers: int = 2) -> Transformer:
    """A random model whose next-token distributions are far from uniform (so drafts are
    accepted often, and rejected often enough to test the rule)."""
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=96)  # fmt: skip
    model = Transformer(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.35)
    return model


PATTERN = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3]  # a prompt whose n-grams recur: drafts happen


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Thousands of tiny rows: one thread is faster, and not at the mercy of a busy core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- greedy: same tokens


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("max_rows", [0, 3])
def test_greedy_is_token_for_token_the_same_with_speculation(adaptive, max_rows):
    model = peaked_model(1, vocab=12, layers=2)
    prompts = [PATTERN, [5, 6, 7, 5, 6], [9, 10, 11, 9], PATTERN[:5]]
    kwargs = dict(num_samples=2, max_new_tokens=40, temperature=0.0, stop_token_ids=[11],
                  stop_sequences=[[7, 7]], min_new_tokens=3)  # fmt: skip
    plain = Engine(model, PAD).generate(prompts, **kwargs)
    engine = Engine(model, PAD, speculation=Speculation(4, adaptive=adaptive))
    fast = engine.generate(prompts, max_rows=max_rows, **kwargs)
    assert [c.token_ids for c in fast] == [c.token_ids for c in plain]
    assert [c.finish_reason for c in fast] == [c.finish_reason for c in plain]
    if not adaptive:  # every draft verified: some were accepted, so steps were saved
        assert engine.stats.accepted > 0
        assert engine.stats.forwards < sum(len(c.token_ids) for c in plain) / 2


def test_greedy_with_a_draft_model_is_the_same():
    model = peaked_model(1, vocab=12, layers=2)
    for draft in (model, peaked_model(7, vocab=12, layers=1)):  # perfect, and another model
        engine = Engine(model, PAD, speculation=Speculation(3, draft_model=draft, adaptive=False))
        kwargs = dict(num_samples=2, max_new_tokens=30, temperature=0.0, stop_token_ids=[11])
        fast = engine.generate([PATTERN, [5, 6, 7]], max_rows=3, **kwargs)
        plain = Engine(model, PAD).generate([PATTERN, [5, 6, 7]], **kwargs)
        assert [c.token_ids for c in fast] == [c.token_ids for c in plain]
    assert engine.stats.drafted > 0


def test_the_same_model_as_draft_is_always_accepted():
    model = peaked_model(1, vocab=12)
    engine = Engine(model, PAD, speculation=Speculation(3, draft_model=model, adaptive=False))
    engine.generate([PATTERN], max_new_tokens=30, temperature=0.0)
    assert engine.stats.drafted > 20 and engine.stats.accepted == engine.stats.drafted


# ----------------------------------------------------------------------------- sampling: same distribution

LENGTH = 4  # new tokens per sequence: every one of vocab**LENGTH sequences is a cell


def reference_probs(model, prompt, temperature, top_k, top_p) -> dict[tuple, float]:
    """Exact probability of every sequence of LENGTH new tokens under the target model with
    the sampling filters, by teacher forcing and a truncation written out plainly here."""
    V = model.config.vocab_size
    seqs = list(itertools.product(range(V), repeat=LENGTH))
    ids = torch.tensor([prompt + list(s) for s in seqs])
    with torch.no_grad():
        logits = model(ids)[:, len(prompt) - 1 : -1].double()  # (N, LENGTH, V)
    probs = torch.softmax(logits / temperature, -1)
    if top_k:
        kth = probs.topk(top_k, -1).values[..., -1:]
        probs = torch.where(probs >= kth, probs, 0.0)
    if top_p < 1.0:
        ordered, order = probs.sort(-1, descending=True)
        before = ordered.cumsum(-1) - ordered
        keep = torch.zeros_like(probs).scatter_(-1, order, (before < top_p).double())
        probs = probs * keep
    probs = probs / probs.sum(-1, keepdim=True)
    chosen = probs.gather(-1, ids[:, len(prompt) :, None]).squeeze(-1).prod(-1)
    return dict(zip(seqs, chosen.tolist()))


def chi_square(counts: dict, probs: dict, n: int) -> tuple[float, float]:
    """Pearson's statistic over cells with expected count >= 5 (the rest pooled), and the
    critical value at p = 1e-4 (Wilson-Hilferty), both for df = cells - 1."""
    stat, pooled_obs, pooled_exp, cells = 0.0, 0, 0.0, 0
    for seq, p in probs.items():
        expected, observed = n * p, counts.get(seq, 0)
        if expected < 5:
            pooled_obs, pooled_exp = pooled_obs + observed, pooled_exp + expected
            continue
        stat += (observed - expected) ** 2 / expected
        cells += 1
    if pooled_exp >= 5:
        stat += (pooled_obs - pooled_exp) ** 2 / pooled_exp
        cells += 1
    assert sum(counts.values()) == n
    df = cells - 1
    z = 3.719  # standard normal quantile of 1 - 1e-4
    critical = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    return stat, critical


SETTINGS = {
    "t1": dict(temperature=1.0, top_k=0, top_p=1.0),
    "t0.7-top_p0.9": dict(temperature=0.7, top_k=0, top_p=0.9),
    "top_k3": dict(temperature=1.0, top_k=3, top_p=1.0),
}
NUM_SEQUENCES = 8000


def sample_counts(model, setting, seed=0) -> tuple[dict, Engine]:
    engine = Engine(model, PAD, speculation=Speculation(4, adaptive=False))
    completions = engine.generate(
        [PATTERN], num_samples=NUM_SEQUENCES, max_new_tokens=LENGTH, max_rows=500,
        generator=torch.Generator().manual_seed(seed), **setting,
    )  # fmt: skip
    counts: dict = {}
    for c in completions:
        counts[tuple(c.token_ids)] = counts.get(tuple(c.token_ids), 0) + 1
    return counts, engine


@pytest.fixture(scope="module")
def gof_model():
    return peaked_model(3, vocab=5)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_speculative_samples_have_the_target_distribution(gof_model, name):
    setting = SETTINGS[name]
    counts, engine = sample_counts(gof_model, setting)
    assert engine.stats.accepted > 1000  # the rule was exercised: many drafts accepted ...
    assert engine.stats.drafted - engine.stats.accepted > 1000  # ... and many rejected
    stat, critical = chi_square(counts, reference_probs(gof_model, PATTERN, **setting),
                                NUM_SEQUENCES)  # fmt: skip
    assert stat < critical, f"{name}: chi-square {stat:.1f} >= {critical:.1f}"


def accept_without_cumulating(truncated, drafts, uniforms):
    """A wrong rule: counts every draft that matches the target's token, not only the
    leading ones (a draft after a rejected one is kept)."""
    accepted, tokens = RIGHT_VERIFY(truncated, drafts, uniforms)
    if tokens.shape[1] > 1:
        accepted = (tokens[:, :-1] == drafts).long().sum(1)
    return accepted, tokens


def resample_on_rejection(truncated, drafts, uniforms):
    """A wrong rule: on rejection, draw the token again from the whole distribution instead
    of the residual (so the rejected draft can come back)."""
    accepted, tokens = RIGHT_VERIFY(truncated, drafts, uniforms)
    R, T, V = truncated.shape
    if T == 1 or uniforms is None:
        return accepted, tokens
    fresh = draw(truncated.reshape(R * T, V), torch.rand(R * T, 1, generator=WRONG_RNG))
    rejected = accepted < (drafts >= 0).sum(1)
    rows = rejected.nonzero().squeeze(1)
    tokens = tokens.clone()
    tokens[rows, accepted[rows]] = fresh.view(R, T)[rows, accepted[rows]]
    return accepted, tokens


WRONG_RNG = torch.Generator().manual_seed(123)


WRONG_RULES = [
    ("t1", resample_on_rejection),
    ("t0.7-top_p0.9", resample_on_rejection),
    ("top_k3", resample_on_rejection),
    # (at temperature 0.7 a rejected draft is rarely followed by a matching one: too few
    # differences for this one to show there)
    ("t1", accept_without_cumulating),
    ("top_k3", accept_without_cumulating),
]


@pytest.mark.parametrize(("name", "wrong"), WRONG_RULES)
def test_the_test_fails_a_wrong_acceptance_rule(gof_model, name, wrong, monkeypatch):
    monkeypatch.setattr(speculative, "verify", wrong)
    setting = SETTINGS[name]
    counts, _ = sample_counts(gof_model, setting)
    stat, critical = chi_square(counts, reference_probs(gof_model, PATTERN, **setting),
                                NUM_SEQUENCES)  # fmt: skip
    assert stat > critical, f"{name}: a wrong rule passed ({stat:.1f} < {critical:.1f})"


def test_speculation_changes_forwards_not_completions_with_exact_kernels():
    """With batch-invariant kernels the logits do not depend on the forward's shape, so a
    sampled completion is the same with and without speculation, however the rows share."""
    model = peaked_model(2, vocab=12)
    model.batch_invariant = True
    kwargs = dict(num_samples=3, max_new_tokens=25, temperature=0.8, top_p=0.95,
                  stop_token_ids=[11])  # fmt: skip
    prompts = [PATTERN, [5, 6, 7, 5, 6, 7]]
    plain = Engine(model, PAD).generate(prompts, generator=torch.Generator().manual_seed(4),
                                        max_rows=2, **kwargs)  # fmt: skip
    engine = Engine(model, PAD, speculation=Speculation(4, adaptive=False))
    fast = engine.generate(prompts, generator=torch.Generator().manual_seed(4), **kwargs)
    assert engine.stats.accepted > 0
    assert [(c.token_ids, c.logprobs) for c in fast] == [(c.token_ids, c.logprobs) for c in plain]


# ----------------------------------------------------------------------------- logprobs, stops, lengths


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_logprobs_are_the_targets_full_forward(temperature):
    model = peaked_model(4, vocab=12)
    engine = Engine(model, PAD, speculation=Speculation(4, adaptive=False))
    prompts = [PATTERN, [5, 6, 7, 5]]
    completions = engine.generate(prompts, num_samples=3, max_new_tokens=20,
                                  temperature=temperature, top_k=6,
                                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert engine.stats.accepted > 0
    for c in completions:
        prompt = prompts[c.prompt_index]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + c.token_ids]))[0, len(prompt) - 1 : -1]
        z = logits / temperature if temperature > 0 else logits
        expected = torch.log_softmax(z, -1).gather(-1, torch.tensor(c.token_ids)[:, None])
        assert torch.allclose(torch.tensor(c.logprobs), expected.squeeze(-1), atol=1e-5)


def natural_continuation(model, prompt, length=30) -> list[int]:
    return (
        Engine(model, PAD).generate([prompt], max_new_tokens=length, temperature=0.0)[0].token_ids
    )


def history_with(prompt, completion) -> DraftHistory:
    history = DraftHistory()
    history.add(prompt, completion)
    return history


def test_a_stop_token_inside_an_accepted_draft_stops_the_row_there():
    model = peaked_model(5, vocab=12)
    prompt = [5, 6, 7, 5]
    natural = natural_continuation(model, prompt)
    j = 9  # stop at the 10th token: its id must not occur before it
    stop = natural[j]
    while stop in natural[:j]:
        j -= 1
        stop = natural[j]
    assert j >= 2
    # The kept completion drafts the natural continuation, stop token included.
    engine = Engine(model, PAD, speculation=Speculation(8, history=history_with(prompt, natural),
                                                         adaptive=False))  # fmt: skip
    [c] = engine.generate([prompt], max_new_tokens=30, temperature=0.0, stop_token_ids=[stop])
    assert c.token_ids == natural[: j + 1] and c.finish_reason == "stop"
    assert engine.stats.forwards < j  # whole drafts were accepted, the stop inside one


def test_a_stop_sequence_inside_an_accepted_draft_stops_the_row_there():
    model = peaked_model(5, vocab=12)
    prompt = [5, 6, 7, 5]
    natural = natural_continuation(model, prompt)
    j = 10
    sequence = natural[j - 1 : j + 1]
    first = next(i for i in range(1, len(natural)) if natural[i - 1 : i + 1] == sequence)
    engine = Engine(model, PAD, speculation=Speculation(8, history=history_with(prompt, natural),
                                                         adaptive=False))  # fmt: skip
    [c] = engine.generate([prompt], max_new_tokens=30, temperature=0.0,
                          stop_sequences=[sequence])  # fmt: skip
    assert c.token_ids == natural[: first + 1] and c.finish_reason == "stop"
    assert engine.stats.forwards < first


@pytest.mark.parametrize("max_new_tokens", [1, 2, 5, 13])
def test_max_new_tokens_is_never_exceeded(max_new_tokens):
    model = peaked_model(6, vocab=12)
    long = natural_continuation(model, PATTERN, 40)
    history = history_with(PATTERN, long)  # drafts far past the limit
    engine = Engine(model, PAD, speculation=Speculation(8, history=history, adaptive=False))
    for temperature in (0.0, 1.0):
        completions = engine.generate([PATTERN, [5, 6]], num_samples=4, temperature=temperature,
                                      max_new_tokens=max_new_tokens, max_rows=3,
                                      generator=torch.Generator().manual_seed(0))  # fmt: skip
        for c in completions:
            assert len(c.token_ids) == len(c.logprobs) == max_new_tokens
            assert c.finish_reason == "length"


def test_min_new_tokens_holds_inside_drafts():
    """A drafted stop token before min_new_tokens is rejected (the ban gives it no mass)."""
    model = peaked_model(5, vocab=12)
    prompt = [5, 6, 7, 5]
    natural = natural_continuation(model, prompt)
    stop = natural[1]
    engine = Engine(model, PAD, speculation=Speculation(8, history=history_with(prompt, natural),
                                                         adaptive=False))  # fmt: skip
    plain = Engine(model, PAD)
    kwargs = dict(max_new_tokens=30, temperature=0.0, stop_token_ids=[stop], min_new_tokens=6)
    [c] = engine.generate([prompt], **kwargs)
    [p] = plain.generate([prompt], **kwargs)
    assert c.token_ids == p.token_ids and len(c.token_ids) > 6
    assert stop not in c.token_ids[:6]


# ----------------------------------------------------------------------------- continuous batching


@pytest.mark.parametrize("max_rows", [1, 2, 5])
def test_continuous_batching_gives_each_prompt_the_batch_engines_greedy_output(max_rows):
    model = peaked_model(8, vocab=12)
    prompts = [[3, 4, 5, 6, 7], [8, 9], PATTERN, [10], [5, 6, 7, 5, 6, 7, 5, 6], [2, 2, 2]]
    kwargs = dict(num_samples=2, max_new_tokens=24, temperature=0.0, stop_token_ids=[11, 7])
    plain = Engine(model, PAD).generate(prompts, **kwargs)
    finished_order = []
    rows = Engine(model, PAD).generate(prompts, max_rows=max_rows,
                                       on_complete=finished_order.append, **kwargs)  # fmt: skip
    assert [(c.prompt_index, c.sample_index) for c in rows] == [
        (c.prompt_index, c.sample_index) for c in plain
    ]
    assert [c.token_ids for c in rows] == [c.token_ids for c in plain]
    assert [c.finish_reason for c in rows] == [c.finish_reason for c in plain]
    assert len(finished_order) == len(plain)
    lengths = {len(c.token_ids) for c in plain}
    assert len(lengths) > 1  # the lengths vary: rows really were refilled mid-way


def test_continuous_batching_takes_calls_of_three_batches_or_more():
    """With one or two batches there is at most one tail to save, and the rows loop's
    per-row costs win: such calls go a batch at a time (Engine.uses_rows_loop)."""
    engine = Engine(peaked_model(8, vocab=12), PAD)
    assert engine.uses_rows_loop(num_rows=9, max_rows=4)
    assert not engine.uses_rows_loop(num_rows=8, max_rows=4)
    assert not engine.uses_rows_loop(num_rows=3, max_rows=4)
    engine.generate([[1, 2]] * 4, num_samples=2, max_new_tokens=4, temperature=0.0, max_rows=4)
    assert engine.stats is None  # (only the rows loop sets it)
    engine.continuous_batching = False
    assert not engine.uses_rows_loop(num_rows=9, max_rows=4)


def test_stream_reads_prompts_only_as_rows_free_up():
    model = peaked_model(8, vocab=12)
    read = []

    def prompts():
        for i in range(6):
            read.append(i)
            yield [3 + i, 4, 5]

    stream = Engine(model, PAD).stream(prompts(), num_samples=2, max_new_tokens=8,
                                       temperature=0.0, max_rows=4)  # fmt: skip
    first = next(stream)
    assert read == [0, 1]  # two prompts fill four rows; the rest wait
    assert (first.prompt_index, len(first.token_ids)) == (0, 8)
    rest = list(stream)
    assert read == list(range(6)) and len(rest) == 11


# ----------------------------------------------------------------------------- drafting and the policy


def test_context_drafts_come_from_own_text_siblings_and_history():
    history = DraftHistory()
    history.add([1, 2], [7, 8, 9, 10])
    drafter = ContextDrafter(history)
    mine, sibling = [], []  # the rows loop's lists of each row's new tokens
    drafter.load([0, 1], [(0, 0), (0, 1)], [[1, 2], [1, 2]], [mine, sibling], 64)
    # Kept from an earlier call: what followed "1 2" there (a 2-token match).
    assert drafter.propose_all([0], [(0, 0)], [3]) == [([7, 8, 9], ("kept", 2))]
    # A sibling that went on differently is newer: "1 2 7" drafts what followed it there.
    sibling += [7, 5, 6, 7, 3]
    mine.append(7)
    assert drafter.propose_all([0], [(0, 0)], [2]) == [([5, 6], ("sibling", 3))]
    # Its own text: the longest suffix that occurred before ("5 5", then just "5").
    mine += [5, 5, 5, 4]
    assert drafter.propose_all([0], [(0, 0)], [3]) == [([], None)]  # "4" never came before
    mine += [5, 5]
    assert drafter.propose_all([0], [(0, 0)], [3]) == [([4, 5, 5], ("own", 2))]  # newest "5 5"
    assert drafter.propose_all([0], [(0, 0)], [0]) == [([], None)]
    drafter.finish(0, (0, 0), [1, 2], [7], last_of_group=False)
    drafter.finish(1, (0, 1), [1, 2], [7, 5], last_of_group=True)
    assert history.get([1, 2])[-2:] == [[7], [7, 5]] and not drafter.groups


def test_context_drafts_come_from_other_prompts_finished_earlier_in_the_call():
    """A problem of the same task shares steps with the ones before it: a finished
    completion of another prompt drafts the next, after the row's own group had nothing."""
    drafter = ContextDrafter(None)
    done, running = [5, 6, 7, 8, 9], [5, 6]
    drafter.load([0], [(0, 0)], [[1, 2]], [done], 64)
    drafter.finish(0, (0, 0), [1, 2], done, last_of_group=True)
    drafter.load([0], [(1, 0)], [[3, 4]], [running], 64)
    assert drafter.propose_all([0], [(1, 0)], [2]) == [([7, 8], ("other", 2))]
    running.append(9)  # "6 9" occurred nowhere, and nothing ever followed a "9"
    assert drafter.propose_all([0], [(1, 0)], [2]) == [([], None)]
    alone = ContextDrafter(None, others=False)
    alone.load([0], [(0, 0)], [[1, 2]], [list(done)], 64)
    alone.finish(0, (0, 0), [1, 2], done, last_of_group=True)
    alone.load([0], [(1, 0)], [[3, 4]], [[5, 6]], 64)
    assert alone.propose_all([0], [(1, 0)], [2]) == [([], None)]


def test_the_policy_drafts_when_it_pays_and_not_when_it_does_not():
    model = peaked_model(0, vocab=12)
    policy = DraftPolicy(num_tokens=4)
    good, bad = ("sibling", 3), ("own", 1)
    for _ in range(300):  # drafts of one kind come true, of the other never
        policy.observe(good, [1, 2, 3, 4], [1, 2, 3, 4, 5])
        policy.observe(bad, [1, 2, 3, 4], [9])
    assert policy.rate(good) > 0.95 and policy.rate(bad) < 0.05
    assert policy.choose(model, rows=8, drafts=[(4, good)] * 8) == 4
    assert policy.choose(model, rows=8, drafts=[(4, bad)] * 8) == 0
    # Many rows: the matmuls are busy, and a few good drafts do not pay for every row's tokens.
    assert policy.choose(model, rows=512, drafts=[(4, good)] * 8 + [(4, bad)] * 504) == 0
    # While drafting does not pay, drafts are proposed on every PROBE_EVERY-th step only.
    for _ in range(50):
        policy.choose(model, rows=8, drafts=[(4, bad)] * 8)
    assert [policy.proposing(step) for step in range(1, 17)].count(True) == 2
    # A call whose gain did not pay for the rows loop sends the next calls to the batch
    # engine, except every PROBE_EVERY-th.
    policy.end_call(8)
    assert [policy.use_rows_loop(8) for _ in range(16)].count(True) == 2
    assert policy.use_rows_loop(64)  # (never measured at 64 rows: try)


def test_while_drafting_does_not_pay_a_probe_asks_one_prompt_in_probe_every(monkeypatch):
    """Rows never asked for a draft cost the context drafter nothing (their text is never
    indexed): a probe step asks the rows of one prompt in PROBE_EVERY, other prompts each
    time, and the steps between probes ask none."""
    asked = []
    propose = ContextDrafter.propose_all

    def spy(self, rows, keys, limits):
        asked.append(sorted({key[0] for key in keys}))
        return propose(self, rows, keys, limits)

    monkeypatch.setattr(ContextDrafter, "propose_all", spy)
    model = peaked_model(2, vocab=12)
    speculation = Speculation(4)
    speculation.make_policy().gain = 0.0  # drafting does not pay: probes only
    prompts = [[1 + i % 9, 2 + i % 7, 3] for i in range(24)]
    engine = Engine(model, PAD, speculation=speculation)
    engine.generate(prompts, max_new_tokens=30, temperature=0.0, max_rows=24)
    every = speculative.PROBE_EVERY
    assert asked and engine.stats.forwards >= every * len(asked)
    assert all(len({p % every for p in prompts_asked}) == 1 for prompts_asked in asked)
    assert len({tuple(x) for x in asked}) > 1  # a different prompt each probe


def test_a_probe_whose_drafts_come_true_starts_drafting():
    """The gain of a probe counts its drafts as if every row had drafted alike, so good drafts
    seen on one row in PROBE_EVERY lift the policy into drafting."""
    model = peaked_model(0, vocab=12)
    policy = DraftPolicy(num_tokens=4)
    good = ("kept", 4)
    for _ in range(100):
        policy.observe(good, [1, 2, 3, 4], [1, 2, 3, 4, 5])
    assert not policy.pays()
    policy.choose(model, rows=8, drafts=[(4, good)], asked=1 / 8)
    assert policy.pays()


def test_history_keeps_the_newest_completions_of_the_newest_prompts():
    history = DraftHistory(per_prompt=2, max_prompts=2)
    for i in range(3):
        history.add([1], [i])
    history.add([2], [5])
    history.add([3], [6])
    assert history.get([1]) == [] and history.get([2]) == [[5]] and len(history) == 2
    history.add([3], [7])
    history.add([3], [8])
    assert history.get([3]) == [[7], [8]]


# ----------------------------------------------------------------------------- in a GRPO run

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "rlvr" / "recipes" / "smoke.toml")
TINY = [
    "--pretrain.steps", "30", "--grpo.steps", "6", "--eval.num_problems", "8",
    "--eval.num_samples", "2", "--grpo.eval_every", "3", "--checkpoint.every", "2",
    "--checkpoint.keep", "10", "--threads", "1", "--plots", "false",
]  # fmt: skip


@pytest.mark.slow
def test_a_grpo_run_with_exact_logprobs_has_no_mismatch(tmp_path):
    assert main(["train", SMOKE, "--out", str(tmp_path / "run"), *TINY,
                 "--sampler.exact_logprobs", "true"]) == 0  # fmt: skip
    steps = [r for r in records(tmp_path / "run") if r["phase"] == "grpo"]
    assert len(steps) == 6 and all(r["mismatch_kl"] == 0.0 for r in steps)


@pytest.mark.slow
def test_a_speculative_grpo_run_with_dynamic_sampling_resumes_exactly(tmp_path):
    """The sampler's speculation state (acceptance, kept completions) is in its checkpoints:
    a resumed run decides, forwards and samples as the uninterrupted one did."""
    args = [*TINY, "--sampler.speculate", "context", "--grpo.dynamic_sampling", "true"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["train", SMOKE, "--out", str(whole), *args]) == 0
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoint")
    for later in ("grpo-000004", "grpo-000006"):
        shutil.rmtree(cut / "checkpoints" / later)
    assert main(["train", "--resume", str(cut)]) == 0
    numbers = [{k: v for k, v in r.items() if not depends_on_clock(k)} for r in records(whole)]
    assert numbers == [
        {k: v for k, v in r.items() if not depends_on_clock(k)} for r in records(cut)
    ]
    final = "checkpoint/model.safetensors"
    assert (whole / final).read_bytes() == (cut / final).read_bytes()
    state = load_trainer_state(whole / "checkpoints" / "grpo-000006")
    assert state["speculation"]["history"]  # completions were kept
