"""Post-training (issue 14): SFT, DPO, rejection-sampling rounds (`rlvr iterate`),
distillation and multi-phase runs.

Unit checks of the pieces (the iterate filter, SFT batches and packing, DPO pairs and one DPO
update), then every trainer end to end through the CLI on the smoke recipe's tiny model,
a round killed with SIGKILL and resumed exactly, and the bad-input cases. The losses
themselves are checked on hand-computed numbers in tests/test_algorithms.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rlvr.loop
from rlvr.checkpoint import list_checkpoints, load_checkpoint, phase_order, save_checkpoint
from rlvr.cli import main
from rlvr.config import ConfigError, SFTConfig, load_config, phase_configs
from rlvr.iterate import examples_of, keep_traces, majority_answer, select, training_rows
from rlvr.learning.algorithms import dpo_loss, sequence_logprob_sums, sft_loss
from rlvr.learning.dpo import verified_pairs
from rlvr.learning.learner import make_batch, sequence_logprobs
from rlvr.learning.sft import Example, load_examples, make_sft_batch, num_steps, step_examples
from rlvr.model import ModelConfig, Transformer
from rlvr.report import depends_on_clock
from rlvr.sampling.rollout import Episode
from rlvr.tasks import Problem
from rlvr.tokenizer import DEFAULT_CHARS, CharTokenizer
from rlvr.verifiers import Verdict

ROOT = Path(__file__).resolve().parent.parent
SMOKE = str(ROOT / "rlvr" / "recipes" / "smoke.toml")
TINY = ["--threads", "1", "--plots", "false", "--eval.num_problems", "8",
        "--eval.num_samples", "0"]  # fmt: skip
PATIENCE_S = 240


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    monkeypatch.setattr(rlvr.loop, "plot_metrics", lambda run_dir: [])


# ----------------------------------------------------------------------------- helpers


def episode(response: str, status: str = "correct", finish: str = "stop", pid: str = "p1",
            answer: str = "7") -> Episode:  # fmt: skip
    problem = Problem(pid, "3+4=", answer, "arithmetic", "train")
    return Episode(problem, [1, 2], [3, 4, 2], [-0.1, -0.2, -0.3], finish, 0, response,
                   Verdict(1.0 if status == "correct" else 0.0, status), 0.0)  # fmt: skip


def think(answer: str, steps: str = "3+4=7") -> str:
    return f"<think>{steps}</think><answer>{answer}</answer><eos>"


def records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not depends_on_clock(k)} for r in rows]


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("rlvr:")]
    assert len(lines) == 1, err
    return lines[0]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=CharTokenizer().vocab_size, hidden_size=32,
                                   intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1))  # fmt: skip


# ----------------------------------------------------------------------------- the filter


def test_filter_keeps_nothing_wrong_and_caps_and_dedups():
    group = [
        episode(think("7"), "correct"),
        episode(think("8"), "wrong"),
        episode(think("7"), "correct"),  # the same text again: kept once
        episode("<think></think><answer>7</answer><eos>", "correct"),
        episode(think("7", "4+3=7"), "correct"),
        episode(think("9"), "unparsable"),
        episode(think("7", "7=7"), "correct"),
    ]
    kept = keep_traces(group, max_per_problem=3)
    assert all(ep.verdict.status == "correct" for ep in kept)
    assert len(kept) == 3  # the cap: four distinct correct texts, three kept
    assert len({ep.response for ep in kept}) == 3
    assert [ep.response for ep in kept] == [group[0].response, group[3].response, group[4].response]
    # a truncated completion never ends: not kept even when its answer is right
    assert keep_traces([episode(think("7"), "correct", finish="length")], 4) == []
    # require_think drops the answer-only one
    assert group[3] not in keep_traces(group, 4, require_think=True)
    assert keep_traces([episode(think("8"), "wrong")] * 3, 4) == []


def test_majority_filter_keeps_the_majority_answer_without_a_verifier():
    group = [episode(think("8"), "wrong"), episode(think("8", "3+4=8"), "wrong"),
             episode(think("7"), "correct"), episode("<answer>9</answer>", "wrong")]  # fmt: skip
    assert majority_answer(group) == "8"
    kept = keep_traces(group, 4, filter="majority")
    assert [ep.verdict.status for ep in kept] == ["wrong", "wrong"]  # the blind spot
    assert majority_answer([episode("no answer at all", "unparsable")]) is None
    with pytest.raises(ValueError, match="filter"):
        keep_traces(group, 4, filter="vibes")


def test_balance_repeats_a_hard_problems_traces_and_select_counts():
    one = [episode(think("7"), "correct")]
    assert training_rows(one, 4, balance=True) == one * 4
    assert training_rows(one, 4, balance=False) == one

    class T:  # the traces table of a config
        max_per_problem, filter, require_think, balance = 2, "verifier", False, True

    class C:
        traces = T

    hard = [episode(think("7"), "correct", pid="hard")] + [
        episode(think("1"), "wrong", pid="hard") for _ in range(7)]  # fmt: skip
    easy = [episode(think("7", f"s{i}"), "correct", pid="easy") for i in range(8)]
    unsolved = [episode(think("1"), "wrong", pid="none") for _ in range(8)]
    rows, stats = select([hard, easy, unsolved], C)
    assert stats["problems"] == 3 and stats["solved"] == 2 and stats["kept_problems"] == 2
    assert stats["hard_problems_kept"] == 1  # 1 correct in 8 samples
    assert stats["kept_traces"] == 3 and stats["kept_wrong"] == 0
    assert stats["training_rows"] == 4  # the hard problem's one trace counts twice
    assert [r["rows"] for r in rows] == [2, 1, 1]
    assert stats["sample_accuracy"] == pytest.approx(9 / 24)


# ----------------------------------------------------------------------------- SFT


def test_packing_gives_the_unpacked_loss():
    tok = CharTokenizer()
    model = tiny_model()
    examples = [Example(tok.encode(f"<bos>{a}+{b}=\n"), tok.encode(f"<think></think><answer>{a + b}</answer>") + [tok.eos_id])
                for a, b in [(1, 2), (13, 4), (7, 7), (120, 3), (5, 50)]]  # fmt: skip
    plain = make_sft_batch(examples, tok.pad_id)
    packed = make_sft_batch(examples, tok.pad_id, packing=True, max_length=64)
    assert packed["input_ids"].shape[0] < plain["input_ids"].shape[0]  # fewer rows
    assert plain["mask"].sum() == packed["mask"].sum() == sum(len(e.response_ids) for e in examples)
    ids = plain["input_ids"]
    loss_plain, _ = sft_loss(model(ids[:, :-1]), ids[:, 1:], plain["mask"])
    ids = packed["input_ids"]
    logits = model(ids[:, :-1], document_ids=packed["document_ids"][:, :-1])
    loss_packed, _ = sft_loss(logits, ids[:, 1:], packed["mask"])
    assert loss_packed.item() == pytest.approx(loss_plain.item(), abs=1e-5)
    # an example packed after another sees only itself: its logits are its logits alone,
    # and without the per-document attention they would not be
    row, doc = packed["input_ids"][:1], packed["document_ids"][:1]
    second = (doc[0] == 1).nonzero().flatten()
    alone = model(row[:, second])[0]
    together = model(row, document_ids=doc)[0, second]
    leaky = model(row)[0, second]
    assert (together - alone).abs().max() < 1e-5
    assert (leaky - alone).abs().max() > 1e-3


def test_step_examples_cover_each_epoch_and_are_addressable():
    seen = [i for step in range(1, 4) for i in step_examples(9, 3, step, seed=0)]
    assert sorted(seen) == list(range(9))  # epoch 1: every example once
    assert step_examples(9, 3, 5, seed=0) == step_examples(9, 3, 5, seed=0)
    assert step_examples(9, 4, 3, seed=0)[:1] == step_examples(9, 1, 9, seed=0)  # crosses epochs
    assert num_steps(SFTConfig(epochs=2.0, batch_size=4), 9) == 5
    assert num_steps(SFTConfig(steps=7), 9) == 7


def test_load_examples_prompt_response_messages_and_parquet(tmp_path):
    tok = CharTokenizer()
    rows = [{"prompt": "3+4=", "response": think("7")[:-5]},
            {"messages": [{"role": "user", "content": "2*3="},
                          {"role": "assistant", "content": "<think></think><answer>6</answer>"}]}]  # fmt: skip
    examples = load_examples(write_jsonl(tmp_path / "d.jsonl", rows), SFTConfig(), tok)
    assert tok.decode(examples[0].prompt_ids) == "<bos>3+4=\n"
    assert tok.decode(examples[0].response_ids) == "<think>3+4=7</think><answer>7</answer><eos>"
    assert tok.decode(examples[1].prompt_ids) == "<bos>2*3=\n"
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist([rows[0]]), tmp_path / "d.parquet")
    assert load_examples(tmp_path / "d.parquet", SFTConfig(), tok) == examples[:1]


@pytest.mark.parametrize("row, match", [
    ({"question": "3+4=", "solution": "7"}, "has neither 'prompt'/'response' nor 'messages'"),
    ({"prompt": "3+4="}, "needs text fields 'prompt' and 'response'"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "ending with the assistant"),
    ({"prompt": "3+4=\u00e9", "response": "7"}, "cannot be tokenized"),
    ({"prompt": "1+1=" * 80, "response": "2"}, "tokens long"),
])  # fmt: skip
def test_bad_sft_rows_name_the_line(tmp_path, row, match):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1=", "response": "1"}, row])
    with pytest.raises(ConfigError, match=match) as info:
        load_examples(path, SFTConfig(max_length=128), CharTokenizer())
    assert f"{path}:2" in str(info.value)


# ----------------------------------------------------------------------------- DPO


def test_verified_pairs():
    group = [episode(think("8"), "wrong"), episode(think("7"), "correct"),
             episode(think("7", "7"), "correct"), episode("x", "unparsable")]  # fmt: skip
    flat = [episode(think("7"), "correct")] * 4
    pairs = verified_pairs(group + flat, group_size=4, pairs_per_problem=2)
    assert [(c.response, r.response) for c, r in pairs] == [
        (group[1].response, group[0].response),
        (group[2].response, group[3].response),
    ]
    assert len(verified_pairs(group, 4, 1)) == 1


def test_a_dpo_step_moves_the_margin_toward_the_chosen_response():
    tok = CharTokenizer()
    policy = tiny_model(1)
    reference = tiny_model(1).eval().requires_grad_(False)
    prompt = tok.encode("<bos>3+4=\n")
    chosen = episode(think("7"))
    rejected = episode(think("8"))
    eps = [Episode(e.problem, prompt, tok.encode(e.response), [0.0] * len(tok.encode(e.response)),
                   "stop", 0, e.response, e.verdict, 0.0) for e in (chosen, rejected)]  # fmt: skip
    batch = make_batch(eps, tok.pad_id)

    def margin() -> float:
        with torch.no_grad():
            lp = sequence_logprob_sums(
                sequence_logprobs(policy, batch, 1.0)[0], batch["completion_mask"]
            )
        return (lp[0] - lp[1]).item()

    before = margin()
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    lp = sequence_logprob_sums(sequence_logprobs(policy, batch, 1.0)[0], batch["completion_mask"])
    with torch.no_grad():
        ref = sequence_logprob_sums(
            sequence_logprobs(reference, batch, 1.0)[0], batch["completion_mask"]
        )
    loss, stats = dpo_loss(lp[:1], lp[1:], ref[:1], ref[1:], beta=0.1)
    assert loss.item() == pytest.approx(0.693147, abs=1e-5)  # policy == reference: log 2
    loss.backward()
    optimizer.step()
    assert margin() > before + 1e-3


# ----------------------------------------------------------------------------- phases


def test_phase_configs_and_checkpoint_order():
    cfg = load_config(SMOKE, ["--phases", '[{kind = "sft", sft = {data = "d.jsonl", steps = 3}}, '
                                          '{kind = "grpo", grpo = {steps = 2}}]'])  # fmt: skip
    (k1, p1), (k2, p2) = phase_configs(cfg)
    assert (k1, p1.sft.steps, p1.grpo.steps) == ("sft", 3, cfg.grpo.steps)
    assert (k2, p2.grpo.steps, p2.sft.steps) == ("grpo", 2, 0)
    assert cfg.grpo.steps == 8  # the run's own table is untouched
    assert [phase_order(x) for x in ("pretrain", "grpo", "2-grpo", "10-rsft", "02-grpo", "2-x")] == [
        0, 1, 2, 10, None, None]  # fmt: skip
    cfg = load_config(SMOKE, ["--iterate.rounds", "3"])
    assert [k for k, _ in phase_configs(cfg)] == ["rsft"] * 3
    for bad, match in [
        ('[{kind = "grpo", model = {hidden_size = 8}}]', "cannot override 'model'"),
        ('[{kind = "ppo"}]', "needs a kind"),
        ('[{kind = "sft"}]', "has no data"),
        ('[{kind = "distill"}]', "has no teacher"),
        ('[{kind = "grpo", grpo = {group_size = 1}}]', "group_size must be at least 2"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_config(SMOKE, ["--phases", bad])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """The smoke recipe's model pretrained for 400 steps: it solves some problems when it samples."""
    out = tmp_path_factory.mktemp("post") / "base"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rlvr.loop, "plot_metrics", lambda run_dir: [])
        assert (
            main(
                [
                    "train",
                    SMOKE,
                    "--out",
                    str(out),
                    *TINY,
                    "--grpo.steps",
                    "0",
                    "--pretrain.steps",
                    "400",
                ]
            )
            == 0
        )
    return out / "pretrained"


@pytest.mark.slow
def test_every_trainer_end_to_end_through_the_cli(pretrained, tmp_path):
    tok = CharTokenizer()
    data = write_jsonl(tmp_path / "sft.jsonl", [
        {"prompt": f"{a}+{b}*2=", "response": f"<think>{b}*2={b * 2}\n{a}+{b * 2}={a + b * 2}</think><answer>{a + b * 2}</answer>"}
        for a in range(1, 9) for b in range(2, 6)])  # fmt: skip
    traces = "num_problems = 16, samples_per_problem = 4"
    phases = (
        f'[{{kind = "sft", sft = {{data = "{data}", steps = 3, packing = true, batch_size = 8}}}},'
        ' {kind = "grpo", grpo = {steps = 2}},'
        f' {{kind = "rsft", traces = {{{traces}}}, sft = {{steps = 2}}}},'
        ' {kind = "dpo", dpo = {steps = 2}, grpo = {num_prompts = 8, group_size = 8}},'
        f' {{kind = "distill", traces = {{teacher = "{pretrained}", {traces}}}, sft = {{steps = 2}}}}]'
    )
    out = tmp_path / "run"
    assert main(["train", SMOKE, "--init_from", str(pretrained), "--out", str(out), *TINY,
                 "--phases", phases, "--checkpoint.every", "1"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert [p["label"] for p in summary["phases"]] == [
        "1-sft",
        "2-grpo",
        "3-rsft",
        "4-dpo",
        "5-distill",
    ]
    assert (
        summary["phases"][1]["sampled_tokens"] > 0 and summary["phases"][0]["sampled_tokens"] == 0
    )
    rows = records(out)
    for label, steps in [
        ("1-sft", 3),
        ("2-grpo", 2),
        ("3-rsft", 2),
        ("4-dpo", 2),
        ("5-distill", 2),
    ]:
        assert [r["step"] for r in rows if r["phase"] == label and r["step"] > 0] == list(
            range(1, steps + 1)
        )
        assert any(r["phase"] == label.split("-")[0] + "-eval" for r in rows)
    sft_rows = [r for r in rows if r["phase"] == "1-sft"]
    assert all(r["padded_fraction"] < 0.5 for r in sft_rows)  # packed rows
    assert {"reward_margin", "pairs", "loss"} <= set().union(
        *(r for r in rows if r["phase"] == "4-dpo")
    )
    # the kept traces are on disk for a person to read; the table names each round
    kept = [json.loads(x) for x in (out / "traces" / "3-rsft.jsonl").read_text().splitlines()]
    assert kept and all(r["status"] == "correct" for r in kept)
    assert tok.decode(kept[0]["completion_ids"]).startswith(
        kept[0]["response"].removesuffix("<eos>")
    )
    assert (out / "traces" / "5-distill.jsonl").is_file()
    assert "| 1 | 3-rsft |" in (out / "rounds.md").read_text()
    # checkpoints are named by phase and record it; the final folder names the last phase
    names = [p.name for p in list_checkpoints(out)]
    assert names[-1] == "5-distill-000002" and len(names) == 2  # checkpoint.keep
    assert json.loads((out / "checkpoint" / "state.json").read_text())["phase"] == "distill"
    start = load_file(pretrained / "model.safetensors")
    final = load_file(out / "checkpoint" / "model.safetensors")
    assert any(not torch.equal(start[k], final[k]) for k in start)


@pytest.mark.slow
def test_a_one_phase_grpo_run_is_the_plain_run(pretrained, tmp_path):
    args = ["--init_from", str(pretrained), *TINY, "--grpo.steps", "3", "--checkpoint.every", "0"]
    assert main(["train", SMOKE, "--out", str(tmp_path / "plain"), *args]) == 0
    assert main(["train", SMOKE, "--out", str(tmp_path / "phased"), *args,
                 "--phases", '[{kind = "grpo"}]']) == 0  # fmt: skip
    plain = [r for r in records(tmp_path / "plain") if r["phase"] == "grpo"]
    phased = [
        {**r, "phase": "grpo"} for r in records(tmp_path / "phased") if r["phase"] == "1-grpo"
    ]
    assert len(plain) == 3 and without_timing(phased) == without_timing(plain)
    weights = "checkpoint/model.safetensors"
    assert (tmp_path / "plain" / weights).read_bytes() == (
        tmp_path / "phased" / weights
    ).read_bytes()


ITERATE = ["--iterate.rounds", "2", "--traces.num_problems", "16", "--traces.samples_per_problem",
           "4", "--sft.steps", "4", "--sft.batch_size", "4", "--checkpoint.every", "2"]  # fmt: skip

KILLABLE = """
import os, sys, time
import rlvr.learning.sft as sft
calls, original = [0], sft.make_sft_batch
def make_sft_batch(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(os.environ["KILL_AT_BATCH"]):
        open(os.environ["KILL_MARKER"], "w").close()
        time.sleep(600)  # the test kills the run here
    return original(*args, **kwargs)
sft.make_sft_batch = make_sft_batch
import rlvr.loop
rlvr.loop.plot_metrics = lambda run_dir: []
from rlvr.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_round_killed_mid_fine_tuning_resumes_exactly(pretrained, tmp_path):
    base = ["iterate", SMOKE, "--init_from", str(pretrained), *TINY, *ITERATE]
    assert main([*base, "--out", str(tmp_path / "A")]) == 0
    table = (tmp_path / "A" / "rounds.md").read_text()
    assert "| 2 | 2-rsft |" in table

    # B: SIGKILLed while building round 2's third SFT batch (after its step-2 checkpoint)
    marker = tmp_path / "killed-here"
    env = dict(os.environ, KILL_AT_BATCH="7", KILL_MARKER=str(marker))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    with open(tmp_path / "B.stderr", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", KILLABLE, *base, "--out", str(tmp_path / "B")],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
    deadline = time.monotonic() + PATIENCE_S
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(
                "the run ended before the kill point:\n" + (tmp_path / "B.stderr").read_text()
            )
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in list_checkpoints(tmp_path / "B")][-1] == "2-rsft-000002"
    assert main(["iterate", "--resume", str(tmp_path / "B")]) == 0
    a, b = tmp_path / "A", tmp_path / "B"
    assert without_timing(records(b)) == without_timing(records(a))
    assert (b / "checkpoint/model.safetensors").read_bytes() == (
        a / "checkpoint/model.safetensors"
    ).read_bytes()
    for name in ("1-rsft.jsonl", "2-rsft.jsonl"):
        assert (b / "traces" / name).read_text() == (a / "traces" / name).read_text()
    assert (b / "rounds.md").read_text() == table


@pytest.mark.slow
def test_fine_tune_from_start_restarts_every_round_from_the_first_weights(pretrained, tmp_path):
    out = tmp_path / "start"
    assert main(["iterate", SMOKE, "--init_from", str(pretrained), "--out", str(out), *TINY,
                 *ITERATE, "--iterate.fine_tune_from", "start", "--checkpoint.keep", "9"]) == 0  # fmt: skip
    # round 2's first SFT loss is the start weights' loss on its first batch (seed + 1000)
    start, tok, cfg, _ = load_checkpoint(out / "start")
    assert load_file(out / "start" / "model.safetensors").keys() == load_file(
        pretrained / "model.safetensors").keys()  # fmt: skip
    rows = [json.loads(x) for x in (out / "traces" / "2-rsft.jsonl").read_text().splitlines()]
    examples = examples_of(rows)
    chosen = [examples[i] for i in step_examples(len(examples), 4, 1, seed=cfg.seed + 1000)]
    batch = make_sft_batch(chosen, tok.pad_id)
    ids = batch["input_ids"]
    with torch.no_grad():
        loss, _ = sft_loss(start(ids[:, :-1]), ids[:, 1:], batch["mask"])
    logged = next(r["loss"] for r in records(out) if r["phase"] == "2-rsft" and r["step"] == 1)
    assert logged == pytest.approx(loss.item(), abs=1e-5)
    # ... and not the loss of the weights round 1 left (which "previous" would start from)
    after_round_1 = load_checkpoint(out / "checkpoints" / "1-rsft-000004")[0]
    with torch.no_grad():
        other, _ = sft_loss(after_round_1(ids[:, :-1]), ids[:, 1:], batch["mask"])
    assert abs(other.item() - logged) > 1e-4


# ----------------------------------------------------------------------------- bad input


def test_sft_data_without_its_fields_is_one_line_and_exit_2(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"question": "1+1=", "solution": "2"}])
    out = tmp_path / "run"
    code = main(["train", SMOKE, "--out", str(out), *TINY,
                 "--phases", f'[{{kind = "sft", sft = {{data = "{data}"}}}}]'])  # fmt: skip
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{data}:1 has neither 'prompt'/'response' nor 'messages'" in line
    assert not out.exists()  # before any work


def test_a_teacher_with_another_tokenizer_is_one_line_and_exit_2(tmp_path, capsys):
    other = CharTokenizer(chars=DEFAULT_CHARS[:-1])  # one character fewer
    cfg = load_config(SMOKE)
    cfg.model.vocab_size = other.vocab_size
    save_checkpoint(tmp_path / "teacher", Transformer(cfg.model), other, cfg)
    out = tmp_path / "run"
    code = main(["train", SMOKE, "--out", str(out), *TINY, "--phases",
                 f'[{{kind = "distill", traces = {{teacher = "{tmp_path / "teacher"}"}}}}]'])  # fmt: skip
    assert code == 2
    assert "has a different tokenizer" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_round_with_no_correct_trace_stops_with_what_to_change(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["iterate", SMOKE, "--out", str(out), *TINY, "--pretrain.steps", "2",
                 "--iterate.rounds", "1", "--traces.num_problems", "4"])  # fmt: skip
    assert code == 1
    line = one_error_line(capsys.readouterr().err)
    assert (
        "1-rsft: none of the 4 problems x 8 samples gave a finished verified-correct trace" in line
    )
    assert "raise traces.samples_per_problem" in line


def test_iterate_without_rounds_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["iterate", SMOKE, "--out", str(tmp_path / "run")]) == 2
    assert "set iterate.rounds" in one_error_line(capsys.readouterr().err)


@pytest.mark.slow
@pytest.mark.parametrize("start", ["scratch", "model"])
def test_sft_from_scratch_or_a_hugging_face_model(tmp_path, start):
    """SFT through the CLI from a from-scratch model (no pretraining) and from a --model
    checkpoint (chat messages through its template): the loss falls, the weights move."""
    rows = [{"messages": [{"role": "user", "content": f"{a}+{b}*2="},
                          {"role": "assistant", "content": f"<think></think><answer>{a + 2 * b}</answer>"}]}
            for a in range(1, 5) for b in range(2, 4)]  # fmt: skip
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    args = ["train", SMOKE, "--out", str(tmp_path / "run"), *TINY, "--pretrain.steps", "0",
            "--reward.workers", "0", "--eval.max_new_tokens", "16", "--phases",
            f'[{{kind = "sft", sft = {{data = "{data}", steps = 6, lr = 3e-3, batch_size = 8}}}}]']  # fmt: skip
    if start == "model":
        pytest.importorskip("transformers")
        from test_byo_model import qwen2_checkpoint

        folder = qwen2_checkpoint(tmp_path / "qwen2")
        args += ["--model", str(folder)]
    assert main(args) == 0
    losses = [r["loss"] for r in records(tmp_path / "run") if r["phase"] == "1-sft"]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.1
    _, tokenizer, _, _ = load_checkpoint(tmp_path / "run")
    prompt = load_examples(data, SFTConfig(), tokenizer)[0].prompt_ids
    if start == "model":  # the chat template wrote the prompt; the response ends with <|im_end|>
        assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
    else:
        assert tokenizer.decode(prompt) == "<bos>1+2*2=\n"
