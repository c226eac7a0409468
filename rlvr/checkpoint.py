"""Checkpoints: a folder that Hugging Face tools and `rlvr eval` can both read, written atomically.

    checkpoint/
      model.safetensors     weights under Hugging Face Llama names (lm_head omitted when tied)
      config.json           Hugging Face LlamaForCausalLM config
      rlvr_tokenizer.json   our character tokenizer
      rlvr_config.toml      the resolved run config
      state.json            phase, step, policy_version, metrics at save time
      trainer_state.pt      resumable checkpoints only: optimizer, RNG states, data position,
                            the reference model when one is used (`torch.load`, weights_only)

A checkpoint is written into a temporary sibling folder, each file fsynced, then renamed
over the old one, so a crash mid-save leaves the previous checkpoint intact.

A run keeps its resumable checkpoints in run_dir/checkpoints/<phase>-<step>/ (pretrain-000400,
grpo-000020, ...), the newest `checkpoint.keep` of them; `latest_checkpoint` finds the one
`rlvr train --resume` continues from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rlvr.config import Config, ConfigError, load_config, to_toml
from rlvr.model import ModelConfig, Transformer
from rlvr.tokenizer import CharTokenizer

WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer_state.pt"
CHECKPOINTS = "checkpoints"
PHASES = ("pretrain", "grpo")  # in run order


def hf_config(model_cfg: ModelConfig, tokenizer: CharTokenizer, dtype: torch.dtype) -> dict:
    """A Hugging Face config.json for our decoder (it is a Llama)."""
    cfg = dataclasses.asdict(model_cfg)
    cfg.update(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        head_dim=model_cfg.hidden_size // model_cfg.num_attention_heads,
        hidden_act="silu",
        bos_token_id=tokenizer.bos_id,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id,
        torch_dtype=str(dtype).removeprefix("torch."),
    )
    return cfg


def save_checkpoint(
    path: str | Path,
    model: Transformer,
    tokenizer: CharTokenizer,
    config: Config,
    state: dict | None = None,
    trainer_state: dict | None = None,
) -> Path:
    """Write a checkpoint folder atomically; returns its path.

    trainer_state: what a resumed run needs beyond the weights (optimizer, RNG states, data
    position); saved with torch.save and read back by `load_trainer_state`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            # lm_head shares embed_tokens' matrix; Hugging Face omits it the same way
            weights.pop("lm_head.weight", None)
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
        dtype = next(model.parameters()).dtype
        (tmp / "config.json").write_text(
            json.dumps(hf_config(model.config, tokenizer, dtype), indent=2)
        )
        tokenizer.save(tmp)
        (tmp / "rlvr_config.toml").write_text(to_toml(config))
        (tmp / "state.json").write_text(json.dumps(state or {}, indent=2))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)
        for f in tmp.iterdir():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the previous checkpoint stays as it was
        raise

    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def find_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder or a run folder (whose latest checkpoint is used)."""
    path = Path(path)
    if (path / WEIGHTS).is_file():
        return path
    for name in ("checkpoint", "checkpoints/final", "pretrained"):
        if (path / name / WEIGHTS).is_file():
            return path / name
    raise ConfigError(
        f"{path} holds no checkpoint ({WEIGHTS} not found); pass a run folder or a checkpoint folder."
    )


def load_checkpoint(path: str | Path) -> tuple[Transformer, CharTokenizer, Config, dict]:
    """Load model, tokenizer, run config and state from a checkpoint or run folder."""
    path = find_checkpoint(path)
    config = load_config(path / "rlvr_config.toml")
    tokenizer = CharTokenizer.load(path)
    model = Transformer(config.model)
    weights = load_file(str(path / WEIGHTS))
    if config.model.tie_word_embeddings:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    model.load_state_dict(weights)
    state = json.loads((path / "state.json").read_text()) if (path / "state.json").exists() else {}
    return model, tokenizer, config, state


# ----------------------------------------------------------------------------- resumable


def checkpoint_dir(run_dir: str | Path, phase: str, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{phase}-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete resumable checkpoints, oldest first (by phase, then step)."""
    folder = Path(run_dir) / CHECKPOINTS
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            phase, _, step = path.name.partition("-")
            # temporary folders start with "." and never match; a folder without its
            # trainer state was not written by a completed save
            if phase in PHASES and step.isdigit() and (path / TRAINER_STATE).is_file():
                found.append((PHASES.index(phase), int(step), path))
    return [path for _, _, path in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` resumable checkpoints."""
    for path in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def load_trainer_state(path: str | Path) -> dict:
    """The trainer state of a resumable checkpoint (tensors and plain Python values only)."""
    return torch.load(Path(path) / TRAINER_STATE, weights_only=True)
