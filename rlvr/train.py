"""The training loops, readable top to bottom: pretrain from scratch, then GRPO.

    rlvr train recipes/demo.toml --grpo.beta 0.02
    rlvr train --resume runs/demo-20261125-101500        # continue a stopped or killed run
    rlvr train recipes/smoke.toml --model path/to/hf_checkpoint --system_prompt r1

`run(cfg)` is the whole job: pretrain (or load) -> evaluate -> GRPO -> evaluate, writing a run
folder (config.toml, metrics.jsonl, tensorboard/, plots/, samples/, pretrained/, checkpoints/,
checkpoint/, summary.json).

GRPO here follows DeepSeekMath (Shao et al. 2024); every choice is a config key, and the
variants practitioners use are one key away (formulas and papers in rlvr/algorithms.py):
- advantages: `grpo.advantage` = grpo (z-score within each group of k samples), dr_grpo,
  batch_std, rloo, reinforce_pp; with several reward parts, `grpo.reward_combine`;
- loss: `grpo.loss_type` = dapo (default: token mean over the optimizer batch), grpo, bnpo,
  dr_grpo, gspo, cispo; the ratio is clipped to [1 - epsilon, 1 + epsilon_high] (DAPO's
  clip-higher), `grpo.delta` adds the dual clip, `grpo.entropy_coef` an entropy bonus;
- DAPO's dynamic sampling (`grpo.dynamic_sampling`), overlong filtering
  (`grpo.mask_truncated`) and soft overlong punishment (`reward.overlong_buffer`);
- the KL penalty to the reference model uses the k3 estimator inside the loss; beta = 0
  loads no reference; `grpo.ref_update_every` refreshes it;
- the "old" logprobs of the ratio are the sampler's, taken at sampling time (or the
  learner's, with importance weights for the difference: `grpo.is_level`); each batch is
  used for `num_iterations` (mu) optimizer passes, one optimizer step per minibatch;
- `[lora] rank > 0` trains LoRA adapters only (peft), the reference being the policy with
  them turned off; `dtype = "bfloat16"` runs every forward under bf16 autocast.

Runs survive: every `checkpoint.every` steps (and at the end of each phase) a resumable
checkpoint holds the weights, optimizer, RNG states and data position, so a resumed run
continues exactly where the checkpoint was taken. SIGINT/SIGTERM stop at the next step
boundary with a checkpoint. An update whose loss or gradient is NaN or infinite is skipped
and counted; `max_bad_steps` such steps in a row stop the run with a message.
"""

from __future__ import annotations

import copy
import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rlvr.algorithms import (
    combine_rewards,
    compute_advantages,
    entropy_from_logits,
    mask_truncated,
    policy_loss,
    sampler_correction,
    token_logprobs,
)
from rlvr.checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    load_trainer_state,
    prune_checkpoints,
    save_checkpoint,
)
from rlvr.config import Config, ConfigError, to_toml
from rlvr.engine import Engine
from rlvr.errors import StopRequested, TrainingError
from rlvr.evaluate import evaluate
from rlvr.lora import (
    adapter_state,
    adapters_disabled,
    base_layers,
    check_targets,
    inject_lora,
    load_adapter_state,
    merged_copy,
)
from rlvr.model import Transformer
from rlvr.report import RunLogger, plot_metrics, write_samples
from rlvr.rewards import Scorer, open_pool
from rlvr.rollout import Episode, rollout
from rlvr.tasks import TASKS, Problem
from rlvr.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, CharTokenizer

console = Console(stderr=True)


# ----------------------------------------------------------------------------- set-up


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def resolve_device(name: str) -> torch.device:
    """cfg.device as a torch.device: "auto" is the first CUDA GPU when torch sees one, else
    the CPU. A GPU that is not there is a ConfigError before any work starts."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"device = {name!r}, but this torch ({torch.__version__}) sees no CUDA GPU; "
                'install a CUDA build of torch (README: "GPU users") or set device = "cpu".'
            )
        if (device.index or 0) >= count:
            raise ConfigError(
                f"device = {name!r}, but torch sees {count} CUDA GPU(s) (cuda:0 to "
                f"cuda:{count - 1}); pick one of those."
            )
    return device


def place_model(model: torch.nn.Module, name: str) -> torch.device:
    """Move `model` to cfg.device `name` (`resolve_device`) and return that device; a GPU
    also becomes the current one (CUDA streams and graphs use the current GPU)."""
    device = resolve_device(name)
    model.to(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def make_run_dir(cfg: Config, resume: bool = False) -> Path:
    if cfg.run_dir:
        path = Path(cfg.run_dir)
    else:
        path = Path(cfg.runs_dir) / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    if not resume and path.is_dir() and any(path.iterdir()):
        raise ConfigError(
            f"{path} already holds a run; continue it with `rlvr train --resume {path}` or "
            "choose another --out."
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_task(cfg: Config):
    try:
        return TASKS[cfg.task.name](**cfg.task.options)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"task {cfg.task.name!r}: {e}".rstrip(".") + ".") from e


def system_prompt(cfg: Config) -> str:
    """The run's system prompt: cfg.system_prompt, with "r1" standing for R1_SYSTEM_PROMPT."""
    if cfg.system_prompt.strip().lower() == "r1":
        from rlvr.hf import R1_SYSTEM_PROMPT

        return R1_SYSTEM_PROMPT
    return cfg.system_prompt


def load_model(path: str) -> tuple[torch.nn.Module, CharTokenizer]:
    """A local Hugging Face checkpoint folder's model and tokenizer (`--model PATH`).

    A folder that is not a checkpoint, or a tokenizer that cannot write the R1 format's
    tags, is a ConfigError (exit code 2) before any work starts.
    """
    try:
        from rlvr.hf import load_hf_model

        model, tokenizer = load_hf_model(path)
    except (ValueError, ImportError, OSError) as e:
        raise ConfigError(f"--model {path}: {e}".rstrip(".") + ".") from e
    check_format_tokens(tokenizer, path)
    return model, tokenizer


def check_format_tokens(tokenizer, where: str) -> None:
    """Raise ConfigError unless the R1 format's text survives encode -> decode unchanged
    (the verifiers read the decoded response, so a tag the tokenizer mangles never scores)."""
    text = f"{THINK_OPEN}\n3*4=12\n{THINK_CLOSE}\n{ANSWER_OPEN}12{ANSWER_CLOSE}"
    try:
        decoded = tokenizer.decode(tokenizer.encode(text))
    except (ValueError, KeyError, TypeError) as e:
        decoded = f"an error ({e})"
    if decoded != text:
        shown = repr(decoded) if len(decoded) <= 60 else repr(decoded[:60]) + "..."
        raise ConfigError(
            f"The tokenizer in {where} cannot write the response format: {text!r} came back "
            f"from encode/decode as {shown}; use a checkpoint whose tokenizer round-trips "
            f"{THINK_OPEN}, {THINK_CLOSE}, {ANSWER_OPEN} and {ANSWER_CLOSE} (a byte-level BPE "
            "does), or add them as tokens and save it with save_pretrained."
        )


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; matrices decay, norms and biases do not."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def autocast(cfg: Config, model: torch.nn.Module) -> AbstractContextManager:
    """The precision of forward passes: with cfg.dtype = "bfloat16", torch.autocast to bf16
    on the model's device (matmuls in bf16; the float32 master weights, optimizer state and
    the float32 logits the model returns are untouched); with "float32", nothing."""
    if cfg.dtype == "float32":
        return nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)


@contextmanager
def progress_bar(description: str, total: int, done: int = 0) -> Iterator:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}")]  # fmt: skip
    with Progress(*columns, console=console, transient=False) as progress:
        task_id = progress.add_task(description, total=total, completed=done, info="")

        def advance(info: str = "") -> None:
            progress.update(task_id, advance=1, info=info)

        yield advance


@contextmanager
def stop_on_signals() -> Iterator[Callable[[], bool]]:
    """Turn the first SIGINT/SIGTERM into a request to stop at the next step boundary.

    Yields a function that says whether a stop was requested. A second Ctrl-C interrupts at
    once (KeyboardInterrupt); the last checkpoint is intact either way.
    """
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False  # signal handlers can only be set from the main thread
        return

    def handler(signum, frame) -> None:
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.append(signum)
        console.print(f"[yellow]{signal.Signals(signum).name}: stopping after this step ...")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Checkpointer:
    """Writes resumable checkpoints into run_dir/checkpoints and keeps the newest few."""

    def __init__(self, run_dir: Path, cfg: Config, tokenizer: CharTokenizer) -> None:
        self.run_dir, self.cfg, self.tokenizer = run_dir, cfg, tokenizer
        self.last: Path | None = latest_checkpoint(run_dir)

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


def finite_update(
    loss: torch.Tensor, model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float
) -> torch.Tensor | None:
    """Backpropagate and step, unless the loss or the gradient is NaN or infinite.

    Returns the gradient norm, or None when the update was skipped (the weights and the
    optimizer state are untouched then).
    """
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return None
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf"))
    if not torch.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    return grad_norm


def too_many_bad_steps(cfg: Config, phase: str, step: int, bad_in_row: int, last: Path | None):
    if cfg.max_bad_steps and bad_in_row >= cfg.max_bad_steps:
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise TrainingError(
            f"{phase} step {step}: the loss or gradient was NaN or infinite for {bad_in_row} "
            f"steps in a row, so the run stopped ({where}); lower the learning rate or check "
            f"the reward functions, then resume with `rlvr train --resume {cfg.run_dir or 'RUN_DIR'}`."
        )


# ----------------------------------------------------------------------------- pretraining


def pretrain_batch(task, tokenizer: CharTokenizer, rng: random.Random, cfg: Config, step: int):
    """One step of synthetic solutions, as length-grouped, right-padded micro-batches.

    Some examples answer at once, some think step by step, and some of those traces slip.
    Answer-only examples are short and traces long, so each kind is padded on its own
    (padding one batch to the longest trace wasted ~45% of the compute). Returns a list of
    (input ids (b, T), loss mask (b, T-1)) pairs; the mask is 1 on completion tokens only.
    """
    p = cfg.pretrain
    problems = task.problems("train", p.batch_size, seed=cfg.seed * 1_000_003 + step)
    groups: dict[bool, list[tuple[list[int], list[int]]]] = {False: [], True: []}
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


def pretrain(
    model: Transformer,
    tokenizer: CharTokenizer,
    task,
    cfg: Config,
    logger: RunLogger,
    checkpointer: Checkpointer,
    should_stop: Callable[[], bool],
    resume: dict | None = None,
) -> None:
    """Next-token training on synthetic solutions, from random weights (or a checkpoint)."""
    p = cfg.pretrain
    device = next(model.parameters()).device
    rng = random.Random(cfg.seed + 1)
    optimizer = make_optimizer(model, p.lr, p.weight_decay)
    first, bad_in_row = 1, 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        rng.setstate(resume["rng"])
        torch.set_rng_state(resume["torch_rng"])
        first, bad_in_row = resume["step"] + 1, resume["bad_in_row"]
    model.train()
    tokens, skipped, t_start = 0, 0, time.perf_counter()
    with progress_bar("pretrain", p.steps, done=first - 1) as advance:
        for step in range(first, p.steps + 1):
            # Right padding needs no attention mask: causal attention never looks ahead.
            batches = [(ids.to(device), mask.to(device))
                       for ids, mask in pretrain_batch(task, tokenizer, rng, cfg, step)]  # fmt: skip
            num_targets = sum(mask.sum() for _, mask in batches)
            optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros((), device=device)
            for ids, mask in batches:
                with autocast(cfg, model):
                    logits = model(ids[:, :-1])  # (b, T-1, V), float32
                losses = F.cross_entropy(
                    logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none"
                )
                part = (losses * mask.flatten()).sum() / num_targets
                part.backward()
                loss += part.detach()

            # linear warmup, cosine decay to lr / 10
            warm = min(1.0, step / max(1, p.warmup_steps))
            decay = 0.5 * (1 + math.cos(math.pi * min(1.0, step / p.steps)))
            lr = p.lr * warm * (0.1 + 0.9 * decay)
            set_lr(optimizer, lr)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), p.grad_clip or float("inf")
            )
            if torch.isfinite(loss) and torch.isfinite(grad_norm):
                optimizer.step()
                bad_in_row = 0
            else:  # skip it: the weights and the optimizer state stay as they were
                skipped, bad_in_row = skipped + 1, bad_in_row + 1
                too_many_bad_steps(cfg, "pretrain", step, bad_in_row, checkpointer.last)

            tokens += sum(int((ids != tokenizer.pad_id).sum()) for ids, _ in batches)
            if step % 25 == 0 or step == p.steps:
                elapsed = time.perf_counter() - t_start
                logger.log("pretrain", step, {"loss": loss.item(), "lr": lr, "grad_norm": grad_norm.item(),
                                              "skipped_updates": skipped,
                                              "tokens_per_second": tokens / elapsed})  # fmt: skip
            advance(f"loss {loss.item():.3f}")

            stop = should_stop()
            if stop or checkpointer.due(step, p.steps):
                checkpointer.save("pretrain", step, model, {
                    "phase": "pretrain", "step": step, "optimizer": optimizer.state_dict(),
                    "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                    "bad_in_row": bad_in_row,
                })  # fmt: skip
            if stop and step < p.steps:
                raise StopRequested(f"pretraining step {step}", str(checkpointer.run_dir))


# ----------------------------------------------------------------------------- GRPO


def make_batch(episodes: list[Episode], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt+completion rows and their per-position completion tensors.

    Position t of the (N, T-1) tensors scores token t+1, so a completion token at column j
    sits at position j-1 there.
    """
    rows = [ep.prompt_ids + ep.completion_ids for ep in episodes]
    width = max(map(len, rows))
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((n, width - 1))
    old_logprobs = torch.zeros((n, width - 1))
    for i, (row, ep) in enumerate(zip(rows, episodes)):
        input_ids[i, : len(row)] = torch.tensor(row)
        start, end = len(ep.prompt_ids) - 1, len(row) - 1
        completion_mask[i, start:end] = 1.0
        old_logprobs[i, start:end] = torch.tensor(ep.logprobs)
    return {"input_ids": input_ids,
            "completion_mask": completion_mask, "old_logprobs": old_logprobs}  # fmt: skip


def sequence_logprobs(
    model: torch.nn.Module, batch: dict, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token logprobs (N, T-1) of the batch's tokens, and the logits that gave them."""
    # Rows are right-padded: under causal attention a real token never sees the padding
    # after it, so no mask is needed and the fused causal attention path applies.
    logits = model(batch["input_ids"])[:, :-1]
    return token_logprobs(logits, batch["input_ids"][:, 1:], temperature), logits


def informative_groups(episodes: list[Episode], group_size: int) -> list[Episode]:
    """The groups whose rewards are not all equal (DAPO dynamic sampling keeps only these)."""
    kept = []
    for i in range(0, len(episodes), group_size):
        group = episodes[i : i + group_size]
        if len({ep.reward for ep in group}) > 1:
            kept += group
    return kept


def episode_advantages(episodes: list[Episode], weights: dict[str, float], g) -> torch.Tensor:
    """(N,) advantages of the episodes (group-major), by grpo.advantage and reward_combine."""
    if g.reward_combine == "sum_then_normalize":
        rewards = torch.tensor([ep.reward for ep in episodes])  # (N,) the weighted sums
        return compute_advantages(rewards, g.group_size, g.advantage)
    names = list(weights)
    parts = torch.tensor([[ep.parts[name] for name in names] for ep in episodes])  # (N, R)
    return combine_rewards(parts, torch.tensor([weights[name] for name in names]),
                           g.group_size, g.advantage, mode=g.reward_combine)  # fmt: skip


class ProblemStream:
    """The seeded, endless stream of GRPO training batches, addressable by batch index.

    Batch i is the same for the same seed however the run got there, so a resumed run picks
    up at the index its checkpoint saved.
    """

    def __init__(self, task, cfg: Config) -> None:
        self.task, self.seed, self.size = task, cfg.seed, cfg.grpo.num_prompts
        # Each round is a fresh seeded draw of up to 50 batches (a dataset: all of it, shuffled).
        available = task.num_problems("train") if hasattr(task, "num_problems") else 1 << 62
        self.batches_per_round = min(50, available // self.size)
        if self.batches_per_round == 0:
            raise ConfigError(
                f"The task has {available} training problems, fewer than grpo.num_prompts = "
                f"{self.size}; lower grpo.num_prompts or add problems."
            )
        self._round, self._pool = -1, []

    def batch(self, index: int) -> list[Problem]:
        round_, offset = divmod(index, self.batches_per_round)
        if round_ != self._round:
            self._pool = self.task.problems(
                "train", self.size * self.batches_per_round, seed=self.seed * 7919 + 17 + round_
            )
            self._round = round_
        return self._pool[offset * self.size : (offset + 1) * self.size]


def grpo(
    policy: Transformer,
    tokenizer: CharTokenizer,
    task,
    scorer: Scorer,
    cfg: Config,
    logger: RunLogger,
    eval_problems: list[Problem],
    checkpointer: Checkpointer,
    should_stop: Callable[[], bool],
    resume: dict | None = None,
    before: dict | None = None,
) -> float:
    """GRPO; returns the mean seconds per step (sampling + verification + update).

    `before` (the evaluation before GRPO) is stored in each checkpoint for the run summary.
    """
    g = cfg.grpo
    device = next(policy.parameters()).device
    lora = cfg.lora.rank > 0
    if lora:  # only the adapters train; the reference is the policy with them turned off
        trainable = inject_lora(policy, cfg.lora)
        console.print(f"LoRA rank {cfg.lora.rank}: {trainable / 1e6:.3f}M trainable parameters")
    reference = None
    if g.beta > 0 and not lora:
        reference = copy.deepcopy(policy).eval().requires_grad_(False)
    optimizer = make_optimizer(policy, g.lr, g.weight_decay)
    engine = Engine(policy, pad_id=tokenizer.pad_id)
    generator = torch.Generator().manual_seed(cfg.seed + 2)
    shuffle = torch.Generator().manual_seed(cfg.seed + 3)
    problems = ProblemStream(task, cfg)
    first, batches_drawn, bad_in_row = 1, 0, 0
    if resume is not None:
        if lora:
            load_adapter_state(policy, resume.get("lora"))
        if "torch_rng" in resume:  # LoRA dropout draws from it
            torch.set_rng_state(resume["torch_rng"])
        if resume.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(resume["cuda_rng"], device)
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        shuffle.set_state(resume["shuffle"])
        if reference is not None:
            reference.load_state_dict(resume["reference"])
        first, batches_drawn = resume["step"] + 1, resume["batches_drawn"]
        bad_in_row = resume["bad_in_row"]
    step_seconds = []

    with progress_bar("grpo", g.steps, done=first - 1) as advance:
        for step in range(first, g.steps + 1):
            t0 = time.perf_counter()

            # 1. Sample k completions per problem with the current policy; each is verified
            #    in the scorer's workers as soon as the engine finishes it. With dynamic
            #    sampling, groups whose rewards are all equal (no signal) are dropped and more
            #    problems are sampled until the batch is full.
            policy.eval()
            target = g.num_prompts * g.group_size
            sampled: list[Episode] = []
            episodes: list[Episode] = []
            rounds = flat_groups = 0
            while rounds == 0 or (
                g.dynamic_sampling and len(episodes) < target and rounds < g.max_sampling_rounds
            ):
                with autocast(cfg, policy):
                    new = rollout(
                        engine, tokenizer, scorer, problems.batch(batches_drawn),
                        num_samples=g.group_size, max_new_tokens=g.max_new_tokens,
                        temperature=g.temperature, top_p=g.top_p, top_k=g.top_k,
                        generator=generator, policy_version=step - 1, ignore_eos=g.ignore_eos,
                        min_new_tokens=g.min_new_tokens,
                    )  # fmt: skip
                batches_drawn, rounds = batches_drawn + 1, rounds + 1
                sampled += new
                kept = informative_groups(new, g.group_size) if g.dynamic_sampling else new
                flat_groups += (len(new) - len(kept)) // g.group_size
                episodes += kept
            episodes = episodes[:target]
            t_sampled = time.perf_counter()

            # 2. Group-relative advantages (of the weighted reward, or of each part).
            stats: dict[str, list[float]] = {}
            updates = skipped = 0
            if episodes:
                advantages = episode_advantages(episodes, scorer.weights, g)

                # 3. The learner's batch; reference logprobs once per batch.
                batch = make_batch(episodes, tokenizer.pad_id)
                batch["advantages"] = advantages
                batch = {key: value.to(device) for key, value in batch.items()}
                if g.mask_truncated:
                    truncated = torch.tensor(
                        [ep.finish_reason == "length" for ep in episodes], device=device
                    )
                    batch["completion_mask"] = mask_truncated(batch["completion_mask"], truncated)
                with torch.no_grad():
                    if g.beta > 0:  # the frozen copy; with LoRA, the policy without adapters
                        ref_model = reference if reference is not None else policy
                        with adapters_disabled(ref_model), autocast(cfg, ref_model):
                            batch["ref_logprobs"], _ = sequence_logprobs(
                                ref_model, batch, g.temperature
                            )
                    if g.is_level != "none":
                        # The learner's own logprobs become the ratio's "old" ones; the weights
                        # correct for the sampler having drawn from slightly different ones.
                        with autocast(cfg, policy):
                            learner_old, _ = sequence_logprobs(policy, batch, g.temperature)
                        batch["is_weights"], is_stats = sampler_correction(
                            learner_old, batch["old_logprobs"], batch["completion_mask"],
                            level=g.is_level, mode=g.is_mode, cap=g.is_cap,
                        )  # fmt: skip
                        batch["old_logprobs"] = learner_old
                        for key, value in is_stats.items():
                            stats[key] = [float(value)]

                # 4. mu passes of clipped policy-gradient updates over the batch.
                policy.train()
                set_lr(optimizer, g.lr * min(1.0, step / max(1, g.warmup_steps)))
                num_groups = len(episodes) // g.group_size
                for _ in range(g.num_iterations):
                    order = torch.randperm(num_groups, generator=shuffle)
                    for group_ids in order.chunk(g.num_minibatches):
                        rows = (
                            (group_ids[:, None] * g.group_size + torch.arange(g.group_size))
                            .flatten()
                            .to(device)
                        )
                        mb = {k: v[rows] for k, v in batch.items()}
                        with autocast(cfg, policy):  # logits and logprobs come out float32
                            logprobs, logits = sequence_logprobs(policy, mb, g.temperature)
                        # one optimizer step per minibatch: dapo's "whole batch" is this one
                        mask = mb["completion_mask"]
                        loss, loss_stats = policy_loss(
                            logprobs, mb["old_logprobs"], mb["advantages"], mask,
                            loss_type=g.loss_type, epsilon_low=g.epsilon,
                            epsilon_high=g.epsilon_high, delta=g.delta or None,
                            ref_logprobs=mb.get("ref_logprobs"), beta=g.beta,
                            max_length=g.max_new_tokens, num_tokens=mask.sum(),
                            is_weights=mb.get("is_weights"),
                            entropy=entropy_from_logits(logits) if g.entropy_coef else None,
                            entropy_coef=g.entropy_coef,
                        )  # fmt: skip
                        grad_norm = finite_update(loss, policy, optimizer, g.grad_clip)
                        updates += 1
                        if grad_norm is None:
                            skipped += 1
                            continue
                        if "entropy" not in loss_stats:
                            with torch.no_grad():
                                entropy = entropy_from_logits(logits.detach())
                                loss_stats["entropy"] = (entropy * mask).sum() / mask.sum().clamp(
                                    min=1
                                )
                        loss_stats["grad_norm"] = grad_norm
                        loss_stats["loss"] = loss.detach()
                        for key, value in loss_stats.items():
                            stats.setdefault(key, []).append(float(value))
            bad_in_row = bad_in_row + 1 if skipped and skipped == updates else 0
            if reference is not None and g.ref_update_every and step % g.ref_update_every == 0:
                reference.load_state_dict(policy.state_dict())
            t_end = time.perf_counter()
            step_seconds.append(t_end - t0)

            n = len(sampled)
            num_tokens = sum(len(ep.completion_ids) for ep in sampled)
            parts: dict[str, float] = {}
            for ep in sampled:
                for name, value in ep.parts.items():
                    parts[f"reward/{name}"] = parts.get(f"reward/{name}", 0.0) + value / n
            metrics = {
                "reward": torch.tensor([ep.reward for ep in sampled]).mean().item(),
                "accuracy": sum(ep.parts.get("accuracy", 0.0) for ep in sampled) / n,
                "format_rate": sum(ep.parts.get("format", 0.0) for ep in sampled) / n,
                **parts,
                "think_rate": sum(ep.thought for ep in sampled) / n,
                "response_length": num_tokens / n,
                "sampled_tokens": num_tokens,
                "truncated_rate": sum(ep.finish_reason == "length" for ep in sampled) / n,
                "verifier_failures": sum(ep.verifier_failures for ep in sampled),
                "bad_rewards": sum(ep.bad_rewards for ep in sampled),
                "skipped_updates": skipped,
                "sampling_rounds": rounds,
                "dropped_groups": flat_groups,
                "dropped_fraction": flat_groups * g.group_size / len(sampled),
                **{key: sum(v) / len(v) for key, v in stats.items()},
                "policy_version": step,
                "step_seconds": t_end - t0,
                "sample_seconds": t_sampled - t0,
                "tokens_per_second": num_tokens / (t_end - t0),
            }  # fmt: skip
            logger.log("grpo", step, metrics)
            advance(f"reward {metrics['reward']:.2f}  think {metrics['think_rate']:.2f}")
            too_many_bad_steps(cfg, "GRPO", step, bad_in_row, checkpointer.last)

            if g.eval_every and step % g.eval_every == 0 and step < g.steps:
                with autocast(cfg, policy):
                    eval_metrics, samples = evaluate(policy, tokenizer, scorer, eval_problems,
                                                     cfg.eval, seed=cfg.seed, sampled=False)  # fmt: skip
                logger.log("eval", step, eval_metrics)
                write_samples(logger.run_dir, f"grpo-step{step:05d}", samples)

            stop = should_stop()
            if stop or checkpointer.due(step, g.steps):
                checkpointer.save("grpo", step, policy, {
                    "phase": "grpo", "step": step, "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(), "shuffle": shuffle.get_state(),
                    "batches_drawn": batches_drawn, "bad_in_row": bad_in_row,
                    "reference": reference.state_dict() if reference is not None else None,
                    "lora": adapter_state(policy) if lora else None,
                    "torch_rng": torch.get_rng_state(), "before": before or {},
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                })  # fmt: skip
            if stop and step < g.steps:
                raise StopRequested(f"GRPO step {step}", str(checkpointer.run_dir))

    # the first step pays one-off costs (allocations, warm caches); report the steady state
    steady = step_seconds[1:] or step_seconds
    return sum(steady) / max(1, len(steady))


# ----------------------------------------------------------------------------- the whole job


def run(cfg: Config, resume: bool = False) -> tuple[Path, dict]:
    """Pretrain (or load) -> evaluate -> GRPO -> evaluate. Returns the run folder and summary.

    resume: continue the run in cfg.run_dir from its latest resumable checkpoint (exactly:
    the same weights and metrics as a run that was never stopped, for the same thread count).
    """
    t_start = time.perf_counter()
    seed_everything(cfg.seed, cfg.threads)
    resolve_device(cfg.device)  # a GPU that is not there stops the run before its folder exists
    loaded = None  # --model / init_from: loaded and checked before the run folder exists
    if cfg.init_from and not resume:
        loaded = load_checkpoint(cfg.init_from)[:2]
    elif cfg.model_path and not resume:
        loaded = load_model(cfg.model_path)
        check_targets(loaded[0], cfg.lora)
    # config.toml and every checkpoint's rlvr_config.toml record the model's real architecture
    if loaded and isinstance(loaded[0], Transformer):
        cfg.model = copy.deepcopy(loaded[0].config)
    elif not (resume or cfg.init_from or cfg.model_path):
        cfg.model.vocab_size = CharTokenizer().vocab_size  # a from-scratch model's vocabulary
    run_dir = make_run_dir(cfg, resume)
    cfg.run_dir = str(run_dir)
    task = make_task(cfg)
    eval_problems = task.problems("test", cfg.eval.num_problems, seed=cfg.seed)
    start = latest_checkpoint(run_dir) if resume else None
    state = load_trainer_state(start) if start else None
    if not resume:
        (run_dir / "config.toml").write_text(to_toml(cfg))
    summary: dict = {
        "run_dir": str(run_dir),
        "task": cfg.task.name,
        "seed": cfg.seed,
        "threads": cfg.threads,
    }
    if start:
        console.print(f"resuming from {start}")
        summary["resumed_from"] = str(start)

    with (
        RunLogger(run_dir, keep=_kept_records(state)) as logger,
        open_pool(cfg.reward, preload=(type(task).__module__,)) as pool,
        stop_on_signals() as should_stop,
    ):
        scorer = Scorer(task, cfg.reward, cfg.grpo.max_new_tokens, pool,
                        system_prompt=system_prompt(cfg))  # fmt: skip
        if state:
            policy, tokenizer, _, _ = load_checkpoint(start)
            if isinstance(policy, Transformer):  # (run folders of older versions lack it)
                cfg.model = copy.deepcopy(policy.config)
        elif cfg.init_from:
            policy, tokenizer = loaded or load_checkpoint(cfg.init_from)[:2]
            console.print(f"loaded {cfg.init_from}")
        elif cfg.model_path:
            policy, tokenizer = loaded or load_model(cfg.model_path)
            console.print(
                f"loaded {cfg.model_path}: {policy.num_parameters() / 1e6:.2f}M parameters"
            )
        else:
            tokenizer = CharTokenizer()
            cfg.model.vocab_size = tokenizer.vocab_size  # (resumed runs of older versions)
            policy = Transformer(cfg.model)
            console.print(f"model: {policy.num_parameters() / 1e6:.2f}M parameters")
        if scorer.system_prompt and isinstance(tokenizer, CharTokenizer):
            raise ConfigError(
                "system_prompt is set but the model uses rlvr's character tokenizer, whose "
                'prompt format has none; set system_prompt = "" or train a Hugging Face model.'
            )
        device = place_model(policy, cfg.device)
        if device.type == "cuda":
            console.print(f"device: {device} ({torch.cuda.get_device_name(device)})")
        checkpointer = Checkpointer(run_dir, cfg, tokenizer)
        summary["device"] = str(device)
        summary["num_parameters"] = policy.num_parameters()

        in_grpo = state is not None and state["phase"] == "grpo"
        loaded_model = cfg.init_from or cfg.model_path
        if not loaded_model and cfg.pretrain.steps > 0 and not in_grpo:
            t0 = time.perf_counter()
            pretrain(policy, tokenizer, task, cfg, logger, checkpointer, should_stop,
                     resume=state)  # fmt: skip
            summary["pretrain_seconds"] = time.perf_counter() - t0
            checkpointer.save_final("pretrained", policy, {"phase": "pretrain"})

        if in_grpo:
            before = state["before"]
        else:
            console.print("evaluating the starting policy ...")
            with autocast(cfg, policy):
                before, samples = evaluate(policy, tokenizer, scorer, eval_problems, cfg.eval,
                                           seed=cfg.seed)  # fmt: skip
            logger.log("eval", 0, before)
            write_samples(run_dir, "before-grpo", samples)

        after = before
        if cfg.grpo.steps > 0:
            t0 = time.perf_counter()
            summary["grpo_seconds_per_step"] = grpo(
                policy, tokenizer, task, scorer, cfg, logger, eval_problems, checkpointer,
                should_stop, resume=state if in_grpo else None, before=before,
            )  # fmt: skip
            summary["grpo_seconds"] = time.perf_counter() - t0
            console.print("evaluating the trained policy ...")
            with autocast(cfg, policy):
                after, samples = evaluate(policy, tokenizer, scorer, eval_problems, cfg.eval,
                                          seed=cfg.seed)  # fmt: skip
            logger.log("eval", cfg.grpo.steps, after)
            write_samples(run_dir, "after-grpo", samples)
        checkpointer.save_final("checkpoint", policy, {"phase": "grpo", "step": cfg.grpo.steps,
                                                       "policy_version": cfg.grpo.steps})  # fmt: skip

    if cfg.plots:
        plot_metrics(run_dir)
    for key, value in before.items():
        summary[f"pretrain_{key}"] = value
    for key, value in after.items():
        summary[f"final_{key}"] = value
    summary["eval_problems"] = len(eval_problems)
    summary["wall_seconds"] = time.perf_counter() - t_start
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir, {"before": before, "after": after, **summary}


def _kept_records(state: dict | None) -> Callable[[dict], bool]:
    """Which metrics.jsonl records a resumed run keeps: those logged up to its checkpoint.

    Records after the checkpoint are logged again by the resumed run; the old copies move to
    metrics.dropped.jsonl (nothing is deleted).
    """
    if state is None:
        return lambda record: False  # a fresh start (or a resume with no checkpoint yet)
    if state["phase"] == "pretrain":
        return lambda r: r.get("phase") == "pretrain" and r.get("step", 0) <= state["step"]
    return lambda r: r.get("phase") == "pretrain" or r.get("step", 0) <= state["step"]
