"""The run report: one self-contained HTML page for a run, or for several runs side by side.

    rlvr report runs/demo                       # writes runs/demo/report.html
    rlvr report runs/a runs/b --out cmp.html    # compares runs: summaries side by side,
                                                # curves overlaid, the config keys that differ

One run's page: the before/after table, the headline figure (held-out accuracy with thinking
and with the think block forced empty, reward, think rate, response length, KL, entropy),
the reward-hacking watch and the completions it flagged, the full grid of curves, the
config, and the completions logged at each evaluation with their verdict (the extracted
answer highlighted, the think block folded), filterable by verdict.

The page needs no network: figures are PNGs inlined as data: URLs, the style sheet and the
few lines of script that filter by verdict are inline. `rlvr train` and `rlvr demo` write it
at the end of a run; everything on it is read back from the run folder (metrics.jsonl,
summary.json, config.toml, samples/), so a killed or older run gets a report too.
"""

from __future__ import annotations

import base64
import html
import json
import re
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from rlvr.errors import ConfigError
from rlvr.report import metric_series, plot_hacking, plot_headline, plot_metrics, read_metrics
from rlvr.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, EOS, THINK_CLOSE, THINK_OPEN
from rlvr.verifiers.hacking import CHECKS, boxed_contents

REPORT_FILE = "report.html"

SUMMARY_METRICS = (
    ("accuracy", "accuracy (the model may think)"),
    ("accuracy_no_think", "accuracy, think block forced empty"),
    ("accuracy_think", "accuracy, forced to think"),
    ("think_rate", "think rate (non-empty think block)"),
    ("format_rate", "format rate"),
    ("pass@1", "pass@1 (sampled)"),
    ("response_length", "mean response length (tokens)"),
    ("truncated_rate", "truncated rate"),
)
"""Rows of the before/after table: summary.json's pretrain_<key> and final_<key>; pass@k
and maj@k rows are added for the k the run used."""

VERDICTS = ("correct", "wrong", "unparsable", "timeout", "error")


@dataclass
class Run:
    """What a report shows of one run folder."""

    path: Path
    summary: dict[str, Any]
    config_text: str
    config: dict[str, Any]
    evaluations: list[tuple[str, list[dict]]] = field(default_factory=list)
    """(name, logged samples) per evaluation, in order: before GRPO, during, after."""
    flagged: list[dict] = field(default_factory=list)
    """Rewarded completions the reward-hacking watch flagged (samples/flagged.jsonl)."""

    @property
    def name(self) -> str:
        return self.path.name


def read_run(path: Path) -> Run:
    """Read a run folder; a folder with neither metrics.jsonl nor summary.json is not a run."""
    path = Path(path)
    if not (path / "metrics.jsonl").is_file() and not (path / "summary.json").is_file():
        raise ConfigError(
            f"{path} is not a run folder (no metrics.jsonl or summary.json); pass a folder "
            "that `rlvr train` or `rlvr demo` wrote."
        )
    summary = _read_json(path / "summary.json")
    config_text = (path / "config.toml").read_text(encoding="utf-8", errors="replace") if (
        path / "config.toml").is_file() else ""  # fmt: skip
    try:
        config = _flatten(tomllib.loads(config_text))
    except tomllib.TOMLDecodeError:
        config = {}
    samples = path / "samples"
    files = sorted(samples.glob("*.jsonl")) if samples.is_dir() else []
    order = {"before-grpo": 0, "after-grpo": 2}
    files = sorted(
        (f for f in files if f.stem != "flagged"), key=lambda f: (order.get(f.stem, 1), f.stem)
    )
    evaluations = [(f.stem, _read_jsonl(f)) for f in files]
    flagged: dict[tuple, dict] = {}
    for record in _read_jsonl(samples / "flagged.jsonl"):
        flagged[(record.get("step"), record.get("response"))] = record  # a resume's repeats
    return Run(path, summary, config_text, config, evaluations, list(flagged.values()))


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and key != "options" and key != "functions":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


# ----------------------------------------------------------------------------- tables


def summary_rows(run: Run) -> list[tuple[str, Any, Any]]:
    """(label, before, after) for the before/after table, from summary.json."""
    s = run.summary
    keys = list(SUMMARY_METRICS)
    for key in s:
        m = re.fullmatch(r"final_((pass|maj)@(\d+))", key)
        if m and m.group(1) != "pass@1":
            keys.append((m.group(1), f"{m.group(1)} (sampled)"))
    return [
        (label, s.get(f"pretrain_{key}"), s.get(f"final_{key}"))
        for key, label in keys
        if f"pretrain_{key}" in s or f"final_{key}" in s
    ]


def cost_rows(run: Run) -> list[tuple[str, Any]]:
    """(label, value): what the run cost and ran on."""
    s = run.summary
    grpo = [r for r in read_metrics(run.path) if r["phase"] == "grpo"]
    tokens = sum(
        r.get("sampled_tokens", 0) for r in grpo if isinstance(r.get("sampled_tokens"), int)
    )
    rows = [
        ("task", s.get("task")),
        ("parameters", f"{s['num_parameters'] / 1e6:.2f}M" if "num_parameters" in s else None),
        ("device", s.get("device")),
        ("seed / threads", f"{s.get('seed')} / {s.get('threads')}" if "seed" in s else None),
        ("held-out problems", s.get("eval_problems")),
        ("GRPO steps", len(grpo) or None),
        ("GRPO s/step", s.get("grpo_seconds_per_step")),
        ("completion tokens sampled", tokens or None),
        ("wall seconds", round(s["wall_seconds"]) if "wall_seconds" in s else None),
    ]
    return [(label, value) for label, value in rows if value is not None]


def compare_rows(runs: list[Run]) -> list[tuple[str, list[str]]]:
    """(metric, one cell per run) for the side-by-side table: "before -> after" per metric,
    then the cost rows. benchmarks/ablation.py prints the same rows as Markdown."""
    labels: list[str] = []
    cells: dict[str, dict[int, str]] = {}
    for i, run in enumerate(runs):
        for label, before, after in summary_rows(run):
            labels += [label] if label not in labels else []
            cells.setdefault(label, {})[i] = f"{_fmt(before)} -> {_fmt(after)}"
    for i, run in enumerate(runs):  # the cost rows after every run's metric rows
        for label, value in cost_rows(run):
            labels += [label] if label not in labels else []
            cells.setdefault(label, {})[i] = _fmt(value)
    return [(label, [cells[label].get(i, "-") for i in range(len(runs))]) for label in labels]


def differing_config(runs: list[Run]) -> list[tuple[str, list[str]]]:
    """(config key, value per run) for every key whose value is not the same in all runs
    (run_dir, which always differs, left out)."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.config if k not in keys and k != "run_dir"]
    rows = []
    for key in keys:
        values = [json.dumps(run.config[key]) if key in run.config else "-" for run in runs]
        if len(set(values)) > 1:
            rows.append((key, values))
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# ----------------------------------------------------------------------------- the page


def write_report(run_dirs: list[Path], out: Path | None = None, plots: bool = True) -> Path:
    """Write the report of one run (default RUN/report.html) or the comparison of several
    (default ./report.html). plots=False leaves the figures out (no matplotlib: fast).
    Returns the path written."""
    runs = [read_run(Path(d)) for d in run_dirs]
    if not runs:
        raise ConfigError("rlvr report needs at least one run folder.")
    if out is None:
        out = runs[0].path / REPORT_FILE if len(runs) == 1 else Path(REPORT_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        body = _one_run(runs[0], Path(tmp), plots) if len(runs) == 1 else _compare(
            runs, Path(tmp), plots)  # fmt: skip
    title = runs[0].name if len(runs) == 1 else f"{len(runs)} runs compared"
    page = _PAGE.format(title=html.escape(f"rlvr: {title}"), style=_STYLE, script=_SCRIPT,
                        body=body)  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(page, encoding="utf-8")
    tmp_out.replace(out)
    return out


def _one_run(run: Run, tmp: Path, plots: bool) -> str:
    parts = [f"<h1>{html.escape(run.name)}</h1>", _subtitle(run)]
    rows = summary_rows(run)
    if rows:
        body = "".join(
            f"<tr><td>{html.escape(label)}</td><td>{_fmt(b)}</td><td><b>{_fmt(a)}</b></td>"
            f"<td>{_delta(b, a)}</td></tr>"
            for label, b, a in rows
        )
        parts.append(
            '<h2>Before and after GRPO</h2><table class="summary" id="summary"><tr><th>held-out '
            "metric</th><th>before GRPO</th><th>after GRPO</th><th>change</th></tr>"
            f"{body}</table>"
        )
    figures: list[Path] = []
    if plots:
        # the run's own plots/ when they are newer than its metrics (rlvr train just drew
        # them), else drawn afresh into a temporary folder
        drawn = run.path / "plots"
        metrics = run.path / "metrics.jsonl"
        fresh = (drawn / "headline.png").is_file() and metrics.is_file() and (
            (drawn / "headline.png").stat().st_mtime >= metrics.stat().st_mtime)  # fmt: skip
        figures = sorted(drawn.glob("*.png")) if fresh else plot_metrics(run.path, out_dir=tmp)
    headline = [p for p in figures if p.stem == "headline"]
    if headline:
        parts.append(f"<h2>Training at a glance</h2>{_img(headline[0], 'headline figure')}")
    parts.append(_hacking_section(run, tmp, plots))
    if plots:
        order = {"pretrain": 0, "grpo": 1, "eval": 2}
        grids = sorted(
            (p for p in figures if p.stem != "headline"), key=lambda p: order.get(p.stem, 3)
        )
        if grids:
            images = "".join(_img(p, f"{p.stem} metrics") for p in grids)
            parts.append(
                "<h2>Every curve</h2><p>One panel per logged metric that changed; those that "
                f"never changed are listed under each grid.</p>{images}"
            )
    parts.append(_samples_section(run))
    parts.append(_config_section(run))
    return "\n".join(parts)


def _compare(runs: list[Run], tmp: Path, plots: bool) -> str:
    names = "".join(f"<th>{html.escape(r.name)}</th>" for r in runs)
    parts = [
        f"<h1>{len(runs)} runs compared</h1>",
        "<p class='sub'>" + ", ".join(html.escape(str(r.path)) for r in runs) + "</p>",
    ]
    body = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        + "</tr>"
        for label, cells in compare_rows(runs)
    )
    parts.append(
        f'<h2>Side by side (before -> after GRPO)</h2><table class="summary" id="summary">'
        f"<tr><th>metric</th>{names}</tr>{body}</table>"
    )
    diff = differing_config(runs)
    if diff:
        body = "".join(
            f"<tr><td><code>{html.escape(key)}</code></td>"
            + "".join(f"<td><code>{html.escape(v)}</code></td>" for v in values)
            + "</tr>"
            for key, values in diff
        )
        parts.append(
            f'<h2>Config keys that differ</h2><table id="config-diff"><tr><th>key</th>{names}'
            f"</tr>{body}</table>"
        )
    else:
        parts.append("<h2>Config keys that differ</h2><p>None: the configs are the same.</p>")
    if plots:
        headline = plot_headline([r.path for r in runs], tmp / "headline.png")
        if headline:
            parts.append(f"<h2>Curves overlaid</h2>{_img(headline, 'curves of every run')}")
    for i, run in enumerate(runs):
        inner = _hacking_section(run, tmp / str(i), plots) + _samples_section(run)
        parts.append(
            f"<details class='run'><summary><h2>{html.escape(run.name)}</h2></summary>"
            f"{_subtitle(run)}{inner}{_config_section(run)}</details>"
        )
    return "\n".join(parts)


def _subtitle(run: Run) -> str:
    cells = " &middot; ".join(
        f"{html.escape(label)} <b>{html.escape(_fmt(value))}</b>" for label, value in cost_rows(run)
    )
    written = ""
    if (run.path / "summary.json").is_file():
        when = datetime.fromtimestamp((run.path / "summary.json").stat().st_mtime)
        written = f" &middot; finished {when:%Y-%m-%d %H:%M}"
    elif run.summary == {}:
        written = " &middot; <b>no summary.json: the run did not finish</b>"
    return f"<p class='sub'>{cells}{written}</p>"


def _delta(before: Any, after: Any) -> str:
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        d = after - before
        return f"<span class='{'up' if d > 0 else 'down' if d < 0 else ''}'>{d:+.3f}</span>"
    return ""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _hacking_section(run: Run, tmp: Path, plots: bool) -> str:
    grpo = metric_series(run.path).get("grpo", {})
    if "hacking/any" not in grpo:
        return ""
    xs, ys = grpo["hacking/any"]
    peak = max(ys) if ys else 0.0
    last = sum(ys[-5:]) / len(ys[-5:]) if ys else 0.0
    zeroed = run.config.get("reward.zero_flagged") or []
    parts = [
        "<h2>Reward-hacking watch</h2>",
        "<p>Per GRPO step, the share of rewarded completions that a cheap check flagged "
        f"({', '.join(CHECKS)}; see <code>rlvr/verifiers/hacking.py</code>). Any check: "
        f"peak {peak:.2f}, last five steps {last:.2f}. A share that rises during training is "
        "the sign to read the examples below. "
        + (
            f"Scored 0 by <code>reward.zero_flagged</code>: {html.escape(', '.join(zeroed))}."
            if zeroed
            else "<code>reward.zero_flagged</code> turns a check's flags into a zero reward."
        )
        + "</p>",
    ]
    if plots:
        figure = plot_hacking(run.path, tmp / "hacking.png")
        if figure:
            parts.append(_img(figure, "reward-hacking watch"))
    if run.flagged:
        shown = run.flagged[-30:]
        cards = "".join(_card(r, flags=r.get("flags", [])) for r in shown)
        parts.append(
            f"<details class='flagged'><summary>{len(run.flagged)} flagged rewarded "
            f"completions (up to 3 per step; the last {len(shown)} shown)</summary>"
            f"<div class='cards'>{cards}</div></details>"
        )
    else:
        parts.append("<p>No rewarded completion was flagged.</p>")
    return "".join(parts)


def _samples_section(run: Run) -> str:
    if not run.evaluations:
        return ""
    counts = {v: 0 for v in VERDICTS}
    blocks = []
    for i, (name, samples) in enumerate(run.evaluations):
        for s in samples:
            if s.get("status") in counts:
                counts[s["status"]] += 1
        cards = "".join(_card(s, no_think=True) for s in samples)
        is_open = " open" if i == len(run.evaluations) - 1 else ""
        blocks.append(
            f"<details class='eval'{is_open}><summary>{html.escape(_eval_title(name))} "
            f"({len(samples)} completions)</summary><div class='cards'>{cards}</div></details>"
        )
    buttons = "".join(
        f"<button data-verdict='{v}'>{v} ({counts[v]})</button>" for v in VERDICTS if counts[v]
    )
    total = sum(counts.values())
    return (
        "<h2>Completions at each evaluation</h2><p>Greedy completions of held-out problems, "
        "with the verdict of the task's verifier; the extracted answer is highlighted and the "
        "think block folded (click it). Below each, the same problem with the think block "
        "forced empty.</p>"
        f"<div class='filter'>show: <button data-verdict='all' class='on'>all ({total})</button>"
        f"{buttons}</div><div class='samples' data-filter='all'>{''.join(blocks)}</div>"
    )


def _eval_title(name: str) -> str:
    if name == "before-grpo":
        return "before GRPO"
    if name == "after-grpo":
        return "after GRPO"
    m = re.fullmatch(r"grpo-step0*(\d+)", name)
    return f"after GRPO step {m.group(1)}" if m else name


def _card(sample: dict, no_think: bool = False, flags: list | None = None) -> str:
    status = str(sample.get("status", ""))
    verdict = status if status in VERDICTS else "error"
    head = (
        f"<span class='badge {verdict}'>{html.escape(status or '?')}</span> "
        f"<span class='prompt'>{html.escape(str(sample.get('prompt', '')))}</span> "
        f"<span class='gold'>gold: <b>{html.escape(str(sample.get('answer', '')))}</b></span>"
    )
    if flags:
        head += "".join(f" <span class='flag'>{html.escape(str(f))}</span>" for f in flags)
        if "step" in sample:
            head += f" <span class='gold'>GRPO step {sample['step']}</span>"
    body = f"<div class='response'>{render_response(str(sample.get('response', '')))}</div>"
    if no_think and "no_think_response" in sample:
        nt_status = str(sample.get("no_think_status", ""))
        body += (
            f"<div class='nothink'><span class='badge {nt_status if nt_status in VERDICTS else 'error'}'>"
            f"{html.escape(nt_status)}</span> think forced empty: "
            f"{render_response(str(sample['no_think_response']))}</div>"
        )
    return f"<div class='card' data-verdict='{verdict}'><div class='head'>{head}</div>{body}</div>"


def render_response(text: str) -> str:
    """A response as HTML: the think block folded in a <details>, the answer in <mark>
    (the `<answer>` block, else the last `\\boxed{}`), the tags shown as tags."""
    text = text.replace(EOS, "")
    start, end = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    if start >= 0 and end > start:
        think = text[start + len(THINK_OPEN) : end]
        lines = think.strip().count("\n") + 1 if think.strip() else 0
        folded = (
            f"<details class='think'><summary>&lt;think&gt; {lines} line"
            f"{'s' if lines != 1 else ''}</summary><pre>{html.escape(think.strip())}</pre>"
            "</details>"
            if think.strip()
            else "<span class='tag'>&lt;think&gt;&lt;/think&gt;</span>"
        )
        return _render_text(text[:start]) + folded + _render_text(text[end + len(THINK_CLOSE) :])
    return _render_text(text)


def _render_text(text: str) -> str:
    a = text.find(ANSWER_OPEN)
    b = text.find(ANSWER_CLOSE, a + 1) if a >= 0 else -1
    if a >= 0 and b >= 0:
        inner = text[a + len(ANSWER_OPEN) : b]
        return (
            html.escape(text[:a])
            + "<span class='tag'>&lt;answer&gt;</span>"
            + f"<mark>{html.escape(inner)}</mark><span class='tag'>&lt;/answer&gt;</span>"
            + _render_text(text[b + len(ANSWER_CLOSE) :])
        )
    boxed = boxed_contents(text)
    if boxed:
        at = text.rfind("\\boxed{" + boxed[-1] + "}")
        close = at + len("\\boxed{" + boxed[-1] + "}")
        return (
            html.escape(text[:at]) + "\\boxed{" + f"<mark>{html.escape(boxed[-1])}</mark>}}"
            + html.escape(text[close:])
        )  # fmt: skip
    return html.escape(text)


def _config_section(run: Run) -> str:
    if not run.config_text:
        return ""
    return (
        "<details class='config'><summary>config.toml (re-run: <code>rlvr train "
        f"{html.escape(str(run.path))}/config.toml --out NEW</code>)</summary>"
        f"<pre>{html.escape(run.config_text)}</pre></details>"
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{style}</style></head>
<body><main>
{body}
<p class="foot">Written by <code>rlvr report</code>; everything on this page is read from the
run folder (metrics.jsonl, summary.json, config.toml, samples/).</p>
</main><script>{script}</script></body></html>
"""

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
       background: #f6f7f9; margin: 0; }
main { max-width: 1400px; margin: 0 auto; padding: 18px 28px 40px; }
h1 { font-size: 26px; margin: 8px 0 2px; } h2 { font-size: 19px; margin: 28px 0 8px; }
.sub { color: #4a5163; margin: 0 0 10px; } .foot { color: #7a8090; font-size: 12px; }
table { border-collapse: collapse; background: #fff; margin: 6px 0; }
th, td { border: 1px solid #d8dce3; padding: 5px 12px; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #eef0f4; }
.up { color: #11803a; } .down { color: #b3261e; }
img { max-width: 100%; background: #fff; border: 1px solid #d8dce3; margin: 6px 0; display: block; }
details { margin: 8px 0; } summary { cursor: pointer; font-weight: 600; }
summary h2 { display: inline; }
pre { background: #fff; border: 1px solid #d8dce3; padding: 8px; overflow-x: auto; font-size: 13px; }
.filter button { font: inherit; margin: 0 4px 6px 0; padding: 3px 10px; border: 1px solid #b8bfcc;
                 background: #fff; border-radius: 12px; cursor: pointer; }
.filter button.on { background: #1d2330; color: #fff; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 8px; }
.card { background: #fff; border: 1px solid #d8dce3; border-radius: 6px; padding: 8px 10px; }
.card .head { margin-bottom: 4px; } .prompt { font-family: ui-monospace, monospace; }
.gold { color: #4a5163; font-size: 13px; }
.response, .nothink { font-family: ui-monospace, monospace; font-size: 13px; white-space: pre-wrap;
                      word-break: break-word; }
.nothink { color: #4a5163; border-top: 1px dashed #d8dce3; margin-top: 4px; padding-top: 4px; }
.think { display: inline-block; margin: 0; } .think summary { font-weight: 400; color: #5b48a8; }
.think pre { margin: 2px 0; }
.tag { color: #7a8090; } mark { background: #ffe27a; padding: 0 2px; border-radius: 2px; }
.badge { font: 600 12px system-ui, sans-serif; padding: 1px 7px; border-radius: 9px; color: #fff; }
.badge.correct { background: #11803a; } .badge.wrong { background: #b3261e; }
.badge.unparsable { background: #8a6d00; } .badge.timeout, .badge.error { background: #5b5f6b; }
.flag { font: 12px system-ui, sans-serif; background: #fde2e1; color: #8c1d18; padding: 1px 6px;
        border-radius: 9px; }
.samples:not([data-filter="all"]) .card { display: none; }
.samples[data-filter="correct"] .card[data-verdict="correct"],
.samples[data-filter="wrong"] .card[data-verdict="wrong"],
.samples[data-filter="unparsable"] .card[data-verdict="unparsable"],
.samples[data-filter="timeout"] .card[data-verdict="timeout"],
.samples[data-filter="error"] .card[data-verdict="error"] { display: block; }
"""

_SCRIPT = """
document.querySelectorAll('.filter').forEach(function (bar) {
  var samples = bar.nextElementSibling;
  bar.querySelectorAll('button').forEach(function (button) {
    button.addEventListener('click', function () {
      samples.setAttribute('data-filter', button.getAttribute('data-verdict'));
      bar.querySelectorAll('button').forEach(function (b) { b.classList.remove('on'); });
      button.classList.add('on');
    });
  });
});
"""
