"""Sweeps: a grid of runs over any config keys, resumable run by run, and how RL's gains scale.

    rlvr sweep recipes/sweep.toml [--out DIR]

A sweep file names the recipe every run starts from, the keys they share, and a grid:

    base = "demo"                     # a recipe shipped with rlvr, or a .toml file beside this one
    out = "runs/sweep"                # the sweep's folder (--out overrides it)

    [set]                             # keys every run shares, dotted or as tables
    "grpo.steps" = 30
    eval = { num_samples = 0 }

    [grid]                            # one run per combination of the values, in this order
    "pretrain.steps" = [150, 300, 600]
    model = [{ hidden_size = 64, num_hidden_layers = 2 }, { hidden_size = 128 }]

A grid value that is a table sets several keys together (a model size is four or five keys).
Every run is an ordinary `rlvr train` run in OUT/runs/<name>/, named after its grid values and
a hash of its whole config. After a run the sweep reads its accuracies, counts its training
compute (`count_flops`) and writes OUT/runs/<name>/sweep_result.json; then it rewrites the
table (OUT/sweep.csv, OUT/sweep.md, with the fitted curves) and the plots
(OUT/scaling_params.png, OUT/scaling_compute.png) from every finished run. A sweep that is stopped or killed continues
where it stopped when started again: a run with a sweep_result.json is never run again, and a
run cut off midway resumes from its latest checkpoint (exactly, as `rlvr train --resume` does).

The accuracies are those of the runs' evaluations (greedy, held-out): `accuracy` (the model
decides whether to think), `no_think` (think block forced empty) and `think` (forced to think:
`<think>` prefilled and `</think>` kept out until the thinking has a first line), each
before and after RL.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from rlvr.config import Config, ConfigError, apply_table, load_config, to_toml

SWEEP_KEYS = ("base", "out", "set", "grid")
RESULT = "sweep_result.json"
METRICS = ("accuracy", "think", "no_think")
"""Accuracies measured before and after RL: greedy, forced to think, think block forced empty."""


# ----------------------------------------------------------------------------- the sweep file


@dataclass
class Run:
    """One point of the grid."""

    name: str
    """Folder name under OUT/runs: the grid values, then a hash of the whole config."""
    point: dict[str, Any]
    """The grid key -> value of this run, in grid order."""
    cfg: Config


def _nest(data: dict, where: str) -> dict:
    """{"grpo.steps": 30, "eval": {...}} -> {"grpo": {"steps": 30}, "eval": {...}}."""
    nested: dict = {}
    for key, value in data.items():
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"Key {key!r} in {where} is not a config key like 'grpo.steps'.")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where} sets {key!r} and also a value above it; keep one.")
        if isinstance(value, dict):
            value = _nest(value, where)
            if isinstance(node.get(parts[-1]), dict):
                node[parts[-1]].update(value)
                continue
        node[parts[-1]] = value
    return nested


def _label(key: str, value: Any, index: int) -> str:
    """A short, path-safe name for one grid value: `steps300`, `model2`."""
    short = key.split(".")[-1]
    text = f"{short}{index}" if isinstance(value, dict) else f"{short}{value}"
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def _base_path(base: Any, sweep_file: Path) -> Path:
    if not isinstance(base, str) or not base:
        raise ConfigError(f"'base' in {sweep_file} must be a recipe name or a .toml file.")
    if base.endswith(".toml"):
        path = (sweep_file.parent / base) if not Path(base).is_absolute() else Path(base)
    else:
        path = Path(str(resources.files("rlvr") / "recipes" / f"{base}.toml"))
    if not path.is_file():
        shipped = sorted(
            p.stem for p in Path(str(resources.files("rlvr") / "recipes")).glob("*.toml")
        )
        raise ConfigError(
            f"base {base!r} in {sweep_file} is neither a recipe shipped with rlvr "
            f"({', '.join(shipped)}) nor an existing .toml file beside the sweep file."
        )
    return path


def load_sweep(path: str | Path) -> tuple[list[Run], Path | None]:
    """The runs of a sweep file, every config built and validated before any work starts.

    Returns the runs and the file's `out` folder (None if it names none). Raises ConfigError
    with one sentence for an unknown or misspelt key, an empty grid, or a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Sweep file {path} does not exist; pass the path of a TOML file.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"Sweep file {path} is not valid UTF-8 TOML ({e}); fix that line.") from e
    unknown = [key for key in data if key not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(
            f"Unknown key {unknown[0]!r} in {path}; a sweep file has {', '.join(SWEEP_KEYS)} "
            "(config keys go in [set] or [grid])."
        )
    base = _base_path(data.get("base", "demo"), path)
    shared = data.get("set", {})
    grid = data.get("grid")
    if not isinstance(shared, dict):
        raise ConfigError(f"'set' in {path} must be a table ([set]) of config keys.")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(
            f"{path} has no grid: add a [grid] table with at least one key and a list of "
            'values, e.g. "pretrain.steps" = [200, 400].'
        )
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"grid key {key!r} in {path} needs a non-empty list of values, e.g. "
                f"{key!r} = [1, 2]; got {values!r}."
            )
        if key.split(".")[0] in ("run_dir", "runs_dir", "name"):
            raise ConfigError(f"grid key {key!r} in {path}: the sweep names its runs itself.")
    out = data.get("out")
    if out is not None and not isinstance(out, str):
        raise ConfigError(f"'out' in {path} must be a folder path (a string).")

    runs = []
    for combo in itertools.product(*[list(enumerate(v)) for v in grid.values()]):
        point = {key: value for key, (_, value) in zip(grid, combo)}
        cfg = load_config(base)
        apply_table(cfg, _nest(shared, f"{path} [set]"), f"{path} [set]")
        for key, (_, value) in zip(grid, combo):
            apply_table(cfg, _nest({key: value}, f"{path} [grid]"), f"{path} [grid]")
        digest = hashlib.sha1(to_toml(cfg).encode()).hexdigest()[:8]
        labels = [_label(key, value, i) for key, (i, value) in zip(grid, combo)]
        runs.append(Run("_".join([*labels, digest]), point, cfg))
    return runs, Path(out) if out else None


# ----------------------------------------------------------------------------- measuring a run


def count_flops(
    num_parameters: int,
    pretrain_tokens: int,
    grpo_steps: list[dict],
    prompt_tokens: float,
    cfg: Config,
) -> dict[str, float]:
    """Training compute of a run, in FLOPs: 6 x parameters x tokens for each token trained on
    (forward and backward), 2 x parameters x tokens for each token only run forward.

    pretrain_tokens: prompt and completion tokens pretrained on (padding excluded).
    grpo_steps: the run's GRPO metrics rows (sampled_tokens, response_length,
        dropped_fraction); prompt_tokens: the mean prompt length in tokens.
    Per GRPO step with n sequences sampled (sampled_tokens / response_length) in groups of
    grpo.group_size: sampling runs each group's prompt once and every completion token
    (forward); the learner trains on prompt + completion of the rows it keeps (1 -
    dropped_fraction of them) grpo.num_iterations times, plus one forward of the reference
    model (grpo.beta > 0) and one of the learner for the importance correction
    (grpo.is_level). Evaluation is not counted.
    """
    g = cfg.grpo
    n = float(num_parameters)
    sample_tokens = learn_tokens = 0.0
    for row in grpo_steps:
        completion = float(row["sampled_tokens"])
        num_sequences = round(completion / row["response_length"]) if row["response_length"] else 0
        sample_tokens += completion + prompt_tokens * num_sequences / g.group_size
        kept = 1.0 - float(row.get("dropped_fraction", 0.0))
        learn_tokens += kept * (completion + prompt_tokens * num_sequences)
    forward_passes = (g.beta > 0) + (g.is_level != "none")
    flops = {
        "pretrain_flops": 6 * n * pretrain_tokens,
        "rl_train_flops": (6 * g.num_iterations + 2 * forward_passes) * n * learn_tokens,
        "rl_sample_flops": 2 * n * sample_tokens,
    }
    flops["rl_flops"] = flops["rl_train_flops"] + flops["rl_sample_flops"]
    flops["total_flops"] = flops["pretrain_flops"] + flops["rl_flops"]
    return flops


def measure(run: Run, run_dir: Path) -> dict[str, Any]:
    """A finished run's row of the table: its accuracies before and after RL (from its
    summary.json: greedy, forced to think, think block forced empty), parameters and
    compute."""
    from rlvr.checkpoint import load_checkpoint
    from rlvr.loop import make_task, system_prompt
    from rlvr.report import read_metrics
    from rlvr.sampling.rollout import prompt_text

    cfg = load_config(run_dir / "config.toml")
    summary = json.loads((run_dir / "summary.json").read_text())
    task = make_task(cfg)
    problems = task.problems("test", cfg.eval.num_problems, seed=cfg.seed)
    row: dict[str, Any] = {"name": run.name, **run.point,
                           "parameters": summary["num_parameters"]}  # fmt: skip
    for when, prefix in (("before", "pretrain"), ("after", "final")):
        row[f"accuracy_{when}"] = summary[f"{prefix}_accuracy"]
        row[f"no_think_{when}"] = summary[f"{prefix}_accuracy_no_think"]
        row[f"think_{when}"] = summary[f"{prefix}_accuracy_think"]
    tokenizer = load_checkpoint(run_dir / "checkpoint")[1]
    records = read_metrics(run_dir)
    pretrain_rows = [r for r in records if r["phase"] == "pretrain" and "tokens" in r]
    pretrain_tokens = pretrain_rows[-1]["tokens"] if pretrain_rows else 0
    prompts = [prompt_text(tokenizer, p, None, system_prompt(cfg)) for p in problems]
    prompt_tokens = sum(len(tokenizer.encode(text)) for text in prompts) / len(prompts)
    grpo_rows = [r for r in records if r["phase"] == "grpo"]
    row["pretrain_tokens"] = pretrain_tokens
    row.update(count_flops(row["parameters"], pretrain_tokens, grpo_rows, prompt_tokens, cfg))
    row["rl_gain"] = row["accuracy_after"] - row["accuracy_before"]
    row["wall_seconds"] = summary.get("wall_seconds")
    return row


# ----------------------------------------------------------------------------- the table


COLUMNS = ("parameters", "pretrain_tokens", "pretrain_flops", "rl_flops", "total_flops",
           "accuracy_before", "accuracy_after", "rl_gain", "think_before", "think_after",
           "no_think_before", "no_think_after", "wall_seconds")  # fmt: skip


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.3g}" if abs(value) >= 1e4 else f"{value:.3f}"
    return "" if value is None else str(value)


def _flat(row: dict, grid_keys: list[str]) -> dict:
    """A table row: a grid value that is a table becomes one column per key (model.hidden_size)."""
    flat = {}
    for key, value in row.items():
        if key in grid_keys and isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def write_table(rows: list[dict], grid_keys: list[str], out: Path) -> tuple[Path, Path]:
    """OUT/sweep.csv (full precision) and OUT/sweep.md (rounded; only the grid columns that
    vary), one row per finished run."""
    flat = [_flat(row, grid_keys) for row in rows]
    point_columns = list(dict.fromkeys(k for row in flat for k in row if k not in COLUMNS))
    columns = [*point_columns, *COLUMNS]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in flat:
        writer.writerow([row.get(c) for c in columns])
    csv_path, md_path = out / "sweep.csv", out / "sweep.md"
    _write_atomic(csv_path, buffer.getvalue())
    varying = [c for c in point_columns if c == "name" or len({str(r.get(c)) for r in flat}) > 1]
    columns = [*varying, *COLUMNS]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in flat]
    _write_atomic(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- fits and plots


@dataclass
class Fit:
    """y against x: a power law y = a * x^b, or for an accuracy the saturating form
    1 - y = a * x^b (the error falls as a power of x). r2 is measured on y."""

    metric: str
    x: str
    series: str
    form: str
    a: float
    b: float
    r2: float
    num_points: int

    def predict(self, x: Any) -> Any:
        power = self.a * x**self.b
        return 1 - power if self.form == "saturating" else power

    def describe(self) -> str:
        lhs = "1 - y" if self.form == "saturating" else "y"
        return f"{lhs} = {self.a:.3g} * x^{self.b:.3f}"


def fit_curve(
    xs: list[float], ys: list[float], saturating: bool
) -> tuple[float, float, float] | None:
    """Least squares in log-log space; returns (a, b, R^2 on y), or None where no power law
    can fit (fewer than 3 points, a non-positive x, a constant y, or a non-positive y or error)."""
    import numpy as np

    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    target = 1 - y if saturating else y
    if len(x) < 3 or (x <= 0).any() or (target <= 0).any() or len(set(xs)) < 2:
        return None
    if len(set(ys)) < 2:
        return None  # a constant has no slope to fit
    b, log_a = np.polyfit(np.log(x), np.log(target), 1)
    a = float(np.exp(log_a))
    predicted = a * x**b
    predicted = 1 - predicted if saturating else predicted
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(((y - predicted) ** 2).sum()) / total if total > 0 else float("nan")
    return a, float(b), r2


PANELS = (
    ("accuracy", "held-out accuracy (greedy)"),
    ("rl_gain", "RL's gain (after - before)"),
    ("think", "forced to think"),
    ("no_think", "think block forced empty"),
)


def _series(rows: list[dict], keys: list[str]) -> dict[str, list[dict]]:
    """Runs grouped by their values of `keys`; a model table is named by its size."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        parts = [
            f"{row['parameters'] / 1e6:.3g}M params"
            if isinstance(row[k], dict) and k == "model"
            else f"{k}={_cell(row[k])}"
            for k in keys
        ]
        label = ", ".join(parts) or "all runs"
        groups.setdefault(label, []).append(row)
    return groups


def fits_and_plots(rows: list[dict], grid_keys: list[str], out: Path) -> list[Fit]:
    """Draw OUT/scaling_params.png and OUT/scaling_compute.png; return the fitted curves.

    Against parameters, each series holds the grid's other keys fixed (e.g. one pretraining
    budget) and is fitted on its own; against compute all runs are fitted together. A fit is
    drawn (grey) where R^2 >= 0.5 and printed in any case.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    model_keys = [k for k in grid_keys if k.split(".")[0] == "model"]
    other_keys = [k for k in grid_keys if k not in model_keys]
    fits: list[Fit] = []
    for x_key, x_label, series_keys, pooled in (
        ("parameters", "model parameters", other_keys, False),
        ("total_flops", "training compute (FLOPs)", model_keys, True),
    ):
        fig = Figure(figsize=(14, 3.6))
        FigureCanvasAgg(fig)
        fig.subplots_adjust(left=0.05, right=0.99, bottom=0.3, top=0.88, wspace=0.28)
        groups = _series(rows, series_keys)
        for i, (metric, title) in enumerate(PANELS):
            ax = fig.add_subplot(1, len(PANELS), i + 1)
            whens = [""] if metric == "rl_gain" else ["_before", "_after"]
            for j, (label, members) in enumerate(groups.items()):
                members = sorted(members, key=lambda r: r[x_key])
                for when in whens:
                    xs = [r[x_key] for r in members if r.get(metric + when) is not None]
                    ys = [r[metric + when] for r in members if r.get(metric + when) is not None]
                    style = "--" if when == "_before" else "-"
                    name = f"{label}{' ' + when[1:] + ' RL' if when else ''}"
                    ax.plot(xs, ys, style, marker="o", markersize=3, color=f"C{j}",
                            label=name if i == 0 or metric == "rl_gain" else None)  # fmt: skip
                    if not pooled:
                        fits += _fit(metric + when, x_key, label, xs, ys, ax)
            if pooled:
                for when in whens:
                    valid = [r for r in rows if r.get(metric + when) is not None]
                    xs, ys = [r[x_key] for r in valid], [r[metric + when] for r in valid]
                    fits += _fit(metric + when, x_key, "all runs", xs, ys, ax)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap
            if metric != "rl_gain":
                ax.set_ylim(-0.02, 1.02)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(x_label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))),
                   fontsize=7, frameon=False)  # fmt: skip
        fig.suptitle(f"RL before/after against {x_label} (dashed: before RL, solid: after)",
                     fontsize=10)  # fmt: skip
        fig.savefig(
            out / f"scaling_{'params' if x_key == 'parameters' else 'compute'}.png", dpi=110
        )
    return fits


def _fit(metric: str, x_key: str, series: str, xs: list, ys: list, ax) -> list[Fit]:
    saturating = metric != "rl_gain"
    found = fit_curve(xs, ys, saturating)
    if found is None:
        return []
    fit = Fit(metric, x_key, series, "saturating" if saturating else "power", *found, len(xs))
    if fit.r2 >= 0.5:
        grid = [min(xs) * (max(xs) / min(xs)) ** (k / 40) for k in range(41)]
        ax.plot(grid, [fit.predict(x) for x in grid], color="grey", linewidth=0.8)
    return [fit]


def write_fits(fits: list[Fit], md_path: Path) -> str:
    """Append the fitted curves to sweep.md; return them as text lines."""
    lines = ["", "Fitted curves (R^2 on y; drawn where R^2 >= 0.5):", "",
             "| metric | against | series | curve | R^2 | points |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for f in fits:
        lines.append(
            f"| {f.metric} | {f.x} | {f.series} | {f.describe()} | {f.r2:.3f} | {f.num_points} |"
        )
    if not fits:
        lines.append("| (no metric had 3 or more points a power law could fit) | | | | | |")
    with open(md_path, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the sweep


def sweep(path: str | Path, out: str | Path | None = None) -> Path:
    """Run (or continue) every run of a sweep file, then write its table and plots.

    Returns the sweep folder. Finished runs are skipped; a run cut off midway resumes from its
    latest checkpoint. Raises ConfigError before any work if the sweep file is wrong.
    """
    from rlvr.loop import run as train_run
    from rlvr.report import console

    runs, file_out = load_sweep(path)
    folder = Path(out or file_out or Path("runs") / Path(path).stem)
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    grid_keys = list(runs[0].point)
    rows = []
    t_start = time.perf_counter()
    for i, run in enumerate(runs, 1):
        run_dir = folder / "runs" / run.name
        result = run_dir / RESULT
        if result.is_file():
            console.print(f"[{i}/{len(runs)}] {run.name}: finished earlier")
            rows.append(json.loads(result.read_text()))
            continue
        console.print(f"[{i}/{len(runs)}] {run.name}")
        if not (run_dir / "summary.json").is_file():
            resume = (run_dir / "config.toml").is_file()
            cfg = load_config(run_dir / "config.toml") if resume else run.cfg
            cfg.run_dir = str(run_dir)
            if not resume and run_dir.exists():  # cut off before its config was written
                shutil.rmtree(run_dir)
            train_run(cfg, resume=resume)
        row = measure(run, run_dir)
        _write_atomic(result, json.dumps(row, indent=2))
        rows.append(row)
        write_table(rows, grid_keys, folder)
    csv_path, md_path = write_table(rows, grid_keys, folder)
    fits = fits_and_plots(rows, grid_keys, folder)
    text = write_fits(fits, md_path)
    print(md_path.read_text().split("\n\nFitted")[0])
    print(text)
    console.print(f"sweep of {len(runs)} runs: {time.perf_counter() - t_start:.0f} s this time; "
                  f"table {csv_path}, plots {folder}/scaling_*.png")  # fmt: skip
    return folder
