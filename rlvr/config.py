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
import importlib.util
import inspect
import math
import os
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

__all__ = [
    "Config",
    "ConfigError",
    "load_config",
    "apply_overrides",
    "apply_table",
    "to_toml",
    "validate",
]


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
    """Peak AdamW learning rate (linear warmup, then pretrain.schedule)."""
    warmup_steps: int = 100
    """Steps of linear learning-rate warmup."""
    schedule: str = "cosine"
    """Learning rate after warmup: "cosine" (cosine decay to lr/10 over all steps) or "wsd"
    (warmup-stable-decay: lr until the last decay_fraction of the steps, then linear to
    lr/10)."""
    decay_fraction: float = 0.2
    """With schedule = "wsd": the fraction of the steps spent decaying the learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices (not on norms)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 turns clipping off)."""
    think_fraction: float = 0.4
    """Fraction of examples that show the step-by-step trace; the rest answer directly."""
    slip_fraction: float = 0.25
    """Fraction of traces with one arithmetic mistake, so the model learns imperfect thinking."""
    decay_think_fraction: float = -1.0
    """With schedule = "wsd": the think_fraction of the decay steps (the data mix changes when
    the learning rate decays, as in MiniCPM), so that most steps can show traces while the
    last ones set how often the model chooses to think; -1 keeps think_fraction throughout."""
    pack_length: int = 0
    """Pack whole examples into rows of this many tokens (one forward pass per step, less
    padding; an example attends to those before it in its row); 0 pads answer-only examples
    and traces as two batches of their own."""


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
    max_staleness: int = 0
    """Asynchronous GRPO: the learner trains step n on episodes sampled by the policy of step
    n - max_staleness (policy version n - 1 - max_staleness) while a sampler process already
    samples the next steps; 0 is the synchronous loop. The lag is fixed, so the run does not
    depend on timing: the same seed and threads give the same run."""


JUDGE_TEMPLATE = (
    "Question: {question}\nReference answer: {reference}\nResponse: {response}\n"
    "Does the response give the same final answer as the reference? Answer yes or no.\n"
)
"""The judge's default prompt; see JudgeConfig.template for its fields."""


@dataclass
class JudgeConfig:
    model: str = ""
    """A local Hugging Face model folder that judges whether a response's answer matches the
    reference ("" turns the judge off). It runs in a worker process of its own, batched,
    greedy (rlvr/verifiers/judge.py)."""
    when: str = "unparsable"
    """"unparsable": the task's rules first, the judge only where they cannot decide (status
    "unparsable"); "always": the judge grades every response."""
    template: str = JUDGE_TEMPLATE
    """The judge's prompt (through the judge's chat template when it has one): {question} is
    the problem's prompt, {response} the response's answer (its <answer> block, else the text
    after </think>), {reference} the gold answer."""
    correct_pattern: str = r"^\W*(yes|correct)\b"
    """Regular expression (case-insensitive, searched in the judge's output) that means
    correct; it is tried before wrong_pattern."""
    wrong_pattern: str = r"^\W*(no|incorrect|wrong)\b"
    """Regular expression that means wrong; an output matching neither is status
    "unparsable" (reward 0)."""
    max_new_tokens: int = 8
    """Longest judge output, tokens."""
    batch_size: int = 16
    """Most responses the judge reads in one call (waiting ones are batched together)."""
    timeout_s: float = 60.0
    """Seconds one judge call (a batch) may run before the worker is killed and restarted; a
    failed call (timeout or crash) is retried once, then its responses score 0 with status
    "timeout" or "error". Loading the model is not timed."""
    threads: int = 1
    """torch threads of the judge's worker process."""


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
    zero_flagged: list = field(default_factory=list)
    """Reward-hacking watch (rlvr/verifiers/hacking.py): completions flagged by any of these
    checks score 0, e.g. ["copied_answer", "text_after_answer"]. Checks: no_reasoning,
    copied_answer, several_answers, text_after_answer, truncated, length_outlier. Every check
    is logged per GRPO step (hacking/<check>) whether listed or not."""
    reasoning_required: bool = False
    """The task asks for reasoning: the watch flags a completion whose think block is empty
    (no_reasoning). Off for the demo, whose model may answer at once."""
    length_ratio: float = 4.0
    """The watch flags a completion more than this many times longer or shorter than its
    group's median length (length_outlier)."""
    verdict_cache: bool = True
    """Grade identical (response answer, gold) pairs once per run, by the rules and by the
    judge alike; hits are logged as verdict_cache_hits. Turn it off for verifiers whose
    verdict can change between calls."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)


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


PHASE_KINDS = ("sft", "grpo", "dpo", "rsft", "distill")
"""What a phase of a multi-phase run does (the `kind` of a [[phases]] table): sft (a data
file), grpo, dpo (online, on verifier-labelled pairs), rsft (rejection-sampling SFT on the
policy's own verified traces: one round of `rlvr iterate`), distill (SFT on a teacher's
verified traces)."""
PHASE_SECTIONS = ("sft", "grpo", "dpo", "traces", "iterate", "eval", "checkpoint")
"""The config tables a [[phases]] table may override for its phase."""
TRACE_FILTERS = ("verifier", "majority")


@dataclass
class SFTConfig:
    data: str = ""
    """JSONL or Parquet file of a kind = "sft" phase: one example per line/row, either
    {prompt, response} or {messages: [{role, content}, ...]} ending with the assistant's."""
    prompt_field: str = "prompt"
    """Name of the prompt column in sft.data."""
    response_field: str = "response"
    """Name of the response column in sft.data (the text from <think> on)."""
    messages_field: str = "messages"
    """Name of the chat-messages column in sft.data (used when a row has no prompt field)."""
    epochs: float = 2.0
    """Passes over the examples (rounded up to whole optimizer steps); see sft.steps."""
    steps: int = 0
    """Optimizer steps of the phase; 0 derives them from sft.epochs."""
    batch_size: int = 32
    """Examples per optimizer step."""
    lr: float = 1e-4
    """AdamW learning rate (linear warmup, then constant)."""
    warmup_steps: int = 0
    """Steps of linear learning-rate warmup."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 turns clipping off)."""
    packing: bool = False
    """Pack a step's examples into rows of sft.max_length tokens (positions restart and
    attention stays inside each example, so the loss is the unpacked one) instead of
    padding each to the longest; needs rlvr's own model."""
    max_length: int = 256
    """Longest example (prompt + response) in tokens, and the packed row length."""


@dataclass
class DPOConfig:
    steps: int = 30
    """Online DPO steps; each samples grpo.num_prompts x grpo.group_size completions (the
    grpo.* sampling keys), pairs a verified-correct with a wrong one per problem, and updates."""
    beta: float = 0.1
    """DPO's beta: the strength of the implicit KL constraint to the reference."""
    lr: float = 1e-5
    """AdamW learning rate (linear warmup, then constant)."""
    warmup_steps: int = 0
    """Steps of linear learning-rate warmup."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 turns clipping off)."""
    pairs_per_problem: int = 1
    """At most this many (correct, wrong) pairs per problem and step."""
    num_iterations: int = 1
    """Optimizer passes over each step's pairs."""
    ref_update_every: int = 0
    """Copy the policy into the reference every this many steps (iterative DPO; 0: the
    reference stays the phase's starting policy)."""


@dataclass
class TracesConfig:
    num_problems: int = 256
    """Training problems sampled per round (the same problems every round)."""
    samples_per_problem: int = 8
    """Completions sampled per problem (k)."""
    max_per_problem: int = 4
    """At most this many distinct kept traces per problem (m)."""
    temperature: float = 1.0
    """Sampling temperature of the traces."""
    max_new_tokens: int = 64
    """Longest sampled trace."""
    filter: str = "verifier"
    """Which traces are kept: "verifier" (the verified-correct ones) or "majority" (those
    whose answer is the model's own majority answer, no verifier: the blind-spot experiment)."""
    require_think: bool = False
    """Keep only traces with a non-empty think block (R1's long-trace cold start)."""
    balance: bool = True
    """Every kept problem gives max_per_problem training rows (its distinct traces repeated
    in turn), so problems the model rarely solves weigh as much as the easy ones."""
    teacher: str = ""
    """Checkpoint or run folder whose model samples the traces of a kind = "distill" phase
    (its tokenizer must be the student's)."""


@dataclass
class IterateConfig:
    rounds: int = 0
    """Self-improvement rounds of `rlvr iterate` (each: sample, verify, keep, fine-tune,
    evaluate); used when no [[phases]] are given."""
    fine_tune_from: str = "previous"
    """Where each round's fine-tuning starts: "previous" (the last round's weights) or
    "start" (the weights the run's phases started from, saved in run_dir/start/, as in STaR)."""


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


SPECULATE_MODES = ("off", "context", "draft")


@dataclass
class SamplerConfig:
    threads: int = 1
    """torch threads of the sampler process of an asynchronous GRPO phase
    (grpo.max_staleness > 0); the synchronous loop samples in the training process with
    `threads`."""
    backend: str = "rlvr"
    """What samples the GRPO episodes: "rlvr" (rlvr's own engine) or "vllm" (vLLM in the
    sampler's process, `pip install rlvr[vllm]`; new weights are loaded into it after each
    learner step). Evaluation always uses rlvr's engine."""
    vllm_kv_cache_gb: float = 1.0
    """vLLM's KV-cache space in GiB (on the CPU; on a GPU vLLM takes
    sampler.vllm_gpu_memory_utilization of the GPU instead)."""
    vllm_gpu_memory_utilization: float = 0.3
    """Fraction of the GPU's memory vLLM may take (weights and KV cache); the learner shares
    the GPU."""
    vllm_enforce_eager: bool = True
    """Run vLLM without torch.compile / CUDA graphs: starts in seconds; False compiles (tens
    of seconds at start, faster decoding)."""
    speculate: str = "off"
    """Speculative decoding in GRPO sampling and evaluation: "off"; "context" (each row's
    next tokens drafted from its own prompt and completion, its group's other samples and
    completions of the same problem kept from earlier steps, then verified by the policy in
    one forward; per step only when the measured acceptance says it pays); "draft" (drafted
    by the small model at sampler.draft_model). Lossless: the samples have the policy's
    distribution and the logprobs are the policy's. Needs rlvr's model class."""
    speculate_tokens: int = 4
    """The most tokens drafted per row and step."""
    draft_model: str = ""
    """With speculate = "draft": a run or checkpoint folder, or a Hugging Face checkpoint
    folder, of a small model with the policy's tokenizer."""
    continuous_batching: bool = True
    """Keep the engine's rows full: when a completion finishes, the next waiting sample takes
    its row (evaluation: eval.batch_size rows over all its problems, when they need at least
    three such batches, else a batch at a time; dynamic sampling: the next round's problems
    start while the last round's long completions finish)."""
    exact_logprobs: bool = False
    """Batch-invariant kernels in the policy's forward, so the logprobs the sampler returns
    equal the learner's bit for bit (mismatch_kl exactly 0). Costs speed; needs rlvr's model
    class in float32."""


@dataclass
class LearnerConfig:
    threads: int = 1
    """torch threads of the training process during an asynchronous GRPO phase
    (grpo.max_staleness > 0): the updates and the evaluations in between; pretraining, the
    final evaluation and the synchronous loop use `threads`."""
    processes: int = 1
    """Data-parallel learner: split each optimizer minibatch's groups over this many processes
    (torch.distributed: gloo on the CPU, NCCL on GPUs), gradients summed across them, so one
    update equals the single-process update; each process uses learner.threads threads."""
    fsdp: bool = False
    """With learner.processes > 1: shard the parameters, gradients and optimizer state over
    the processes (torch FSDP's fully_shard, per block), for a model whose training state does
    not fit one device; the update is the same. Its checkpoints resume with fsdp only."""


@dataclass
class RayConfig:
    address: str = ""
    """The Ray cluster to join, "HOST:PORT" of `ray start --head` (or "auto" for the one this
    machine belongs to); empty starts a local Ray for the run and shuts it down after it."""
    num_samplers: int = 1
    """Sampler actors. Steps are sampled whole, one per actor at a time; with
    grpo.max_staleness = k up to k + 1 steps are open at once, so more than k + 1 samplers
    wait. The run's numbers do not depend on this count."""
    num_verifiers: int = 0
    """Verifier actors, each grading with its own reward.workers processes (hard timeouts);
    the samplers send them every completion. 0: each sampler grades in its own processes."""
    sampler_cpus: float = 1.0
    """CPUs Ray reserves for each sampler actor."""
    sampler_gpus: float = 0.0
    """GPUs Ray reserves for each sampler actor (fractions share a GPU); with one, the actor's
    model samples on it."""
    verifier_cpus: float = 1.0
    """CPUs Ray reserves for each verifier actor."""
    learner_cpus: float = 1.0
    """CPUs Ray reserves for the learner actor."""
    learner_gpus: float = 0.0
    """GPUs Ray reserves for the learner actor; with one, the learner trains on it."""
    max_restarts: int = 3
    """How many times Ray starts a dead sampler or verifier actor again (the run goes on and
    counts the lost work) before the run stops."""


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    """Write the metrics as TensorBoard scalars to run_dir/tensorboard (metrics.jsonl is
    always written)."""
    wandb: str = ""
    """A Weights & Biases project to log the metrics to ("" for none; needs `pip install
    'rlvr[wandb]'`; WANDB_MODE=offline logs to ./wandb without an account)."""
    trackio: str = ""
    """A trackio project to log the metrics to ("" for none; needs `pip install
    'rlvr[trackio]'`; trackio stores runs locally)."""


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
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    traces: TracesConfig = field(default_factory=TracesConfig)
    iterate: IterateConfig = field(default_factory=IterateConfig)
    phases: list = field(default_factory=list)
    """The run's phases after pretraining (or loading), in order: [[phases]] tables, each
    with a kind (sft, grpo, dpo, rsft, distill) and overrides of the sft, grpo, dpo, traces,
    iterate, eval and checkpoint tables for that phase, e.g. {kind = "grpo", grpo = {steps =
    30}}. Empty: one GRPO phase (or iterate.rounds rsft rounds)."""
    runtime: str = "local"
    """Where the roles run: "local" (this machine: the sampler in the training process, or in a
    process of its own with grpo.max_staleness > 0) or "ray" (sampler, verifier and learner
    actors on a Ray cluster; the [ray] table places them; needs `pip install rlvr[ray]`)."""
    ray: RayConfig = field(default_factory=RayConfig)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict | None = None) -> Config:
        """A recipe shipped with rlvr by name ("demo", "smoke") or a TOML file, with dotted
        overrides such as {"grpo.beta": 0.02}; validated like `rlvr train`'s."""
        if path is not None and not Path(path).exists() and Path(path).suffix == "":
            recipe = Path(__file__).parent / "recipes" / f"{path}.toml"
            path = recipe if recipe.is_file() else path
        return load_config(path, as_overrides(overrides or {}))


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


def apply_table(cfg: Config, data: dict, where: str) -> Config:
    """Apply a table of config keys, nested as in a TOML file ({"grpo": {"beta": 0.02}}), to
    `cfg` in place, then validate it; `where` names the source in error messages."""
    _apply(cfg, data, "", where)
    validate(cfg)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `--a.b value` command-line overrides to `cfg` in place, then validate it."""
    for key, raw in parse_overrides(overrides):
        _set_dotted(cfg, key, raw)
    validate(cfg)
    return cfg


def as_overrides(values: dict[str, Any]) -> list[str]:
    """{"grpo.beta": 0.02, "task.options": {...}} -> ["--grpo.beta", "0.02", ...]: Python
    values as the command line writes them (strings stay strings, the rest as TOML)."""
    args = []
    for key, value in values.items():
        args += [f"--{key}", value if isinstance(value, str) else _toml_value(value)]
    return args


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
                "eval.": e, "checkpoint.": cfg.checkpoint, "lora.": cfg.lora,
                "sampler.": cfg.sampler, "learner.": cfg.learner,
                "logging.": cfg.logging, "ray.": cfg.ray,
                "reward.judge.": cfg.reward.judge}  # fmt: skip
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
    need(
        p.schedule in ("cosine", "wsd"),
        f"pretrain.schedule {p.schedule!r} is not one of cosine, wsd.",
    )
    need(
        0 < p.decay_fraction <= 1,
        f"pretrain.decay_fraction must be in (0, 1], got {p.decay_fraction}.",
    )
    need(
        0 <= p.pack_length <= m.max_position_embeddings,
        f"pretrain.pack_length must be 0 (off) or at most model.max_position_embeddings "
        f"({m.max_position_embeddings}), got {p.pack_length}.",
    )
    for key, value in [
        ("pretrain.think_fraction", p.think_fraction),
        ("pretrain.slip_fraction", p.slip_fraction),
    ]:
        need(0 <= value <= 1, f"{key} must be a fraction in [0, 1], got {value}.")
    need(
        p.decay_think_fraction == -1 or 0 <= p.decay_think_fraction <= 1,
        f"pretrain.decay_think_fraction must be a fraction in [0, 1] or -1 (off), got "
        f"{p.decay_think_fraction}.",
    )
    need(
        p.decay_think_fraction == -1 or p.schedule == "wsd",
        'pretrain.decay_think_fraction needs pretrain.schedule = "wsd" (it is the mix of the '
        "decay steps); set the schedule or decay_think_fraction = -1.",
    )
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
    sampler = cfg.sampler
    need(
        sampler.speculate in SPECULATE_MODES,
        f"sampler.speculate {sampler.speculate!r} is not one of {', '.join(SPECULATE_MODES)}.",
    )
    need(
        sampler.speculate_tokens >= 1,
        f"sampler.speculate_tokens must be at least 1, got {sampler.speculate_tokens}.",
    )
    need(
        (sampler.speculate == "draft") == bool(sampler.draft_model),
        'sampler.speculate = "draft" needs sampler.draft_model (a checkpoint folder of the '
        "draft model), and sampler.draft_model is only used by it; set both or neither.",
    )
    need(
        not sampler.exact_logprobs or cfg.dtype == "float32",
        'sampler.exact_logprobs is verified in float32 only; set dtype = "float32" or '
        "sampler.exact_logprobs = false.",
    )
    need(
        sampler.backend != "vllm" or (sampler.speculate == "off" and not sampler.exact_logprobs),
        "sampler.speculate and sampler.exact_logprobs are features of rlvr's engine; with "
        'sampler.backend = "vllm" set sampler.speculate = "off" and sampler.exact_logprobs = '
        "false (vLLM has speculative decoding of its own).",
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
    need(
        g.max_staleness >= 0,
        f"grpo.max_staleness must be 0 (synchronous) or more, got {g.max_staleness}.",
    )
    for key, value in [
        ("sampler.threads", cfg.sampler.threads),
        ("learner.threads", cfg.learner.threads),
    ]:
        need(value >= 1, f"{key} must be at least 1, got {value}.")
    if g.max_staleness > 0 and cfg.runtime == "local":
        cores = os.cpu_count() or 1
        roles = cfg.sampler.threads + cfg.learner.threads
        need(
            roles <= cores,
            f"sampler.threads ({cfg.sampler.threads}) + learner.threads ({cfg.learner.threads}) "
            f"= {roles} is more than this machine's {cores} cores; the two roles of an "
            "asynchronous run would fight for them: lower one of them.",
        )
        need(
            lora.rank == 0,
            "grpo.max_staleness > 0 is not supported with LoRA (lora.rank > 0): the sampler "
            "process receives whole weights; set grpo.max_staleness = 0 or lora.rank = 0.",
        )
    from rlvr.verifiers.hacking import CHECKS

    for logger in ("wandb", "trackio"):
        need(
            not getattr(cfg.logging, logger) or importlib.util.find_spec(logger) is not None,
            f"logging.{logger} is set but {logger} is not installed: pip install "
            f"'rlvr[{logger}]', or set logging.{logger} = \"\".",
        )

    for name in r.zero_flagged:
        need(
            name in CHECKS,
            f"reward.zero_flagged names {name!r}, which is not a check; use any of "
            f"{', '.join(CHECKS)}.",
        )
    need(r.length_ratio > 1, f"reward.length_ratio must be above 1, got {r.length_ratio}.")
    validate_placement(cfg)
    need(
        cfg.sampler.backend in ("rlvr", "vllm"),
        f"sampler.backend {cfg.sampler.backend!r} is not one of rlvr, vllm.",
    )
    need(
        cfg.sampler.vllm_kv_cache_gb > 0,
        f"sampler.vllm_kv_cache_gb must be above 0, got {cfg.sampler.vllm_kv_cache_gb}.",
    )
    need(
        0 < cfg.sampler.vllm_gpu_memory_utilization <= 1,
        "sampler.vllm_gpu_memory_utilization must be in (0, 1], got "
        f"{cfg.sampler.vllm_gpu_memory_utilization}.",
    )
    need(
        cfg.sampler.backend != "vllm" or lora.rank == 0,
        'sampler.backend = "vllm" is not supported with LoRA (lora.rank > 0): vLLM receives '
        'whole weights; set lora.rank = 0 or sampler.backend = "rlvr".',
    )
    j = r.judge
    need(
        j.when in ("unparsable", "always"),
        f"reward.judge.when {j.when!r} is not one of unparsable, always.",
    )
    for key, value in [("reward.judge.max_new_tokens", j.max_new_tokens),
                       ("reward.judge.batch_size", j.batch_size),
                       ("reward.judge.threads", j.threads)]:  # fmt: skip
        need(value >= 1, f"{key} must be at least 1, got {value}.")
    need(j.timeout_s > 0, f"reward.judge.timeout_s must be above 0, got {j.timeout_s}.")
    for key in ("correct_pattern", "wrong_pattern"):
        try:
            re.compile(getattr(j, key))
        except re.error as e:
            raise ConfigError(
                f"reward.judge.{key} {getattr(j, key)!r} is not a regular expression ({e}); fix it."
            ) from e
    try:
        j.template.format(question="", response="", reference="")
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"reward.judge.template has a field other than {{question}}, {{response}} and "
            f"{{reference}} ({type(e).__name__}: {e}); write literal braces as {{{{ and }}}}."
        ) from e
    for name, weight in r.functions.items():
        need(
            isinstance(weight, (int, float)) and not isinstance(weight, bool),
            f"reward.functions[{name!r}] must be a number (its weight), got {weight!r}.",
        )
        need(
            ":" in str(name),
            f"reward.functions key {name!r} must be 'module:function', e.g. 'my_rewards:brevity'.",
        )
    validate_post_training(cfg)


MAX_ROUNDS = 100
"""The most iterate.rounds a run may ask for (a typo such as 1000000 would only ever stall)."""


def validate_post_training(cfg: Config) -> None:
    """The sft, dpo, traces and iterate tables, and every phase of cfg.phases (each phase's
    own config, with its overrides, is validated like a whole run's)."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    sft, dpo, t, it = cfg.sft, cfg.dpo, cfg.traces, cfg.iterate
    for prefix, section in {"sft.": sft, "dpo.": dpo, "traces.": t}.items():
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, float):
                need(
                    math.isfinite(value), f"{prefix}{f.name} must be a finite number, got {value}."
                )
    for key, value in [
        ("sft.batch_size", sft.batch_size), ("sft.lr", sft.lr), ("sft.max_length", sft.max_length),
        ("sft.epochs", sft.epochs), ("dpo.beta", dpo.beta), ("dpo.lr", dpo.lr),
        ("dpo.pairs_per_problem", dpo.pairs_per_problem),
        ("dpo.num_iterations", dpo.num_iterations), ("traces.num_problems", t.num_problems),
        ("traces.max_per_problem", t.max_per_problem), ("traces.temperature", t.temperature),
        ("traces.max_new_tokens", t.max_new_tokens),
    ]:  # fmt: skip
        need(value > 0, f"{key} must be greater than 0, got {value}.")
    for key, value in [
        ("sft.steps", sft.steps), ("sft.warmup_steps", sft.warmup_steps),
        ("sft.weight_decay", sft.weight_decay), ("sft.grad_clip", sft.grad_clip),
        ("dpo.steps", dpo.steps), ("dpo.warmup_steps", dpo.warmup_steps),
        ("dpo.weight_decay", dpo.weight_decay), ("dpo.grad_clip", dpo.grad_clip),
        ("dpo.ref_update_every", dpo.ref_update_every), ("iterate.rounds", it.rounds),
    ]:  # fmt: skip
        need(value >= 0, f"{key} must be 0 or more, got {value}.")
    need(
        it.rounds <= MAX_ROUNDS,
        f"iterate.rounds must be at most {MAX_ROUNDS} (each round samples the training "
        f"problems and fine-tunes), got {it.rounds}.",
    )
    need(
        t.samples_per_problem >= 1,
        f"traces.samples_per_problem must be at least 1, got {t.samples_per_problem}.",
    )
    need(
        t.filter in TRACE_FILTERS,
        f"traces.filter {t.filter!r} is not one of {', '.join(TRACE_FILTERS)}.",
    )
    need(
        it.fine_tune_from in ("previous", "start"),
        f"iterate.fine_tune_from {it.fine_tune_from!r} is not one of previous, start.",
    )
    if not cfg.phases and not it.rounds:
        return
    need(
        not (cfg.phases and it.rounds),
        "Both [[phases]] and iterate.rounds describe the run's phases; keep one of them.",
    )
    need(
        cfg.lora.rank == 0,
        "LoRA (lora.rank > 0) runs only in a plain GRPO run, not with [[phases]] or "
        "iterate.rounds; set lora.rank = 0 to train all weights.",
    )
    for index, (kind, phase) in enumerate(phase_configs(cfg), start=1):
        where = f"phases[{index}] ({kind})"
        need(
            kind != "sft" or bool(phase.sft.data),
            f"{where} has no data: set sft.data to a JSONL or Parquet file of prompt/response "
            "pairs or chat messages.",
        )
        need(
            kind != "distill" or bool(phase.traces.teacher),
            f"{where} has no teacher: set traces.teacher to the checkpoint (or run folder) "
            "whose traces the student learns from.",
        )
        need(
            kind != "distill" or phase.traces.filter == "verifier",
            f"{where}: distillation keeps the teacher's verified-correct traces; set "
            'traces.filter = "verifier".',
        )


def phase_configs(cfg: Config) -> list[tuple[str, Config]]:
    """(kind, the phase's config) for each phase of the run, in order: cfg.phases with each
    phase's overrides applied to a copy of cfg; iterate.rounds rsft rounds when cfg.phases
    is empty; [] for a plain run (pretrain or load, then GRPO)."""
    tables = cfg.phases or [{"kind": "rsft"} for _ in range(cfg.iterate.rounds)]
    out = []
    for index, table in enumerate(tables, start=1):
        where = f"phases[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(f'{where} must be a table like {{kind = "grpo"}}, got {table!r}.')
        table = dict(table)
        kind = table.pop("kind", None)
        if kind not in PHASE_KINDS:
            raise ConfigError(
                f"{where} needs a kind, one of {', '.join(PHASE_KINDS)}; got {kind!r}."
            )
        for key in table:
            if key not in PHASE_SECTIONS:
                raise ConfigError(
                    f"{where} ({kind}) cannot override {key!r}: a phase may set "
                    f"{', '.join(PHASE_SECTIONS)} (e.g. grpo = {{steps = 30}})."
                )
        phase = dataclasses.replace(cfg, phases=[])
        for key in PHASE_SECTIONS:  # the phase's own copies of the tables it may change
            setattr(phase, key, dataclasses.replace(getattr(cfg, key)))
        _apply(phase, table, "", f"{where} ({kind})")
        phase.iterate.rounds = 0  # a phase is one round; it describes no phases of its own
        validate(phase)
        out.append((kind, phase))
    return out


def ray_installed() -> bool:
    """Whether the ray package can be imported (without importing it: that takes seconds)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def validate_placement(cfg: Config) -> None:
    """Reject impossible runtime, [ray] and learner.processes values (no network: whether a
    Ray address answers is checked when a run starts, rlvr/cluster.py)."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    g, ray, processes = cfg.grpo, cfg.ray, cfg.learner.processes
    need(
        cfg.runtime in ("local", "ray"),
        f"runtime {cfg.runtime!r} is not one of local, ray.",
    )
    need(processes >= 1, f"learner.processes must be at least 1, got {processes}.")
    need(
        not ray.address.startswith("ray://"),
        f"ray.address {ray.address!r} is a Ray client address, which rlvr does not use; give "
        "the head's HOST:PORT (what `ray start --head` prints after --address).",
    )
    groups = g.num_prompts // g.num_minibatches  # groups in one optimizer minibatch
    need(
        processes <= groups,
        f"learner.processes = {processes} is larger than the batch allows: each of the "
        f"grpo.num_minibatches = {g.num_minibatches} minibatches holds {groups} groups "
        f"(grpo.num_prompts / grpo.num_minibatches) and each process needs one; set "
        f"learner.processes to at most {groups}.",
    )
    need(
        not cfg.learner.fsdp or processes > 1,
        "learner.fsdp shards the learner over learner.processes; set learner.processes to 2 "
        "or more (or learner.fsdp = false).",
    )
    need(
        not (cfg.learner.fsdp and g.dynamic_sampling),
        "learner.fsdp with grpo.dynamic_sampling is not supported yet (a step may keep fewer "
        "groups than processes, and every FSDP process must take part in each pass); turn one "
        "of them off.",
    )
    need(
        processes == 1 or cfg.lora.rank == 0,
        "learner.processes > 1 is not supported with LoRA (lora.rank > 0) yet; set "
        "learner.processes = 1 or lora.rank = 0.",
    )
    need(ray.num_samplers >= 1, f"ray.num_samplers must be at least 1, got {ray.num_samplers}.")
    for key, value in [
        ("ray.num_verifiers", ray.num_verifiers),
        ("ray.sampler_cpus", ray.sampler_cpus),
        ("ray.sampler_gpus", ray.sampler_gpus),
        ("ray.verifier_cpus", ray.verifier_cpus),
        ("ray.learner_cpus", ray.learner_cpus),
        ("ray.learner_gpus", ray.learner_gpus),
        ("ray.max_restarts", ray.max_restarts),
    ]:
        need(value >= 0, f"{key} must be 0 or more, got {value}.")
    if cfg.runtime == "ray":
        need(
            ray_installed(),
            'runtime = "ray" needs the ray package, which is not installed; run '
            '`pip install "rlvr[ray]"` (or set runtime = "local").',
        )
        need(
            cfg.lora.rank == 0,
            'runtime = "ray" is not supported with LoRA (lora.rank > 0): the sampler actors '
            'receive whole weights; set runtime = "local" or lora.rank = 0.',
        )
        need(
            ray.num_verifiers == 0 or cfg.reward.workers > 0,
            "ray.num_verifiers > 0 needs reward.workers > 0 (each verifier actor grades in "
            "worker processes with a hard timeout); set reward.workers = 1 or more.",
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
        elif f.name == "phases":
            continue  # written last, as [[phases]] tables
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    while tables:  # each table, then the tables inside it ([reward], [reward.judge])
        name, obj = tables.pop(0)
        lines.append(f"\n[{name}]")
        inner = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                inner.append((f"{name}.{f.name}", value))
            else:
                lines.append(f"{f.name} = {_toml_value(value)}")
        tables[:0] = inner
    for table in getattr(cfg, "phases", []):  # a reader sees the run's phases at a glance
        lines.append("\n[[phases]]")
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
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
