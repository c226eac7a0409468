"""The sampler role in a process of its own: asynchronous GRPO with a fixed staleness.

With `grpo.max_staleness = k > 0` the learner trains step n on episodes sampled by policy
version v(n) = max(0, n - 1 - k) (version j is the policy after j learner steps), while this
process already samples the steps after it. The lag is a rule, not a race: which version
samples which step never depends on timing, so an asynchronous run is as deterministic as a
synchronous one (same seed, same thread counts, same numbers).

    learner process                          sampler process
    ---------------                          ---------------
    publish(version 0) ------ slot 0 ------> sample step 1 .. k+1 with version 0
    train step 1 on rollouts(1) <----------- episodes of step 1
    publish(version 1) ------ slot 1 ------> sample step k+2 with version 1
    ...

Weights travel through `SharedWeights`: k + 1 copies of the parameters in shared memory,
version v in slot v mod (k + 1). The learner copies its weights into a slot once per version;
the sampler's model points at the slot's tensors (no copy on its side). A slot is reused only
when the learner publishes version v + k + 1, which it can only do after training on step
v + k + 1, the last step version v samples: so the sampler never reads a slot being written.

Resume is lossless: a checkpoint after step n waits for steps n+1 .. n+k (sampled by versions
the checkpoint no longer has) and stores them with the sampler's state after them; a resumed
run trains on those and starts the sampler at step n+k+1 with the checkpoint's weights.

Faults: a sampler process that dies (killed from outside) is started again from the state
after the last step it delivered, on the same weight slots, so it samples exactly what the
dead one would have; `sampler_restarts` counts the restarts and `lost_sampling_seconds` the
work thrown away.

Episodes come back as plain data (pickled dataclasses in a file per step, announced by a short
message). The sampler verifies in its own VerifierPool (reward.workers processes of its own), so
verification keeps overlapping decoding there.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import queue
import shutil
import signal
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from rlvr.config import Config
from rlvr.errors import ConfigError, TrainingError
from rlvr.sampling.sampler import Rollouts, Sampler

POLL_SECONDS = 1.0  # how often a waiting learner checks that the sampler process is alive


def check_async(policy: torch.nn.Module) -> None:
    """Raise ConfigError unless `policy` can be sampled in a process of its own: rlvr's
    model class (its weights travel as named parameters) on the CPU (through shared memory)."""
    from rlvr.model import Transformer

    if not isinstance(policy, Transformer):
        raise ConfigError(
            f"grpo.max_staleness > 0 needs rlvr's own model class (Llama, Qwen2, Qwen3 and "
            f"Mistral checkpoints load into it), not {type(policy).__name__}; set "
            "grpo.max_staleness = 0 for this model."
        )
    if next(policy.parameters()).device.type != "cpu":
        raise ConfigError(
            "grpo.max_staleness > 0 hands weights over through shared CPU memory; on a GPU "
            'use the synchronous loop (grpo.max_staleness = 0) or device = "cpu".'
        )


def staleness_version(step: int, max_staleness: int) -> int:
    """The policy version that samples GRPO step `step` (>= 1): max(0, step - 1 - k)."""
    return max(0, step - 1 - max_staleness)


class SharedWeights:
    """`num_slots` copies of a model's parameters in shared memory; version v is in slot
    v % num_slots. Parameters are keyed by name, tied ones once."""

    def __init__(self, model: torch.nn.Module, num_slots: int) -> None:
        self.slots = [
            {name: p.detach().clone().share_memory_() for name, p in model.named_parameters()}
            for _ in range(num_slots)
        ]

    @torch.no_grad()
    def publish(self, model: torch.nn.Module, version: int) -> None:
        """Copy `model`'s parameters into the slot of `version` (the learner's side)."""
        slot = self.slots[version % len(self.slots)]
        for name, p in model.named_parameters():
            slot[name].copy_(p)

    def point(self, model: torch.nn.Module, version: int) -> None:
        """Make `model`'s parameters the tensors of `version`'s slot (the sampler's side; no
        copy: the model reads the shared memory the learner wrote)."""
        slot = self.slots[version % len(self.slots)]
        for name, p in model.named_parameters():
            p.data = slot[name]


def _sampler_main(spec: dict, weights: SharedWeights, commands, results) -> None:
    """The sampler process: sample steps spec["first_step"].. in order, each with its
    version's weights, and send each step's Rollouts with the sampler state after it."""
    from rlvr.model import Transformer
    from rlvr.verifiers.rewards import Scorer, open_pool

    _die_with_parent()
    # Ctrl-C reaches the whole process group: the learner decides when to stop (at a step
    # boundary, with a checkpoint that needs this process's rollouts), not this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        cfg: Config = spec["cfg"]
        torch.set_num_threads(cfg.sampler.threads)
        k, task = cfg.grpo.max_staleness, spec["task"]
        model = Transformer(spec["model_config"]).eval().requires_grad_(False)
        model.batch_invariant = cfg.sampler.exact_logprobs
        with open_pool(cfg.reward, preload=(type(task).__module__,)) as pool:
            scorer = Scorer(task, cfg.reward, cfg.grpo.max_new_tokens, pool,
                            system_prompt=spec["system_prompt"])  # fmt: skip
            sampler = Sampler(model, spec["tokenizer"], scorer, task, cfg)
            sampler.load_state_dict(spec["state"])
            published = spec["published"]
            for step in range(spec["first_step"], cfg.grpo.steps + 1):
                version = staleness_version(step, k)
                t0 = time.monotonic()
                while published < version:
                    command = commands.get()
                    if command[0] == "stop":
                        return
                    published = max(published, command[1])
                waited = time.monotonic() - t0
                weights.point(model, version)
                rollouts = sampler.sample(step, version)
                rollouts.waited = waited
                state = sampler.state_dict()
                state["generator"] = state["generator"].numpy().tobytes()
                # The episodes go through a file, renamed into place when complete, and only
                # a short note through the queue: a process killed in the middle of a write
                # then leaves nothing half-read behind (pipe writes this small are atomic).
                path = Path(spec["outbox"]) / f"{step:08d}.pkl"
                path.with_suffix(".tmp").write_bytes(pickle.dumps((rollouts, state)))
                path.with_suffix(".tmp").rename(path)
                results.put(("rollouts", step, ""))
    except ConfigError as e:
        results.put(("config_error", str(e)[:3000], ""))
    except BaseException as e:  # noqa: BLE001 - reported to the learner, which stops the run
        results.put(("error", f"{type(e).__name__}: {e}"[:1000], traceback.format_exc()[-2000:]))


class SamplerProcess:
    """The sampler role in its own process, `grpo.max_staleness` versions behind the learner.

    The same interface as `Sampler`: `rollouts(step)` (blocks until that step is sampled),
    `publish(model, version)` after each learner step, `state_dict()` for checkpoints, and
    `close()`.
    """

    def __init__(self, policy: torch.nn.Module, tokenizer, task, cfg: Config,
                 system_prompt: str, first_step: int, state: dict | None) -> None:  # fmt: skip
        check_async(policy)
        self.cfg, self.k = cfg, cfg.grpo.max_staleness
        self.weights = SharedWeights(policy, self.k + 1)
        base = first_step - 1  # the policy's version now
        self.weights.publish(policy, base)
        self.published = base
        state = state or {}
        self.ready: dict[int, Rollouts] = {}
        for data in state.get("pending_rollouts") or []:
            r = Rollouts.from_dict(data)
            self.ready[r.step] = r
        self.state_after: dict[int, dict] = {}  # step -> sampler state after sampling it
        self.next_step = first_step + len(self.ready)  # the first step the process samples
        self.state_after[self.next_step - 1] = {
            "generator": state["generator"], "batches_drawn": state["batches_drawn"],
            "speculation": state.get("speculation"),
        } if "generator" in state else _fresh_state(cfg)  # fmt: skip
        self.consumed = first_step - 1  # the last step handed to the learner
        self.restarts, self.lost_seconds = 0, 0.0
        self._spec = {"cfg": cfg, "task": task, "tokenizer": tokenizer,
                      "model_config": policy.config, "system_prompt": system_prompt}  # fmt: skip
        self._outbox = Path(tempfile.mkdtemp(prefix="rlvr-sampler-"))
        self._spec["outbox"] = str(self._outbox)
        self._ctx = mp.get_context("spawn")
        self._process = None
        self._started_at = 0.0
        self._start()

    def _start(self) -> None:
        """Start a sampler process at `next_step` from the state after the step before it."""
        self.commands, self.results = self._ctx.Queue(), self._ctx.Queue()
        spec = dict(self._spec, first_step=self.next_step, published=self.published,
                    state=self.state_after[self.next_step - 1])  # fmt: skip
        self._process = self._ctx.Process(
            target=_sampler_main, args=(spec, self.weights, self.commands, self.results),
            name="rlvr-sampler", daemon=True,
        )  # fmt: skip
        self._process.start()
        self._started_at = time.monotonic()

    def _receive(self) -> None:
        """Take one message from the sampler process; restart it if it died."""
        try:
            kind, payload, extra = self.results.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if not self._process.is_alive():
                self.lost_seconds += time.monotonic() - self._started_at
                self.restarts += 1
                self._start()
            return
        if kind == "config_error":
            raise ConfigError(payload)
        if kind == "error":
            raise TrainingError(f"the sampler process failed: {payload}\n{extra}".rstrip())
        path = self._outbox / f"{payload:08d}.pkl"
        rollouts, state = pickle.loads(path.read_bytes())
        path.unlink()
        state["generator"] = torch.frombuffer(bytearray(state["generator"]), dtype=torch.uint8)
        self.ready[rollouts.step] = rollouts
        self.state_after[rollouts.step] = state
        self.next_step = rollouts.step + 1
        self._started_at = time.monotonic()

    def rollouts(self, step: int) -> Rollouts:
        """Step `step`'s episodes (sampled by version max(0, step - 1 - k)); waits for them."""
        while step not in self.ready:
            self._receive()
        self.consumed = step
        for old in [s for s in self.state_after if s < step - 1]:
            del self.state_after[old]
        return self.ready.pop(step)

    def publish(self, model: torch.nn.Module, version: int) -> None:
        """The learner's weights after step `version` go into their slot, and the sampler
        process is told it may use them."""
        self.weights.publish(model, version)
        self.published = version
        self.commands.put(("weights", version))

    def state_dict(self) -> dict:
        """The sampler's part of a checkpoint after the learner's step n = `consumed`: the
        rollouts of steps n+1 .. n+k (their versions are older than the checkpoint's
        weights, so they are stored, not resampled) and the sampler state after them."""
        last = min(self.consumed + self.k, self.cfg.grpo.steps)
        for step in range(self.consumed + 1, last + 1):
            while step not in self.ready:
                self._receive()
        pending = [self.ready[s].to_dict() for s in range(self.consumed + 1, last + 1)]
        return {**self.state_after[last], "pending_rollouts": pending}

    def close(self) -> None:
        """Stop the sampler process (it exits at its next wait for weights, or is killed)."""
        if self._process is None:
            return
        try:
            self.commands.put(("stop", 0))
        except (OSError, ValueError):
            pass
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._process = None
        shutil.rmtree(self._outbox, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        """The sampler process's id (tests kill it to check the restart)."""
        return self._process.pid if self._process is not None else None


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the learner's process dies (SIGKILL included), so
    that no orphan sampler keeps decoding; elsewhere the learner's exit ends it (daemon)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def _fresh_state(cfg: Config) -> dict[str, Any]:
    """The sampler state of a run's first GRPO step: its seeded generator, no batch drawn."""
    return {"generator": torch.Generator().manual_seed(cfg.seed + 2).get_state(),
            "batches_drawn": 0}  # fmt: skip
