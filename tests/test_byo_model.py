"""Bring your own model: `rlvr train CONFIG --model HF_FOLDER` trains a Hugging Face checkpoint.

A tiny Qwen2 checkpoint with a ChatML tokenizer is built in code (no downloads), trained for
two GRPO steps through the real CLI, and its saved checkpoint must load in transformers with
the same logits; a stopped run resumes exactly; bad folders and tokenizers exit with code 2.
"""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from rlvr.checkpoint import load_checkpoint  # noqa: E402
from rlvr.cli import main, recipe_path  # noqa: E402
from rlvr.config import load_config  # noqa: E402
from rlvr.hf import R1_SYSTEM_PROMPT, HFTokenizer  # noqa: E402
from rlvr.report import depends_on_clock  # noqa: E402
from rlvr.sampling.rollout import prompt_text, response_text  # noqa: E402
from rlvr.tasks import Problem  # noqa: E402

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
RUN = [
    "--grpo.steps", "2", "--grpo.max_new_tokens", "16", "--grpo.eval_every", "0",
    "--eval.num_problems", "8", "--eval.num_samples", "0", "--eval.max_new_tokens", "16",
    "--checkpoint.every", "1", "--reward.workers", "0", "--threads", "1",
    "--system_prompt", "r1", "--reward.functions", '{"test_byo_model:digits" = 1.0}',
]  # fmt: skip


def digits(completion: str, problem) -> float:
    """A reward that varies among a random model's samples, so GRPO's updates are not 0."""
    return sum(c.isdigit() for c in completion) / 10


def chat_tokenizer(path):
    """A byte-level BPE (any text round-trips) with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    texts = [R1_SYSTEM_PROMPT, "3+4*2=", "<think>4*2=8\n3+8=11</think><answer>11</answer>"]
    backend.train_from_iterator(texts * 5, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", clean_up_tokenization_spaces=False
    )
    fast.chat_template = CHATML
    fast.save_pretrained(str(path))
    return fast


def word_tokenizer(path):
    """A tokenizer that knows digits and operators only: the R1 tags become [UNK]."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["[UNK]", "</s>", *"0123456789+*-=", "\n"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="</s>", unk_token="[UNK]"
    )
    fast.save_pretrained(str(path))
    return fast


def qwen2_checkpoint(path, tokenizer=chat_tokenizer):
    """A tiny Qwen2 checkpoint folder as transformers writes it, weights far from init."""
    fast = tokenizer(path)
    config = transformers.Qwen2Config(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, eos_token_id=fast.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.copy_(1.0 + 0.2 * noise if "norm" in name else 0.15 * noise)
    model.save_pretrained(str(path))
    # A chat model stops on more than its eos: generation_config.json lists the others.
    stop = [fast.eos_token_id, fast.convert_tokens_to_ids("<|endoftext|>")]
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": stop}))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return qwen2_checkpoint(tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(scope="module")
def trained(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("byo") / "run"
    code = main(["train", str(recipe_path("smoke")), "--model", str(checkpoint),
                 "--out", str(out), *RUN])  # fmt: skip
    assert code == 0
    return out


def grpo_rows(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [
        {k: v for k, v in r.items() if not depends_on_clock(k)}
        for r in rows
        if r["phase"] == "grpo"
    ]


def test_prompts_go_through_the_chat_template_with_the_system_prompt(checkpoint):
    tokenizer = HFTokenizer.from_folder(checkpoint)
    problem = Problem(id="p", prompt="3+4*2=", answer="11", verifier="arithmetic", split="test")
    text = prompt_text(tokenizer, problem, None, R1_SYSTEM_PROMPT)
    assert text == (
        f"<|im_start|>system\n{R1_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\n3+4*2=<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt_text(tokenizer, problem, False).endswith("assistant\n<think></think>")
    end = tokenizer.token_to_id("<|im_end|>")
    assert tokenizer.stop_ids == [end, tokenizer.token_to_id("<|endoftext|>")]
    ids = tokenizer.encode("<think>x</think><answer>11</answer>")
    assert response_text(tokenizer, ids + [end]) == "<think>x</think><answer>11</answer>"


def test_a_hf_model_trains_and_saves_a_folder_transformers_loads(trained, checkpoint):
    cfg = load_config(trained / "config.toml")
    assert cfg.model_path == str(checkpoint) and cfg.system_prompt == "r1"
    original = json.loads((checkpoint / "config.json").read_text())
    assert cfg.model.attention_bias and cfg.model.vocab_size == original["vocab_size"]
    assert cfg.model.hidden_size == 32 and cfg.model.tie_word_embeddings
    assert not (trained / "pretrained").exists()  # no pretraining of a loaded model
    assert [r["step"] for r in grpo_rows(trained)] == [1, 2]

    ours, tokenizer, _, state = load_checkpoint(trained)
    assert isinstance(tokenizer, HFTokenizer) and state["step"] == 2
    assert tokenizer.stop_ids == HFTokenizer.from_folder(checkpoint).stop_ids
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(trained / "checkpoint"))
    assert type(theirs).__name__ == "Qwen2ForCausalLM"
    start = transformers.Qwen2ForCausalLM.from_pretrained(str(checkpoint))
    ids = torch.randint(
        0, original["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        a, b = ours.eval()(ids), theirs.eval()(input_ids=ids).logits
        assert not torch.allclose(a, start(input_ids=ids).logits)  # GRPO changed the weights
    assert a.abs().max() > 0.5
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)

    fast = transformers.PreTrainedTokenizerFast.from_pretrained(str(trained / "checkpoint"))
    text = tokenizer.format_prompt("3+4*2=", R1_SYSTEM_PROMPT) + "<think>8</think>"
    assert fast.encode(text, add_special_tokens=False) == tokenizer.encode(text)
    assert fast.apply_chat_template(
        [{"role": "user", "content": "3+4*2="}], tokenize=False, add_generation_prompt=True
    ) == tokenizer.format_prompt("3+4*2=")


def test_eval_of_a_hf_run_reproduces_its_numbers(trained, capsys):
    summary = json.loads((trained / "summary.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(trained)]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["accuracy"] == summary["final_accuracy"]
    assert metrics["response_length"] == summary["final_response_length"]


def test_a_stopped_hf_run_resumes_exactly(trained, checkpoint, tmp_path):
    out = tmp_path / "run"
    once = ["train", str(recipe_path("smoke")), "--model", str(checkpoint), "--out", str(out)]
    assert main([*once, *RUN, "--grpo.steps", "1"]) == 0
    assert main(["train", "--resume", str(out), "--grpo.steps=2"]) == 0
    assert grpo_rows(out) == grpo_rows(trained)
    resumed, _, _, _ = load_checkpoint(out)
    straight, _, _, _ = load_checkpoint(trained)
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_folder_that_is_not_a_checkpoint_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = ["train", str(recipe_path("smoke")), "--model", str(tmp_path / "empty"),
            "--out", str(tmp_path / "run"), *RUN]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlvr: --model ") and "no config.json" in err and "\n" not in err
    assert not (tmp_path / "run").exists()  # stopped before any work


def test_a_tokenizer_that_mangles_the_tags_exits_2(tmp_path, capsys):
    folder = qwen2_checkpoint(tmp_path / "words", tokenizer=word_tokenizer)
    args = ["train", str(recipe_path("smoke")), "--model", str(folder),
            "--out", str(tmp_path / "run"), *RUN]  # fmt: skip
    capsys.readouterr()  # transformers' save_pretrained progress bars
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("rlvr: The tokenizer in")
        and str(folder) in err
        and "<think>" in err
        and "\n" not in err
    )


def test_a_system_prompt_needs_a_hf_model(tmp_path, capsys):
    args = ["train", str(recipe_path("smoke")), "--out", str(tmp_path / "run"), *RUN]
    assert main(args) == 2
    assert "system_prompt" in capsys.readouterr().err
