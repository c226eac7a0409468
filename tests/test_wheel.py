"""The wheel: `python -m build` makes one, and installed in a fresh virtual environment it
gives a working `rlvr` with the recipes inside (`rlvr --version`, a tiny `rlvr demo`).

To keep the test to seconds, the fresh environment sees the test environment's third-party
packages through a .pth file (so torch is not installed again); rlvr itself comes only from
the wheel: the checkout's editable install is not visible there, the test runs outside the
checkout, and it checks where `rlvr` was imported from.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.test_demo import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs(tmp_path):
    pytest.importorskip("build")
    dist = tmp_path / "dist"
    # --no-isolation: build with this environment's setuptools instead of downloading one
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                    str(dist), str(ROOT)], check=True, capture_output=True, timeout=600)  # fmt: skip
    (wheel,) = dist.glob("rlvr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "rlvr/recipes/demo.toml" in names and "rlvr/recipes/smoke.toml" in names
    assert any(n.startswith("rlvr/recipes/ablation/") for n in names)
    assert "rlvr/report_html.py" in names and not any(n.startswith("tests/") for n in names)

    # nothing of the checkout on the path (a developer may run pytest with PYTHONPATH=.)
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-installed",
                    str(wheel)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True,
                           env=clean)  # fmt: skip
    assert "rlvr" not in check.stdout, check.stdout  # every dependency of the wheel is there

    rlvr = env_dir / "bin" / "rlvr"
    version = subprocess.run(
        [str(rlvr), "--version"], capture_output=True, text=True, cwd=tmp_path, env=clean
    )
    assert version.stdout.strip() == "rlvr 0.1.0"
    where = subprocess.run([str(python), "-c", "import rlvr; print(rlvr.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=clean).stdout.strip()  # fmt: skip
    assert where.startswith(site), where  # the wheel's rlvr, not the checkout's

    run = tmp_path / "run"
    result = subprocess.run([str(rlvr), "demo", "--out", str(run), *TINY, "--plots", "false"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=900, env=clean)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-2:] == [str(run / "report.html"), str(run)]
    assert (run / "checkpoint" / "model.safetensors").is_file()
