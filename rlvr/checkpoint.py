"""Checkpoints: a folder that Hugging Face tools and `rlvr eval` can both read, written atomically.

    checkpoint/
      model.safetensors     weights under Hugging Face names (lm_head omitted when tied)
      config.json           Hugging Face config (LlamaForCausalLM for the from-scratch model,
                            the loaded model's family for `--model` runs)
      tokenizer.json, tokenizer_config.json, ...
                            the tokenizer as PreTrainedTokenizerFast reads it, chat template
                            included (written by `rlvr.hf.save_hf`; needs transformers)
      rlvr_tokenizer.json   from-scratch runs: our character tokenizer
      generation_config.json  `--model` runs: the token ids that end a completion
      rlvr_config.toml      the resolved run config
      state.json            phase, step, policy_version, metrics at save time
      trainer_state.pt      resumable checkpoints only: optimizer, RNG states, data position,
                            the reference model when one is used (`torch.load`, weights_only);
                            LoRA runs: the adapters ("lora"), while model.safetensors holds the
                            base weights (the final checkpoint/ has the adapters merged in)

A checkpoint is written into a temporary sibling folder, each file fsynced, then renamed
over the old one, so a crash mid-save leaves the previous checkpoint intact. The folder is
what `AutoModelForCausalLM.from_pretrained` and `PreTrainedTokenizerFast.from_pretrained`
load, with the same logits.

A run keeps its resumable checkpoints in run_dir/checkpoints/<phase>-<step>/ (pretrain-000400,
grpo-000020, ...; a run with [[phases]]: 1-sft-000040, 2-grpo-000020, ...), the newest
`checkpoint.keep` of them; `latest_checkpoint` finds the one `rlvr train --resume` continues
from.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rlvr.config import PHASE_KINDS, Config, ConfigError, load_config, to_toml
from rlvr.errors import TrainingError
from rlvr.hf import save_hf
from rlvr.lora import base_layers, merged_copy
from rlvr.model import Transformer
from rlvr.tokenizer import FILENAME as CHAR_TOKENIZER
from rlvr.tokenizer import CharTokenizer

WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer_state.pt"
CHECKPOINTS = "checkpoints"
PHASES = ("pretrain", "grpo")  # in run order
"""The phases of a plain run. A run with [[phases]] names its checkpoints <i>-<kind>-<step>
(2-grpo-000020): phase i, after pretraining and before phase i + 1."""


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
        save_hf(model, tokenizer, tmp, save_file)  # weights, config.json, tokenizer files
        (tmp / "rlvr_config.toml").write_text(to_toml(config))
        (tmp / "state.json").write_text(json.dumps(state or {}, indent=2))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE)
        for f in tmp.iterdir():
            if f.is_file():
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


def _has_weights(folder: Path) -> bool:
    return (folder / WEIGHTS).is_file() or (folder / f"{WEIGHTS}.index.json").is_file()


def find_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint folder or a run folder (whose latest checkpoint is used)."""
    path = Path(path)
    if _has_weights(path):
        return path
    for name in ("checkpoint", "checkpoints/final", "pretrained"):
        if _has_weights(path / name):
            return path / name
    raise ConfigError(
        f"{path} holds no checkpoint ({WEIGHTS} not found); pass a run folder or a checkpoint folder."
    )


def load_checkpoint(path: str | Path) -> tuple[Transformer, CharTokenizer, Config, dict]:
    """Load model, tokenizer, run config and state from a checkpoint or run folder.

    A from-scratch run's checkpoint (rlvr_tokenizer.json) comes back as our Transformer and
    CharTokenizer; one of a `--model` run through `rlvr.hf.load_hf_model` (its tokenizer an
    `HFTokenizer`).
    """
    path = find_checkpoint(path)
    config = load_config(path / "rlvr_config.toml")
    if (path / CHAR_TOKENIZER).is_file():
        try:
            tokenizer = CharTokenizer.load(path)
        except (ValueError, OSError, KeyError) as e:
            raise ConfigError(f"Checkpoint {path}: {e}".rstrip(".") + ".") from e
        if tokenizer.vocab_size != config.model.vocab_size:
            raise ConfigError(
                f"Checkpoint {path}: its tokenizer has {tokenizer.vocab_size} tokens but the "
                f"model {config.model.vocab_size}; the folder is damaged - use another checkpoint."
            )
        model = Transformer(config.model)
        weights = load_file(str(path / WEIGHTS))
        if config.model.tie_word_embeddings:
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
        model.load_state_dict(weights)
    else:
        from rlvr.hf import load_hf_model

        try:
            model, tokenizer = load_hf_model(path)
        except (ValueError, ImportError) as e:
            raise ConfigError(f"Checkpoint {path}: {e}".rstrip(".") + ".") from e
    state = json.loads((path / "state.json").read_text()) if (path / "state.json").exists() else {}
    return model, tokenizer, config, state


# ----------------------------------------------------------------------------- resumable


def checkpoint_dir(run_dir: str | Path, phase: str, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{phase}-{step:06d}"


def phase_order(label: str) -> int | None:
    """Where a checkpoint's phase label falls in a run: pretrain 0, a plain run's grpo 1, phase
    i of a multi-phase run ("i-kind") i; None for a name that is no checkpoint's."""
    if label in PHASES:
        return PHASES.index(label)
    index, _, kind = label.partition("-")
    if index.isdigit() and not index.startswith("0") and kind in PHASE_KINDS:
        return int(index)
    return None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete resumable checkpoints, oldest first (by phase, then step)."""
    folder = Path(run_dir) / CHECKPOINTS
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            label, _, step = path.name.rpartition("-")
            order = phase_order(label)
            # temporary folders start with "." and never match; a folder without its
            # trainer state was not written by a completed save
            if order is not None and step.isdigit() and (path / TRAINER_STATE).is_file():
                found.append((order, int(step), path))
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
    # On the CPU: a GPU run's state resumes on any machine (the optimizer moves its state
    # to its parameters' device when it loads it).
    return torch.load(Path(path) / TRAINER_STATE, map_location="cpu", weights_only=True)


class Checkpointer:
    """Writes a run's resumable checkpoints into run_dir/checkpoints and keeps the newest few;
    `save_final` writes the policies to use (pretrained/, checkpoint/)."""

    def __init__(self, run_dir: Path, cfg: Config, tokenizer: CharTokenizer) -> None:
        self.run_dir, self.cfg, self.tokenizer = run_dir, cfg, tokenizer
        self.last: Path | None = latest_checkpoint(run_dir)
        # A run killed in the middle of a save leaves its temporary folder (".<name>.tmp-PID"
        # or ".<name>.old-PID") behind; none of them is a checkpoint, so a resumed run
        # clears them.
        for stale in (run_dir / CHECKPOINTS).glob(".*"):
            shutil.rmtree(stale, ignore_errors=True)

    def due(self, step: int, last_step: int) -> bool:
        every = self.cfg.checkpoint.every
        return step == last_step or (every > 0 and step % every == 0)

    def save(self, phase: str, step: int, model: Transformer, trainer_state: dict) -> Path:
        """With LoRA adapters, model.safetensors holds the base weights (which LoRA never
        changes) and trainer_state["lora"] the adapters: a resume puts back both, bitwise."""
        path = checkpoint_dir(self.run_dir, phase, step)
        try:
            with base_layers(model):
                save_checkpoint(path, model, self.tokenizer, self.cfg,
                                {"phase": phase, "step": step, "policy_version": step}, trainer_state)  # fmt: skip
        except OSError as e:
            kept = f"{self.last} is intact" if self.last else "no earlier checkpoint exists"
            raise TrainingError(
                f"Could not write checkpoint {path} ({e.strerror or e}); {kept}: free space and "
                f"resume with `rlvr train --resume {self.run_dir}`."
            ) from e
        self.last = path
        prune_checkpoints(self.run_dir, self.cfg.checkpoint.keep)
        return path

    def save_final(self, name: str, model: Transformer, state: dict) -> Path:
        """Write run_dir/<name> (pretrained/, checkpoint/): a policy to use, not to resume.
        LoRA adapters are merged into the weights: a plain Hugging Face folder."""
        path = self.run_dir / name
        try:
            return save_checkpoint(path, merged_copy(model), self.tokenizer, self.cfg, state)
        except OSError as e:
            kept = f"{self.last} is intact" if self.last else "no resumable checkpoint exists"
            raise TrainingError(
                f"Could not write {path} ({e.strerror or e}); {kept}: free space and resume "
                f"with `rlvr train --resume {self.run_dir}`."
            ) from e
