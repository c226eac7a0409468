"""The post-training results table: held-out accuracy (the model may think, forced to think,
and with its think block forced empty), wall time and tokens sampled, one row per finished
run folder.

    python benchmarks/post_training_table.py r1_zero=runs/r1_zero r1=runs/r1 \
        iterate=runs/iterate iterate_majority=runs/iterate_majority distill=runs/distill

Each argument is NAME=RUN_DIR (a folder `rlvr train` or `rlvr iterate` wrote; its summary.json
must exist). Tokens sampled are every completion token sampled for training (GRPO and DPO
steps, the traces of rsft/distill rounds, teacher samples included), not evaluation's. Wall
time is the whole run's after pretraining (`summary.json` wall_seconds less pretrain_seconds),
evaluations included, and per phase.
Prints a markdown table, then one JSON line with the same numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def row(name: str, run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    sampled = sum(r.get("sampled_tokens", 0) for r in records if "eval" not in r["phase"])
    phases = summary.get("phases", [])
    return {
        "name": name,
        "run_dir": str(run_dir),
        "before": summary.get("pretrain_accuracy"),
        "accuracy": summary["final_accuracy"],
        "accuracy_no_think": summary["final_accuracy_no_think"],
        "accuracy_think": summary.get("final_accuracy_think"),
        # countdown: failed tries before the answer when forced to think (the search's depth)
        "tries_think": summary.get("final_tries_think"),
        "think_rate": summary.get("final_think_rate"),
        # pretraining (from scratch) is the same for every recipe: left out
        "wall_seconds": summary["wall_seconds"] - summary.get("pretrain_seconds", 0.0),
        "phase_seconds": {p["label"]: round(p["seconds"], 1) for p in phases}
        or {"grpo": round(summary.get("grpo_seconds", 0.0), 1)},
        "tokens_sampled": sampled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    args = parser.parse_args()
    rows = []
    for item in args.runs:
        name, _, folder = item.partition("=")
        rows.append(row(name, Path(folder)))
    tries = any(r["tries_think"] is not None for r in rows)  # (countdown runs log them)
    print("| recipe | accuracy before -> after | forced to think |"
          + (" tries |" if tries else "")
          + " think forced empty | wall s after pretraining (phases) | tokens sampled |")  # fmt: skip
    print("| --- " * (6 + tries) + "|")
    for r in rows:
        phases = ", ".join(f"{k} {v:.0f}" for k, v in r["phase_seconds"].items())
        think = "" if r["accuracy_think"] is None else f"{r['accuracy_think']:.3f}"
        searched = "" if r["tries_think"] is None else f"{r['tries_think']:.2f}"
        print(f"| {r['name']} | {r['before']:.3f} -> {r['accuracy']:.3f} | {think} |"
              + (f" {searched} |" if tries else "")
              + f" {r['accuracy_no_think']:.3f} | {r['wall_seconds']:.0f} ({phases}) | "
              f"{r['tokens_sampled']:,} |")  # fmt: skip
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
