"""Run untrusted Python: one process per run, under bubblewrap, with hard limits.

Model output is hostile until proven otherwise. Each run gets a fresh bubblewrap sandbox:

- a non-root uid (65534) whose process count RLIMIT_NPROC really binds (it never binds
  kernel uid 0, so as root we map 65534 to host uid 65534 in a user namespace of our own);
- no network, no IPC, its own pid namespace (it cannot see or signal the host's processes);
- a read-only view of only the system and Python directories (not "/": the host's data files,
  e.g. the tests and expected outputs being graded, must stay unreadable), a read-only
  /sandbox holding the run's files, and a private, size-limited tmpfs on /tmp;
- rlimits on CPU time, address space, processes, file size and open files;
- a wall-clock deadline and output caps, past which the whole sandbox is SIGKILLed.

Without a working bubblewrap the runs fall back to a subprocess with the same rlimits, its
own session, and `unshare` namespaces plus a drop to uid 65534 where those work; a warning
says so once. The fallback is weaker (the host's files stay readable) - install bubblewrap.

The trusted parent decides pass/fail from data it reads: stdout, or lines the trusted harness
writes to a result channel (a pipe). The exit code alone never decides anything.

    run_python("print(input()[::-1])", "abc\\n", timeout=2.0).stdout  # -> "cba\\n"
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

SANDBOX_UID = 65534  # "nobody"

# Runs inside the sandbox before anything untrusted: set the rlimits, take the secret, then run
# the program (or the harness) as __main__. argv: limits JSON, script path, channel fd (the
# harness writes result lines there), secret fd (the parent writes a per-run secret there).
_BOOT = r"""
import json, os, resource, sys
for _name, _value in json.loads(sys.argv[1]).items():
    resource.setrlimit(getattr(resource, _name), (_value, _value))
_path, _channel, _secret_fd = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with os.fdopen(_secret_fd, "rb") as _f:
    _secret = _f.read(256).decode()
sys.argv = [_path]
_g = {"__name__": "__main__", "__builtins__": __builtins__, "__file__": _path}
if _path.endswith("harness.py"):
    _g.update(SECRET=_secret, CHANNEL_FD=_channel)
else:
    os.close(_channel)
with open(_path, encoding="utf-8") as _f:
    _code = compile(_f.read(), _path, "exec")
del _f, _name, _value, _path, _secret, _channel, _secret_fd
exec(_code, _g)
"""


@dataclass
class SandboxResult:
    """What one sandboxed run did, as the parent observed it.

    stdout/stderr: decoded output, each cut at its cap.
    exit_code: the exit status; negative means killed by that signal (Popen's convention).
    timed_out: the wall-clock deadline passed and the sandbox was killed.
    killed_reason: why the parent killed it ("timeout", "output limit"), else None.
    seconds: wall-clock duration.
    channel: the lines the harness wrote to the result channel (harness runs only).
    """

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    killed_reason: str | None
    seconds: float
    channel: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. Units are in the names."""

    timeout: float = 2.0  # wall-clock seconds
    memory_mb: int = 512  # address space
    cpu_seconds: int | None = None  # default: the timeout rounded up, plus one
    max_processes: int = 16  # counts the process itself and its threads
    max_file_mb: int = 16  # largest file it may write
    max_open_files: int = 64
    max_output_bytes: int = 1 << 20  # stdout cap; stderr and the channel get their own
    tmp_mb: int = 64  # size of the private /tmp


# --------------------------------------------------------------------------- backends


def _interpreter_dirs() -> list[str]:
    """The directories the sandboxed interpreter needs: its prefix and its site-packages."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    dirs.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    return sorted(d for d in dirs if d and os.path.isdir(d) and not d.startswith("/usr"))


def _system_binds() -> list[str]:
    """bwrap arguments that show /usr, /bin, /lib* (as on the host), a few /etc files."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    for name in ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives"):
        if os.path.exists(name):
            args += ["--ro-bind", name, name]
    made: set[str] = set()
    for d in _interpreter_dirs():
        # Make the mount point's parents traversable: bwrap would create them with our umask.
        parent = os.path.dirname(d)
        ancestors = []
        while parent not in ("/", "") and parent not in made:
            ancestors.append(parent)
            parent = os.path.dirname(parent)
        for a in reversed(ancestors):
            args += ["--perms", "0755", "--dir", a]
            made.add(a)
        args += ["--ro-bind", d, d]
    return args


_userns_fd: int | None = None
_userns_lock = threading.Lock()


def _root_userns() -> int:
    """An fd of a user namespace mapping uids/gids 0 and 65534 to themselves (root only).

    bwrap's own --unshare-user maps the sandbox uid to the caller's uid, i.e. kernel uid 0
    when we are root, and RLIMIT_NPROC never binds uid 0. In this namespace bwrap mounts as
    root, and setpriv then drops the sandboxed program to uid 65534 = host uid 65534.
    """
    global _userns_fd
    with _userns_lock:
        if _userns_fd is not None:
            return _userns_fd
        helper = subprocess.Popen(["unshare", "--user", "--", "sleep", "30"])
        try:
            own = os.readlink("/proc/self/ns/user")
            deadline = time.monotonic() + 5.0
            while os.readlink(f"/proc/{helper.pid}/ns/user") == own:
                if time.monotonic() > deadline:
                    raise RuntimeError("unshare did not create a user namespace")
                time.sleep(0.002)
            mapping = f"0 0 1\n{SANDBOX_UID} {SANDBOX_UID} 1\n"
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{helper.pid}/{name}", "w") as f:
                    f.write(mapping)
            _userns_fd = os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            helper.kill()
            helper.wait()
        return _userns_fd


def _bwrap_command(sandbox_dir: str, limits: Limits) -> tuple[list[str], tuple[int, ...]]:
    """The bwrap prefix for one run, and the fds it must inherit."""
    args = ["bwrap"]
    pass_fds: tuple[int, ...] = ()
    if os.geteuid() == 0:
        fd = _root_userns()
        pass_fds = (fd,)
        args += ["--userns", str(fd), "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    # The private /tmp first: an interpreter or virtual environment that lives under the
    # host's /tmp is then bound on top of it instead of being hidden by it.
    args += ["--perms", "1777", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp"]
    args += _system_binds()
    args += ["--ro-bind", sandbox_dir, "/sandbox", "--proc", "/proc", "--dev", "/dev"]
    args += ["--chdir", "/tmp"]
    args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--hostname", "sandbox"]
    args += ["--die-with-parent", "--new-session", "--clearenv"]
    args += ["--"]
    if os.geteuid() == 0:
        uid = str(SANDBOX_UID)
        args += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        args += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return args, pass_fds


def _fallback_prefixes() -> list[list[str]]:
    """Weaker isolation for hosts without a working bwrap, strongest first."""
    drop = ["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups"]
    drop += ["--inh-caps=-all", "--no-new-privs", "--"]
    ns = ["unshare", "--net", "--pid", "--ipc", "--fork", "--kill-child"]
    if os.geteuid() == 0:
        return [ns + ["--"] + drop, drop, ns + ["--"], []]
    return [ns[:1] + ["--user"] + ns[1:] + ["--"], []]


_backend_cache: dict[str, list[str]] = {}
_backend_lock = threading.Lock()


def _probe(prefix: list[str], extra_fds: tuple[int, ...], cwd: str) -> str:
    """'' if `prefix + python -c pass` runs, else the reason it does not."""
    try:
        proc = subprocess.run(
            prefix + [sys.executable, "-I", "-c", "pass"],
            pass_fds=extra_fds,
            capture_output=True,
            timeout=20,
            cwd=cwd,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return "" if proc.returncode == 0 else proc.stderr.decode(errors="replace").strip()[:300]


def backend(kind: str = "auto") -> str:
    """Which isolation runs use: "bwrap", or "fallback" (and why, logged once).

    kind: "auto" picks bwrap when it works here; "fallback" forces the weaker path (tests).
    """
    with _backend_lock:
        if kind in _backend_cache:
            return "bwrap" if _backend_cache[kind] == ["bwrap"] else "fallback"
        reason = "forced" if kind == "fallback" else "bwrap is not installed"
        if kind == "auto" and shutil.which("bwrap"):
            with tempfile.TemporaryDirectory() as tmp:
                os.chmod(tmp, 0o755)
                try:
                    args, fds = _bwrap_command(tmp, Limits())
                    reason = _probe(args, fds, tmp)
                except (OSError, RuntimeError) as exc:
                    reason = str(exc)
            if not reason:
                _backend_cache[kind] = ["bwrap"]
                return "bwrap"
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o755)
            prefix = next((p for p in _fallback_prefixes() if not _probe(p, (), tmp)), [])
        _backend_cache[kind] = ["fallback", *prefix]
        if kind == "auto":
            log.warning(
                "Code sandbox: bubblewrap unavailable (%s); running untrusted code with rlimits "
                "and %s only. Host files stay readable: install bubblewrap (apt-get install "
                "bubblewrap).",
                reason,
                " ".join(prefix[:1]) or "a new session",
            )
        return "fallback"


# --------------------------------------------------------------------------- running


def _rlimits(limits: Limits) -> dict[str, int]:
    cpu = limits.cpu_seconds or int(limits.timeout) + 1
    return {
        "RLIMIT_CPU": cpu,
        "RLIMIT_AS": limits.memory_mb << 20,
        "RLIMIT_NPROC": limits.max_processes,
        "RLIMIT_FSIZE": limits.max_file_mb << 20,
        "RLIMIT_NOFILE": limits.max_open_files,
        "RLIMIT_CORE": 0,
    }


def _env() -> dict[str, str]:
    # One thread per numeric library: threads count against RLIMIT_NPROC and RLIMIT_AS.
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", **threads}


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the run's process group. Under bwrap that takes down the whole pid namespace."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _run(
    files: dict[str, str],
    script: str,
    stdin: str,
    limits: Limits,
    secret: str,
    kind: str,
) -> SandboxResult:
    mode = backend(kind)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rlvr-sandbox-") as host_dir:
        # The sandbox uid reads these files: they hold code, never expected answers.
        os.chmod(host_dir, 0o755)
        for name, text in {**files, "boot.py": _BOOT}.items():
            path = os.path.join(host_dir, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(path, 0o644)
        stdin_path = os.path.join(host_dir, "stdin.txt")
        with open(stdin_path, "w", encoding="utf-8") as f:
            f.write(stdin)

        if mode == "bwrap":
            prefix, extra_fds = _bwrap_command(host_dir, limits)
            root, cwd = "/sandbox", None
        else:
            prefix, extra_fds = _backend_cache[kind][1:], ()
            work = tempfile.mkdtemp(prefix="tmp-", dir=host_dir)
            if os.geteuid() == 0:
                os.chown(work, SANDBOX_UID, SANDBOX_UID)
            root, cwd = host_dir, work
        python = [sys.executable, "-I", "-B", f"{root}/boot.py"]
        channel_r, channel_w = os.pipe()
        secret_r, secret_w = os.pipe()
        argv = prefix + python + [json.dumps(_rlimits(limits)), f"{root}/{script}"]
        argv += [str(channel_w), str(secret_r)]
        env = _env()
        if cwd:
            env.update(HOME=cwd, TMPDIR=cwd)

        try:
            with open(stdin_path, "rb") as stdin_file:
                proc = subprocess.Popen(
                    argv,
                    stdin=stdin_file,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(channel_w, secret_r, *extra_fds),
                    start_new_session=True,
                    cwd=cwd,
                    env=env,
                )
        finally:
            os.close(channel_w)
            os.close(secret_r)
        # The secret is tiny: the pipe buffer holds it, so this write never blocks.
        os.write(secret_w, secret.encode())
        os.close(secret_w)
        result = _collect(proc, channel_r, limits, start)
    return result


def _collect(
    proc: subprocess.Popen[bytes], channel_r: int, limits: Limits, start: float
) -> SandboxResult:
    """Read stdout, stderr and the channel under caps until EOF or the deadline."""
    assert proc.stdout is not None and proc.stderr is not None
    caps = {
        "stdout": limits.max_output_bytes,
        "stderr": 64 << 10,
        "channel": max(limits.max_output_bytes, 1 << 20),
    }
    chunks: dict[str, list[bytes]] = {name: [] for name in caps}
    sizes = dict.fromkeys(caps, 0)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "stderr")
    sel.register(channel_r, selectors.EVENT_READ, "channel")
    deadline = start + limits.timeout
    killed_reason: str | None = None
    open_streams = 3
    try:
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                killed_reason = "timeout"
                break
            for key, _ in sel.select(timeout=min(remaining, 0.5)):
                name = key.data
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fd)
                    open_streams -= 1
                    continue
                room = caps[name] - sizes[name]
                chunks[name].append(data[:room])
                sizes[name] += len(data)
                if sizes[name] > caps[name]:
                    killed_reason = "output limit"
            if killed_reason:
                break
    finally:
        sel.close()
        os.close(channel_r)
        if killed_reason:
            _kill(proc)
        try:
            exit_code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed_reason = killed_reason or "timeout"
            _kill(proc)
            exit_code = proc.wait()
        # Leftovers of the group (fallback without a pid namespace) die with it.
        _kill(proc)
        proc.stdout.close()
        proc.stderr.close()

    def text(name: str) -> str:
        return b"".join(chunks[name]).decode("utf-8", errors="replace")

    channel = text("channel").splitlines()
    if sizes["channel"] > caps["channel"] and channel:
        channel.pop()  # the last line was cut at the cap
    return SandboxResult(
        stdout=text("stdout"),
        stderr=text("stderr"),
        exit_code=exit_code,
        timed_out=killed_reason == "timeout",
        killed_reason=killed_reason,
        seconds=time.monotonic() - start,
        channel=channel,
    )


def run_python(
    code: str,
    stdin: str = "",
    *,
    timeout: float = 2.0,
    memory_mb: int = 512,
    limits: Limits | None = None,
    kind: str = "auto",
) -> SandboxResult:
    """Run a Python program in a fresh sandbox, feeding it `stdin`.

    timeout/memory_mb: wall-clock seconds and address-space MiB; `limits` overrides both.
    kind: "auto" (bubblewrap when it works) or "fallback" (force the weaker path).
    """
    limits = limits or Limits(timeout=timeout, memory_mb=memory_mb)
    return _run({"program.py": code}, "program.py", stdin, limits, "", kind)


def run_harness(
    harness: str,
    files: dict[str, str],
    *,
    secret: str = "",
    stdin: str = "",
    limits: Limits | None = None,
    kind: str = "auto",
) -> SandboxResult:
    """Run trusted harness code that runs untrusted code and reports on the result channel.

    The harness runs as __main__ with `SECRET` (the `secret` argument, read from a pipe before
    any untrusted code runs) and `CHANNEL_FD` in its globals, finds `files` next to its
    `__file__`, and writes result lines to CHANNEL_FD; they come back in `.channel`.
    Design harnesses so that the parent decides from values the untrusted code cannot know
    (expected outputs stay in the parent); the secret only guards a "reached the end" marker.
    """
    files = {**files, "harness.py": harness}
    return _run(files, "harness.py", stdin, limits or Limits(), secret, kind)
