"""Where a GRPO step's time goes: each role's busy interval per step, and a picture of it.

Every GRPO step appends one line to run_dir/timeline.jsonl: when the sampler sampled the step
(decoding and verification), when the verifier pool graded it (first hand-over to last
verdict), and when the learner trained on it, as wall-clock seconds. `plot_timeline` draws
plots/timeline.png: one row per role, a bar per step where the role was busy, gaps where it
waited. In the synchronous loop the bars alternate; with grpo.max_staleness > 0 the sampler
and the learner overlap.

    python -c "from pathlib import Path; from rlvr.timeline import plot_timeline; \\
print(plot_timeline(Path('runs/demo')))"
"""

from __future__ import annotations

import json
import time
from pathlib import Path

TIMELINE_FILE = "timeline.jsonl"
ROLES = ("sampler", "verifier", "learner")


def wall_clock(monotonic: float) -> float:
    """A `time.monotonic()` reading (the same clock in every process of this machine) as
    Unix time, so that intervals from different processes and runs share one axis."""
    return time.time() - (time.monotonic() - monotonic)


def record_step(run_dir: Path, step: int, intervals: dict[str, tuple[float, float]]) -> None:
    """Append one step's busy intervals, {role: (start, end)} in `time.monotonic()` seconds."""
    line = {"step": step}
    for role, (start, end) in intervals.items():
        line[role] = [round(wall_clock(start), 6), round(wall_clock(end), 6)]
    with (Path(run_dir) / TIMELINE_FILE).open("a") as f:
        f.write(json.dumps(line) + "\n")


def read_timeline(run_dir: Path) -> list[dict]:
    """The timeline's lines; a resumed run's later line for a step replaces the earlier one."""
    path = Path(run_dir) / TIMELINE_FILE
    if not path.is_file():
        return []
    by_step: dict[int, dict] = {}
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        by_step[line["step"]] = line
    return [by_step[step] for step in sorted(by_step)]


def plot_timeline(run_dir: Path, max_steps: int = 40) -> Path | None:
    """Draw plots/timeline.png from the last `max_steps` steps (None if nothing to draw)."""
    lines = read_timeline(run_dir)[-max_steps:]
    if not lines:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin = min(iv[0] for line in lines for role in ROLES if (iv := line.get(role)))
    fig, ax = plt.subplots(figsize=(12, 2.6))
    colors = ("tab:blue", "tab:orange")
    for row, role in enumerate(ROLES):
        for line in lines:
            if role not in line:
                continue
            start, end = line[role]
            ax.broken_barh([(start - origin, end - start)], (row - 0.35, 0.7),
                           color=colors[line["step"] % 2])  # fmt: skip
    ax.set_yticks(range(len(ROLES)), ROLES)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (steps alternate in colour; white is waiting)")
    first, last = lines[0]["step"], lines[-1]["step"]
    ax.set_title(f"GRPO steps {first}-{last}: when each role was busy")
    fig.tight_layout()
    out = Path(run_dir) / "plots" / "timeline.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
