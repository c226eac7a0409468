"""The countdown recipe end to end at a tiny size (`rlvr train recipes/countdown.toml`), then
`rlvr eval RUN --think-budgets`: forced-think accuracy, the test-time compute curve and the
search metrics land in summary.json, metrics.jsonl and plots/."""

from __future__ import annotations

import json

import pytest

from rlvr.cli import main, recipe_path
from rlvr.config import load_config

TINY = [
    "--model.hidden_size", "32", "--model.intermediate_size", "64", "--model.num_hidden_layers", "1",
    "--model.num_attention_heads", "2", "--model.num_key_value_heads", "1",
    "--pretrain.steps", "10", "--pretrain.batch_size", "8",
    "--grpo.steps", "2", "--grpo.num_prompts", "2", "--grpo.group_size", "2", "--grpo.eval_every", "1",
    "--grpo.max_new_tokens", "32", "--eval.num_problems", "8", "--eval.max_new_tokens", "32",
    "--eval.think_budgets", "[4, 16, 32]", "--threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("countdown") / "run"
    assert main(["train", str(recipe_path("countdown")), "--out", str(out), *TINY]) == 0
    return out


def test_recipe_runs_end_to_end(run):
    summary = json.loads((run / "summary.json").read_text())
    for phase in ("pretrain", "final"):
        for key in ["accuracy", "accuracy_no_think", "accuracy_think", "accuracy_budget_4",
                    "accuracy_budget_16", "accuracy_budget_32"]:  # fmt: skip
            assert 0 <= summary[f"{phase}_{key}"] <= 1, key
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    grpo = [x for x in lines if x["phase"] == "grpo"]
    assert [x["step"] for x in grpo] == [1, 2]
    for key in ["response_length", "backtrack_rate", "tries"]:
        assert key in grpo[0], key
    # the evaluation inside GRPO (step 1) skips the curve; before and after have it
    evals = [x for x in lines if x["phase"] == "eval"]
    assert ["accuracy_budget_4" in x for x in evals] == [True, False, True]
    assert (run / "plots" / "think_budget.png").stat().st_size > 0
    assert (run / "plots" / "grpo.png").stat().st_size > 0
    assert (run / "plots" / "search.png").stat().st_size > 0
    assert load_config(run / "config.toml").task.options["give_up"] == [0.3, 0.6]


def test_eval_draws_the_curve_before_and_after(run, capsys):
    (run / "plots" / "think_budget.png").unlink()
    assert main(["eval", str(run), "--think-budgets", "4,32"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert metrics["accuracy_think"] == summary["final_accuracy_think"]
    assert metrics["accuracy_budget_32"] == summary["final_accuracy_budget_32"]
    assert metrics["pretrained"]["accuracy_budget_4"] == summary["pretrain_accuracy_budget_4"]
    assert "accuracy_budget_16" not in metrics
    assert (run / "plots" / "think_budget.png").stat().st_size > 0


def test_eval_budget_above_the_length_limit_is_a_config_error(run, capsys):
    assert main(["eval", str(run), "--think-budgets", "8,64"]) == 2
    assert "eval.think_budgets" in capsys.readouterr().err


def test_demo_takes_a_shipped_recipe(capsys):
    assert main(["demo", "--recipe", "nope"]) == 2
    assert "no such recipe" in capsys.readouterr().err
