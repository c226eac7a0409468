"""Runs of several phases: the [[phases]] of a recipe (sft, grpo, dpo, rsft, distill) or the
rounds of `rlvr iterate`, in order after pretraining, each evaluated when it ends.

`run_phases` is what rlvr/loop.py's job calls instead of its one GRPO phase when the config
has phases. Each phase logs and checkpoints through thin wrappers of the run's logger and
checkpointer (`PhaseLogger`, `PhaseCheckpointer`), so its curves and checkpoints carry the
phase's index and a resumed run continues in the phase its checkpoint is in.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rlvr.checkpoint import Checkpointer, load_checkpoint
from rlvr.config import Config, phase_configs
from rlvr.device import autocast
from rlvr.evaluation import evaluate
from rlvr.loop import grpo, system_prompt
from rlvr.report import RunLogger, console, read_metrics, write_samples
from rlvr.tasks import Problem
from rlvr.verifiers.rewards import Scorer


class PhaseLogger:
    """The run's logger as phase `index` of a multi-phase run writes through it: every record
    is logged as "<index>-<name>" ("2-grpo", "2-eval"), so each phase has its own curves."""

    def __init__(self, logger: RunLogger, index: int) -> None:
        self.logger, self.index, self.run_dir = logger, index, logger.run_dir

    def log(self, phase: str, step: int, metrics: dict) -> None:
        self.logger.log(f"{self.index}-{phase}", step, metrics)

    def log_flagged(self, step: int, episodes: list, limit: int = 3) -> None:
        self.logger.log_flagged(step, episodes, limit)


class PhaseCheckpointer:
    """The run's Checkpointer as phase `index` saves through it: checkpoints go to
    checkpoints/<index>-<kind>-<step>/ and their trainer state records the phase index, the
    evaluation before the first phase and the results of the phases before this one, and how
    many metrics.jsonl lines the run had written (a resumed run keeps exactly those)."""

    def __init__(self, checkpointer: Checkpointer, index: int, every: int, results: list[dict],
                 before: dict) -> None:  # fmt: skip
        self.checkpointer, self.index, self.every = checkpointer, index, every
        self.results = results
        self.before = before
        """The evaluation before the first phase (the run summary's pretrain_* figures)."""
        self.run_dir, self.cfg = checkpointer.run_dir, checkpointer.cfg

    @property
    def last(self) -> Path | None:
        return self.checkpointer.last

    def due(self, step: int, last_step: int) -> bool:
        every = self.every  # the phase's own checkpoint.every
        return step == last_step or (every > 0 and step % every == 0)

    def save(self, phase: str, step: int, model: torch.nn.Module, trainer_state: dict) -> Path:
        return self.checkpointer.save(f"{self.index}-{phase}", step, model, {
            **trainer_state, "phase": phase, "phase_index": self.index,
            "phase_results": self.results, "before": self.before,
            "metrics_records": len(read_metrics(self.run_dir)),
        })  # fmt: skip


def run_phases(
    policy: torch.nn.Module,
    tokenizer,
    task,
    scorer: Scorer,
    cfg: Config,
    logger: RunLogger,
    eval_problems: list[Problem],
    checkpointer: Checkpointer,
    should_stop: Callable[[], bool],
    state: dict | None,
    before: dict,
    summary: dict,
) -> dict:
    """Run cfg's phases in order, each evaluated on the held-out split when it ends; returns
    the last evaluation. Fills summary["phases"] and, for rsft/distill rounds, writes the
    per-round table rounds.md.

    Phase i runs on its own config (cfg with the phase's overrides) and seed cfg.seed +
    1000 * (i - 1), so that two GRPO phases do not draw the same problems (phase 1 has the
    run's seed: a one-phase [grpo] run samples what a plain run does). A resumed run skips
    the finished phases and continues the one its checkpoint is in.
    """
    from rlvr.iterate import ROUNDS_TABLE, rounds_table, traces_round
    from rlvr.learning.dpo import dpo
    from rlvr.learning.sft import load_examples, sft

    run_dir = Path(cfg.run_dir)
    results: list[dict] = list(state["phase_results"]) if state else []
    current = state["phase_index"] if state else 1
    phases = phase_configs(cfg)
    start_weights = None
    if any(p.iterate.fine_tune_from == "start" for k, p in phases if k in ("rsft", "distill")):
        if not (run_dir / "start").is_dir():  # the weights every round starts again from
            checkpointer.save_final("start", policy, {"phase": "start"})
        start_weights = load_checkpoint(run_dir / "start")[0].state_dict()
    for index, (kind, phase_cfg) in enumerate(phases, start=1):
        if index < current:
            continue
        resume = state if state and index == state["phase_index"] else None
        phase_cfg = copy.copy(phase_cfg)
        phase_cfg.seed, phase_cfg.run_dir = cfg.seed + 1000 * (index - 1), cfg.run_dir
        label = f"{index}-{kind}"
        plog = PhaseLogger(logger, index)
        pcheck = PhaseCheckpointer(checkpointer, index, phase_cfg.checkpoint.every, results,
                                   before)  # fmt: skip
        console.print(f"phase {label}")
        t0 = time.perf_counter()
        record: dict = {"index": index, "kind": kind, "label": label}
        if kind == "grpo":
            grpo(policy, tokenizer, task, scorer, phase_cfg, plog, eval_problems, pcheck,
                 should_stop, resume=resume, before=before)  # fmt: skip
        elif kind == "dpo":
            dpo(policy, tokenizer, task, scorer, phase_cfg, plog, pcheck, should_stop, resume)
        elif kind == "sft":
            examples = load_examples(phase_cfg.sft.data, phase_cfg.sft, tokenizer,
                                     system_prompt(cfg), policy_max_positions(policy))  # fmt: skip
            sft(policy, examples, tokenizer.pad_id, phase_cfg, plog, pcheck, should_stop,
                resume=resume)  # fmt: skip
        else:  # rsft, distill: one round of sampling, keeping and fine-tuning
            fresh = start_weights if phase_cfg.iterate.fine_tune_from == "start" else None
            record["round"] = traces_round(
                policy, tokenizer, task, scorer, phase_cfg, kind, label, plog, pcheck,
                should_stop, resume, problem_seed=cfg.seed, start_weights=fresh,
            )  # fmt: skip
        record["seconds"] = time.perf_counter() - t0
        own = [r for r in read_metrics(run_dir) if r["phase"] == label]
        record["sampled_tokens"] = sum(r.get("sampled_tokens", 0) for r in own)
        console.print(f"evaluating after phase {label} ...")
        with autocast(cfg, policy):
            record["eval"], samples = evaluate(policy, tokenizer, scorer, eval_problems,
                                               phase_cfg.eval, seed=cfg.seed)  # fmt: skip
        plog.log("eval", max((r["step"] for r in own), default=0), record["eval"])
        write_samples(run_dir, f"after-{label}", samples)
        results.append(record)
    summary["phases"] = results
    if any("round" in r for r in results):
        table = rounds_table([{"label": "start", "eval": before}, *results])
        (run_dir / ROUNDS_TABLE).write_text(table)
        summary["rounds_table"] = table
    return results[-1]["eval"]


def policy_max_positions(policy: torch.nn.Module) -> int:
    """The longest sequence the policy takes (0: unknown, e.g. a transformers model)."""
    config = getattr(policy, "config", None)
    return getattr(config, "max_position_embeddings", 0) or 0
