"""The judge verifier: a tiny model built in code, run in its worker process, batched.

The judge here reads only the last word of its prompt (its template is "{response}"): its
weights make it say "yes" after "A", "no" after "B", "maybe" after "C" and nothing after any
other word, then end. That is enough to check the plumbing end to end: prompts reach the
worker, outputs come back to the right responses, parse into statuses, the Scorer asks the
judge only where the rules cannot decide, identical answers are judged once, and timeouts,
crashes and folders that are not models are handled.
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch

transformers = pytest.importorskip("transformers")

from rlvr.cli import main  # noqa: E402
from rlvr.config import Config, ConfigError, JudgeConfig  # noqa: E402
from rlvr.hf import HFTokenizer, save_hf  # noqa: E402
from rlvr.model import ModelConfig, Transformer  # noqa: E402
from rlvr.tasks import ArithmeticTask, Problem  # noqa: E402
from rlvr.verifiers.judge import (  # noqa: E402
    Judge,
    check_judge_folder,
    parse_judgment,
    response_answer,
)
from rlvr.verifiers.rewards import Scorer  # noqa: E402

WORDS = ["</s>", "<s>", "<unk>", "yes", "no", "maybe", "A", "B", "C", "D"]
SAYS = {"A": "yes", "B": "no", "C": "maybe"}  # last word of the prompt -> the judge's answer


def build_judge(path) -> str:
    """A 1-layer Llama whose output depends on the prompt's last token only: attention and
    MLP write nothing, so the last hidden state is that token's one-hot embedding."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="</s>",
    )  # fmt: skip
    config = ModelConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
                         max_position_embeddings=64, tie_word_embeddings=False)  # fmt: skip
    model = Transformer(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if "norm" in name else torch.zeros_like(p))
        model.model.embed_tokens.weight[:, : len(WORDS)] = torch.eye(len(WORDS))
        for word, answer in SAYS.items():
            model.lm_head.weight[vocab[answer], vocab[word]] = 8.0  # every other logit is 0:
        # after the answer (or any other word) the argmax is token 0, "</s>": it stops there
    save_hf(model, HFTokenizer(fast), path)
    return str(path)


@pytest.fixture(scope="module")
def judge_folder(tmp_path_factory):
    return build_judge(tmp_path_factory.mktemp("judge"))


@pytest.fixture(scope="module")
def judge(judge_folder):
    with Judge(JudgeConfig(model=judge_folder, template="{response}", batch_size=4)) as j:
        yield j


def test_parse_judgment_statuses():
    cfg = JudgeConfig()
    assert parse_judgment(" Yes, it matches", cfg.correct_pattern, cfg.wrong_pattern).status == (
        "correct"
    )
    assert parse_judgment("no.", cfg.correct_pattern, cfg.wrong_pattern).status == "wrong"
    assert parse_judgment("Incorrect", cfg.correct_pattern, cfg.wrong_pattern).status == "wrong"
    v = parse_judgment("I think so", cfg.correct_pattern, cfg.wrong_pattern)
    assert v.status == "unparsable" and v.reward == 0.0


def test_response_answer_reads_the_answer_block():
    assert response_answer("<think>2+2=4</think><answer> four </answer><eos>") == "four"
    assert response_answer("<think>x</think>The answer is A<eos>") == "The answer is A"
    assert response_answer("no think block <answer>B</answer>") == "B"


def test_judge_batches_and_maps_outputs_to_their_responses(judge):
    answers = ["A", "B", "C", "D", "x A", "x B", "A", "B", "C"]
    futures = [judge.submit("", answer, "gold") for answer in answers]
    statuses = [f.result().status for f in futures]
    assert statuses == ["correct", "wrong", "unparsable", "unparsable", "correct", "wrong",
                        "correct", "wrong", "unparsable"]  # fmt: skip
    assert judge.judged >= len(answers)
    assert judge.calls < len(answers)  # waiting responses went to the worker together
    assert "yes" in futures[0].result().reason


def test_judge_worker_killed_is_restarted_and_the_call_retried(judge):
    restarts = judge.restarts
    os.kill(judge.pid, signal.SIGKILL)
    assert judge.submit("", "A", "gold").result().status == "correct"
    assert judge.restarts == restarts + 1


@pytest.mark.slow
def test_judge_timeout_is_retried_once_then_scored_zero(judge_folder, tmp_path):
    folder = tmp_path / "judge"
    shutil.copytree(judge_folder, folder)
    with Judge(JudgeConfig(model=str(folder), template="{response}", timeout_s=2.0)) as judge:
        os.kill(judge.pid, signal.SIGSTOP)  # a worker that hangs
        assert judge.submit("", "A", "gold").result().status == "correct"  # the retry's
        assert (judge.calls, judge.restarts) == (2, 1)
        # hangs again, and the retry cannot start a worker: scored 0 with a status
        os.kill(judge.pid, signal.SIGSTOP)
        folder.rename(tmp_path / "moved")
        verdict = judge.submit("", "A", "gold").result()
        assert verdict.status == "error" and verdict.reward == 0.0
        assert (judge.calls, judge.restarts) == (4, 2) and "could not start" in verdict.reason


def test_judge_output_budget_larger_than_its_context_is_one_sentence(judge_folder):
    with pytest.raises(ConfigError, match="max_new_tokens"):
        Judge(JudgeConfig(model=judge_folder, max_new_tokens=64))


def test_not_a_model_folder_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        check_judge_folder(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ConfigError, match="no weights"):
        check_judge_folder(str(tmp_path))
    with pytest.raises(ConfigError, match="not a folder"):
        check_judge_folder(str(tmp_path / "missing"))


def _cfg(folder: str, when: str) -> Config:
    cfg = Config()
    cfg.reward.workers = 0
    cfg.reward.judge = JudgeConfig(model=folder, template="{response}", when=when)
    return cfg


def test_scorer_asks_the_judge_only_where_rules_cannot_decide(judge_folder):
    task = ArithmeticTask()
    problem = Problem("p", "2+3*4=", "14", "arithmetic", "train")
    scorer = Scorer(task, _cfg(judge_folder, "unparsable").reward, max_new_tokens=64)
    try:
        ruled = scorer.score(scorer.submit("<think>x</think><answer>14</answer><eos>", problem), 9)
        assert ruled.verdict.status == "correct" and scorer.judged == 0
        wrong = scorer.score(scorer.submit("<think>x</think><answer>15</answer><eos>", problem), 9)
        assert wrong.verdict.status == "wrong" and scorer.judged == 0
        # "A" is no integer: the rules cannot decide, the judge says yes
        judged = scorer.score(scorer.submit("<think>y</think><answer>A</answer><eos>", problem), 9)
        assert judged.verdict.status == "correct" and judged.parts == {
            "accuracy": 1.0, "format": 1.0,
        }  # fmt: skip
        assert scorer.judged == 1 and "judge" in judged.verdict.reason
        # the same answer part again, after another think block: answered from the cache
        hits = scorer.cache_hits
        again = scorer.score(scorer.submit("<think>z</think><answer>A</answer><eos>", problem), 9)
        assert again.verdict.status == "correct" and scorer.judged == 1
        assert scorer.cache_hits == hits + 1
        # the same answer text in another shape: the rules run, the judge's cache answers
        other = scorer.score(scorer.submit("<think>z</think><answer> A </answer>", problem), 9)
        assert other.verdict.status == "correct" and scorer.judged == 1
        assert scorer.cache_hits == hits + 2
        # a badly formed response: the rules' format reward, the judge's accuracy
        bad = scorer.score(scorer.submit("<think>z</think>junk<answer>A</answer><eos>", problem), 9)
        assert bad.verdict.status == "correct" and bad.parts["format"] == 0.0
    finally:
        scorer.close()


def test_scorer_with_judge_always_ignores_the_rules(judge_folder):
    task = ArithmeticTask()
    problem = Problem("p", "2+3*4=", "14", "arithmetic", "train")
    scorer = Scorer(task, _cfg(judge_folder, "always").reward, max_new_tokens=64)
    try:
        # right by the rules, but the judge has no opinion on "14": unparsable, reward 0
        scored = scorer.score(scorer.submit("<think>x</think><answer>14</answer><eos>", problem), 9)
        assert scored.verdict.status == "unparsable" and scored.parts["accuracy"] == 0.0
        assert scored.parts["format"] == 1.0 and scorer.judged == 1
        said_no = scorer.score(scorer.submit("<think>x</think><answer>B</answer><eos>", problem), 9)
        assert said_no.verdict.status == "wrong"
    finally:
        scorer.close()


@pytest.mark.slow
def test_verify_cli_grades_with_the_judge(judge_folder, tmp_path, capsys):
    source, graded = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [{"completion": "<think>t</think><answer>A</answer>", "answer": "gold"},
             {"completion": "<answer>B</answer>", "answer": "gold"},
             {"completion": "<think>u</think><answer>A</answer>", "answer": "gold"},
             {"completion": "nothing to read", "answer": "gold"}]  # fmt: skip
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = ["verify", str(source), "--verifier", "judge", "--judge-model", judge_folder,
            "--judge-template", "{response}", "--output", str(graded)]  # fmt: skip
    assert main(args) == 0
    out = [json.loads(line) for line in graded.read_text().splitlines()]
    assert [o["status"] for o in out] == ["correct", "wrong", "correct", "unparsable"]
    err = capsys.readouterr().err
    assert "judged 3" in err and "cache hits 1" in err


def test_verify_cli_judge_folder_that_is_not_a_model_exits_2(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"completion": "x", "answer": "y"}) + "\n")
    assert main(["verify", str(source), "--verifier", "judge", "--judge-model",
                 str(tmp_path)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json" in err and "Traceback" not in err
    assert main(["verify", str(source), "--verifier", "judge"]) == 2
    assert "--judge-model" in capsys.readouterr().err


def test_train_with_a_judge_folder_that_is_not_a_model_exits_2(tmp_path, capsys):
    from rlvr.cli import recipe_path

    out = tmp_path / "run"
    code = main(["train", str(recipe_path("smoke")), "--out", str(out),
                 "--reward.judge.model", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "reward.judge.model" in err
    assert not out.exists()  # before any work
