"""The demo task under each main policy-gradient variant, at the same budget.

    python benchmarks/ablation.py --init RUN/pretrained        # a demo run's pretrained model

Runs `rlvr train recipes/ablation/<variant>.toml --init_from INIT` for grpo, dr_grpo, dapo
(with dynamic sampling), gspo, rloo and reinforce++, one after the other (run it alone: the
wall times are only comparable on a quiet machine), then writes the comparison report
(`rlvr report` of all the runs: summaries side by side, curves overlaid, the config keys
that differ) to OUT/report.html, prints its table as Markdown and one JSON line: held-out
greedy accuracy before/after, accuracy with the think block forced empty, wall seconds of
the GRPO phase and completion tokens sampled.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import torch

from rlvr.cli import recipe_path
from rlvr.report import read_metrics
from rlvr.report_html import compare_rows, read_run, write_report

VARIANTS = ("grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", required=True, help="pretrained checkpoint or run folder")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument(
        "--out", help="the run folders and report.html (default: runs/ablation-<time>)"
    )
    args, overrides = parser.parse_known_args()

    results = {}
    root = Path(args.out or f"runs/ablation-{datetime.now():%Y%m%d-%H%M%S}")
    for name in args.variants:
        run_dir = root / name
        command = [sys.executable, "-m", "rlvr.cli", "train",
                   str(recipe_path(f"ablation/{name}")), "--out", str(run_dir),
                   "--init_from", args.init, *overrides]  # fmt: skip
        print(f"== {name}: {' '.join(command[2:])}", file=sys.stderr)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads((run_dir / "summary.json").read_text())
        grpo_rows = [r for r in read_metrics(run_dir) if r["phase"] == "grpo"]
        results[name] = {
            "accuracy_before": summary["pretrain_accuracy"],
            "accuracy_after": summary["final_accuracy"],
            "accuracy_no_think_after": summary["final_accuracy_no_think"],
            "think_rate_after": summary["final_think_rate"],
            "grpo_seconds": round(summary["grpo_seconds"], 1),
            "sampled_tokens": sum(r["sampled_tokens"] for r in grpo_rows),
            "dropped_groups": sum(r["dropped_groups"] for r in grpo_rows),
        }

    run_dirs = [root / name for name in args.variants]
    report = write_report(run_dirs, root / "report.html")
    print(f"| metric | {' | '.join(args.variants)} |", file=sys.stderr)
    print("|---" * (len(args.variants) + 1) + "|", file=sys.stderr)
    for label, cells in compare_rows([read_run(d) for d in run_dirs]):
        print(f"| {label} | {' | '.join(cells)} |", file=sys.stderr)
    print(f"report: {report}", file=sys.stderr)
    print(json.dumps({
        "benchmark": "ablation", "init": args.init, "overrides": overrides, "report": str(report),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.python_version()} torch {torch.__version__}",
        "results": results,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
