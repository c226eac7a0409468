"""The demo task under each main policy-gradient variant, at the same budget.

    python benchmarks/ablation.py --init RUN/pretrained        # a demo run's pretrained model

Runs `rlvr train recipes/ablation/<variant>.toml --init_from INIT` for grpo, dr_grpo, dapo
(with dynamic sampling), gspo, rloo and reinforce++, one after the other (run it alone: the
wall times are only comparable on a quiet machine), then prints a table and one JSON line:
held-out greedy accuracy before/after, accuracy with the think block forced empty, wall
seconds of the GRPO phase and completion tokens sampled.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from rlvr.cli import recipe_path
from rlvr.report import read_metrics

VARIANTS = ("grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", required=True, help="pretrained checkpoint or run folder")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    args, overrides = parser.parse_known_args()

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
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

    print("| variant | accuracy before | after | after, no think | GRPO wall s | tokens sampled |",
          file=sys.stderr)  # fmt: skip
    print("|---|---|---|---|---|---|", file=sys.stderr)
    for name, r in results.items():
        print(f"| {name} | {r['accuracy_before']:.3f} | {r['accuracy_after']:.3f} | "
              f"{r['accuracy_no_think_after']:.3f} | {r['grpo_seconds']:.0f} | "
              f"{r['sampled_tokens']} |", file=sys.stderr)  # fmt: skip
    print(json.dumps({
        "benchmark": "ablation", "init": args.init, "overrides": overrides,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.python_version()} torch {torch.__version__}",
        "results": results,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
