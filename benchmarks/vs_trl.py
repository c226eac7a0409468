"""rlvr's GRPO against TRL's GRPOTrainer: same checkpoint, task, hyperparameters and threads.

    .venv/bin/python benchmarks/vs_trl.py [--steps 30] [--warmup 2] [--pretrain-steps 400]
                                          [--betas 0.04,0] [--threads 2] [--init FOLDER]
                                          [--device cpu]

1. A Qwen2-architecture model of ~1.1M parameters (rlvr's default shape with q/k/v biases)
   is pretrained briefly with rlvr on the demo's arithmetic task (`rlvr.learning.pretrain.pretrain`, the
   demo recipe's data mix), so that its rewards are not ~0, and saved with `rlvr.hf.save_hf`
   together with rlvr's CharTokenizer. `--init CHECKPOINT` (e.g. a demo run's pretrained/)
   skips this; a Llama-shaped checkpoint is saved as Qwen2 with q/k/v biases of zero (the
   same function: identical logits).
2. For each KL weight beta, both sides train that folder for warm-up + timed steps on the
   same problems in the same order: 8 prompts x 8 samples x 64 forced completion tokens,
   temperature 1.0, lr 5e-5 (constant), AdamW(0.9, 0.95), no weight decay, grad clip 1.0,
   epsilon 0.2 both ways, mu = 1, loss "dapo", group z-score advantages, fp32.
   - rlvr: `rlvr.loop.grpo` on the folder loaded as `--model` loads it (`rlvr.loop.
     load_model`), grpo.min_new_tokens = 64 (EOS masked out of the sampling distribution,
     as TRL's generation min_new_tokens does), verification in-process (reward.workers = 0).
   - TRL: `GRPOTrainer(model=FOLDER)`, tokenizer `PreTrainedTokenizerFast.from_pretrained`,
     per_device_train_batch_size 64, num_generations 8 (one optimizer step = 8 prompts x 8
     generations), max_completion_length 64 with generation min_new_tokens 64.
   The reward is the task's verifier accuracy (0/1) on the response up to the end of its
   first `</answer>`, on both sides through the same function: a forced 64-token completion
   runs on past its answer and usually writes more answer blocks, which the verifier scores
   0 (the demo's pretrained model: 0.01 graded whole, 0.48 graded to its first answer).
3. Seconds per optimizer step: the median over the timed steps (rlvr: its logged
   step_seconds, sampling + verification + update; TRL: on_step_begin -> on_step_end of a
   TrainerCallback). `ratio` = TRL seconds / rlvr seconds (above 1: rlvr is faster). Reward:
   the mean over the last `--reward-window` steps and over the first ones, per side.

What differs unavoidably: the random streams (the two sides sample different completions
from the same policy); TRL's timed interval leaves out its data loader's fetch of the
prompts and its logging, rlvr's its logging.

`--device cuda` runs both sides on the GPU (rlvr: `device = "cuda"`; TRL: use_cpu=False), fp32
with TF32 off on both; the step timers wait for the GPU's work to end.

Prints one line per setting to stderr and one JSON line last on stdout. Needs the bench extra
(`pip install -e '.[bench]'`: trl, transformers). Run it alone: 2-thread torch slows down
when another process holds a core.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from rlvr.checkpoint import Checkpointer, load_checkpoint
from rlvr.cli import recipe_path
from rlvr.config import load_config
from rlvr.device import place_model
from rlvr.hf import HFTokenizer, save_hf
from rlvr.learning.pretrain import pretrain
from rlvr.loop import grpo, load_model, seed_everything
from rlvr.model import Transformer
from rlvr.report import RunLogger, read_metrics
from rlvr.sampling.rollout import response_text
from rlvr.sampling.sampler import ProblemStream
from rlvr.tasks.arithmetic import ArithmeticTask
from rlvr.tokenizer import ANSWER_CLOSE, CharTokenizer
from rlvr.verifiers.rewards import Scorer

LR = 5e-5
EPSILON = 0.2


class FirstAnswerTask(ArithmeticTask):
    """The demo's arithmetic task, graded on the response up to its first `</answer>`."""

    def verify(self, response, problem):
        end = response.find(ANSWER_CLOSE)
        return super().verify(response if end < 0 else response[: end + len(ANSWER_CLOSE)], problem)


def config(args: argparse.Namespace, beta: float = 0.04, pretrain_steps: int = 0):
    """The demo recipe with the benchmark's settings; every knob both sides share is here."""
    return load_config(recipe_path("demo"), [
        "--threads", str(args.threads), "--model.attention_bias", "true",
        "--pretrain.steps", str(pretrain_steps),
        "--grpo.steps", str(args.warmup + args.steps), "--grpo.num_prompts", "8",
        "--grpo.group_size", "8", "--grpo.max_new_tokens", "64", "--grpo.min_new_tokens", "64",
        "--grpo.temperature", "1.0", "--grpo.lr", str(LR), "--grpo.beta", str(beta),
        "--grpo.epsilon", str(EPSILON), "--grpo.epsilon_high", str(EPSILON),
        "--grpo.num_iterations", "1", "--grpo.loss_type", "dapo", "--grpo.advantage", "grpo",
        "--grpo.grad_clip", "1.0", "--grpo.weight_decay", "0.0", "--grpo.eval_every", "0",
        "--reward.format_weight", "0.0", "--reward.workers", "0", "--checkpoint.every", "0",
        "--device", args.device,
    ])  # fmt: skip


def make_task(cfg) -> FirstAnswerTask:
    return FirstAnswerTask(**cfg.task.options)


def build_checkpoint(args: argparse.Namespace, folder: Path) -> None:
    """Pretrain rlvr's model (Qwen2 shape) on the task and save it as a Hugging Face folder."""
    cfg = config(args, pretrain_steps=args.pretrain_steps)
    cfg.pretrain.warmup_steps = min(cfg.pretrain.warmup_steps, args.pretrain_steps)
    seed_everything(cfg.seed, cfg.threads)
    tokenizer = CharTokenizer()
    cfg.model.vocab_size = tokenizer.vocab_size
    model = Transformer(cfg.model)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, RunLogger(Path(tmp), tensorboard=False) as logger:
        checkpointer = Checkpointer(Path(tmp), cfg, tokenizer)
        pretrain(model, tokenizer, make_task(cfg), cfg, logger, checkpointer, lambda: False)
    save_hf(model.eval(), tokenizer, folder)
    print(f"pretrained {model.num_parameters():,} parameters for {args.pretrain_steps} steps "
          f"in {time.perf_counter() - t0:.0f} s -> {folder}", file=sys.stderr)  # fmt: skip


def qwen2_checkpoint(source: str, folder: Path) -> None:
    """Save an rlvr checkpoint (a run folder, pretrained/, a Hugging Face folder) as Qwen2:
    a Llama-shaped model gets q/k/v biases of zero, which compute the same function."""
    model, tokenizer, _, _ = load_checkpoint(source)
    if not model.config.attention_bias:
        config = copy.deepcopy(model.config)
        config.attention_bias = True
        qwen2 = Transformer(config)
        missing, unexpected = qwen2.load_state_dict(model.state_dict(), strict=False)
        assert not unexpected and all(k.endswith("_proj.bias") for k in missing), missing
        with torch.no_grad():
            for name in missing:
                qwen2.get_parameter(name).zero_()
        model = qwen2
    save_hf(model.eval(), tokenizer, folder)
    print(f"{source} -> {folder} (qwen2)", file=sys.stderr)


def problem_batches(cfg) -> list:
    """The problems of every step, in order: rlvr's seeded stream, given to TRL too."""
    stream = ProblemStream(make_task(cfg), cfg)
    return [stream.batch(i) for i in range(cfg.grpo.steps)]


def run_rlvr(folder: Path, cfg) -> dict:
    """rlvr GRPO on the folder; per-step seconds and rewards from its metrics.jsonl."""
    seed_everything(cfg.seed, cfg.threads)
    policy, tokenizer = load_model(str(folder))
    place_model(policy, cfg.device)
    task = make_task(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        with RunLogger(Path(tmp), tensorboard=False) as logger:
            scorer = Scorer(task, cfg.reward, cfg.grpo.max_new_tokens, pool=None)
            checkpointer = Checkpointer(Path(tmp), cfg, tokenizer)  # saves once, after the end
            grpo(policy, tokenizer, task, scorer, cfg, logger, [], checkpointer, lambda: False)
        rows = [r for r in read_metrics(Path(tmp)) if r["phase"] == "grpo"]
    assert all(r["response_length"] == cfg.grpo.max_new_tokens for r in rows)
    return {
        "step_seconds": [r["step_seconds"] for r in rows],
        "sample_seconds": [r["sample_seconds"] for r in rows],
        "rewards": [r["accuracy"] for r in rows],
        "threads": torch.get_num_threads(),
    }


def run_trl(folder: Path, cfg, batches: list) -> dict:
    """TRL's GRPOTrainer on the folder with the same settings; timed by a callback."""
    import transformers
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    g = cfg.grpo
    seed_everything(cfg.seed, cfg.threads)
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(str(folder))
    tokenizer = HFTokenizer(fast)
    task = make_task(cfg)
    problems = [p for batch in batches for p in batch]
    # Plain-text prompts: exactly rlvr's prompt text (the checkpoint's chat template).
    rows = [
        {"prompt": tokenizer.format_prompt(p.prompt), "index": i} for i, p in enumerate(problems)
    ]
    for row in rows[: g.num_prompts]:  # TRL tokenizes plain-text prompts with fast(text=...)
        assert fast(text=[row["prompt"]])["input_ids"][0] == tokenizer.encode(row["prompt"])
    rewards: list[float] = []

    def accuracy(prompts, completions, completion_ids, index, **kwargs) -> list[float]:
        # TRL's `completions` are decoded without special tokens (the tags would vanish):
        # decode the ids as rlvr does and grade with the same function.
        scores = [
            task.verify(response_text(tokenizer, ids), problems[i]).reward
            for ids, i in zip(completion_ids, index)
        ]
        assert all(len(ids) == g.max_new_tokens for ids in completion_ids)
        rewards.append(sum(scores) / len(scores))
        return scores

    class StepTimer(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.threads: set[int] = set()

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self.t0)
            self.threads.add(torch.get_num_threads())

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp, report_to="none", save_strategy="no", logging_steps=1,
            disable_tqdm=True, use_cpu=cfg.device == "cpu", bf16=False, fp16=False, seed=cfg.seed,
            model_init_kwargs={"dtype": torch.float32},
            max_steps=g.steps, per_device_train_batch_size=g.num_prompts * g.group_size,
            gradient_accumulation_steps=1, num_generations=g.group_size,
            shuffle_dataset=False, dataloader_num_workers=0,
            max_completion_length=g.max_new_tokens,
            generation_kwargs={"min_new_tokens": g.max_new_tokens},
            temperature=g.temperature, top_p=g.top_p, top_k=g.top_k,
            learning_rate=g.lr, lr_scheduler_type="constant", warmup_steps=0,
            optim="adamw_torch", adam_beta1=0.9, adam_beta2=0.95, weight_decay=g.weight_decay,
            max_grad_norm=g.grad_clip, beta=g.beta, epsilon=g.epsilon,
            epsilon_high=g.epsilon_high, num_iterations=g.num_iterations,
            loss_type=g.loss_type, scale_rewards="group", log_completions=False,
        )  # fmt: skip
        trainer = GRPOTrainer(
            model=str(folder),  # a path, so TRL can load its reference model when beta > 0
            reward_funcs=accuracy,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=fast,
            callbacks=[timer],
        )
        trainer.remove_callback(transformers.PrinterCallback)  # its log lines go to stdout
        torch.set_num_threads(cfg.threads)
        trainer.train()
    # TRL samples the dataset in order (shuffle_dataset=False): step i saw rlvr's batch i.
    return {"step_seconds": timer.seconds, "rewards": rewards, "threads": max(timer.threads)}


def summarize(side: dict, args: argparse.Namespace) -> dict:
    timed = side["step_seconds"][args.warmup :]
    window = args.reward_window
    sampling = side.get("sample_seconds", [])[args.warmup :]
    return {
        "seconds_per_step": round(statistics.median(timed), 4),
        **({"sample_seconds_per_step": round(statistics.median(sampling), 4)} if sampling else {}),
        "steps_timed": len(timed),
        "reward_first": round(statistics.mean(side["rewards"][:window]), 4),
        "reward_last": round(statistics.mean(side["rewards"][-window:]), 4),
        "rewards": [round(r, 4) for r in side["rewards"]],
        "threads": side["threads"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--init", help="start from this checkpoint (e.g. a demo run's pretrained/) instead of "
        "pretraining one; a Llama-shaped one is saved as Qwen2 with zero q/k/v biases"
    )  # fmt: skip
    parser.add_argument("--save", help="keep the pretrained checkpoint in this folder")
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--reward-window", type=int, default=10, help="steps the rewards average")
    parser.add_argument("--betas", default="0.04,0", help="comma-separated KL weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"],
        help="both sides (cuda: the current GPU; pick another with CUDA_VISIBLE_DEVICES)",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import transformers
    import trl

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.save or Path(tmp) / "checkpoint")
        if args.init:
            qwen2_checkpoint(args.init, folder)
        else:
            build_checkpoint(args, folder)
        num_parameters = load_model(str(folder))[0].num_parameters()
        results = {}
        for beta in [float(b) for b in args.betas.split(",")]:
            cfg = config(args, beta)
            batches = problem_batches(cfg)
            ours = summarize(run_rlvr(folder, cfg), args)  # back to back, same process
            theirs = summarize(run_trl(folder, cfg, batches), args)
            ratio = theirs["seconds_per_step"] / ours["seconds_per_step"]
            print(f"beta {beta}: rlvr {ours['seconds_per_step']:.3f} s/step, reward "
                  f"{ours['reward_first']:.3f} -> {ours['reward_last']:.3f} | TRL "
                  f"{theirs['seconds_per_step']:.3f} s/step, reward {theirs['reward_first']:.3f}"
                  f" -> {theirs['reward_last']:.3f} | ratio {ratio:.2f}", file=sys.stderr)  # fmt: skip
            results[str(beta)] = {"rlvr": ours, "trl": theirs, "ratio": round(ratio, 2)}
    g = cfg.grpo
    print(json.dumps({
        "benchmark": "vs_trl",
        "architecture": "qwen2", "num_parameters": num_parameters, "init": args.init or
        f"rlvr pretrain, {args.pretrain_steps} steps", "task": "arithmetic",
        "task_options": cfg.task.options, "num_prompts": g.num_prompts,
        "group_size": g.group_size, "completion_tokens": g.max_new_tokens, "forced_length": True,
        "temperature": g.temperature, "lr": g.lr, "epsilon": g.epsilon, "num_iterations": 1,
        "loss_type": g.loss_type, "dtype": "float32", "threads": args.threads,
        "device": torch.cuda.get_device_name(args.device) if args.device != "cpu" else "cpu",
        "warmup_steps": args.warmup, "steps_timed": args.steps, "statistic": "median",
        "reward": "verifier accuracy, mean over the first/last reward_window steps",
        "reward_window": args.reward_window, "ratio": "trl seconds / rlvr seconds",
        "betas": results, "trl_version": trl.__version__,
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
        "wall_seconds": round(time.perf_counter() - t_start),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
