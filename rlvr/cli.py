"""The `rlvr` command. Subcommands only parse their arguments and call into the package.

    rlvr demo [--out DIR] [--key value ...]        pretrain -> eval -> GRPO -> eval, on the CPU
    rlvr demo --recipe countdown                   ... on countdown, where the thinking searches
    rlvr train CONFIG.toml [--out DIR] [--model HF_FOLDER] [--key value ...]
    rlvr train --resume DIR [--key value ...]      continue a stopped or killed run
    rlvr eval RUN_DIR [--key value ...]            re-evaluate a saved checkpoint
    rlvr eval RUN_DIR --think-budgets 8,16,32,64   ... with the test-time compute curve
    rlvr verify INPUT.jsonl [--verifier math|code|puzzle:NAME] [--output OUT.jsonl]
                                                   grade a file of model outputs offline
    rlvr train --help                              every config key with its meaning

Overrides are dotted config keys: `--grpo.beta 0.02`, `--pretrain.steps=500`. A mistake in
the config, the data or a model folder stops the run before any work with one sentence and
exit code 2 (`--debug` shows the traceback). Ctrl-C (or SIGTERM) stops training at the next
step boundary, writes a checkpoint and exits 0 with the command that resumes it. A run that
cannot go on (NaN losses, a full disk) exits 1 with one sentence.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from rlvr.config import Config, ConfigError, describe, load_config
from rlvr.errors import StopRequested, TrainingError

EXIT_USAGE = 2
EXIT_FAILED = 1


def recipe_path(name: str) -> Path:
    """A recipe shipped with the package (recipes/ in the repository is the same folder)."""
    return Path(str(resources.files("rlvr") / "recipes" / f"{name}.toml"))


def _help_keys() -> str:
    lines = ["config keys (override with --key value):"]
    for key, kind, default, doc in describe():
        lines.append(f"  --{key} {kind.upper()}  (default {default!r})\n      {doc}")
    return "\n".join(lines)


def _parser(resume: bool = False) -> argparse.ArgumentParser:
    """The argument parser; with resume=True `train` takes no CONFIG (so that the value of an
    override like `--grpo.steps 100` is not taken for one)."""
    parser = argparse.ArgumentParser(prog="rlvr", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="show tracebacks for config errors")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a small reasoning model from scratch with GRPO (CPU, minutes)",
                          epilog=_help_keys(), formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    demo.add_argument("--out", help="run folder (default: runs/demo-<time>)")
    demo.add_argument("--resume", metavar="DIR", help="continue the demo run in DIR")
    demo.add_argument("--recipe", default="demo",
                      help="a shipped recipe: demo (arithmetic) or countdown (search)")  # fmt: skip

    train = sub.add_parser("train", help="run a recipe: pretrain or load, evaluate, GRPO, evaluate",
                           epilog=_help_keys(), formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    if not resume:
        train.add_argument("config", nargs="?", help="a TOML recipe, e.g. recipes/demo.toml")
    train.add_argument("--out", help="run folder (default: runs/<name>-<time>)")
    train.add_argument("--model", metavar="PATH",
                       help="a local Hugging Face checkpoint folder to train (config key model_path)")  # fmt: skip
    train.add_argument("--resume", metavar="DIR",
                       help="continue the run in DIR from its latest checkpoint")  # fmt: skip

    ev = sub.add_parser("eval", help="evaluate a run's checkpoint on the held-out split")
    ev.add_argument("run_dir", help="a run folder or a checkpoint folder")
    ev.add_argument("--output", help="also write the metrics to this JSON file")
    ev.add_argument("--think-budgets", metavar="B,B,...",
                    help="thinking budgets in tokens (eval.think_budgets): accuracy with the forced "
                         "thinking cut at each; for a run folder also its pretrained model, "
                         "and the curves drawn in plots/think_budget.png")  # fmt: skip

    verify = sub.add_parser(
        "verify", help="grade a JSONL file of model outputs (math, code, puzzles)"
    )
    verify.add_argument(
        "input", help="JSONL: one {completion, answer|tests|problem} object per line"
    )
    verify.add_argument("--verifier", default="math",
                        help="math, code or puzzle:NAME, for lines that name none (default math)")  # fmt: skip
    verify.add_argument("--output", help="write graded lines here (default: stdout)")
    verify.add_argument("--workers", type=int, default=2, help="verifier worker processes")
    verify.add_argument("--partial", action="store_true",
                        help="reward partial credit (fraction of tests passed, puzzle scores)")  # fmt: skip
    verify.add_argument("--timeout", type=float, default=10.0, help="seconds per item")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    resume = any(a == "--resume" or a.startswith("--resume=") for a in argv)
    args, overrides = _parser(resume).parse_known_args(argv)
    try:
        if args.command in ("demo", "train") and args.resume:
            if getattr(args, "config", None) or args.out or getattr(args, "model", None):
                raise ConfigError(
                    "--resume DIR takes the run's own config.toml: drop the CONFIG, --out and "
                    "--model arguments (overrides such as --grpo.steps 100 are allowed)."
                )
            return _resume(Path(args.resume), overrides)
        if args.command == "demo":
            if not recipe_path(args.recipe).is_file():
                raise ConfigError(
                    f"rlvr demo --recipe {args.recipe}: no such recipe; use demo or countdown."
                )
            return _train(recipe_path(args.recipe), args.out, overrides)
        if args.command == "train":
            if not args.config:
                raise ConfigError("rlvr train needs a CONFIG.toml (or --resume DIR).")
            if args.model:
                overrides = [*overrides, "--model_path", args.model]
            return _train(Path(args.config), args.out, overrides)
        if args.command == "eval":
            if args.think_budgets is not None:
                overrides = [*overrides, "--eval.think_budgets", f"[{args.think_budgets}]"]
            return _eval(Path(args.run_dir), args.output, overrides)
        if args.command == "verify":
            if overrides:
                raise ConfigError(
                    f"Unexpected arguments {' '.join(overrides)}; see rlvr verify --help."
                )
            from rlvr.verify_cli import run_verify

            return run_verify(args.input, args.verifier, args.output, args.workers,
                              args.partial, args.timeout)  # fmt: skip
    except ConfigError as e:
        if args.debug:
            raise
        print(f"rlvr: {e}", file=sys.stderr)
        return EXIT_USAGE
    except StopRequested as e:
        run_dir = e.args[1] if len(e.args) > 1 else "RUN_DIR"
        print(f"rlvr: stopped at {e.args[0]} with a checkpoint; continue with "
              f"`rlvr train --resume {run_dir}`.", file=sys.stderr)  # fmt: skip
        return 0
    except TrainingError as e:
        if args.debug:
            raise
        print(f"rlvr: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("rlvr: interrupted.", file=sys.stderr)
        return 130
    return 0


def _resume(run_dir: Path, overrides: list[str]) -> int:
    if not (run_dir / "config.toml").is_file():
        raise ConfigError(
            f"{run_dir} is not a run folder (it has no config.toml); pass the folder a "
            "`rlvr train` or `rlvr demo` run wrote."
        )
    cfg = load_config(run_dir / "config.toml", overrides)
    cfg.run_dir = str(run_dir)
    return _train(None, None, [], cfg=cfg, resume=True)


def _train(
    config_path: Path | None,
    out: str | None,
    overrides: list[str],
    cfg: Config | None = None,
    resume: bool = False,
) -> int:
    if cfg is None:
        cfg = load_config(config_path, overrides)
    if out:
        cfg.run_dir = out
    from rlvr.report import print_table
    from rlvr.train import run

    run_dir, result = run(cfg, resume=resume)
    keys = [k for k in result["after"] if k in result["before"]]
    print_table({k: result["before"][k] for k in keys}, {k: result["after"][k] for k in keys},
                title=f"held-out {cfg.task.name}, {result['eval_problems']} problems: before vs after GRPO")  # fmt: skip
    print(f"GRPO: {result.get('grpo_seconds_per_step', 0.0):.3f} s/step   wall: {result['wall_seconds']:.0f} s",
          file=sys.stderr)  # fmt: skip
    print(run_dir)
    return 0


def _eval(run_dir: Path, output: str | None, overrides: list[str]) -> int:
    from rlvr.checkpoint import find_checkpoint, load_checkpoint
    from rlvr.config import apply_overrides

    model, tokenizer, cfg, state = load_checkpoint(run_dir)
    apply_overrides(cfg, overrides)
    metrics = {"checkpoint": str(run_dir), **_evaluate_model(model, tokenizer, cfg)}
    pretrained = run_dir / "pretrained"
    if cfg.eval.think_budgets and find_checkpoint(run_dir) != pretrained and pretrained.is_dir():
        # A run folder: the curve before GRPO too, and both drawn into its plots/
        from rlvr.evaluate import budget_curve
        from rlvr.report import plot_think_budgets

        before = _evaluate_model(*load_checkpoint(pretrained)[:2], cfg)
        curves = {"before GRPO": budget_curve(before), "after GRPO": budget_curve(metrics)}
        metrics["pretrained"] = before
        metrics["plot"] = str(plot_think_budgets(run_dir, curves))
    text = json.dumps(metrics)
    if output:
        Path(output).write_text(text + "\n")
    print(text)
    return 0


def _evaluate_model(model, tokenizer, cfg: Config) -> dict:
    """evaluate() on the run's held-out problems, as `rlvr eval` prints it."""
    import torch

    from rlvr.device import autocast, place_model
    from rlvr.evaluate import evaluate
    from rlvr.train import make_task, seed_everything, system_prompt
    from rlvr.verifiers.rewards import Scorer, open_pool

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
        metrics, _ = evaluate(model, tokenizer, scorer, problems, cfg.eval, seed=cfg.seed)
    return {"eval_problems": len(problems), **metrics}


if __name__ == "__main__":
    sys.exit(main())
