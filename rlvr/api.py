"""The Python API for notebooks and scripts: the same jobs as `rlvr train` and `rlvr eval`.

    from rlvr import Config, train, evaluate

    cfg = Config.load("smoke", {"grpo.steps": 4})    # a recipe name or a TOML path, overrides
    run = train(cfg, out="runs/notebook")             # pretrain -> eval -> GRPO -> eval
    print(run.before["accuracy"], "->", run.after["accuracy"], run.report)
    print(evaluate(run.path)["accuracy"])             # re-evaluate the saved checkpoint

Bad input raises `rlvr.errors.ConfigError` with the one sentence the CLI would print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.config import Config


@dataclass
class Run:
    """A finished run: its folder, the held-out metrics before and after GRPO, the report."""

    path: Path
    before: dict[str, Any]
    after: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    """summary.json of the run (pretrain_*, final_*, seconds, device, ...)."""
    report: Path | None = None
    """report.html (None with report=False)."""


def train(
    config: Config | str | Path = "demo",
    out: str | Path | None = None,
    *,
    resume: bool = False,
    report: bool = True,
) -> Run:
    """Run the job `rlvr train` runs and return its `Run`.

    config: a Config, a recipe name ("demo", "smoke") or a TOML file. out: the run folder
    (default runs/<name>-<time>). resume: continue the run in `out` from its latest checkpoint.
    """
    from rlvr.loop import run as run_job
    from rlvr.report_html import write_report

    cfg = config if isinstance(config, Config) else Config.load(config)
    if out is not None:
        cfg.run_dir = str(out)
    run_dir, result = run_job(cfg, resume=resume)
    summary = {k: v for k, v in result.items() if k not in ("before", "after")}
    page = write_report([run_dir], plots=cfg.plots) if report else None
    return Run(Path(run_dir), result["before"], result["after"], summary, page)


def evaluate(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate a run's final checkpoint (or a checkpoint folder) on the held-out split, as
    `rlvr eval RUN` does; overrides are dotted config keys, e.g. {"eval.num_problems": 100}."""
    import torch

    from rlvr.checkpoint import load_checkpoint
    from rlvr.config import apply_overrides, as_overrides
    from rlvr.device import autocast, place_model
    from rlvr.evaluation import evaluate as evaluate_model
    from rlvr.loop import make_task, seed_everything, system_prompt
    from rlvr.sampling.sampler import make_engine
    from rlvr.verifiers.rewards import Scorer, open_pool

    model, tokenizer, cfg, _ = load_checkpoint(run_dir)
    apply_overrides(cfg, as_overrides(overrides or {}))
    seed_everything(cfg.seed, cfg.threads)
    place_model(model, cfg.device)
    task = make_task(cfg)
    problems = task.problems("test", cfg.eval.num_problems, seed=cfg.seed)
    with (
        torch.no_grad(),
        autocast(cfg, model),  # the run's dtype (--dtype float32 evaluates in full precision)
        open_pool(cfg.reward, preload=(type(task).__module__,)) as pool,
    ):
        scorer = Scorer(task, cfg.reward, cfg.eval.max_new_tokens, pool,
                        system_prompt=system_prompt(cfg))  # fmt: skip
        model.batch_invariant = cfg.sampler.exact_logprobs
        engine = make_engine(model, tokenizer, cfg)  # sampler.speculate, continuous batching
        metrics, _ = evaluate_model(model, tokenizer, scorer, problems, cfg.eval, seed=cfg.seed,
                                    engine=engine)  # fmt: skip
    return {"checkpoint": str(run_dir), "eval_problems": len(problems), **metrics}
