"""Checks of rlvr/report.py: metrics.jsonl, TensorBoard, plots, samples, tables."""

import json

import numpy as np
import pytest
import torch
from rich.console import Console

from rlvr.report import (
    RunLogger,
    plot_metrics,
    print_table,
    read_metrics,
    summary_table,
    write_samples,
)


def _lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_log_then_read_back(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log("pretrain", 0, {"loss": 2.5, "lr": 1e-3})
        logger.log("grpo", 3, {"reward": torch.tensor(0.25), "num_tokens": np.int64(7)})
        logger.log("eval", 3, {"accuracy": np.float32(0.5), "note": "greedy"})
    lines = _lines(tmp_path)
    assert [(r["phase"], r["step"]) for r in lines] == [("pretrain", 0), ("grpo", 3), ("eval", 3)]
    assert list(lines[0]) == ["phase", "step", "loss", "lr", "time"]
    assert lines[0]["loss"] == 2.5
    assert lines[1]["reward"] == 0.25 and lines[1]["num_tokens"] == 7
    assert lines[2]["accuracy"] == 0.5 and lines[2]["note"] == "greedy"
    assert all(isinstance(r["time"], float) for r in lines)
    assert read_metrics(tmp_path) == lines


def test_every_line_is_on_disk_before_close(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.log("grpo", 1, {"reward": 1.0})
    # no close(): a killed run must still have its lines
    assert _lines(tmp_path)[0]["reward"] == 1.0
    logger.close()


def test_resume_appends(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log("grpo", 1, {"reward": 0.1})
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log("grpo", 2, {"reward": 0.2})
    assert [r["step"] for r in _lines(tmp_path)] == [1, 2]


def test_resume_after_partial_line_starts_a_fresh_line(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log("grpo", 1, {"reward": 0.1})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"phase": "grpo", "step": 2, "rew')  # killed mid-write
    with RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log("grpo", 2, {"reward": 0.2})
    assert [(r["step"], r["reward"]) for r in read_metrics(tmp_path)] == [(1, 0.1), (2, 0.2)]


def test_reserved_metric_names_rejected(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger, pytest.raises(ValueError, match="step"):
        logger.log("grpo", 1, {"step": 3})


def test_tensorboard_event_file_created(tmp_path):
    with RunLogger(tmp_path) as logger:
        logger.log("grpo", 1, {"reward": 0.5, "note": "not a scalar"})
        logger.log("grpo", 2, {"reward": 0.7})
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert acc.Tags()["scalars"] == ["grpo/reward"]
    scalars = acc.Scalars("grpo/reward")
    assert [(s.step, round(s.value, 6)) for s in scalars] == [(1, 0.5), (2, 0.7)]


def test_plot_one_png_per_phase(tmp_path):
    with RunLogger(tmp_path, tensorboard=False) as logger:
        for step in range(50):
            logger.log("pretrain", step, {"loss": 3.0 / (step + 1), "tokens_per_s": 1e4})
        for step in range(0, 50, 10):
            logger.log("grpo", step, {"reward": step / 50, "kl": 0.01, "status": "ok"})
            logger.log("eval", step, {"accuracy": 0.2 + step / 100})
    paths = plot_metrics(tmp_path)
    assert paths[0].name == "headline.png"  # the figure a person reads first
    assert sorted(p.name for p in paths) == ["eval.png", "grpo.png", "headline.png", "pretrain.png"]
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 1000


def _png_size(path):
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_skips_metrics_that_never_changed(tmp_path):
    """Eight metrics, six of them constant: the grid has one row of two panels, not two rows."""
    with RunLogger(tmp_path, tensorboard=False) as logger:
        for step in range(1, 6):
            constant = {f"zero_{i}": 0.0 for i in range(6)}
            logger.log("grpo", step, {"reward": step / 10, "kl": step / 100, **constant})
    varying_only = tmp_path / "varying"
    with RunLogger(varying_only, tensorboard=False) as logger:
        for step in range(1, 6):
            logger.log("grpo", step, {"reward": step / 10, "kl": step / 100})
    skipped = _png_size(tmp_path / "plots" / "grpo.png") if plot_metrics(tmp_path) else None
    plot_metrics(varying_only)
    reference = _png_size(varying_only / "plots" / "grpo.png")
    assert skipped[0] == reference[0]  # two columns in both
    assert skipped[1] == reference[1] + 50  # the same row, plus the "never changed" line
    with RunLogger(tmp_path / "all", tensorboard=False) as logger:
        for step in range(1, 6):
            logger.log("grpo", step, {f"m{i}": float(step * i + 1) for i in range(8)})
    plot_metrics(tmp_path / "all")
    assert _png_size(tmp_path / "all" / "plots" / "grpo.png")[1] > reference[1] + 200


def test_plot_tolerates_empty_missing_and_partial_files(tmp_path):
    assert plot_metrics(tmp_path) == []  # no metrics.jsonl
    (tmp_path / "metrics.jsonl").write_text("")
    assert plot_metrics(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text(
        '{"phase": "grpo", "step": 0, "reward": 0.1, "time": 1.0}\n'
        "not json at all\n"
        '{"phase": "grpo", "step": 1, "reward": 0.3, "time": 2.0}\n'
        '{"phase": "grpo", "step": 2, "rew'
    )
    paths = plot_metrics(tmp_path)
    assert [p.name for p in paths] == ["headline.png", "grpo.png"]
    assert paths[1].stat().st_size > 0
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1]


def test_write_samples(tmp_path):
    samples = [
        {"problem_id": "p1", "completion": "<think>2+2</think><answer>4</answer>", "reward": 1.0},
        {"problem_id": "p2", "completion": "ünïcode ✓", "reward": torch.tensor(0.0)},
    ]
    path = write_samples(tmp_path, "step_100", samples)
    assert path == tmp_path / "samples" / "step_100.jsonl"
    back = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert back[0] == samples[0]
    assert back[1]["completion"] == "ünïcode ✓" and back[1]["reward"] == 0.0


def test_summary_table_and_print(tmp_path):
    before = {"accuracy": 0.27, "format": 0.5, "status": "base"}
    after = {"accuracy": 0.83, "format": 0.5, "status": "rl", "mean_length": 40}
    table = summary_table(before, after, title="GRPO")
    assert table.title == "GRPO"
    assert [c.header for c in table.columns] == ["metric", "before", "after", "delta"]
    cells = {c.header: list(c._cells) for c in table.columns}
    assert cells["metric"] == ["accuracy", "format", "status", "mean_length"]
    assert cells["delta"] == ["+0.56", "+0", "", ""]
    assert cells["before"][3] == "-" and cells["after"][3] == "40"

    console = Console(record=True, width=80)
    print_table(before, after, title="GRPO", console=console)
    text = console.export_text()
    assert "accuracy" in text and "0.83" in text and "+0.56" in text
