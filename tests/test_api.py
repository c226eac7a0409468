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
                            text=True, timeout=1800, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    before_after, accuracy = result.stdout.strip().splitlines()[-2:]
    run = tmp_path / "runs" / "notebook"
    summary = json.loads((run / "summary.json").read_text())
    assert before_after.startswith(f"{summary['pretrain_accuracy']} -> {summary['final_accuracy']}")
    assert before_after.endswith("runs/notebook/report.html")
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


def test_train_is_the_function_even_after_the_loop_was_imported():
    import rlvr.loop  # noqa: F401 - what cli, tests and benchmarks do
    from rlvr import evaluate, train
    from rlvr.api import evaluate as api_evaluate
    from rlvr.api import train as api_train

    assert train is api_train and evaluate is api_evaluate


def test_config_load_errors_are_config_errors():
    from rlvr import Config
    from rlvr.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        Config.load("no-such-recipe")
    with pytest.raises(ConfigError, match="Unknown config key"):
        Config.load("smoke", {"grpo.stepz": 3})


LOG_A_RUN = """
from pathlib import Path
from rlvr.config import Config
from rlvr.report import RunLogger
cfg = Config()
cfg.logging.{logger} = "rlvr-test"
with RunLogger.for_config(Path("run"), cfg) as logger:   # what rlvr train opens
    logger.log("grpo", 1, {{"reward": 0.25, "status": "text is not sent"}})
    logger.log("grpo", 2, {{"reward": 0.75}})
    logger.log("eval", 2, {{"accuracy": 0.5}})
"""


def log_a_run(tmp_path, logger: str, env: dict, then: str = "") -> subprocess.CompletedProcess:
    code = LOG_A_RUN.format(logger=logger) + then
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_wandb_offline(tmp_path):
    pytest.importorskip("wandb")
    log_a_run(tmp_path, "wandb", {"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    (record,) = (tmp_path / "run" / "wandb").glob("offline-run-*/*.wandb")
    data = record.read_bytes()  # wandb's binary run record; its keys are plain strings
    for key in (b"grpo/reward", b"grpo/step", b"eval/accuracy", b"rlvr-test"):
        assert key in data, key
    assert b"status" not in data  # only numbers are logged


def test_trackio_local(tmp_path):
    pytest.importorskip("trackio")
    then = (
        "from trackio.sqlite_storage import SQLiteStorage\n"
        "rows = SQLiteStorage.get_logs('rlvr-test', 'run')\n"
        "print([(r.get('grpo/step'), r.get('grpo/reward'), r.get('eval/accuracy')) for r in rows])\n"
    )
    result = log_a_run(tmp_path, "trackio", {"TRACKIO_DIR": str(tmp_path / "trackio")}, then)
    rows = result.stdout.strip().splitlines()[-1]
    assert rows == "[(1, 0.25, None), (2, 0.75, None), (None, None, 0.5)]"


def test_missing_logger_is_a_config_error(tmp_path, monkeypatch):
    from rlvr.errors import ConfigError
    from rlvr.report import RunLogger

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'rlvr\[wandb\]'"):
        RunLogger(tmp_path, tensorboard=False, wandb="p")
