"""Verifier workers as Ray actors (`runtime = "ray"`, `ray.num_verifiers = M > 0`).

Each `VerifierWorker` actor owns a `VerifierPool` of `reward.workers` processes, so a verifier
that hangs or crashes is killed and scored inside the actor exactly as in a local run (statuses
"timeout" / "error"). The samplers reach the actors through `RayVerifierPool`, which has the
pool's interface (`submit(fn, *args) -> Future`), so `Scorer` and `rollout` do not change:

    pool = RayVerifierPool(actors, retries=3)
    future = pool.submit(task.verify, response, problem)     # returns at once
    verdict = future.result()

Items go to the actors in turn. An actor that dies (killed, out of memory) is started again by
Ray (`max_restarts`); the items it held are sent again and counted (`lost`), so the verdicts,
and the run, are the same as without the fault. An item that loses its actor more than
`retries` times scores 0 with status "error".

No torch here: like every verifier module, this one stays cheap to import.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from rlvr.verifiers.base import Verdict
from rlvr.verifiers.pool import VerifierPool

RESEND_SECONDS = 0.2  # pause before an item goes again to an actor that is restarting
MAX_WAITS = 600  # that many pauses (2 minutes) and the item scores 0, status "error"


class VerifierWorker:
    """A verifier actor: grades items in its own VerifierPool (hard timeouts, memory limits).
    Ray runs it threaded (max_concurrency), so items wait in the pool's queue, not Ray's."""

    def __init__(self, workers: int, timeout_s: float, memory_mb: int,
                 preload: tuple[str, ...]) -> None:  # fmt: skip
        self.pool = VerifierPool(workers, timeout_s, memory_mb, preload)
        self.in_flight = 0
        self._lock = threading.Lock()

    def verify(self, fn: Callable[..., Any], args: tuple) -> Verdict:
        with self._lock:
            self.in_flight += 1
        try:
            return self.pool.submit(fn, *args).result()
        finally:
            with self._lock:
                self.in_flight -= 1

    def busy(self) -> int:
        """Items this actor is grading now (what its death would cost)."""
        return self.in_flight

    def pid(self) -> int:
        return os.getpid()


def start_verifiers(reward_cfg, ray_cfg, preload: tuple[str, ...]) -> list:
    """`ray.num_verifiers` VerifierWorker actors, restarted by Ray when they die."""
    import ray

    actor = ray.remote(VerifierWorker).options(
        num_cpus=ray_cfg.verifier_cpus, max_restarts=ray_cfg.max_restarts,
        max_concurrency=2 * reward_cfg.workers,
    )  # fmt: skip
    return [
        actor.remote(reward_cfg.workers, reward_cfg.timeout_s, reward_cfg.memory_mb, preload)
        for _ in range(ray_cfg.num_verifiers)
    ]


class RayVerifierPool:
    """VerifierPool's interface over verifier actors; see the module docstring."""

    def __init__(self, actors: list, retries: int) -> None:
        self.actors, self.retries = actors, retries
        self.lost = 0
        """Verifications sent again because their actor died."""
        self._next = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._send(future, fn, args, tries=0)
        return future

    def _send(self, future: Future, fn: Callable[..., Any], args: tuple, tries: int,
              waits: int = 0) -> None:  # fmt: skip
        from ray.exceptions import ActorUnavailableError, RayActorError

        with self._lock:
            actor = self.actors[self._next % len(self.actors)]
            self._next += 1

        def done(ray_future) -> None:
            try:
                future.set_result(ray_future.result())
            except ActorUnavailableError:
                # Sent while Ray restarts that actor (or after it died): try again shortly.
                with self._lock:
                    self.lost += waits == 0
                if waits < MAX_WAITS:
                    timer = threading.Timer(RESEND_SECONDS, self._send,
                                            (future, fn, args, tries, waits + 1))  # fmt: skip
                    timer.daemon = True
                    timer.start()
                else:
                    future.set_result(Verdict(0.0, "error", {}, "the verifier actor is gone"))
            except RayActorError:
                with self._lock:
                    self.lost += 1
                if tries < self.retries:
                    self._send(future, fn, args, tries + 1)
                else:
                    future.set_result(
                        Verdict(0.0, "error", {}, f"the verifier actor died {tries + 1} times")
                    )
            except Exception as exc:  # noqa: BLE001 - e.g. fn could not be sent: a status
                future.set_result(Verdict(0.0, "error", {}, f"{type(exc).__name__}: {exc}"[:300]))

        actor.verify.remote(fn, args).future().add_done_callback(done)

    def close(self) -> None:
        """Nothing to release here: the run's driver stops the actors."""
