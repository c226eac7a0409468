"""Checkpoints: weights, tokenizer and config come back exactly; a failed save keeps the old one."""

from __future__ import annotations

import json

import pytest
import torch

from rlvr.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from rlvr.config import Config, ConfigError
from rlvr.model import ModelConfig, Transformer
from rlvr.tokenizer import CharTokenizer


def tiny(tie: bool = True) -> tuple[Transformer, CharTokenizer, Config]:
    tokenizer = CharTokenizer()
    cfg = Config()
    cfg.model = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            tie_word_embeddings=tie)  # fmt: skip
    torch.manual_seed(0)
    return Transformer(cfg.model), tokenizer, cfg


@pytest.mark.parametrize("tie", [True, False])
def test_round_trip_gives_identical_logits(tmp_path, tie):
    model, tokenizer, cfg = tiny(tie)
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, cfg, {"step": 7})
    loaded, tok2, cfg2, state = load_checkpoint(tmp_path / "ckpt")
    ids = torch.tensor([tokenizer.encode("<bos>12+3*4-5=\n<think>")])
    assert torch.equal(model(ids), loaded(ids))
    assert tok2.encode("<answer>7</answer>") == tokenizer.encode("<answer>7</answer>")
    assert cfg2 == cfg and state == {"step": 7}
    hf = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert hf["model_type"] == "llama" and hf["eos_token_id"] == tokenizer.eos_id


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, tokenizer, cfg = tiny()
    save_checkpoint(tmp_path / "ckpt", model, tokenizer, cfg, {"step": 1})
    before = (tmp_path / "ckpt" / "model.safetensors").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("rlvr.checkpoint.save_file", disk_full)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ckpt", model, tokenizer, cfg, {"step": 2})
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == before
    assert json.loads((tmp_path / "ckpt" / "state.json").read_text()) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary left behind


def test_a_folder_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        find_checkpoint(tmp_path)
