"""The training loops, readable top to bottom: pretrain from scratch, then GRPO.

    rlvr train recipes/demo.toml --grpo.beta 0.02
    rlvr train --resume runs/demo-20261125-101500        # continue a stopped or killed run
    rlvr train recipes/smoke.toml --model path/to/hf_checkpoint --system_prompt r1

`run(cfg)` is the whole job: pretrain (or load) -> evaluate -> GRPO -> evaluate, writing a run
folder (config.toml, metrics.jsonl, tensorboard/, plots/, samples/, pretrained/, checkpoints/,
checkpoint/, summary.json).

GRPO here follows DeepSeekMath (Shao et al. 2024); every choice is a config key, and the
variants practitioners use are one key away (formulas and papers in rlvr/learning/algorithms.py):
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
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path

import torch

from rlvr.checkpoint import Checkpointer, latest_checkpoint, load_checkpoint, load_trainer_state
from rlvr.cluster import check_model, check_ray, ray_session
from rlvr.config import Config, ConfigError, phase_configs, to_toml
from rlvr.device import autocast, place_model, resolve_device
from rlvr.errors import StopRequested
from rlvr.evaluation import budget_curve, evaluate
from rlvr.learning.distributed import DistributedLearner, check_data_parallel
from rlvr.learning.learner import GRPOLearner, StepResult
from rlvr.learning.pretrain import pretrain
from rlvr.learning.updates import too_many_bad_steps
from rlvr.lora import check_targets
from rlvr.model import Transformer
from rlvr.report import (
    RunLogger,
    console,
    plot_metrics,
    plot_series,
    plot_think_budgets,
    progress_bar,
    write_samples,
)
from rlvr.sampling.engine import Engine
from rlvr.sampling.process import SamplerProcess, check_async
from rlvr.sampling.ray_sampler import SCHEDULE as RAY_SCHEDULE
from rlvr.sampling.ray_sampler import RaySampler
from rlvr.sampling.sampler import Rollouts, Sampler, make_engine
from rlvr.sampling.vllm_engine import check_vllm
from rlvr.tasks import TASKS, Problem
from rlvr.tasks.countdown import search_metrics
from rlvr.timeline import plot_timeline, record_step
from rlvr.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, CharTokenizer
from rlvr.verifiers.hacking import flagged_shares
from rlvr.verifiers.judge import check_judge_folder
from rlvr.verifiers.rewards import Scorer, open_pool

# ----------------------------------------------------------------------------- set-up


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


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


# ----------------------------------------------------------------------------- GRPO


def step_metrics(rollouts: Rollouts, result: StepResult, times: dict[str, float], g) -> dict:
    """One metrics.jsonl line of a GRPO step: rewards and behaviour of everything sampled,
    the learner's per-update statistics (averaged), staleness, and what each role cost.

    times: "step" (seconds of the whole step as the loop saw it), "learner" (the update),
    "learner_wait" (the learner waiting for the episodes), "sampler_wait" (the sampler idle
    before it started the step)."""
    sampled, n = rollouts.sampled, len(rollouts.sampled)
    num_tokens = sum(len(ep.completion_ids) for ep in sampled)
    parts: dict[str, float] = {}
    for ep in sampled:
        for name, value in ep.parts.items():
            parts[f"reward/{name}"] = parts.get(f"reward/{name}", 0.0) + value / n
    staleness = rollouts.step - 1 - rollouts.policy_version
    learned = sum(len(ep.prompt_ids) + len(ep.completion_ids) for ep in rollouts.episodes)
    v = rollouts.timings
    metrics = {
        "reward": torch.tensor([ep.reward for ep in sampled]).mean().item(),
        "accuracy": sum(ep.parts.get("accuracy", 0.0) for ep in sampled) / n,
        "format_rate": sum(ep.parts.get("format", 0.0) for ep in sampled) / n,
        **parts,
        "think_rate": sum(ep.thought for ep in sampled) / n,
        "response_length": num_tokens / n,
        "sampled_tokens": num_tokens,
        "truncated_rate": sum(ep.finish_reason == "length" for ep in sampled) / n,
        # countdown's search: the share of responses that back off and try again, tries each
        **(search_metrics([ep.response for ep in sampled])
           if sampled[0].problem.verifier == "countdown" else {}),
        "verifier_failures": sum(ep.verifier_failures for ep in sampled),
        "bad_rewards": sum(ep.bad_rewards for ep in sampled),
        **flagged_shares([ep.flags for ep in sampled], [ep.verdict.reward > 0 for ep in sampled]),
        "skipped_updates": result.skipped,
        "sampling_rounds": rollouts.rounds,
        "dropped_groups": rollouts.dropped_groups,
        "dropped_fraction": rollouts.dropped_groups * g.group_size / n,
        **{key: sum(v) / len(v) for key, v in result.stats.items()},
        "policy_version": rollouts.step,
        "sampled_version": rollouts.policy_version,
        "staleness": staleness,
        "step_seconds": times["step"],
        "sample_seconds": rollouts.seconds,
        "tokens_per_second": num_tokens / times["step"],
        # per role: the sampler (decoding), the verifier pool, the learner
        "sampler_tokens_per_second": num_tokens / max(rollouts.seconds, 1e-9),
        "sampler_wait_seconds": times["sampler_wait"],
        "verifier_items_per_second": v.get("verify_items", 0) / max(v.get("verify_seconds", 0), 1e-9),
        "verifier_queue_depth": v.get("verify_backlog", 0),
        "verify_tail_seconds": v.get("verify_tail_seconds", 0.0),
        "verdict_cache_hits": v.get("verdict_cache_hits", 0),
        "judged": v.get("judged", 0),
        "learner_seconds": times["learner"],
        "learner_tokens_per_second": learned / max(times["learner"], 1e-9),
        "learner_wait_seconds": times["learner_wait"],
    }  # fmt: skip
    if "mismatch_kl" in result.stats:
        metrics[f"mismatch_kl/staleness_{staleness}"] = metrics["mismatch_kl"]
    return metrics


def make_sampler(policy, tokenizer, task, scorer: Scorer, cfg: Config, first_step: int,
                 resume: dict | None) -> Sampler | SamplerProcess | RaySampler:  # fmt: skip
    """The sampler role for this GRPO phase: on Ray actors (runtime = "ray"), in this process
    on the learner's own model (grpo.max_staleness = 0), or in a process of its own,
    max_staleness versions behind."""
    if cfg.runtime == "ray":
        return RaySampler(policy, tokenizer, task, cfg, scorer.system_prompt, first_step, resume)
    if resume is not None and resume.get("sampler_schedule") == RAY_SCHEDULE:
        raise ConfigError(
            'This run was sampled on Ray (runtime = "ray"), with its own random streams per '
            "step; resume it with --runtime ray."
        )
    if cfg.grpo.max_staleness == 0:
        sampler = Sampler(policy, tokenizer, scorer, task, cfg)
        if resume is not None:
            sampler.load_state_dict(resume)
        return sampler
    return SamplerProcess(policy, tokenizer, task, cfg, scorer.system_prompt, first_step, resume)


def make_learner(policy, cfg: Config, pad_id: int, reward_weights: dict[str, float]):
    """The learner role for this GRPO phase: in this process (GRPOLearner), split over
    learner.processes processes (DistributedLearner), or in a Ray actor (runtime = "ray")."""
    if cfg.runtime == "ray":
        from rlvr.learning.ray_learner import RayLearner

        return RayLearner(policy, cfg, pad_id, reward_weights)
    if cfg.learner.processes > 1:
        return DistributedLearner(policy, cfg, pad_id, reward_weights)
    return GRPOLearner(policy, cfg, pad_id, reward_weights)


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
    eval_engine: Engine | None = None,
) -> float:
    """GRPO; returns the mean seconds per step (sampling + verification + update, or with
    grpo.max_staleness > 0 the learner's wait + update).

    `before` (the evaluation before GRPO) is stored in each checkpoint for the run summary;
    `eval_engine` samples the evaluations in between (`make_engine`).
    """
    g = cfg.grpo
    device = next(policy.parameters()).device
    learner = make_learner(policy, cfg, tokenizer.pad_id, scorer.weights)
    first = 1
    if resume is not None:
        if "torch_rng" in resume:  # LoRA dropout draws from it
            torch.set_rng_state(resume["torch_rng"])
        if resume.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(resume["cuda_rng"], device)
        learner.load_state_dict(resume)
        first = resume["step"] + 1
    if g.max_staleness > 0:
        torch.set_num_threads(cfg.learner.threads)
    sampler = make_sampler(policy, tokenizer, task, scorer, cfg, first, resume)
    step_seconds, last_sampled, last_learned = [], None, None

    with (
        progress_bar("grpo", g.steps, done=first - 1) as advance,
        closing(learner),
        closing(sampler),
    ):
        for step in range(first, g.steps + 1):
            t0 = time.monotonic()
            # Sample k completions per problem (each verified as soon as it finishes), with
            # the policy of step - max_staleness; then update: the policy becomes `step`.
            rollouts = sampler.rollouts(step)
            t_learn = time.monotonic()
            result = learner.train_step(rollouts.episodes, step)
            sampler.publish(policy, version=step)
            t_done = time.monotonic()
            step_seconds.append(t_done - t0)

            times = {"step": t_done - t0, "learner": t_done - t_learn,
                     "learner_wait": t_learn - (last_learned or t0),
                     "sampler_wait": rollouts.start - (last_sampled or rollouts.start)}  # fmt: skip
            metrics = step_metrics(rollouts, result, times, g)
            if isinstance(sampler, (SamplerProcess, RaySampler)):
                metrics["sampler_restarts"] = sampler.restarts
                metrics["lost_sampling_seconds"] = sampler.lost_seconds
            if isinstance(sampler, RaySampler):
                metrics["lost_verifications"] = sampler.lost_verifications
            logger.log("grpo", step, metrics)
            verify_start = rollouts.end - rollouts.timings.get("verify_seconds", 0.0)
            record_step(logger.run_dir, step, {"sampler": (rollouts.start, rollouts.end),
                                               "verifier": (verify_start, rollouts.end),
                                               "learner": (t_learn, t_done)})  # fmt: skip
            last_sampled, last_learned = rollouts.end, t_done
            logger.log_flagged(step, rollouts.sampled)  # the reward-hacking watch's examples
            advance(f"reward {metrics['reward']:.2f}  think {metrics['think_rate']:.2f}")
            too_many_bad_steps(cfg.max_bad_steps, "GRPO", step, learner.bad_in_row,
                               checkpointer.last, cfg.run_dir)  # fmt: skip

            if g.eval_every and step % g.eval_every == 0 and step < g.steps:
                with autocast(cfg, policy):
                    eval_metrics, samples = evaluate(policy, tokenizer, scorer, eval_problems,
                                                     cfg.eval, seed=cfg.seed, sampled=False,
                                                     engine=eval_engine)  # fmt: skip
                logger.log("eval", step, eval_metrics)
                write_samples(logger.run_dir, f"grpo-step{step:05d}", samples)

            stop = should_stop()
            if stop or checkpointer.due(step, g.steps):
                checkpointer.save("grpo", step, policy, {
                    "phase": "grpo", "step": step, "before": before or {},
                    **learner.state_dict(), **sampler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                })  # fmt: skip
            if stop and step < g.steps:
                raise StopRequested(f"GRPO step {step}", str(checkpointer.run_dir))
    torch.set_num_threads(cfg.threads)

    # the first step pays one-off costs (allocations, warm caches); report the steady state
    steady = step_seconds[1:] or step_seconds
    return sum(steady) / max(1, len(steady))


# ----------------------------------------------------------------------------- the whole job


def check_phase_inputs(cfg: Config, tokenizer) -> None:
    """Load every SFT data file and every teacher of the run's phases once, so that a bad
    file or a teacher with another tokenizer stops the run before any work (ConfigError)."""
    from rlvr.iterate import check_teacher
    from rlvr.learning.sft import load_examples

    for kind, phase in phase_configs(cfg):
        if kind == "sft":
            load_examples(phase.sft.data, phase.sft, tokenizer, system_prompt(cfg),
                          cfg.model.max_position_embeddings)  # fmt: skip
        if phase.traces.teacher:
            check_teacher(phase.traces.teacher, tokenizer)


def final_state(cfg: Config) -> dict:
    """state.json of the final checkpoint/ folder: the last phase and its last step."""
    phases = phase_configs(cfg)
    if not phases:
        return {"phase": "grpo", "step": cfg.grpo.steps, "policy_version": cfg.grpo.steps}
    return {"phase": phases[-1][0], "phase_index": len(phases)}


def run(cfg: Config, resume: bool = False) -> tuple[Path, dict]:
    """Pretrain (or load) -> evaluate -> GRPO -> evaluate. Returns the run folder and summary.

    resume: continue the run in cfg.run_dir from its latest resumable checkpoint (exactly:
    the same weights and metrics as a run that was never stopped, for the same thread count).
    """
    check_ray(cfg)  # a Ray address that does not answer stops the run before its folder exists
    with ray_session(cfg):  # runtime = "ray": the cluster joined (or a local Ray started) first
        return run_job(cfg, resume)


def run_job(cfg: Config, resume: bool) -> tuple[Path, dict]:
    """The whole job of `run`, with Ray (if any) already up."""
    t_start = time.perf_counter()
    seed_everything(cfg.seed, cfg.threads)
    resolve_device(cfg.device)  # a GPU that is not there stops the run before its folder exists
    if cfg.reward.judge.model:
        check_judge_folder(cfg.reward.judge.model)
    if cfg.sampler.backend == "vllm" and cfg.grpo.steps > 0:
        check_vllm()  # installed and importable, before the run folder exists
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
    if not resume:  # data files and teachers: checked before the run folder exists
        check_phase_inputs(cfg, loaded[1] if loaded else CharTokenizer())
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
        RunLogger.for_config(run_dir, cfg, keep=_kept_records(state)) as logger,
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
        if cfg.grpo.steps > 0 and cfg.runtime == "ray":
            check_model(policy)  # before any evaluation or training
        elif cfg.grpo.max_staleness > 0 and cfg.grpo.steps > 0:
            check_async(policy)
        if cfg.sampler.backend == "vllm" and cfg.grpo.steps > 0:
            check_vllm(policy)  # vLLM can run this model (head_dim), before any training
        if cfg.learner.processes > 1 and cfg.grpo.steps > 0:
            check_data_parallel(policy)
        if device.type == "cuda":
            console.print(f"device: {device} ({torch.cuda.get_device_name(device)})")
        eval_engine = make_engine(policy, tokenizer, cfg)  # (a draft model loads here)
        checkpointer = Checkpointer(run_dir, cfg, tokenizer)
        summary["device"] = str(device)
        summary["num_parameters"] = policy.num_parameters()

        in_grpo = state is not None and state["phase"] != "pretrain"  # (or a later phase)
        loaded_model = cfg.init_from or cfg.model_path
        if not loaded_model and cfg.pretrain.steps > 0 and not in_grpo:
            t0 = time.perf_counter()
            pretrain(policy, tokenizer, task, cfg, logger, checkpointer, should_stop,
                     resume=state)  # fmt: skip
            summary["pretrain_seconds"] = time.perf_counter() - t0
            checkpointer.save_final("pretrained", policy, {"phase": "pretrain"})

        policy.batch_invariant = cfg.sampler.exact_logprobs  # (pretraining does not need it)
        if in_grpo:
            before = state["before"]
        else:
            console.print("evaluating the starting policy ...")
            with autocast(cfg, policy):
                before, samples = evaluate(policy, tokenizer, scorer, eval_problems, cfg.eval,
                                           seed=cfg.seed, engine=eval_engine)  # fmt: skip
            logger.log("eval", 0, before)
            write_samples(run_dir, "before-grpo", samples)

        after = before
        if phase_configs(cfg):  # [[phases]] or iterate.rounds: the phases in order
            from rlvr.phases import run_phases

            after = run_phases(policy, tokenizer, task, scorer, cfg, logger, eval_problems,
                               checkpointer, should_stop, state if in_grpo else None, before,
                               summary)  # fmt: skip
        elif cfg.grpo.steps > 0:
            t0 = time.perf_counter()
            summary["grpo_seconds_per_step"] = grpo(
                policy, tokenizer, task, scorer, cfg, logger, eval_problems, checkpointer,
                should_stop, resume=state if in_grpo else None, before=before,
                eval_engine=eval_engine,
            )  # fmt: skip
            summary["grpo_seconds"] = time.perf_counter() - t0
            console.print("evaluating the trained policy ...")
            with autocast(cfg, policy):
                after, samples = evaluate(policy, tokenizer, scorer, eval_problems, cfg.eval,
                                          seed=cfg.seed, engine=eval_engine)  # fmt: skip
            logger.log("eval", cfg.grpo.steps, after)
            write_samples(run_dir, "after-grpo", samples)
        checkpointer.save_final("checkpoint", policy, final_state(cfg))

    if cfg.plots:
        plot_metrics(run_dir)
        plot_timeline(run_dir)
        if cfg.eval.think_budgets:  # the test-time compute curve, before and after GRPO
            curves = {"before GRPO": budget_curve(before)}
            if cfg.grpo.steps > 0:
                curves["after GRPO"] = budget_curve(after)
            plot_think_budgets(run_dir, curves)
        if cfg.task.name == "countdown":  # does the search get longer, back off more often?
            plot_series(run_dir, "grpo", ["accuracy", "response_length", "backtrack_rate"],
                        "search")  # fmt: skip
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
    if "metrics_records" in state:  # a phase of a multi-phase run: the first N lines
        seen = [0]

        def first_records(record: dict) -> bool:
            seen[0] += 1
            return seen[0] <= state["metrics_records"]

        return first_records
    if state["phase"] == "pretrain":
        return lambda r: r.get("phase") == "pretrain" and r.get("step", 0) <= state["step"]
    return lambda r: r.get("phase") == "pretrain" or r.get("step", 0) <= state["step"]
