"""Pretraining: the learning-rate schedules, packing, and the default batch kept as it was."""

from __future__ import annotations

import math
import random

import pytest
import torch

from rlvr.config import ConfigError, load_config
from rlvr.learning.pretrain import learning_rate, pack_rows, pretrain_batch
from rlvr.tasks.arithmetic import ArithmeticTask
from rlvr.tokenizer import CharTokenizer


def config(*overrides: str):
    return load_config(None, list(overrides))


def test_cosine_schedule_is_the_original_one():
    p = config(
        "--pretrain.steps", "1000", "--pretrain.warmup_steps", "100", "--pretrain.lr", "0.003"
    ).pretrain
    for step in (1, 50, 100, 101, 500, 999, 1000):
        warm = min(1.0, step / 100)
        decay = 0.5 * (1 + math.cos(math.pi * step / 1000))
        assert learning_rate(p, step) == 0.003 * warm * (0.1 + 0.9 * decay)
    assert learning_rate(p, 1000) == pytest.approx(0.0003)


def test_wsd_schedule_warms_up_holds_then_decays_linearly_to_a_tenth():
    p = config("--pretrain.schedule", "wsd", "--pretrain.steps", "100", "--pretrain.warmup_steps",
               "10", "--pretrain.decay_fraction", "0.2", "--pretrain.lr", "0.01").pretrain  # fmt: skip
    assert learning_rate(p, 5) == pytest.approx(0.005)  # warming up
    for step in (10, 50, 80):
        assert learning_rate(p, step) == pytest.approx(0.01)  # stable
    assert learning_rate(p, 90) == pytest.approx(0.01 * (1 - 0.9 * 0.5))  # halfway down
    assert learning_rate(p, 100) == pytest.approx(0.001)  # a tenth at the last step
    rates = [learning_rate(p, s) for s in range(80, 101)]
    assert all(a > b for a, b in zip(rates, rates[1:]))


def old_pretrain_batch(task, tokenizer, rng, cfg, step):
    """The pretraining batch as it was before packing existed (two padded length groups)."""
    p = cfg.pretrain
    problems = task.problems("train", p.batch_size, seed=cfg.seed * 1_000_003 + step)
    groups = {False: [], True: []}
    for problem in problems:
        think = rng.random() < p.think_fraction
        slip = think and rng.random() < p.slip_fraction
        prompt = tokenizer.encode(tokenizer.format_prompt(problem.prompt))
        completion = tokenizer.encode(task.completion(problem, rng, think=think, slip=slip))
        completion.append(tokenizer.eos_id)
        groups[think].append((prompt + completion, [0] * (len(prompt) - 1) + [1] * len(completion)))
    batches = []
    for rows in groups.values():
        if not rows:
            continue
        width = max(len(ids) for ids, _ in rows)
        ids_t = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.long)
        mask_t = torch.zeros((len(rows), width - 1))
        for i, (ids, mask) in enumerate(rows):
            ids_t[i, : len(ids)] = torch.tensor(ids)
            mask_t[i, : len(mask)] = torch.tensor(mask, dtype=torch.float)
        batches.append((ids_t, mask_t))
    return batches


def demo_setup(*overrides: str):
    cfg = config("--task.options", '{ops = "+*-+-", add_min = 1, add_max = 19}',
                 "--pretrain.think_fraction", "0.45", "--pretrain.slip_fraction", "0.3", *overrides)  # fmt: skip
    return cfg, ArithmeticTask(**cfg.task.options), CharTokenizer()


def test_default_batches_are_unchanged():
    cfg, task, tok = demo_setup()
    new_rng, old_rng = random.Random(1), random.Random(1)
    for step in range(1, 6):
        new = pretrain_batch(task, tok, new_rng, cfg, step)
        old = old_pretrain_batch(task, tok, old_rng, cfg, step)
        assert len(new) == len(old) == 2
        for (a_ids, a_mask), (b_ids, b_mask) in zip(new, old):
            assert torch.equal(a_ids, b_ids) and torch.equal(a_mask, b_mask)


def test_packed_batch_holds_the_same_examples_and_targets():
    cfg, task, tok = demo_setup("--pretrain.pack_length", "100")
    plain_cfg = demo_setup()[0]
    for step in range(1, 4):
        (ids, mask), = pretrain_batch(task, tok, random.Random(step), cfg, step)  # fmt: skip
        plain = pretrain_batch(task, tok, random.Random(step), plain_cfg, step)
        assert ids.shape[1] <= 100
        # the same tokens and the same trained-on targets, in fewer rows
        assert int((ids != tok.pad_id).sum()) == sum(int((i != tok.pad_id).sum()) for i, _ in plain)
        assert int(mask.sum()) == sum(int(m.sum()) for _, m in plain)
        assert len(ids) < sum(len(i) for i, _ in plain)
        # every row starts with <bos>: examples are whole
        assert (ids[:, 0] == tok.bos_id).all()


def test_pack_rows_keeps_examples_whole_and_masks_the_seams():
    examples = [([1, 10, 11], [0, 1]), ([1, 20, 21, 22, 23], [0, 1, 1, 1]), ([1, 30], [1]),
                ([1] + [40] * 9, [1] * 9)]  # fmt: skip
    rows = pack_rows(examples, length=8)
    assert sorted(len(ids) for ids, _ in rows) == [2, 8, 10]
    for ids, mask in rows:
        assert len(mask) == len(ids) - 1
    joined = {tuple(ids): mask for ids, mask in rows}
    # the 10-token example is longer than a row: a row of its own
    assert joined[tuple([1] + [40] * 9)] == [1] * 9
    # the others: longest first, first fit; the target at each seam (the next <bos>) is 0
    assert joined[(1, 20, 21, 22, 23, 1, 10, 11)] == [0, 1, 1, 1, 0, 0, 1]
    assert joined[(1, 30)] == [1]  # 8 + 2 > 8: a new row
    assert sum(len(ids) for ids, _ in rows) == sum(len(ids) for ids, _ in examples)


def test_decay_think_fraction_changes_the_mix_when_the_rate_decays():
    cfg, task, tok = demo_setup("--pretrain.schedule", "wsd", "--pretrain.steps", "10",
                                "--pretrain.decay_fraction", "0.3", "--pretrain.think_fraction",
                                "1.0", "--pretrain.decay_think_fraction", "0.0")  # fmt: skip
    rng = random.Random(0)
    for step in range(1, 11):
        (ids, mask), = pretrain_batch(task, tok, rng, cfg, step)  # fmt: skip
        think_open = (ids == tok.encode("<think>")[0]).int().argmax(1)  # (b,) its position
        after = ids[torch.arange(len(ids)), think_open + 1]
        thinks = after != tok.encode("</think>")[0]  # an empty think block answers at once
        # steps 1-7 at the peak rate show only traces, the 3 decay steps only answers
        assert bool(thinks.all()) == (step <= 7), step
        assert bool((~thinks).all()) == (step > 7), step


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["--pretrain.schedule", "linear"], ["pretrain.schedule", "cosine, wsd"]),
        (["--pretrain.decay_fraction", "0"], ["pretrain.decay_fraction"]),
        (["--pretrain.pack_length", "1000"], ["pretrain.pack_length", "256"]),
        (["--pretrain.pack_length", "-1"], ["pretrain.pack_length"]),
        (["--pretrain.decay_think_fraction", "0.5"], ["decay_think_fraction", "wsd"]),
        (["--pretrain.schedule", "wsd", "--pretrain.decay_think_fraction", "2"], ["[0, 1]"]),
    ],
)
def test_bad_pretraining_keys_are_config_errors(overrides, words):
    with pytest.raises(ConfigError) as error:
        config(*overrides)
    for word in words:
        assert word in str(error.value)
