"""The sampler role as Ray actors (`runtime = "ray"`, `ray.num_samplers = N`).

`RaySampler` has the interface of `Sampler` and `SamplerProcess` (rollouts(step),
publish(model, version), state_dict(), close()), so the GRPO loop is the same code. Behind it,
N `SamplerWorker` actors each hold a model, the task and a scorer, and sample whole steps.

The schedule (why the numbers do not depend on N):
- step n is sampled by policy version v(n) = max(0, n - 1 - k), k = grpo.max_staleness, as in
  SamplerProcess: a rule, not a race;
- each step draws from its own random streams: a generator seeded with seed * 1_000_003 + n,
  and the problem batches (n - 1) * R .. (n - 1) * R + R - 1 of the seeded ProblemStream, R =
  grpo.max_sampling_rounds with dynamic sampling, else 1 (rounds a step does not use are
  skipped, so no step's problems depend on how many rounds another step took);
- so step n's episodes are a function of (seed, n, the weights of v(n)) only, whichever actor
  samples it and whenever. A free actor takes the lowest step whose version is published; up to
  k + 1 steps are open at once (steps n+1 .. n+k+1 once version n is out), so more than k + 1
  samplers idle, and k = 0 samples one step at a time.
The Ray path gives different numbers from the local one (whose sampler draws one stream
across steps), the same numbers for every N.

Weights: `publish` puts the learner's parameters into Ray's object store once per version (one
`ray.put`, whatever N); the actors get the reference and read the arrays (shared memory on
one machine, one transfer per machine otherwise) only when their version changes. Episodes
come back as plain data (`Rollouts.to_dict`).

Faults: an actor that dies (ray.kill, SIGKILL, a crash) is started again by Ray
(`ray.max_restarts`); its step is sent again, and, the step's streams being its own, comes out
the same. `restarts` and `lost_seconds` count the deaths and the sampling thrown away.
Resume is SamplerProcess's: a checkpoint after step n holds steps n+1 .. n+k (sampled by
versions it no longer has); a resumed run trains on those and samples from n+k+1 on.
"""

from __future__ import annotations

import os
import time

import torch

from rlvr.cluster import actor_error, check_model, gpu_device, load_weights, pack_weights
from rlvr.config import Config
from rlvr.errors import ConfigError, TrainingError
from rlvr.sampling.process import staleness_version
from rlvr.sampling.sampler import Rollouts, Sampler

SCHEDULE = "per_step"  # the sampler_schedule a checkpoint of a Ray run records
WAIT_SECONDS = 1.0  # how often a waiting driver looks at its running steps
RESEND_SECONDS = 0.2  # pause before a step goes again to an actor that is restarting


def step_seed(seed: int, step: int) -> int:
    """The seed of step `step`'s sampling generator."""
    return seed * 1_000_003 + step


def first_batch(step: int, cfg: Config) -> int:
    """The index of step `step`'s first problem batch in the ProblemStream."""
    g = cfg.grpo
    return (step - 1) * (g.max_sampling_rounds if g.dynamic_sampling else 1)


class SamplerWorker:
    """A sampler actor: `Sampler` on a model of its own, set to a step's streams before each
    step and to a version's weights when the version changes."""

    def __init__(self, spec: dict) -> None:
        from rlvr.model import Transformer
        from rlvr.verifiers.ray_pool import RayVerifierPool
        from rlvr.verifiers.rewards import Scorer, open_pool

        cfg: Config = spec["cfg"]
        torch.set_num_threads(cfg.sampler.threads)
        self.cfg = cfg
        self.model = Transformer(spec["model_config"]).eval().requires_grad_(False)
        self.model.to(gpu_device())
        if spec["verifiers"]:
            self.pool = RayVerifierPool(spec["verifiers"], retries=cfg.ray.max_restarts)
        else:
            self._pool_context = open_pool(cfg.reward, preload=(type(spec["task"]).__module__,))
            self.pool = self._pool_context.__enter__()
        scorer = Scorer(spec["task"], cfg.reward, cfg.grpo.max_new_tokens, self.pool,
                        system_prompt=spec["system_prompt"])  # fmt: skip
        self.sampler = Sampler(self.model, spec["tokenizer"], scorer, spec["task"], cfg)
        self.version = -1  # the weights in self.model

    def sample(self, step: int, version: int, weights: list) -> tuple[dict, int]:
        """Step `step`'s Rollouts (plain data) with version `version`'s weights (weights[0]:
        their object reference, in a list so that Ray does not fetch it unless needed), and
        the verifications this step sent again because a verifier actor died."""
        import ray

        if version != self.version:
            load_weights(self.model, ray.get(weights[0]))
            self.version = version
        self.sampler.generator.manual_seed(step_seed(self.cfg.seed, step))
        self.sampler.batches_drawn = first_batch(step, self.cfg)
        lost = getattr(self.pool, "lost", 0)
        rollouts = self.sampler.sample(step, version)
        return rollouts.to_dict(), getattr(self.pool, "lost", 0) - lost

    def pid(self) -> int:
        return os.getpid()


class RaySampler:
    """The sampler role on Ray actors; see the module docstring."""

    def __init__(self, policy: torch.nn.Module, tokenizer, task, cfg: Config,
                 system_prompt: str, first_step: int, state: dict | None) -> None:  # fmt: skip
        import ray

        from rlvr.verifiers.ray_pool import start_verifiers

        check_model(policy)
        state = state or {}
        if state and state.get("sampler_schedule") != SCHEDULE:
            raise ConfigError(
                'This run was sampled with runtime = "local"; its sampler state cannot continue '
                "on Ray: resume it with --runtime local."
            )
        self.cfg, self.k, self.last_step = cfg, cfg.grpo.max_staleness, cfg.grpo.steps
        self.ready: dict[int, Rollouts] = {}
        for data in state.get("pending_rollouts") or []:
            r = Rollouts.from_dict(data)
            self.ready[r.step] = r
        self.consumed = first_step - 1  # the last step handed to the learner
        self.next_step = first_step + len(self.ready)  # the next step to send to an actor
        self.weights: dict[int, ray.ObjectRef] = {}  # version -> its arrays in the object store
        self.published = -1
        self.restarts, self.lost_seconds, self.lost_verifications = 0, 0.0, 0
        r = cfg.ray
        self.verifiers = start_verifiers(cfg.reward, r, (type(task).__module__,)) \
            if r.num_verifiers else []  # fmt: skip
        spec = {"cfg": cfg, "task": task, "tokenizer": tokenizer, "model_config": policy.config,
                "system_prompt": system_prompt, "verifiers": self.verifiers}  # fmt: skip
        actor = ray.remote(SamplerWorker).options(
            num_cpus=r.sampler_cpus, num_gpus=r.sampler_gpus, max_restarts=r.max_restarts
        )
        self.actors = [actor.remote(spec) for _ in range(r.num_samplers)]
        self.deaths = [0] * r.num_samplers
        self.idle = list(range(r.num_samplers))
        self.running: dict = {}  # object ref -> (step, actor index, monotonic start, again)
        self.publish(policy, first_step - 1)

    # -- the schedule --

    def _launch(self) -> None:
        """Give free actors the next steps whose versions are published."""
        while (
            self.idle
            and self.next_step <= self.last_step
            and staleness_version(self.next_step, self.k) <= self.published
        ):
            self._send(self.next_step, self.idle.pop(0))
            self.next_step += 1

    def _send(self, step: int, index: int, again: bool = False) -> None:
        """Send step `step` to actor `index` (again: the same step after its actor died)."""
        version = staleness_version(step, self.k)
        ref = self.actors[index].sample.remote(step, version, [self.weights[version]])
        self.running[ref] = (step, index, time.monotonic(), again)

    def _receive(self) -> None:
        """Take finished steps; send a step again when its actor died."""
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        if not self.running:
            raise TrainingError("the Ray sampler has no step running and none it can start")
        done, _ = ray.wait(list(self.running), num_returns=1, timeout=WAIT_SECONDS)
        for ref in done:
            step, index, started, again = self.running.pop(ref)
            try:
                data, lost = ray.get(ref)
            except RayActorError as e:
                # A step sent to an actor that Ray is still restarting comes back "unavailable":
                # send it again a little later; that is no new death.
                if not (again and isinstance(e, ActorUnavailableError)):
                    self.deaths[index] += 1
                    self.restarts += 1
                    self.lost_seconds += time.monotonic() - started
                if self.deaths[index] > self.cfg.ray.max_restarts:
                    raise TrainingError(
                        f"sampler actor {index} died {self.deaths[index]} times (ray.max_restarts"
                        f" = {self.cfg.ray.max_restarts}): {e}"[:800]
                    ) from e
                time.sleep(RESEND_SECONDS)
                self._send(step, index, again=True)
                continue
            except ray.exceptions.RayTaskError as e:
                cause = actor_error(e)
                if isinstance(cause, ConfigError):
                    raise ConfigError(str(cause)) from e
                raise TrainingError(f"the sampler actor failed: {cause}"[:2000]) from e
            self.ready[step] = Rollouts.from_dict(data)
            self.lost_verifications += lost
            self.idle.append(index)
        self._launch()

    # -- the interface of Sampler and SamplerProcess --

    def rollouts(self, step: int) -> Rollouts:
        """Step `step`'s episodes (sampled by version max(0, step - 1 - k)); waits for them."""
        while step not in self.ready:
            self._receive()
        self.consumed = step
        return self.ready.pop(step)

    def publish(self, model: torch.nn.Module, version: int) -> None:
        """The learner's weights after step `version`: one put into the object store; the
        versions no step still needs are let go."""
        import ray

        self.weights[version] = ray.put(pack_weights(model))
        self.published = version
        needed = min([entry[0] for entry in self.running.values()] + [self.next_step])
        for old in [v for v in self.weights if v < staleness_version(needed, self.k)]:
            del self.weights[old]
        self._launch()

    def state_dict(self) -> dict:
        """The sampler's part of a checkpoint after step n = `consumed`: the rollouts of steps
        n+1 .. n+k (their versions are older than the checkpoint's weights)."""
        last = min(self.consumed + self.k, self.last_step)
        for step in range(self.consumed + 1, last + 1):
            while step not in self.ready:
                self._receive()
        pending = [self.ready[s].to_dict() for s in range(self.consumed + 1, last + 1)]
        return {"sampler_schedule": SCHEDULE, "pending_rollouts": pending}

    def close(self) -> None:
        """Stop the sampler and verifier actors."""
        import ray

        for actor in self.actors + self.verifiers:
            ray.kill(actor, no_restart=True)
        self.actors, self.verifiers, self.running = [], [], {}

    def pids(self) -> list[int]:
        """The sampler actors' process ids (tests kill them)."""
        import ray

        return ray.get([actor.pid.remote() for actor in self.actors])
