"""The Python API: the README's five-line example runs as written, and the loggers it can
turn on (wandb offline, trackio to a local folder) receive the run's metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = {"pretrain.steps": 10, "grpo.steps": 2, "eval.num_problems": 8, "eval.num_samples": 0,
        "plots": False, "logging.tensorboard": False, "checkpoint.every": 0}  # fmt: skip


def readme_example() -> str:
    """The README's Python block under "Python API"."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.slow
def test_readme_example_runs(tmp_path):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 6  # the import and five lines
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    before_after, accuracy = result.stdout.strip().splitlines()[-2:]
    run = tmp_path / "runs" / "notebook"
    summary = json.loads((run / "summary.json").read_text())
    assert before_after.startswith(f"{summary['pretrain_accuracy']} -> {summary['final_accuracy']}")
    assert before_after.endswith(str(run / "report.html"))
    assert float(accuracy) == summary["final_accuracy"]  # evaluate() on the saved checkpoint


def test_train_and_evaluate_return_the_run(tmp_path):
    from rlvr import Config, evaluate, train

    cfg = Config.load("smoke", {**TINY, "seed": 3})
    assert cfg.name == "smoke" and cfg.seed == 3 and cfg.grpo.steps == 2
    run = train(cfg, out=tmp_path / "run", report=False)
    assert run.path == tmp_path / "run" and run.report is None
    assert run.after["accuracy"] == run.summary["final_accuracy"]
    again = evaluate(run.path, {"eval.num_problems": 8})
    assert again["accuracy"] == run.after["accuracy"]


def test_config_load_errors_are_config_errors():
    from rlvr import Config
    from rlvr.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        Config.load("no-such-recipe")
    with pytest.raises(ConfigError, match="Unknown config key"):
        Config.load("smoke", {"grpo.stepz": 3})


def test_wandb_offline(tmp_path):
    pytest.importorskip("wandb")
    code = (
        "from rlvr import Config, train\n"
        f"cfg = Config.load('smoke', {TINY!r})\n"
        "cfg.logging.wandb = 'rlvr-test'\n"
        "train(cfg, out='run', report=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    history = runs[0] / "files" / "wandb-summary.json"
    summary = json.loads(history.read_text())
    assert summary["grpo/step"] == 2 and "grpo/reward" in summary and "eval/accuracy" in summary


def test_trackio_local(tmp_path):
    pytest.importorskip("trackio")
    code = (
        "from rlvr import Config, train\n"
        f"cfg = Config.load('smoke', {TINY!r})\n"
        "cfg.logging.trackio = 'rlvr-test'\n"
        "train(cfg, out='run', report=False)\n"
        "import trackio\n"
        "from trackio.sqlite_storage import SQLiteStorage\n"
        "logs = SQLiteStorage.get_logs('rlvr-test', 'run')\n"
        "print(sorted({k for row in logs for k in row}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRACKIO_DIR": str(tmp_path / "trackio")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    keys = result.stdout.strip().splitlines()[-1]
    assert "'grpo/reward'" in keys and "'eval/accuracy'" in keys and "'grpo/step'" in keys


def test_missing_logger_is_a_config_error(tmp_path, monkeypatch):
    from rlvr.errors import ConfigError
    from rlvr.report import RunLogger

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'rlvr\[wandb\]'"):
        RunLogger(tmp_path, tensorboard=False, wandb="p")
