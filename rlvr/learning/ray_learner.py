"""The learner role as a Ray actor (`runtime = "ray"`).

`RayLearner` has GRPOLearner's interface (train_step, state_dict, load_state_dict, bad_in_row,
close), so the GRPO loop is the same code. Behind it a `LearnerWorker` actor, placed with
`ray.learner_cpus` / `ray.learner_gpus`, holds the policy, the reference model and the
optimizer: a GRPOLearner, or a DistributedLearner over `learner.processes` processes on the
actor's machine. After each step it returns the new weights, which this process copies into
its own policy: the loop evaluates, checkpoints and publishes that copy, as in a local run.
So a version crosses the object store twice (actor -> driver, driver -> samplers; see
docs/distributed.md for the cost and for the NCCL design that skips the driver).

The learner's failure (its actor or process dies) stops the run with the resume line: its
optimizer state exists nowhere else, and the last checkpoint holds everything to go on exactly.
"""

from __future__ import annotations

import torch

from rlvr.cluster import actor_error, check_model, gpu_device, load_weights, pack_weights
from rlvr.config import Config
from rlvr.errors import ConfigError, TrainingError
from rlvr.learning.learner import StepResult


def _to_cpu(value):
    """A state dict with every tensor moved to the CPU (a GPU actor's state, for the driver)."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


class LearnerWorker:
    """The learner actor: the policy and its learner, on the actor's GPU when it has one."""

    def __init__(self, model_config, weights: dict, cfg: Config, pad_id: int,
                 reward_weights: dict[str, float]) -> None:  # fmt: skip
        from rlvr.learning.distributed import DistributedLearner
        from rlvr.learning.learner import GRPOLearner
        from rlvr.model import Transformer

        torch.set_num_threads(cfg.learner.threads)
        self.policy = Transformer(model_config)
        load_weights(self.policy, weights)
        self.policy.to(gpu_device())
        if cfg.learner.processes > 1:
            self.learner = DistributedLearner(self.policy, cfg, pad_id, reward_weights)
        else:
            self.learner = GRPOLearner(self.policy, cfg, pad_id, reward_weights)

    def train_step(self, episodes: list, step: int) -> tuple[StepResult, int, dict]:
        """One update; the result, the NaN-steps-in-a-row count and the new weights."""
        result = self.learner.train_step(episodes, step)
        return result, self.learner.bad_in_row, pack_weights(self.policy)

    def state_dict(self) -> dict:
        return _to_cpu(self.learner.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state)

    def close(self) -> None:
        self.learner.close()


class RayLearner:
    """The learner role in a Ray actor; see the module docstring."""

    def __init__(self, policy: torch.nn.Module, cfg: Config, pad_id: int,
                 reward_weights: dict[str, float]) -> None:  # fmt: skip
        import ray

        check_model(policy)
        self.policy, self.cfg = policy, cfg
        self.bad_in_row = 0
        actor = ray.remote(LearnerWorker).options(
            num_cpus=cfg.ray.learner_cpus, num_gpus=cfg.ray.learner_gpus, max_restarts=0
        )
        self.actor = actor.remote(policy.config, pack_weights(policy), cfg, pad_id, reward_weights)

    def _call(self, method: str, *args):
        """Call the actor and wait; its death stops the run with the resume line."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            return ray.get(getattr(self.actor, method).remote(*args))
        except RayTaskError as e:
            cause = actor_error(e)
            if isinstance(cause, (ConfigError, TrainingError)):
                raise type(cause)(str(cause)) from e
            raise self._failed(f"{type(cause).__name__}: {cause}") from e
        except RayActorError as e:
            raise self._failed("its actor died") from e

    def _failed(self, why: str) -> TrainingError:
        return TrainingError(
            f"The learner failed ({why})"[:1500] + "; the last checkpoint is intact, resume "
            f"with `rlvr train --resume {self.cfg.run_dir or 'RUN_DIR'}`."
        )

    def train_step(self, episodes: list, step: int) -> StepResult:
        result, self.bad_in_row, weights = self._call("train_step", episodes, step)
        load_weights(self.policy, weights)
        return result

    def state_dict(self) -> dict:
        return self._call("state_dict")

    def load_state_dict(self, state: dict) -> None:
        self._call("load_state_dict", state)

    def close(self) -> None:
        import ray

        if self.actor is None:
            return
        try:
            ray.get(self.actor.close.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - a dead actor has nothing left to close
            pass
        ray.kill(self.actor)
        self.actor = None
