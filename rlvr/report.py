"""What a run writes for humans: metrics.jsonl, TensorBoard scalars, PNG plots, samples, tables.

Layout of a run directory:

    run_dir/
      metrics.jsonl          one JSON object per line: {"phase", "step", <metrics>, "time"}
      tensorboard/           the same scalars as `phase/metric` (tensorboard --logdir run_dir)
      plots/<phase>.png      one grid of line plots per phase (plot_metrics)
      samples/<name>.jsonl   model outputs to read by eye (write_samples)

metrics.jsonl is the record; everything else can be rebuilt from it. Plot a finished (or
running, or killed) run with:

    python -c "from pathlib import Path; from rlvr.report import plot_metrics; \
print(plot_metrics(Path('runs/demo')))"
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

METRICS_FILE = "metrics.jsonl"
DROPPED_FILE = "metrics.dropped.jsonl"
_RESERVED = ("phase", "step", "time")


def _to_json_value(value: Any) -> Any:
    """Numbers (python, numpy, 1-element tensors) become int/float; anything else stays."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    numel = getattr(value, "numel", None)  # torch.Tensor
    if callable(numel) and numel() == 1:
        return value.item()
    if getattr(value, "size", None) == 1 and hasattr(value, "item"):  # numpy array
        return value.item()
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class RunLogger:
    """Appends metrics to run_dir/metrics.jsonl and (optionally) TensorBoard.

    Every line is flushed as it is written, so a killed run keeps all its lines. Opening a
    run directory that already has metrics.jsonl continues that file (a resumed run).

        with RunLogger(Path("runs/demo")) as logger:
            logger.log("grpo", step, {"reward": 0.5, "kl": 0.01})

    keep: for a resumed run, which existing records stay (those up to its checkpoint); the
    others are logged again by the resumed run, so they move to metrics.dropped.jsonl.
    """

    def __init__(
        self, run_dir: Path, tensorboard: bool = True, keep: Callable[[dict], bool] | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        if keep is not None and self.path.exists():
            self._split(keep)
        needs_newline = False
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                f.seek(-1, 2)
                # a run killed mid-write leaves a partial line: start ours on a fresh one
                needs_newline = f.read(1) != b"\n"
        self._file = open(self.path, "a", encoding="utf-8")  # closed in close()
        if needs_newline:
            self._file.write("\n")
            self._file.flush()
        self._writer = None
        if tensorboard:
            # imported here: tensorboard takes ~1 s to import and many callers never need it
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), flush_secs=10)

    def _split(self, keep: Callable[[dict], bool]) -> None:
        """Rewrite metrics.jsonl with the kept records; append the rest to the dropped file."""
        kept, dropped = [], []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None  # a line cut by a kill
            (kept if isinstance(record, dict) and keep(record) else dropped).append(line)
        if dropped:
            with open(self.run_dir / DROPPED_FILE, "a", encoding="utf-8") as f:
                f.write("\n".join(dropped) + "\n")
                f.flush()
                os.fsync(f.fileno())
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def log(self, phase: str, step: int, metrics: dict[str, float]) -> None:
        """Write one line {"phase", "step", **metrics, "time"} and the numeric TB scalars."""
        clash = [k for k in metrics if k in _RESERVED]
        if clash:
            raise ValueError(f"metric names {clash} are reserved in metrics.jsonl; rename them.")
        values = {key: _to_json_value(value) for key, value in metrics.items()}
        record = {"phase": phase, "step": int(step), **values, "time": time.time()}
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in values.items():
                if _is_number(value):
                    self._writer.add_scalar(f"{phase}/{key}", value, global_step=int(step))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All readable lines of run_dir/metrics.jsonl; lines that do not parse are skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # e.g. the last line of a run killed mid-write
            if isinstance(record, dict) and "phase" in record and "step" in record:
                records.append(record)
    return records


def plot_metrics(run_dir: Path, max_columns: int = 4) -> list[Path]:
    """Draw run_dir/plots/<phase>.png: one small line plot per numeric metric, x = step.

    Non-numeric values are skipped; metrics with few points (e.g. evaluations) get markers.
    Returns the PNG paths written (empty when there is nothing to plot).
    """
    # The object-oriented Figure API renders with Agg and never touches pyplot's global
    # backend, so plotting works headless and does not disturb a notebook's backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {}  # phase -> key -> (x, y)
    for record in read_metrics(run_dir):
        if not _is_number(record["step"]):
            continue
        phase = str(record["phase"])
        for key, value in record.items():
            if key in _RESERVED or not _is_number(value):
                continue
            xs, ys = series.setdefault(phase, {}).setdefault(key, ([], []))
            xs.append(record["step"])
            ys.append(float(value))

    written = []
    for phase, metrics in series.items():
        keys = list(metrics)
        num_cols = min(max_columns, len(keys))
        num_rows = math.ceil(len(keys) / num_cols)
        # fixed margins: the constrained layout engine took seconds for a few dozen panels
        fig = Figure(figsize=(3.6 * num_cols, 2.6 * num_rows))
        fig.subplots_adjust(left=0.06, right=0.98, bottom=0.5 / num_rows / 2.6 * 1.2,
                            top=1 - 0.75 / (2.6 * num_rows), hspace=0.6, wspace=0.3)  # fmt: skip
        FigureCanvasAgg(fig)
        for i, key in enumerate(keys):
            ax = fig.add_subplot(num_rows, num_cols, i + 1)
            xs, ys = metrics[key]
            marker = "o" if len(xs) <= 30 else None
            ax.plot(xs, ys, marker=marker, markersize=3, linewidth=1.2)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{run_dir.name}: {phase}", fontsize=10)
        out = run_dir / "plots" / f"{_safe_name(phase)}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
        written.append(out)
    return written


def plot_series(run_dir: Path, phase: str, keys: list[str], name: str) -> Path | None:
    """Draw run_dir/plots/<name>.png: the metrics `keys` of one phase side by side, x = step
    (e.g. countdown's response length and backtrack rate over GRPO). None: none logged."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = [r for r in read_metrics(run_dir) if r["phase"] == phase]
    found = [k for k in keys if any(_is_number(r.get(k)) for r in records)]
    if not found:
        return None
    fig = Figure(figsize=(3.6 * len(found), 2.8))
    FigureCanvasAgg(fig)
    for i, key in enumerate(found):
        points = [(r["step"], r[key]) for r in records if _is_number(r.get(key))]
        ax = fig.add_subplot(1, len(found), i + 1)
        ax.plot([x for x, _ in points], [y for _, y in points], linewidth=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(f"{phase} step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.17, top=0.88, wspace=0.3)
    out = Path(run_dir) / "plots" / f"{_safe_name(name)}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def plot_think_budgets(run_dir: Path, curves: dict[str, dict[int, float]]) -> Path:
    """Draw run_dir/plots/think_budget.png: held-out accuracy against the thinking budget B
    (tokens), one line per model (e.g. {"pretrained": {8: 0.1, ...}, "after GRPO": ...})."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, curve in curves.items():
        budgets = sorted(curve)
        ax.plot(budgets, [curve[b] for b in budgets], marker="o", markersize=4, label=label)
    ax.set_xlabel(
        "thinking budget B (tokens; thinking cut at B, then </think><answer>)", fontsize=8
    )
    ax.set_ylabel("held-out accuracy (greedy)", fontsize=8)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{Path(run_dir).name}: test-time compute", fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.14, top=0.9)
    out = Path(run_dir) / "plots" / "think_budget.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "phase"


def write_samples(run_dir: Path, name: str, samples: list[dict[str, Any]]) -> Path:
    """Write samples (one dict per line) to run_dir/samples/<name>.jsonl, replacing it."""
    path = Path(run_dir) / "samples" / f"{_safe_name(name)}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for sample in samples:
            record = {key: _to_json_value(value) for key, value in sample.items()}
            f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return path


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_table(
    before: dict[str, Any], after: dict[str, Any], title: str = "before / after"
) -> Table:
    """A rich Table with one row per metric: metric, before, after, delta (after - before).

    Metrics present on one side only show "-" on the other; delta is shown for numbers only.
    """
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("delta", justify="right")
    keys = list(before) + [k for k in after if k not in before]
    for key in keys:
        b = _to_json_value(before.get(key))
        a = _to_json_value(after.get(key))
        delta = ""
        if _is_number(a) and _is_number(b):
            delta = f"{a - b:+.4g}"
        table.add_row(key, _format(b), _format(a), delta)
    return table


def print_table(
    before: dict[str, Any],
    after: dict[str, Any],
    title: str = "before / after",
    console: Console | None = None,
) -> None:
    """Print summary_table(before, after, title) to the console (stdout by default)."""
    (console or Console()).print(summary_table(before, after, title))


# ----------------------------------------------------------------------------- the terminal

console = Console(stderr=True)
"""Progress and status lines go to stderr; stdout carries the results (table, run folder)."""


@contextmanager
def progress_bar(description: str, total: int, done: int = 0) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr; yields `advance(info="")`, which moves it one step."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}")]  # fmt: skip
    with Progress(*columns, console=console, transient=False) as progress:
        task_id = progress.add_task(description, total=total, completed=done, info="")

        def advance(info: str = "") -> None:
            progress.update(task_id, advance=1, info=info)

        yield advance
