"""The code sandbox: legitimate programs run; hostile ones are contained and the host unharmed.

Each attack runs with a 1-2 s wall limit. Most tests use the default backend (bubblewrap
where it works); the last ones force the weaker fallback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from rlvr.verifiers.sandbox import SANDBOX_UID, Limits, backend, run_python

FAST = Limits(timeout=1.5, memory_mb=256)
needs_bwrap = pytest.mark.skipif(backend() != "bwrap", reason="bubblewrap is not usable here")


def sandbox_processes() -> list[int]:
    """Host pids still alive as the sandbox uid (there should be none between runs).

    Zombies do not count: they are dead, and without bwrap's pid namespace their reaping is
    up to the host's init (a slow or absent reaper in a CI container is not our leak).
    """
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            if "Uid" not in fields or fields.get("State", "").strip()[:1] in ("Z", "X"):
                continue
            if int(fields["Uid"].split()[1]) == SANDBOX_UID:
                pids.append(int(name))
    return pids


def settled(seconds: float = 3.0) -> bool:
    """True once no live sandbox process is left (a kill takes a moment on a loaded host)."""
    for _ in range(int(seconds / 0.02)):
        if not sandbox_processes():
            return True
        time.sleep(0.02)
    return False


def test_runs_a_program_with_stdin():
    result = run_python("print(input()[::-1])", "abc\n", limits=FAST)
    assert result.stdout == "cba\n" and result.exit_code == 0 and not result.killed_reason


def test_runs_as_an_unprivileged_uid_without_capabilities():
    code = "import os\nprint(os.getuid(), [l for l in open('/proc/self/status') if 'CapEff' in l])"
    result = run_python(code, limits=FAST)
    uid, caps = result.stdout.split(" ", 1)
    assert int(uid) != 0
    assert "0000000000000000" in caps


def test_infinite_loop_is_killed_at_the_deadline():
    result = run_python("while True: pass", limits=Limits(timeout=1.0))
    assert result.exit_code != 0
    assert result.seconds < 3.0
    assert settled()


def test_sleeping_past_the_limit_times_out():
    result = run_python("import time; time.sleep(30)", limits=Limits(timeout=1.0))
    assert result.timed_out and result.killed_reason == "timeout"
    assert result.seconds < 3.0


def test_memory_bomb_is_stopped():
    code = "x = []\nwhile True: x.append(bytearray(10 << 20))"
    result = run_python(code, limits=FAST)
    assert result.exit_code != 0
    assert "MemoryError" in result.stderr or result.exit_code < 0


def test_fork_bomb_is_contained():
    code = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"
    result = run_python(code, limits=Limits(timeout=1.0, max_processes=8))
    assert result.exit_code != 0 or result.timed_out
    assert settled(), "a sandbox process outlived its run"


def test_children_die_with_the_run():
    # A daemonised grandchild in its own session must not survive the deadline.
    code = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\ntime.sleep(60)\n"
    )
    result = run_python(code, limits=Limits(timeout=0.8))
    assert result.timed_out
    assert settled(), "a grandchild outlived its sandbox"


def test_output_flood_is_capped_and_killed():
    result = run_python("while True: print('x' * 1000)", limits=Limits(max_output_bytes=50_000))
    assert result.killed_reason == "output limit"
    assert len(result.stdout) <= 50_000
    assert result.seconds < 2.0


def test_stderr_flood_is_capped():
    code = "import sys\nfor _ in range(10**6): sys.stderr.write('e' * 1000)"
    result = run_python(code, limits=FAST)
    assert len(result.stderr) <= 64 << 10
    assert result.killed_reason == "output limit"


@needs_bwrap
def test_no_network():
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('1.1.1.1', 53), timeout=0.5); print('connected')\n"
        "except OSError as e:\n    print('blocked')\n"
        "print(sorted(n for n in __import__('os').listdir('/sys/class/net')) "
        "if __import__('os').path.exists('/sys/class/net') else 'nosys')\n"
    )
    result = run_python(code, limits=FAST)
    assert result.stdout.startswith("blocked")


@needs_bwrap
def test_writes_outside_its_temp_dir_fail_and_host_files_are_untouched(tmp_path):
    host_file = tmp_path / "precious.txt"
    host_file.write_text("keep me")
    target = os.path.join(os.path.dirname(os.__file__), "evil.py")  # the stdlib, read-only
    code = (
        "import os\n"
        f"for path in [{str(host_file)!r}, {target!r}, '/usr/evil', '/etc/evil']:\n"
        "    try:\n        open(path, 'w').write('pwned'); print('wrote', path)\n"
        "    except OSError as e:\n        print('denied', path)\n"
        "open('/tmp/scratch', 'w').write('fine'); print('tmp ok')\n"
    )
    result = run_python(code, limits=FAST)
    assert "wrote" not in result.stdout
    assert "tmp ok" in result.stdout
    assert host_file.read_text() == "keep me"
    assert not os.path.exists(target)


@needs_bwrap
def test_host_files_are_invisible():
    # The project (and any tests or answers stored beside it) is not in the sandbox at all.
    here = os.path.abspath(__file__)
    code = f"import os\nprint(os.path.exists({here!r}), os.path.exists('/root/.ssh'))"
    result = run_python(code, limits=FAST)
    assert result.stdout.split() == ["False", "False"]


def test_killing_its_parent_does_not_harm_the_host():
    code = (
        "import os, signal\n"
        "for pid in (os.getppid(), 1, -1):\n"
        "    try: os.kill(pid, signal.SIGKILL)\n"
        "    except OSError: pass\n"
        f"try: os.kill({os.getpid()}, signal.SIGKILL)\n"
        "except OSError: print('cannot reach the host')\n"
    )
    result = run_python(code, limits=FAST)
    assert result.exit_code is not None  # we are alive to read it
    assert "cannot reach the host" in result.stdout or result.exit_code != 0


@needs_bwrap
def test_an_interpreter_under_tmp_still_gets_bubblewrap(tmp_path):
    """A virtual environment in /tmp (a clone under /tmp, CI) is bound over the private /tmp,
    not hidden by it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    paths = [str(Path(__file__).resolve().parents[1]), sysconfig.get_paths()["purelib"]]
    code = "from rlvr.verifiers.sandbox import backend, run_python; "
    code += "print(backend()); print(run_python('print(6 * 7)').stdout.strip())"
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert out == ["bwrap", "42"]


def test_fallback_runs_and_enforces_limits():
    ok = run_python("print(input())", "hi\n", limits=FAST, kind="fallback")
    assert ok.stdout == "hi\n"
    slow = run_python("while True: pass", limits=Limits(timeout=0.8), kind="fallback")
    assert slow.exit_code != 0 and slow.seconds < 3.0
    assert settled()


def test_fallback_contains_a_fork_bomb():
    code = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"
    result = run_python(code, limits=Limits(timeout=0.8, max_processes=8), kind="fallback")
    assert result.exit_code != 0 or result.timed_out
    # Without bwrap the pid namespace's teardown can lag a moment behind the kill.
    assert settled(seconds=5.0)


def test_missing_bwrap_falls_back_with_one_warning(monkeypatch, caplog):
    from rlvr.verifiers import sandbox

    monkeypatch.setattr(sandbox, "_backend_cache", {})
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with caplog.at_level("WARNING", logger=sandbox.__name__):
        assert backend() == "fallback"
        assert run_python("print(6 * 7)", limits=FAST).stdout == "42\n"
        assert backend() == "fallback"
    warnings = [r for r in caplog.records if "bubblewrap unavailable" in r.getMessage()]
    assert len(warnings) == 1
