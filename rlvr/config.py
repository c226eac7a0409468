"""Run configuration: dataclasses with one docstring per field, TOML files, dotted overrides.

A run is described by one `Config`. It is read from a TOML file whose tables mirror the
dataclasses (`[model]`, `[task]`, `[pretrain]`, `[grpo]`, `[eval]`), then command-line
overrides such as `--grpo.beta 0.02` are applied, then the whole thing is checked. Every
mistake a user can make (unknown key, wrong type, impossible value) raises `ConfigError`
with one sentence that names the key and the fix; the CLI prints it and exits with code 2.

    cfg = load_config("recipes/demo.toml", ["--grpo.beta", "0.02"])
    print(to_toml(cfg))
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import difflib
import inspect
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from rlvr.errors import ConfigError
from rlvr.model import ModelConfig

__all__ = ["Config", "ConfigError", "load_config", "apply_overrides", "to_toml", "validate"]


@dataclass
class TaskConfig:
    name: str = "arithmetic"
    """Where the problems come from: "arithmetic" or "countdown" (procedural, with synthetic
    solutions for pretraining) or "dataset" (a local JSONL file)."""
    options: dict = field(default_factory=dict)
    """Keyword arguments for the task's constructor, e.g. {num_ops = 3} for arithmetic."""


@dataclass
class PretrainConfig:
    steps: int = 3000
    """Optimizer steps of next-token training on synthetic solutions (0 skips pretraining)."""
    batch_size: int = 64
    """Examples per optimizer step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warmup, cosine decay to lr/10)."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warmup."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices (not on norms)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 turns clipping off)."""
    think_fraction: float = 0.4
    """Fraction of examples that show the step-by-step trace; the rest answer directly."""
    slip_fraction: float = 0.25
    """Fraction of traces with one arithmetic mistake, so the model learns imperfect thinking."""


@dataclass
class GRPOConfig:
    steps: int = 60
    """GRPO steps; each samples num_prompts x group_size completions and updates the policy."""
    num_prompts: int = 8
    """Problems per step."""
    group_size: int = 8
    """Completions sampled per problem (k); advantages are relative within each group."""
    max_new_tokens: int = 64
    """Longest completion; longer ones are cut off (finish reason "length")."""
    ignore_eos: bool = False
    """Sample exactly max_new_tokens tokens, sampling on past EOS (vLLM's ignore_eos)."""
    min_new_tokens: int = 0
    """The first min_new_tokens tokens of a completion never end it: the stop tokens are masked
    out of the sampling distribution until then (transformers' min_new_tokens, vLLM's
    min_tokens). min_new_tokens = max_new_tokens forces the length as TRL benchmarks do."""
    temperature: float = 1.0
    """Sampling temperature; the learner divides its logits by the same value."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 turns it off)."""
    top_k: int = 0
    """Sample among the k most likely tokens only (0 turns it off)."""
    lr: float = 5e-5
    """AdamW learning rate (constant after warmup)."""
    warmup_steps: int = 0
    """Steps of linear learning-rate warmup."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 turns clipping off)."""
    beta: float = 0.04
    """Weight of the k3 KL penalty to the frozen reference model (0 loads no reference)."""
    epsilon: float = 0.2
    """Lower clip range of the importance ratio: ratio >= 1 - epsilon."""
    epsilon_high: float = 0.28
    """Upper clip range of the importance ratio: ratio <= 1 + epsilon_high (DAPO clip-higher)."""
    num_iterations: int = 2
    """Optimizer passes (mu) over each sampled batch; old logprobs come from sampling time."""
    num_minibatches: int = 1
    """Optimizer steps per pass: the batch of num_prompts x group_size splits into this many."""
    loss_type: str = "dapo"
    """How token losses are averaged: "grpo" (per sequence, then over sequences), "bnpo" (over
    the micro-batch's tokens), "dr_grpo" (sum / (sequences x max_new_tokens)), "dapo" (over
    all tokens of the optimizer batch), "gspo" (sequence-level ratio), "cispo" (clipped,
    stop-gradient importance weight). See rlvr/learning/algorithms.py for the formulas."""
    advantage: str = "grpo"
    """Advantage estimator: "grpo" (group z-score), "dr_grpo" (group mean only), "batch_std"
    (group mean, batch std), "rloo" (leave-one-out), "reinforce_pp" (REINFORCE++: group
    mean, then batch z-score)."""
    reward_combine: str = "sum_then_normalize"
    """With several reward parts: "sum_then_normalize" (weighted sum, then the estimator),
    "normalize_then_sum" (the estimator per part, then the weighted sum) or "gdpo"."""
    dynamic_sampling: bool = False
    """DAPO dynamic sampling: drop groups whose rewards are all equal and sample more problems
    until the batch is full (at most max_sampling_rounds rounds)."""
    max_sampling_rounds: int = 4
    """Sampling rounds per step with dynamic_sampling; the step trains on what it has then."""
    delta: float = 0.0
    """Dual clip: for negative advantages the ratio term is capped at delta (e.g. 3.0; 0 off)."""
    mask_truncated: bool = False
    """Give completions cut off at max_new_tokens no loss (DAPO's overlong filtering)."""
    entropy_coef: float = 0.0
    """Weight of an entropy bonus in the loss (entropy is always logged)."""
    ref_update_every: int = 0
    """Copy the policy into the reference model every this many steps (0: keep the start)."""
    is_level: str = "none"
    """Importance-sampling correction between the sampler's and the learner's logprobs:
    "none", "token" or "sequence" (costs one extra forward pass per step)."""
    is_mode: str = "truncate"
    """"truncate" caps the weight at is_cap (TIS); "mask" drops tokens/sequences above it."""
    is_cap: float = 2.0
    """Largest importance weight kept."""
    eval_every: int = 20
    """Evaluate on the held-out split every this many GRPO steps (0: only before and after)."""


@dataclass
class RewardConfig:
    accuracy_weight: float = 1.0
    """Weight of the task verifier's accuracy (1 correct, 0 otherwise)."""
    format_weight: float = 0.1
    """Weight of the format check (<think>...</think><answer>...</answer>)."""
    overlong_buffer: int = 0
    """DAPO soft overlong punishment: completions longer than grpo.max_new_tokens minus this
    many tokens are penalised linearly, down to -1 at the limit (0 turns it off)."""
    overlong_weight: float = 1.0
    """Weight of the overlong penalty."""
    functions: dict = field(default_factory=dict)
    """Extra reward functions and their weights, {"module:function" = weight}; each is called
    as fn(completion, problem) -> float | Verdict in the verifier workers."""
    workers: int = 1
    """Verifier worker processes (0 verifies inside the training process, with no timeout)."""
    timeout_s: float = 10.0
    """Seconds one verification may run before its worker is killed (status "timeout")."""
    memory_mb: int = 2048
    """Address-space limit of each verifier worker, in MiB."""


@dataclass
class CheckpointConfig:
    every: int = 20
    """Save a resumable checkpoint every this many steps of pretraining and of GRPO (0: only
    at the end of each phase)."""
    keep: int = 2
    """How many resumable checkpoints to keep in run_dir/checkpoints (the newest ones)."""


@dataclass
class EvalConfig:
    num_problems: int = 500
    """Held-out problems; 200 give about +-0.05 noise, so use at least 500."""
    num_samples: int = 8
    """Samples per problem for pass@k and maj@k (k = num_samples); 0 skips sampled metrics."""
    temperature: float = 1.0
    """Temperature of the samples for pass@k and maj@k (greedy accuracy uses 0)."""
    max_new_tokens: int = 64
    """Longest evaluated completion."""
    batch_size: int = 256
    """Problems per engine call."""
    num_logged_samples: int = 20
    """Completions written to samples/ at each evaluation."""
    think_budgets: list = field(default_factory=list)
    """Thinking budgets B (tokens, each at most max_new_tokens) of the test-time compute
    curve: accuracy with the forced thinking cut at B tokens and `</think><answer>` appended
    (s1's budget forcing), before and after GRPO; [] skips it."""


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The linear layers of rlvr's Transformer (and of Llama/Qwen/Mistral checkpoints) LoRA can adapt."""


@dataclass
class LoraConfig:
    rank: int = 0
    """LoRA rank r of the adapters GRPO trains (peft); 0 turns LoRA off (full fine-tuning).
    The final checkpoint/ has the adapters merged into the weights."""
    alpha: float = 16.0
    """LoRA scaling numerator: the update is (alpha / rank) * B @ A."""
    dropout: float = 0.0
    """Dropout on the adapters' input during training (0: none)."""
    target_modules: list = field(default_factory=lambda: list(LORA_TARGETS))
    """Names of the linear layers that get adapters: any of q_proj, k_proj, v_proj, o_proj,
    gate_proj, up_proj, down_proj (with model_path: any linear layer of that model)."""


@dataclass
class Config:
    seed: int = 0
    """Seed for problems, initialisation and sampling; the same seed gives the same run."""
    threads: int = 2
    """torch CPU threads (results are deterministic for a fixed thread count)."""
    runs_dir: str = "runs"
    """Folder that holds run folders; each run gets runs_dir/<name>-<time> unless run_dir is set."""
    name: str = "run"
    """Run name, used in the run folder's name."""
    run_dir: str = ""
    """Exact run folder (the CLI's --out); overrides runs_dir and name."""
    init_from: str = ""
    """Run folder or checkpoint folder to start from instead of pretraining from scratch."""
    model_path: str = ""
    """A local Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer) to train
    instead of a from-scratch model (the CLI's --model); pretraining is skipped and the model
    table is filled from the checkpoint."""
    system_prompt: str = ""
    """System prompt put before every question through the model's chat template ("" for
    none; "r1" for DeepSeek-R1-Zero's think/answer instruction). Needs a Hugging Face model."""
    max_bad_steps: int = 3
    """Stop after this many steps in a row whose loss or gradient was NaN or infinite (such
    an update is skipped and counted in skipped_updates); 0 never stops."""
    dtype: str = "float32"
    """Precision of the forward passes (pretraining, GRPO learner and reference, sampling):
    "float32", or "bfloat16" (torch.autocast; the weights, optimizer state, log-probs and
    loss stay float32)."""
    device: str = "auto"
    """Where the model trains and samples: "auto" (the first CUDA GPU when torch sees one,
    else the CPU), "cpu", "cuda" or "cuda:N". Verification always runs on the CPU."""
    plots: bool = True
    """Draw plots/<phase>.png at the end of the run (matplotlib takes a few seconds; the
    same curves are in metrics.jsonl and TensorBoard)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)


# ----------------------------------------------------------------------------- field docs


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The string literal written under each dataclass field, keyed by field name."""
    docs: dict[str, str] = {}
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return docs
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type name, default, doc) for every leaf field; feeds `rlvr train --help`."""
    rows = []
    hints = typing.get_type_hints(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(kind):
            rows += describe(kind, f"{prefix}{f.name}.")
        else:
            rows.append((prefix + f.name, _type_name(kind), value, field_docs(cls).get(f.name, "")))
    return rows


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", str(kind))


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a TOML file (or the defaults), apply `--a.b value` overrides, and validate."""
    data: dict = {}
    where = "the defaults"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist; pass the path of a TOML file.")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"Config file {path} is not UTF-8 text ({e}); save it as UTF-8."
            ) from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"Config file {path} is not valid TOML ({e}); fix that line.") from e
        except RecursionError as e:
            raise ConfigError(f"Config file {path} nests tables or arrays too deeply.") from e
    cfg = Config()
    _apply(cfg, data, "", where)
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `--a.b value` command-line overrides to `cfg` in place, then validate it."""
    for key, raw in parse_overrides(overrides):
        _set_dotted(cfg, key, raw)
    validate(cfg)
    return cfg


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    """['--grpo.beta', '0.02', '--seed=3'] -> [('grpo.beta', '0.02'), ('seed', '3')]."""
    pairs = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"Unexpected argument {arg!r}; overrides look like --grpo.beta 0.02.")
        key = arg[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(args):
            raw = args[i + 1]
            i += 2
        else:
            raise ConfigError(f"Override --{key} has no value; write --{key} VALUE.")
        pairs.append((key, raw))
    return pairs


def _apply(obj: Any, data: dict, prefix: str, where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        dotted = prefix + key
        if key not in names:
            raise ConfigError(f"Unknown config key {dotted!r} in {where}{_suggest(key, names)}.")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted!r} in {where} must be a table ([{dotted}]).")
            _apply(getattr(obj, key), value, dotted + ".", where)
        else:
            setattr(obj, key, _coerce(value, kind, dotted, where))


def _set_dotted(cfg: Config, key: str, raw: str) -> None:
    obj: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            dotted = ".".join(parts[: i + 1])
            raise ConfigError(
                f"Unknown config key {dotted!r} on the command line{_suggest(part, names)}."
            )
        kind = typing.get_type_hints(type(obj))[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(kind):
                raise ConfigError(
                    f"{key!r} is a table; override one of its keys, e.g. --{key}.{dataclasses.fields(kind)[0].name}."
                )
            setattr(obj, part, _coerce(_parse_scalar(raw, kind), kind, key, "the command line"))
        elif not dataclasses.is_dataclass(kind):
            raise ConfigError(
                f"{'.'.join(parts[: i + 1])!r} is not a table, so {key!r} does not exist."
            )
        else:
            obj = getattr(obj, part)


def _parse_scalar(raw: str, kind: Any) -> Any:
    """Command-line text -> a TOML value, so overrides and files share one type check."""
    if kind is str:
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return raw  # left as text; _coerce names the expected type


def _coerce(value: Any, kind: Any, key: str, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is dict and isinstance(value, dict):
        return value
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(
            f"{key!r} in {where} must be {_article(kind)} {_type_name(kind)}, got {value!r}."
        )
    return value


def _article(kind: Any) -> str:
    return "an" if _type_name(kind)[0] in "aeiou" else "a"


def _suggest(key: str, names: list[str]) -> str:
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known keys are {', '.join(names)}"


# ----------------------------------------------------------------------------- validation


def validate(cfg: Config) -> None:
    """Reject impossible values before any work starts."""
    from rlvr.tasks import TASKS

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    m, p, g, e = cfg.model, cfg.pretrain, cfg.grpo, cfg.eval
    need(cfg.threads >= 1, "threads must be at least 1; set threads = 2.")
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):  # fmt: skip
        value = getattr(m, name)
        need(value > 0, f"model.{name} must be greater than 0, got {value}.")
    sections = {"": cfg, "model.": m, "pretrain.": p, "grpo.": g, "reward.": cfg.reward,
                "eval.": e, "checkpoint.": cfg.checkpoint, "lora.": cfg.lora}  # fmt: skip
    for prefix, section in sections.items():
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, float):
                need(
                    math.isfinite(value),
                    f"{prefix}{f.name} must be a finite number, got {value}.",
                )
    for name in ("head_dim", "sliding_window"):
        value = m.__dict__.get(f"_{name}", getattr(m, name, 0))
        need(value >= 0, f"model.{name} must be 0 (off/derived) or more, got {value}.")
    need(
        m.rope_theta > 0 and m.rms_norm_eps > 0,
        "model.rope_theta and model.rms_norm_eps must be above 0.",
    )
    for key, value in [
        ("pretrain.weight_decay", p.weight_decay),
        ("pretrain.grad_clip", p.grad_clip),
        ("grpo.weight_decay", g.weight_decay),
        ("grpo.grad_clip", g.grad_clip),
    ]:
        need(value >= 0, f"{key} must be 0 or more, got {value}.")
    need(
        cfg.task.name in TASKS,
        f"task.name {cfg.task.name!r} is not a task; choose one of {', '.join(TASKS)}.",
    )
    need(
        m.__dict__.get("_head_dim", 0) > 0 or m.hidden_size % m.num_attention_heads == 0,
        "model.hidden_size must divide by model.num_attention_heads; change one of them.",
    )
    need(
        m.num_attention_heads % m.num_key_value_heads == 0,
        "model.num_attention_heads must divide by model.num_key_value_heads; change one of them.",
    )
    need(m.head_dim % 2 == 0, f"model.head_dim ({m.head_dim}) must be even for RoPE.")
    for key, value in [
        ("pretrain.steps", p.steps),
        ("grpo.steps", g.steps),
        ("pretrain.warmup_steps", p.warmup_steps),
        ("grpo.warmup_steps", g.warmup_steps),
        ("grpo.eval_every", g.eval_every),
        ("eval.num_samples", e.num_samples),
    ]:
        need(value >= 0, f"{key} must be 0 or more, got {value}.")
    for key, value in [
        ("pretrain.batch_size", p.batch_size),
        ("pretrain.lr", p.lr),
        ("grpo.lr", g.lr),
        ("grpo.num_prompts", g.num_prompts),
        ("grpo.max_new_tokens", g.max_new_tokens),
        ("grpo.num_iterations", g.num_iterations),
        ("grpo.num_minibatches", g.num_minibatches),
        ("grpo.max_sampling_rounds", g.max_sampling_rounds),
        ("eval.num_problems", e.num_problems),
        ("eval.max_new_tokens", e.max_new_tokens),
        ("eval.batch_size", e.batch_size),
    ]:
        need(value > 0, f"{key} must be greater than 0, got {value}.")
    need(
        g.group_size >= 2,
        f"grpo.group_size must be at least 2 (advantages compare samples within a group), got {g.group_size}.",
    )
    batch = g.num_prompts * g.group_size
    need(
        batch % g.num_minibatches == 0 and (batch // g.num_minibatches) % g.group_size == 0,
        f"grpo.num_minibatches = {g.num_minibatches} does not split {g.num_prompts} prompts x {g.group_size} samples into whole groups; use a divisor of grpo.num_prompts ({g.num_prompts}).",
    )
    need(
        g.temperature > 0,
        "grpo.temperature must be above 0 (GRPO samples; greedy decoding gives identical groups).",
    )
    need(e.temperature >= 0, "eval.temperature must be 0 or more.")
    need(0 < g.top_p <= 1, f"grpo.top_p must be in (0, 1], got {g.top_p}.")
    need(g.top_k >= 0, f"grpo.top_k must be 0 (off) or more, got {g.top_k}.")
    need(g.beta >= 0, f"grpo.beta must be 0 or more, got {g.beta}.")
    need(0 <= g.epsilon < 1, f"grpo.epsilon must be in [0, 1), got {g.epsilon}.")
    need(g.epsilon_high >= 0, f"grpo.epsilon_high must be 0 or more, got {g.epsilon_high}.")
    from rlvr.learning.algorithms import ADVANTAGE_ESTIMATORS, LOSS_TYPES, REWARD_COMBINE_MODES

    for key, value, choices in [
        ("grpo.loss_type", g.loss_type, LOSS_TYPES),
        ("grpo.advantage", g.advantage, ADVANTAGE_ESTIMATORS),
        ("grpo.reward_combine", g.reward_combine, REWARD_COMBINE_MODES),
        ("grpo.is_level", g.is_level, ("none", "token", "sequence")),
        ("grpo.is_mode", g.is_mode, ("truncate", "mask")),
    ]:
        need(value in choices, f"{key} {value!r} is not one of {', '.join(choices)}.")
    need(g.delta == 0 or g.delta > 1, f"grpo.delta must be 0 (off) or above 1, got {g.delta}.")
    need(
        g.delta == 0 or g.loss_type != "cispo",
        "grpo.delta has no effect with grpo.loss_type = 'cispo' (its weight is already capped);"
        " set grpo.delta = 0.",
    )
    need(g.is_cap >= 1, f"grpo.is_cap must be at least 1, got {g.is_cap}.")
    need(g.entropy_coef >= 0, f"grpo.entropy_coef must be 0 or more, got {g.entropy_coef}.")
    for key, value in [
        ("pretrain.think_fraction", p.think_fraction),
        ("pretrain.slip_fraction", p.slip_fraction),
    ]:
        need(0 <= value <= 1, f"{key} must be a fraction in [0, 1], got {value}.")
    need(
        cfg.task.name != "dataset" or p.steps == 0 or bool(cfg.init_from or cfg.model_path),
        "task 'dataset' has no synthetic solutions to pretrain on: set pretrain.steps = 0 and "
        "init_from (or model_path) to the model to train.",
    )
    need(
        not (cfg.init_from and cfg.model_path),
        "init_from and model_path both name a model to start from; keep one of them.",
    )
    need(
        not cfg.system_prompt or bool(cfg.init_from or cfg.model_path),
        "system_prompt needs a model with a chat template (model_path, or init_from a run "
        'that trained one); the from-scratch model has no system prompt: set system_prompt = "".',
    )
    need(e.num_samples != 1, "eval.num_samples must be 0 (off) or at least 2 for pass@k and maj@k.")
    need(
        all(type(b) is int and 1 <= b <= e.max_new_tokens for b in e.think_budgets),
        f"eval.think_budgets must be whole numbers of tokens from 1 to eval.max_new_tokens "
        f"({e.max_new_tokens}), got {e.think_budgets!r}.",
    )
    r, c = cfg.reward, cfg.checkpoint
    for key, value in [
        ("reward.overlong_buffer", r.overlong_buffer),
        ("reward.workers", r.workers),
        ("checkpoint.every", c.every),
        ("max_bad_steps", cfg.max_bad_steps),
        ("grpo.ref_update_every", g.ref_update_every),
    ]:
        need(value >= 0, f"{key} must be 0 or more, got {value}.")
    need(
        not g.mask_truncated or (not g.ignore_eos and g.min_new_tokens < g.max_new_tokens),
        "grpo.mask_truncated with a forced length (grpo.ignore_eos, or grpo.min_new_tokens = "
        "grpo.max_new_tokens) masks every completion out of the loss; turn one of them off.",
    )
    need(
        0 <= g.min_new_tokens <= g.max_new_tokens,
        f"grpo.min_new_tokens ({g.min_new_tokens}) must be between 0 and grpo.max_new_tokens "
        f"({g.max_new_tokens}).",
    )
    need(
        r.overlong_buffer <= g.max_new_tokens,
        f"reward.overlong_buffer ({r.overlong_buffer}) must not exceed grpo.max_new_tokens "
        f"({g.max_new_tokens}).",
    )
    need(r.timeout_s > 0, f"reward.timeout_s must be above 0, got {r.timeout_s}.")
    need(r.memory_mb >= 64, f"reward.memory_mb must be at least 64, got {r.memory_mb}.")
    need(c.keep >= 1, f"checkpoint.keep must be at least 1, got {c.keep}.")
    need(
        cfg.dtype in ("float32", "bfloat16"),
        f"dtype {cfg.dtype!r} is not one of float32, bfloat16.",
    )
    need(
        re.fullmatch(r"auto|cpu|cuda(:(0|[1-9]\d*))?", cfg.device) is not None,
        f"device {cfg.device!r} is not one of auto, cpu, cuda, cuda:N.",
    )
    lora = cfg.lora
    need(lora.rank >= 0, f"lora.rank must be 0 (off) or more, got {lora.rank}.")
    need(lora.alpha > 0, f"lora.alpha must be above 0, got {lora.alpha}.")
    need(0 <= lora.dropout < 1, f"lora.dropout must be in [0, 1), got {lora.dropout}.")
    targets = lora.target_modules
    need(
        bool(targets) and all(isinstance(t, str) and t for t in targets),
        f"lora.target_modules must be a non-empty list of layer names, got {targets!r}.",
    )
    need(len(set(targets)) == len(targets), f"lora.target_modules repeats a name: {targets}.")
    unknown = [t for t in targets if t not in LORA_TARGETS]
    need(
        lora.rank == 0 or bool(cfg.model_path) or not unknown,
        f"lora.target_modules {unknown} are not layers of the model; choose from "
        f"{', '.join(LORA_TARGETS)}.",
    )
    need(
        lora.rank == 0 or g.ref_update_every == 0,
        "grpo.ref_update_every is not supported with LoRA: the reference is the policy with "
        "its adapters turned off, i.e. the base weights, which LoRA never changes; set "
        "grpo.ref_update_every = 0 (or lora.rank = 0 to train all weights).",
    )
    for name, weight in r.functions.items():
        need(
            isinstance(weight, (int, float)) and not isinstance(weight, bool),
            f"reward.functions[{name!r}] must be a number (its weight), got {weight!r}.",
        )
        need(
            ":" in str(name),
            f"reward.functions key {name!r} must be 'module:function', e.g. 'my_rewards:brevity'.",
        )


# ----------------------------------------------------------------------------- writing


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML, readable back by `load_config`."""
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            tables.append((f.name, value))
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    for name, obj in tables:
        lines.append(f"\n[{name}]")
        for f in dataclasses.fields(obj):
            lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
    return "\n".join(lines) + "\n"


# TOML basic strings: backslash, quote and every control character must be escaped.
_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_TOML_ESCAPES.update(
    {chr(c): f"\\u{c:04x}" for c in [*range(0x20), 0x7F] if chr(c) not in _TOML_ESCAPES}
)


def _toml_key(key: str) -> str:
    """A bare TOML key when it may be one, else a quoted one ("my_rewards:brevity")."""
    bare = key and all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in key)
    return key if bare else _toml_value(str(key))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(_TOML_ESCAPES.get(ch, ch) for ch in value) + '"'
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()  # TOML dates and times are ISO 8601
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
