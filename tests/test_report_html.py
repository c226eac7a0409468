"""The HTML run report: its content from a run folder, the comparison of several runs, and the
page opened in a real headless Chromium (screenshot, DOM text, images loaded, no console
errors, the verdict filter)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rlvr.cli import main
from rlvr.config import Config, to_toml
from rlvr.report import RunLogger
from rlvr.report_html import (
    compare_rows,
    differing_config,
    read_run,
    render_response,
    write_report,
)
from tests.browser import Browser, find_chromium

SAMPLES = [
    {"prompt": "2+3*4=", "answer": "14", "status": "correct",
     "response": "<think>3*4=12\n2+12=14</think><answer>14</answer><eos>",
     "no_think_response": "<think></think><answer>20</answer><eos>", "no_think_status": "wrong"},
    {"prompt": "9-4*2=", "answer": "1", "status": "wrong",
     "response": "<think></think><answer>10</answer><eos>",
     "no_think_response": "<think></think><answer>10</answer><eos>", "no_think_status": "wrong"},
    {"prompt": "7+1*1=", "answer": "8", "status": "unparsable", "response": "<think>7+1",
     "no_think_response": "<think></think><answer>8</answer><eos>", "no_think_status": "correct"},
]  # fmt: skip


def make_run(path: Path, beta: float = 0.04, final: float = 0.9, steps: int = 12) -> Path:
    """A finished run folder as `rlvr train` leaves it, written by hand (no training)."""
    cfg = Config()
    cfg.grpo.beta = beta
    cfg.run_dir = str(path)
    with RunLogger(path, tensorboard=False) as logger:
        logger.log("eval", 0, {"accuracy": 0.5, "accuracy_no_think": 0.45})
        for step in range(1, steps + 1):
            logger.log("grpo", step, {
                "reward": 0.5 + step / 40, "think_rate": step / steps, "kl": beta * step / 100,
                "entropy": 1.0 - step / 50, "response_length": 10 + step, "skipped_updates": 0,
                "hacking/copied_answer": 0.1 if step % 3 else 0.0, "hacking/truncated": 0.0,
                "hacking/any": 0.1 if step % 3 else 0.0, "sampled_tokens": 640,
            })  # fmt: skip
        logger.log("eval", steps, {"accuracy": final, "accuracy_no_think": 0.3})
    (path / "config.toml").write_text(to_toml(cfg))
    summary = {"task": "arithmetic", "seed": 0, "threads": 2, "device": "cpu",
               "num_parameters": 1_120_000, "eval_problems": 500, "grpo_seconds_per_step": 0.6,
               "wall_seconds": 507.0, "pretrain_accuracy": 0.5, "final_accuracy": final,
               "pretrain_accuracy_no_think": 0.45, "final_accuracy_no_think": 0.3,
               "pretrain_pass@8": 0.97, "final_pass@8": 0.96}  # fmt: skip
    (path / "summary.json").write_text(json.dumps(summary))
    samples = path / "samples"
    samples.mkdir()
    for name in ("before-grpo", "grpo-step00010", "after-grpo"):
        (samples / f"{name}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    flagged = {"step": 4, "flags": ["copied_answer"], "prompt": "17+2*1-2=", "answer": "17",
               "response": "<think></think><answer>17</answer><eos>", "reward": 1.1,
               "status": "correct", "finish_reason": "stop"}  # fmt: skip
    (samples / "flagged.jsonl").write_text(json.dumps(flagged) + "\n")
    return path


def test_render_response_folds_thinking_and_marks_the_answer():
    html = render_response("<think>3*4=12\n2+12=14</think><answer>14</answer><eos>")
    assert "<details class='think'><summary>&lt;think&gt; 2 lines</summary>" in html
    assert "<mark>14</mark>" in html and "eos" not in html
    assert "<mark>\\frac{1}{2}</mark>" in render_response("so \\boxed{3} no, \\boxed{\\frac{1}{2}}")
    assert "&lt;script&gt;" in render_response("<think>x</think><answer><script></answer>")
    assert "<mark>" not in render_response("<think>never closed")


def test_one_run_report(tmp_path):
    run = make_run(tmp_path / "demo")
    page = write_report([run]).read_text()
    assert (run / "report.html").is_file()
    assert "accuracy (the model may think)" in page
    assert re.search(r"<td>0\.500</td><td><b>0\.900</b></td>", page)  # before / after
    assert "pass@8 (sampled)" in page
    assert page.count('<img src="data:image/png;base64,') == 4  # headline, watch, 2 grids
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert "Reward-hacking watch" in page and "copied_answer" in page
    samples = page[page.index("Completions at each evaluation") :]
    assert samples.count("class='card' data-verdict='correct'") == 3  # one per evaluation
    assert page.count("class='card' data-verdict='correct'") == 4  # and the flagged one
    assert "after GRPO step 10" in page
    assert "[grpo]" in page  # the config


def test_report_without_plots_or_summary(tmp_path):
    """A killed run (no summary.json) still gets a page; plots=False draws nothing."""
    run = make_run(tmp_path / "killed")
    (run / "summary.json").unlink()
    page = write_report([run], tmp_path / "r.html", plots=False).read_text()
    assert "<img" not in page and "the run did not finish" in page


def test_comparison(tmp_path):
    a = make_run(tmp_path / "beta004", beta=0.04, final=0.9)
    b = make_run(tmp_path / "beta0", beta=0.0, final=0.8)
    runs = [read_run(a), read_run(b)]
    assert differing_config(runs) == [("grpo.beta", ["0.04", "0.0"])]
    rows = dict(compare_rows(runs))
    assert rows["accuracy (the model may think)"] == ["0.500 -> 0.900", "0.500 -> 0.800"]
    assert rows["completion tokens sampled"] == ["7,680", "7,680"]
    page = write_report([a, b], tmp_path / "compare.html").read_text()
    assert "Config keys that differ" in page and "grpo.beta" in page
    assert page.count("<details class='run'>") == 2


def test_rlvr_report_command(tmp_path, capsys):
    a = make_run(tmp_path / "a")
    assert main(["report", str(a), "--no-plots"]) == 0
    assert capsys.readouterr().out.strip() == str(a / "report.html")
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "is not a run folder" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="no chromium (make test installs it)")
def test_report_renders_in_chromium(tmp_path):
    run = make_run(tmp_path / "demo")
    compare = write_report([run, make_run(tmp_path / "other", beta=0.0)], tmp_path / "cmp.html")
    report = write_report([run])
    shot = tmp_path / "report.png"
    with Browser(width=1400, height=1000) as browser:
        page = browser.open(report, screenshot=shot)
        assert page.errors == []
        assert len(page.images) == 4
        assert all(img["complete"] and img["width"] > 0 for img in page.images), page.images
        assert "Before and after GRPO" in page.text
        assert "accuracy (the model may think)" in page.text and "0.900" in page.text
        # the think block is folded: its lines are not rendered until it is opened
        assert "2+12=14" not in page.text
        visible = "Array.from(document.querySelectorAll('.samples .card'))" \
                  ".filter(c => c.checkVisibility()).length"  # fmt: skip
        assert browser.evaluate(visible) == 3  # the last evaluation is open: 3 cards
        browser.evaluate("document.querySelector(\".filter button[data-verdict='wrong']\").click()")
        assert browser.evaluate(visible) == 1
        browser.evaluate("document.querySelector('.samples details.eval').open = true")
        assert browser.evaluate(visible) == 2  # before GRPO's wrong one too
        assert browser.evaluate("document.querySelector('.samples .card mark').textContent") == "14"

        page = browser.open(compare)
        assert page.errors == []
        assert (
            all(img["width"] > 0 for img in page.images) and len(page.images) == 3
        )  # overlaid + 2 watches
        assert "grpo.beta" in page.text and "0.500 -> 0.900" in page.text
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1400, 1000)
