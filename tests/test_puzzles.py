"""The reasoning-gym adapter: problems, sandboxed scoring, and the scorers we override.

The upstream scorers are called directly here only on fixed strings we wrote (never on
model text) to show why they are overridden. Sandboxed scoring imports reasoning_gym once
per call (~2 s), so the scoring tests batch their answers.
"""

from __future__ import annotations

import pytest

pytest.importorskip("reasoning_gym")

import reasoning_gym  # noqa: E402

from rlvr.verifiers.puzzles import (  # noqa: E402
    EXCLUDED,
    OVERRIDDEN,
    make_problems,
    score_answers,
    task_names,
    verify_puzzle,
)


def upstream_score(task: str, answer: str, meta: dict) -> float:
    return reasoning_gym.get_score_answer_fn(task)(answer, meta["entry"])


def test_problems_are_deterministic_and_splits_disjoint():
    train = make_problems("basic_arithmetic", "train", 20, seed=3)
    assert [p.id for p in train] == [
        p.id for p in make_problems("basic_arithmetic", "train", 20, 3)
    ]
    test = make_problems("basic_arithmetic", "test", 5, seed=3)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert all(p.verifier == "puzzle:basic_arithmetic" and p.split == "train" for p in train)
    assert len({p.prompt for p in train}) == 20


def test_unknown_and_excluded_tasks_are_refused():
    with pytest.raises(ValueError, match="Unknown"):
        make_problems("no_such_task", "train", 1, 0)
    with pytest.raises(ValueError, match="excluded"):
        make_problems("composite", "train", 1, 0)
    assert "composite" not in task_names() and set(EXCLUDED) <= set(reasoning_gym.factory.DATASETS)


def test_why_overridden_scorers_are_overridden():
    gol = make_problems("game_of_life_halting", "train", 1, 0)[0]
    wrong = "True" if gol.answer == "False" else "False"
    assert upstream_score("game_of_life_halting", "banana", gol.meta) == 1.0
    assert upstream_score("game_of_life_halting", wrong, gol.meta) == 1.0
    coin = next(p for p in make_problems("coin_flip", "train", 10, 0) if p.answer.startswith("0."))
    assert upstream_score("coin_flip", "0", coin.meta) == 1.0
    assert set(OVERRIDDEN) == {"game_of_life_halting", "coin_flip"}

    # Ours: only the right answer scores (all six in one sandbox run).
    metas = [gol.meta] * 3 + [coin.meta] * 3
    answers = ["banana", wrong, gol.answer, "0", coin.answer, "1/3"]
    rewards = [v.reward for v in score_answers(metas, answers)]
    assert rewards == [0.0, 0.0, 1.0, 0.0, 1.0, float(coin.answer == "0.3333333333333333")]


def test_binary_by_default_partial_on_request_and_eval_scorers_stay_in_the_sandbox(tmp_path):
    arith = make_problems("basic_arithmetic", "train", 1, 0)[0]
    count = make_problems("countdown", "train", 1, 0)[0]
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    # countdown's scorer evaluates the answer; a hostile "expression" runs only in the sandbox.
    hostile = f"__import__('os').system('echo pwned > {victim}') or 0"
    assert upstream_score("countdown", "1 + 1", count.meta) < 1.0  # partial credit for junk
    metas = [arith.meta, arith.meta, count.meta, count.meta]
    answers = [arith.answer, "not a number", "1 + 1", hostile]
    binary = score_answers(metas, answers)
    partial = score_answers(metas, answers, partial=True)
    assert [v.reward for v in binary] == [1.0, 0.0, 0.0, 0.0]
    assert [v.status for v in binary][:2] == ["correct", "wrong"]
    assert 0.0 < partial[2].reward < 1.0  # the upstream partial credit, when asked for
    assert victim.read_text() == "original"


def test_verify_puzzle_reads_the_answer_tag():
    gol = make_problems("game_of_life_halting", "test", 1, 1)[0]
    good = verify_puzzle("game_of_life_halting", f"<answer>{gol.answer}</answer>", None, gol.meta)
    assert good.reward == 1.0
    assert verify_puzzle("game_of_life_halting", "x", None, None).status == "error"
