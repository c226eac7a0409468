"""The `rlvr` command. Subcommands only parse their arguments and call into the package.

    rlvr demo [--out DIR] [--key value ...]        pretrain -> eval -> GRPO -> eval, on the CPU
    rlvr demo --recipe countdown                   ... on countdown, where the thinking searches
    rlvr train CONFIG.toml [--out DIR] [--model HF_FOLDER] [--key value ...]
    rlvr train --resume DIR [--key value ...]      continue a stopped or killed run
    rlvr iterate CONFIG.toml [--out DIR] [--key value ...]
                                                   self-improvement: rounds of sample -> keep
                                                   verified traces -> fine-tune -> evaluate
    rlvr eval RUN_DIR [--key value ...]            re-evaluate a saved checkpoint
    rlvr eval RUN_DIR --think-budgets 8,16,32,64   ... with the test-time compute curve
    rlvr report RUN_DIR [RUN_DIR ...] [--out FILE] one HTML page for a run, or runs compared
    rlvr verify INPUT.jsonl [--verifier math|choice|code|puzzle:NAME|judge] [--output OUT.jsonl]
                            [--judge-model HF_FOLDER]  grade a file of model outputs offline
    rlvr sweep SWEEP.toml [--out DIR]              a grid of runs, resumable; table and plots
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

from rlvr import __version__
from rlvr.config import Config, ConfigError, describe, load_config, parse_overrides
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
    parser.add_argument("--version", action="version", version=f"rlvr {__version__}")
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

    iterate = sub.add_parser(
        "iterate", help="self-improvement rounds: sample, keep verified traces, fine-tune, evaluate",
        epilog=_help_keys(), formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    if not resume:
        iterate.add_argument("config", nargs="?", help="a TOML recipe, e.g. recipes/iterate.toml")
    iterate.add_argument("--out", help="run folder (default: runs/<name>-<time>)")
    iterate.add_argument("--model", metavar="PATH",
                         help="a local Hugging Face checkpoint folder to start from")  # fmt: skip
    iterate.add_argument("--resume", metavar="DIR",
                         help="continue the run in DIR from its latest checkpoint")  # fmt: skip

    ev = sub.add_parser("eval", help="evaluate a run's checkpoint on the held-out split")
    ev.add_argument("run_dir", help="a run folder or a checkpoint folder")
    ev.add_argument("--output", help="also write the metrics to this JSON file")
    ev.add_argument("--think-budgets", metavar="B,B,...",
                    help="thinking budgets in tokens (eval.think_budgets): accuracy with the forced "
                         "thinking cut at each; for a run folder also its pretrained model, "
                         "and the curves drawn in plots/think_budget.png")  # fmt: skip

    report = sub.add_parser(
        "report", help="write report.html: one run's results, or several runs side by side"
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders")
    report.add_argument("--out", help="the HTML file (default: RUN_DIR/report.html for one "
                        "run, ./report.html for several)")  # fmt: skip
    report.add_argument("--no-plots", action="store_true", help="leave the figures out")

    verify = sub.add_parser(
        "verify", help="grade a JSONL file of model outputs (math, multiple choice, code, puzzles)"
    )
    verify.add_argument(
        "input", help="JSONL: one {completion, answer|tests|problem} object per line"
    )
    verify.add_argument("--verifier", default="math",
                        help="math, choice, code, puzzle:NAME or judge, for lines that name none (default math)")  # fmt: skip
    verify.add_argument("--output", help="write graded lines here (default: stdout)")
    verify.add_argument("--workers", type=int, default=2, help="verifier worker processes")
    verify.add_argument("--partial", action="store_true",
                        help="reward partial credit (fraction of tests passed, puzzle scores)")  # fmt: skip
    verify.add_argument("--timeout", type=float, default=10.0, help="seconds per item")

    sweep = sub.add_parser("sweep", help="a grid of runs over config keys (resumable), with a "
                           "table and scaling plots; see rlvr/sweep.py")  # fmt: skip
    sweep.add_argument("sweep_file", help="a sweep TOML file, e.g. recipes/sweep.toml")
    sweep.add_argument(
        "--out", help="the sweep's folder (default: the file's `out`, else runs/<name>)"
    )
    verify.add_argument("--judge-model", metavar="PATH",
                        help="a local Hugging Face model folder that judges lines (--verifier judge)")  # fmt: skip
    verify.add_argument("--judge-template",
                        help="the judge's prompt, with {question}, {response} and {reference}")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    resume = any(a == "--resume" or a.startswith("--resume=") for a in argv)
    args, overrides = _parser(resume).parse_known_args(argv)
    try:
        if args.command in ("demo", "train", "iterate") and args.resume:
            if getattr(args, "config", None) or args.out or getattr(args, "model", None):
                raise ConfigError(
                    "--resume DIR takes the run's own config.toml: drop the CONFIG, --out and "
                    "--model arguments (overrides such as --grpo.steps 100 are allowed)."
                )
            return _resume(Path(args.resume), overrides, iterate=args.command == "iterate")
        if args.command == "demo":
            if not recipe_path(args.recipe).is_file():
                raise ConfigError(
                    f"rlvr demo --recipe {args.recipe}: no such recipe; use demo or countdown."
                )
            return _train(recipe_path(args.recipe), args.out, overrides)
        if args.command in ("train", "iterate"):
            if not args.config:
                raise ConfigError(f"rlvr {args.command} needs a CONFIG.toml (or --resume DIR).")
            if args.model:
                overrides = [*overrides, "--model_path", args.model]
            return _train(Path(args.config), args.out, overrides,
                          iterate=args.command == "iterate")  # fmt: skip
        if args.command == "eval":
            if args.think_budgets is not None:
                overrides = [*overrides, "--eval.think_budgets", f"[{args.think_budgets}]"]
            return _eval(Path(args.run_dir), args.output, overrides)
        if args.command == "report":
            if overrides:
                raise ConfigError(
                    f"Unexpected arguments {' '.join(overrides)}; see rlvr report --help."
                )
            from rlvr.report_html import write_report

            print(write_report([Path(d) for d in args.run_dirs], args.out,
                               plots=not args.no_plots))  # fmt: skip
            return 0
        if args.command == "verify":
            if overrides:
                raise ConfigError(
                    f"Unexpected arguments {' '.join(overrides)}; see rlvr verify --help."
                )
            from rlvr.verify_cli import run_verify

            return run_verify(args.input, args.verifier, args.output, args.workers,
                              args.partial, args.timeout, args.judge_model,
                              args.judge_template)  # fmt: skip
        if args.command == "sweep":
            return _sweep(Path(args.sweep_file), args.out, overrides)
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


def _resume(run_dir: Path, overrides: list[str], iterate: bool = False) -> int:
    if not (run_dir / "config.toml").is_file():
        raise ConfigError(
            f"{run_dir} is not a run folder (it has no config.toml); pass the folder a "
            "`rlvr train` or `rlvr demo` run wrote."
        )
    cfg = load_config(run_dir / "config.toml", overrides)
    cfg.run_dir = str(run_dir)
    return _train(None, None, [], cfg=cfg, resume=True, iterate=iterate)


def _train(
    config_path: Path | None,
    out: str | None,
    overrides: list[str],
    cfg: Config | None = None,
    resume: bool = False,
    iterate: bool = False,
) -> int:
    if cfg is None:
        cfg = load_config(config_path, overrides)
    if out:
        cfg.run_dir = out
    if iterate and not (cfg.iterate.rounds or any(
            p.get("kind") in ("rsft", "distill") for p in cfg.phases)):  # fmt: skip
        raise ConfigError(
            "rlvr iterate runs rounds of sampling and fine-tuning: set iterate.rounds (e.g. "
            "--iterate.rounds 3) or give [[phases]] of kind rsft."
        )
    from rlvr.loop import run
    from rlvr.report import print_table

    run_dir, result = run(cfg, resume=resume)
    keys = [k for k in result["after"] if k in result["before"]]
    print_table({k: result["before"][k] for k in keys}, {k: result["after"][k] for k in keys},
                title=f"held-out {cfg.task.name}, {result['eval_problems']} problems: before vs after GRPO")  # fmt: skip
    if "rounds_table" in result:
        print(result["rounds_table"], file=sys.stderr)
    if "phases" in result:
        print("phases: " + ", ".join(f"{r['label']} {r['seconds']:.0f} s" for r in result["phases"])
              + f"   wall: {result['wall_seconds']:.0f} s", file=sys.stderr)  # fmt: skip
    else:
        print(f"GRPO: {result.get('grpo_seconds_per_step', 0.0):.3f} s/step   wall: {result['wall_seconds']:.0f} s",
              file=sys.stderr)  # fmt: skip
    from rlvr.report_html import write_report

    print(write_report([run_dir], plots=cfg.plots))  # the report, then the run folder last
    print(run_dir)
    return 0


def _sweep(sweep_file: Path, out: str | None, overrides: list[str]) -> int:
    if overrides:
        raise ConfigError(
            f"Unexpected arguments {' '.join(overrides)}; rlvr sweep takes config keys in the "
            "sweep file's [set] table."
        )
    from rlvr.sweep import sweep

    try:
        sweep(sweep_file, out)
    except StopRequested as e:
        print(f"rlvr: sweep stopped at {e.args[0]} with a checkpoint; continue with "
              f"`rlvr sweep {sweep_file}{f' --out {out}' if out else ''}`.", file=sys.stderr)  # fmt: skip
    return 0


def _eval(run_dir: Path, output: str | None, overrides: list[str]) -> int:
    from rlvr.api import evaluate
    from rlvr.checkpoint import find_checkpoint
    from rlvr.evaluation import budget_curve

    keys = dict(parse_overrides(overrides))
    metrics = evaluate(run_dir, keys)
    pretrained = run_dir / "pretrained"
    if budget_curve(metrics) and find_checkpoint(run_dir) != pretrained and pretrained.is_dir():
        # A run folder: the curve before GRPO too, and both drawn into its plots/
        from rlvr.report import plot_think_budgets

        before = evaluate(pretrained, keys)
        curves = {"before GRPO": budget_curve(before), "after GRPO": budget_curve(metrics)}
        metrics["pretrained"] = before
        metrics["plot"] = str(plot_think_budgets(run_dir, curves))
    text = json.dumps(metrics)
    if output:
        Path(output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
