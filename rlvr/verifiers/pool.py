"""A pool of verifier worker processes with a hard per-item timeout and crash isolation.

    with VerifierPool(num_workers=2, timeout_s=5.0, memory_mb=2048) as pool:
        future = pool.submit(my_verifier, completion, problem)    # returns at once
        verdicts = pool.map(my_verifier, [(completion, problem), ...])  # input order

A verifier is a plain function `fn(completion, problem) -> float | Verdict` (any arguments
work: `submit(fn, *args)`; in `map` each item is a tuple of arguments, or one argument).
What it returns becomes a Verdict (`as_verdict`):
  - a Verdict is kept as it is;
  - a float or bool r becomes reward r, status "correct" when r >= 1.0 else "wrong";
  - None becomes status "error" (the verifier could not grade it).
A verifier that raises gets status "error" with the exception as the reason; one that runs
past `timeout_s` is killed (its whole process group) and gets status "timeout"; one whose
worker dies (os._exit, a segfault, the memory limit) gets status "error". All three have
reward 0, the worker is replaced, and the pool goes on.

Workers are fresh interpreters (`python -c ...`, not fork), so they never inherit torch,
CUDA or the trainer's threads, and they do not import the parent's `__main__`. Functions
are sent by pickle, so `fn` must be importable by its module path: define it in a module,
not in `__main__` or a notebook (`functools.partial` of such a function is fine). Each
worker runs with RLIMIT_AS = memory_mb, and inside it `in_worker()` is True: code that may
hang or explode (sympy on model text) checks it and refuses to run anywhere else.

Items are dispatched by one background thread, so `submit` can be called from the training
loop while sampling goes on; `close()` (or leaving the `with` block) kills every worker.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any

from rlvr.verifiers.base import Verdict

_IN_WORKER = False  # set to True in worker processes only
_HEADER = struct.Struct("!Q")  # length prefix of each pickled message, bytes


NON_FINITE = "verifier returned a non-finite value"  # the reason of such a Verdict


def in_worker() -> bool:
    """True inside a VerifierPool worker process (where sympy on model text is allowed)."""
    return _IN_WORKER


def as_verdict(value: Any) -> Verdict:
    """Turn what a user verifier returned into a Verdict (rules in the module docstring)."""
    if isinstance(value, Verdict):
        return value
    if value is None:
        return Verdict(0.0, "error", {}, "verifier returned None (could not grade)")
    if isinstance(value, bool | int | float):
        reward = float(value)
        if not math.isfinite(reward):  # NaN or inf: never let it reach the advantages
            return Verdict(0.0, "error", {}, NON_FINITE)
        status = "correct" if reward >= 1.0 else "wrong"
        return Verdict(reward, status, {"accuracy": reward}, "")
    return Verdict(0.0, "error", {}, f"verifier returned {type(value).__name__}, not a float")


# --- the worker process -----------------------------------------------------------------------


def _send(stream, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(stream, size: int) -> bytes:
    """Exactly `size` bytes (unbuffered pipes may return fewer per read); EOFError at the end."""
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(stream) -> Any:
    """One message, or raises EOFError when the other side has gone."""
    size = _HEADER.unpack(_read_exact(stream, _HEADER.size))[0]
    return pickle.loads(_read_exact(stream, size))


def protocol_streams():
    """In a worker process: (inbox, outbox), the protocol's ends of the original stdin and
    stdout. Stdin then reads /dev/null and stdout goes to stderr, so code that reads or
    prints in the worker cannot corrupt the protocol."""
    inbox = os.fdopen(os.dup(0), "rb")
    outbox = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    return inbox, outbox


def spawn_worker(code: str, argument: str, env: dict[str, str]) -> subprocess.Popen:
    """A fresh interpreter running `code` (with sys.argv[1] = argument), its stdin and stdout
    the protocol's pipes, in a process group of its own (so a kill takes its children too)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, argument],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,  # unbuffered: select() must see every byte that has not been read
        env=env,
        start_new_session=True,
    )


def kill_worker(proc: subprocess.Popen) -> None:
    """SIGKILL a worker's process group, close its pipes and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass
    proc.wait()


def _worker_main() -> None:
    """Entry point of a worker: set limits, preload modules, then grade until stdin closes."""
    global _IN_WORKER
    _IN_WORKER = True
    config = json.loads(sys.argv[1])
    limit = config["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    inbox, outbox = protocol_streams()
    for module in config["preload"]:
        importlib.import_module(module)
    _send(outbox, ("ready", None))
    while True:
        try:
            fn, args = _recv(inbox)
        except EOFError:
            return
        except Exception as exc:  # noqa: BLE001 - e.g. the function's module is not importable
            _send(outbox, ("raised", f"could not load the verifier: {type(exc).__name__}: {exc}"))
            continue
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - MemoryError, RecursionError, SystemExit
            _send(outbox, ("raised", f"verifier raised {type(exc).__name__}: {exc}"[:300]))
            continue
        try:
            _send(outbox, ("ok", result))
        except Exception as exc:  # noqa: BLE001 - an unpicklable result
            _send(outbox, ("raised", f"verifier result could not be sent back: {exc}"[:300]))


_WORKER_CODE = "from rlvr.verifiers.pool import _worker_main; _worker_main()"


# --- the parent side --------------------------------------------------------------------------


class _Task:
    __slots__ = ("fn", "args", "future")

    def __init__(self, fn: Callable, args: tuple, future: Future) -> None:
        self.fn, self.args, self.future = fn, args, future


class _Worker:
    """One worker process and the task it is busy with."""

    def __init__(self, config: str, env: dict[str, str]) -> None:
        self.proc = spawn_worker(_WORKER_CODE, config, env)
        self.ready = False
        self.task: _Task | None = None
        self.deadline = float("inf")  # time.monotonic() seconds

    def kill(self) -> None:
        kill_worker(self.proc)


def _kill_all(workers: list[_Worker]) -> None:
    for worker in list(workers):
        worker.kill()


class VerifierPool:
    """Worker processes that grade items with a hard timeout; see the module docstring.

    num_workers: worker processes (2 on a 2-core laptop).
    timeout_s: seconds one item may run before its worker is killed (status "timeout").
    memory_mb: RLIMIT_AS per worker, in MiB; past it allocations fail (status "error").
    preload: modules each worker imports before taking items, so no item pays for the
        import inside its time limit (e.g. rlvr.verifiers.math.MATH_PRELOAD).
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 5.0,
        memory_mb: int = 2048,
        preload: Sequence[str] = (),
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.num_workers = num_workers
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.num_replaced = 0  # workers killed or dead and started again
        self._config = json.dumps({"memory_mb": memory_mb, "preload": list(preload)})
        # Workers find the same modules as this process (tests/ included under pytest).
        self._env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self._lock = threading.Lock()
        self._queue: deque[_Task] = deque()
        self._closed = False
        self._broken: str | None = None
        self._early_deaths = 0  # workers that died before becoming ready, in a row
        self._wake_r, self._wake_w = os.pipe()
        self._workers = [_Worker(self._config, self._env) for _ in range(num_workers)]
        # Kill the workers even if the user never calls close().
        self._finalizer = weakref.finalize(self, _kill_all, self._workers)
        self._thread = threading.Thread(target=self._dispatch, name="verifier-pool", daemon=True)
        self._thread.start()

    # -- public API --

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue fn(*args); the Future's result is always a Verdict, never an exception."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("VerifierPool is closed")
            if self._broken:
                future.set_result(Verdict(0.0, "error", {}, self._broken))
                return future
            self._queue.append(_Task(fn, args, future))
        os.write(self._wake_w, b"x")
        return future

    def map(self, fn: Callable[..., Any], items: Iterable[Any]) -> list[Verdict]:
        """fn over items (each a tuple of arguments, or one argument); Verdicts in input order."""
        futures = [
            self.submit(fn, *(item if isinstance(item, tuple) else (item,))) for item in items
        ]
        return [future.result() for future in futures]

    def close(self) -> None:
        """Kill every worker and stop the dispatcher; queued items get status "error"."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        self._finalizer()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the dispatcher thread --

    def _finish(self, task: _Task, verdict: Verdict) -> None:
        if not task.future.done():
            task.future.set_result(verdict)

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker and start a new one in its place."""
        worker.kill()
        index = self._workers.index(worker)
        self._workers[index] = _Worker(self._config, self._env)
        self.num_replaced += 1

    def _assign(self) -> None:
        now = time.monotonic()
        for worker in self._workers:
            if not (worker.ready and worker.task is None):
                continue
            with self._lock:
                if not self._queue:
                    return
                task = self._queue.popleft()
            try:
                data = pickle.dumps((task.fn, task.args), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001 - lambdas, open files, ...
                reason = f"could not send the item to a worker (pickle: {exc})"[:300]
                self._finish(task, Verdict(0.0, "error", {}, reason))
                continue
            try:
                worker.proc.stdin.write(_HEADER.pack(len(data)) + data)
                worker.proc.stdin.flush()
            except OSError:
                with self._lock:
                    self._queue.appendleft(task)  # the worker is gone; another will take it
                self._replace(worker)
                continue
            worker.task, worker.deadline = task, now + self.timeout_s

    def _on_message(self, worker: _Worker) -> None:
        try:
            kind, payload = _recv(worker.proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            self._on_death(worker)
            return
        if kind == "ready":
            worker.ready = True
            self._early_deaths = 0
            return
        task, worker.task, worker.deadline = worker.task, None, float("inf")
        if task is None:
            return
        if kind == "ok":
            try:
                verdict = as_verdict(payload)
            except Exception as exc:  # noqa: BLE001 - e.g. a Verdict with a bad status
                verdict = Verdict(0.0, "error", {}, f"bad verifier result: {exc}"[:300])
        else:
            verdict = Verdict(0.0, "error", {}, str(payload))
        self._finish(task, verdict)

    def _on_death(self, worker: _Worker) -> None:
        code = worker.proc.wait()
        task = worker.task
        if task is not None:
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            reason = f"worker died while grading ({how}; memory limit {self.memory_mb} MiB)"
            self._finish(task, Verdict(0.0, "error", {}, reason))
        if not worker.ready:
            self._early_deaths += 1
            if self._early_deaths >= 3:
                self._broken = f"verifier workers fail to start (exit code {code}); see stderr"
                worker.kill()
                return
        self._replace(worker)

    def _dispatch(self) -> None:
        try:
            while not self._closed and not self._broken:
                self._assign()
                now = time.monotonic()
                for worker in list(self._workers):
                    if worker.task is not None and now >= worker.deadline:
                        task = worker.task
                        worker.task = None
                        self._replace(worker)
                        reason = f"timed out after {self.timeout_s:g} s"
                        self._finish(task, Verdict(0.0, "timeout", {}, reason))
                deadline = min(w.deadline for w in self._workers)
                wait = None if deadline == float("inf") else max(0.0, deadline - now)
                streams = {w.proc.stdout: w for w in self._workers if w.proc.stdout}
                readable, _, _ = select.select([self._wake_r, *streams], [], [], wait)
                for stream in readable:
                    if stream == self._wake_r:
                        os.read(self._wake_r, 4096)
                    elif streams[stream] in self._workers:
                        self._on_message(streams[stream])
        finally:
            reason = self._broken or "the verifier pool was closed"
            with self._lock:
                pending = list(self._queue) + [w.task for w in self._workers if w.task]
                self._queue.clear()
            for task in pending:
                self._finish(task, Verdict(0.0, "error", {}, reason))
