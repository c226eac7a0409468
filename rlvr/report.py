"""What a run writes for humans: metrics.jsonl, TensorBoard scalars, PNG plots, samples, tables.

Layout of a run directory:

    run_dir/
      metrics.jsonl          one JSON object per line: {"phase", "step", <metrics>, "time"}
      tensorboard/           the same scalars as `phase/metric` (tensorboard --logdir run_dir)
      plots/headline.png     the curves a person reads first (plot_headline)
      plots/<phase>.png      one grid of line plots per phase, every metric that changed
      samples/<name>.jsonl   model outputs to read by eye (write_samples)
      samples/flagged.jsonl  rewarded completions the reward-hacking watch flagged
      report.html            all of it on one page (rlvr/report_html.py, `rlvr report`)

Optionally the same metrics go to Weights & Biases (`logging.wandb = "project"`) and trackio
(`logging.trackio = "project"`), each an extra (`pip install 'rlvr[wandb]'`).

metrics.jsonl is the record; everything else can be rebuilt from it. Plot a finished (or
running, or killed) run with:

    python -c "from pathlib import Path; from rlvr.report import plot_metrics; \
print(plot_metrics(Path('runs/demo')))"
"""

from __future__ import annotations

import dataclasses
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

from rlvr.errors import ConfigError

METRICS_FILE = "metrics.jsonl"
DROPPED_FILE = "metrics.dropped.jsonl"
FLAGGED_FILE = "samples/flagged.jsonl"
_RESERVED = ("phase", "step", "time")
# Metrics that depend on the clock (or on how the machine scheduled the processes), not only on
# the numbers a run computes: a resumed or repeated run reproduces every other metric exactly.
CLOCK_DEPENDENT = (
    "time",
    "seconds",
    "per_second",
    "verifier_queue_depth",
    "sampler_restarts",
    "lost_verifications",
)


def depends_on_clock(key: str) -> bool:
    """Whether the metric `key` may differ between two runs with the same seed and threads."""
    return any(part in key for part in CLOCK_DEPENDENT)


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
    wandb / trackio: a project name to log the numeric metrics to as well ("" for none), with
    `config` (the run's config as a dict) attached to the run.
    """

    def __init__(
        self,
        run_dir: Path,
        tensorboard: bool = True,
        keep: Callable[[dict], bool] | None = None,
        wandb: str = "",
        trackio: str = "",
        config: dict | None = None,
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
        self._trackers = []  # wandb / trackio runs: objects with log(dict) and finish()
        if wandb:
            self._trackers.append(_open_wandb(wandb, self.run_dir, config or {}))
        if trackio:
            self._trackers.append(_Trackio(trackio, self.run_dir, config or {}))

    @classmethod
    def for_config(
        cls, run_dir: Path, cfg: Any, keep: Callable[[dict], bool] | None = None
    ) -> RunLogger:
        """The run's logger, with the loggers its `[logging]` table asks for."""
        return cls(run_dir, tensorboard=cfg.logging.tensorboard, keep=keep,
                   wandb=cfg.logging.wandb, trackio=cfg.logging.trackio,
                   config=dataclasses.asdict(cfg))  # fmt: skip

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
        flagged = self.run_dir / FLAGGED_FILE
        if flagged.exists():  # the resumed run flags the steps after its checkpoint again
            lines = flagged.read_text(encoding="utf-8", errors="replace").splitlines()
            kept = [line for line in lines if _step_kept(line, keep)]
            flagged.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

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
        if self._trackers:
            # each phase counts its own steps (pretraining 1..N, GRPO 1..M): "<phase>/step"
            # is the x axis of that phase's charts
            scalars = {f"{phase}/{k}": v for k, v in values.items() if _is_number(v)}
            for tracker in self._trackers:
                tracker.log({f"{phase}/step": int(step), **scalars})

    def log_flagged(self, step: int, episodes: list, limit: int = 3) -> None:
        """Append up to `limit` rewarded completions of GRPO step `step` that the
        reward-hacking watch flagged to samples/flagged.jsonl (the report lists them).
        `episodes`: rlvr.sampling.rollout.Episode objects."""
        records = [
            {"step": int(step), "flags": list(ep.flags), "prompt": ep.problem.prompt,
             "answer": ep.problem.answer, "response": ep.response, "reward": ep.reward,
             "status": ep.verdict.status, "finish_reason": ep.finish_reason}
            for ep in episodes if ep.flags and ep.verdict.reward > 0
        ][:limit]  # fmt: skip
        if records:
            path = self.run_dir / FLAGGED_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)

    def close(self) -> None:
        for tracker in self._trackers:
            tracker.finish()
        self._trackers = []
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _step_kept(line: str, keep: Callable[[dict], bool]) -> bool:
    try:
        return keep({"phase": "grpo", "step": json.loads(line)["step"]})
    except (json.JSONDecodeError, KeyError, TypeError):
        return False


def _open_wandb(project: str, run_dir: Path, config: dict):
    """A wandb run named after the run folder, each phase's charts against its own step."""
    try:
        import wandb
    except ImportError as e:
        raise ConfigError(
            f"logging.wandb = {project!r} needs wandb: pip install 'rlvr[wandb]' (or set "
            'logging.wandb = "").'
        ) from e
    run = wandb.init(project=project, name=run_dir.name, dir=str(run_dir), config=config,
                     id=_safe_name(run_dir.name), resume="allow")  # fmt: skip
    for phase in ("pretrain", "grpo", "eval"):
        run.define_metric(f"{phase}/*", step_metric=f"{phase}/step")
    return run


class _Trackio:
    """trackio's module-level run, behind the same log/finish as a wandb run."""

    def __init__(self, project: str, run_dir: Path, config: dict) -> None:
        try:
            import trackio
        except ImportError as e:
            raise ConfigError(
                f"logging.trackio = {project!r} needs trackio: pip install 'rlvr[trackio]' "
                '(or set logging.trackio = "").'
            ) from e
        self._trackio = trackio
        trackio.init(project=project, name=run_dir.name, config=config, resume="allow",
                     embed=False)  # fmt: skip

    def log(self, metrics: dict) -> None:
        self._trackio.log(metrics)

    def finish(self) -> None:
        self._trackio.finish()


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


def metric_series(run_dir: Path) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """phase -> metric -> (steps, values) of every numeric metric in metrics.jsonl."""
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
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
    return series


def _new_figure(width: float, height: float):
    # The object-oriented Figure API renders with Agg and never touches pyplot's global
    # backend, so plotting works headless and does not disturb a notebook's backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_metrics(run_dir: Path, max_columns: int = 4, out_dir: Path | None = None) -> list[Path]:
    """Draw plots/headline.png (`plot_headline`), then plots/<phase>.png: one small line plot
    per numeric metric that changed during the phase, x = step; the metrics that never
    changed are listed under the grid with their value.

    Non-numeric values are skipped; metrics with few points (e.g. evaluations) get markers.
    out_dir: where the PNGs go (default run_dir/plots). Returns the PNG paths written
    (empty when there is nothing to plot).
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    written = []
    for phase, metrics in metric_series(run_dir).items():
        keys = [k for k, (_, ys) in metrics.items() if len(set(ys)) > 1] or list(metrics)
        constant = [f"{k} = {_format(metrics[k][1][0])}" for k in metrics if k not in keys]
        num_cols = min(max_columns, len(keys))
        num_rows = math.ceil(len(keys) / num_cols)
        footer = 0.5 if constant else 0.0  # inches for the list of constant metrics
        height = 2.6 * num_rows + footer
        fig = _new_figure(3.6 * num_cols, height)
        # fixed margins: the constrained layout engine took seconds for a few dozen panels
        fig.subplots_adjust(left=0.06, right=0.98, bottom=(0.5 + footer) / height,
                            top=1 - 0.75 / height, hspace=0.6, wspace=0.3)  # fmt: skip
        for i, key in enumerate(keys):
            ax = fig.add_subplot(num_rows, num_cols, i + 1)
            xs, ys = metrics[key]
            marker = "o" if len(xs) <= 30 else None
            ax.plot(xs, ys, marker=marker, markersize=3, linewidth=1.2)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        if constant:
            fig.text(0.01, 0.1 / height, "never changed: " + ", ".join(constant), fontsize=7,
                     wrap=True)  # fmt: skip
        fig.suptitle(f"{run_dir.name}: {phase}", fontsize=10)
        out = out_dir / f"{_safe_name(phase)}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
        written.append(out)
    headline = plot_headline([run_dir], out_dir / "headline.png")
    return ([headline] if headline else []) + written


HEADLINE = (
    ("held-out accuracy", "eval", ("accuracy", "accuracy_no_think")),
    ("reward", "grpo", ("reward",)),
    ("think rate", "grpo", ("think_rate",)),
    ("response length (tokens)", "grpo", ("response_length",)),
    ("KL to the reference", "grpo", ("kl",)),
    ("entropy", "grpo", ("entropy",)),
)
"""The panels of the headline figure: (title, phase, metrics)."""

HACKING_PANEL = ("reward-hacking watch: share of rewarded completions flagged", "grpo")


def _smooth(ys: list[float], window: int) -> list[float]:
    """Trailing moving average over `window` points (the first points average fewer)."""
    out, total = [], 0.0
    for i, y in enumerate(ys):
        total += y - (ys[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_headline(run_dirs: list[Path], out: Path, labels: list[str] | None = None) -> Path | None:
    """The figure a person reads first: held-out accuracy (thinking, solid; think block
    forced empty, dashed) before, during and after GRPO, then the GRPO reward, think rate,
    response length, KL and entropy. Several runs are overlaid, one colour each. Returns
    `out`, or None when no run has GRPO or evaluation metrics."""
    runs = [metric_series(Path(d)) for d in run_dirs]
    if not any("grpo" in s or "eval" in s for s in runs):
        return None
    labels = labels or [Path(d).name for d in run_dirs]
    fig = _new_figure(13.5, 6.4)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.09, top=0.88, hspace=0.45, wspace=0.25)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for i, (title, phase, keys) in enumerate(HEADLINE):
        ax = fig.add_subplot(2, 3, i + 1)
        drawn = False
        for series, label, color in zip(runs, labels, colors):
            for key, style in zip(keys, ("-", "--")):
                if key not in series.get(phase, {}):
                    continue
                xs, ys = series[phase][key]
                name = label if len(runs) > 1 else ""
                if phase == "eval":
                    what = "thinking" if key == "accuracy" else "think forced empty"
                    name = f"{name} {what}".strip()
                    ax.plot(xs, ys, style, marker="o", markersize=4, color=color, label=name)
                else:
                    ax.plot(xs, ys, style, color=color, alpha=0.25, linewidth=1)
                    ax.plot(xs, _smooth(ys, 5), style, color=color, linewidth=1.6,
                            label=name or None)  # fmt: skip
                drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("GRPO step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if phase == "eval":
            ax.set_ylim(-0.02, 1.02)
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        elif ax.get_legend_handles_labels()[1] and (phase == "eval" or i == 1):
            ax.legend(fontsize=7)
    names = ", ".join(labels) if len(labels) <= 4 else f"{len(labels)} runs"
    fig.suptitle(f"{names}: held-out accuracy and GRPO curves (faint: per step; bold: "
                 "moving average of 5)", fontsize=11)  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def plot_hacking(run_dir: Path, out: Path) -> Path | None:
    """The reward-hacking watch per GRPO step: for each check that ever fired, the share of
    rewarded completions it flagged (moving average of 5). None when nothing was logged."""
    grpo = metric_series(Path(run_dir)).get("grpo", {})
    keys = [k for k in grpo if k.startswith("hacking/") and k != "hacking/any"]
    if not keys:
        return None
    fig = _new_figure(9, 3.4)
    fig.subplots_adjust(left=0.08, right=0.72, bottom=0.16, top=0.88)
    ax = fig.add_subplot(1, 1, 1)
    for key in keys:
        xs, ys = grpo[key]
        if any(ys):
            ax.plot(xs, _smooth(ys, 5), label=key.split("/", 1)[1], linewidth=1.4)
    if "hacking/any" in grpo:
        xs, ys = grpo["hacking/any"]
        ax.plot(xs, _smooth(ys, 5), "k--", label="any", linewidth=1.2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(HACKING_PANEL[0], fontsize=10)
    ax.set_xlabel("GRPO step", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


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
