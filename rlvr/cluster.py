"""Ray for a run (`runtime = "ray"`): join a cluster or start a local one, and the weights'
way through Ray's object store.

    rlvr train recipes/demo.toml --runtime ray --ray.num_samplers 2
    ray start --head --port 6379                       # a cluster: on the head machine
    ray start --address HEAD:6379                      # on each other machine
    rlvr train recipes/demo.toml --runtime ray --ray.address HEAD:6379

The roles become actors (rlvr/sampling/ray_sampler.py: SamplerWorker, rlvr/verifiers/
ray_pool.py: VerifierWorker, rlvr/learning/ray_learner.py: LearnerWorker); this process keeps
the loop, the evaluations and the checkpoints. Every machine needs rlvr installed (the actors
import it by name) and the same Python and torch.

Weights travel as plain arrays: `pack_weights` turns a model's parameters into a dict of
numpy arrays (one `ray.put` per policy version, which every sampler on a machine then reads
from shared memory without a copy), `load_weights` copies them into a model.
"""

from __future__ import annotations

import os
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from rlvr.config import Config
from rlvr.errors import ConfigError

ADDRESS_TIMEOUT_S = 3.0  # seconds a cluster's head has to accept a connection


def check_ray(cfg: Config) -> None:
    """Raise ConfigError, before any work, when ray.address names a head that does not answer.
    (validate() already checked that ray is installed.)"""
    address = cfg.ray.address
    if cfg.runtime != "ray" or address in ("", "auto"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"ray.address {address!r} is not HOST:PORT; give the address `ray start --head` "
            'printed (e.g. "10.0.0.1:6379"), or leave it empty for a local Ray.'
        )
    try:
        socket.create_connection((host, int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as e:
        raise ConfigError(
            f"ray.address {address!r} does not answer ({e.strerror or e}); start the head "
            "there with `ray start --head`, fix the address, or leave ray.address empty for a "
            "local Ray."
        ) from e


def needed_resources(cfg: Config) -> dict[str, float]:
    """CPUs and GPUs the run's actors reserve."""
    r = cfg.ray
    return {
        "CPU": r.num_samplers * r.sampler_cpus + r.num_verifiers * r.verifier_cpus + r.learner_cpus,
        "GPU": r.num_samplers * r.sampler_gpus + r.learner_gpus,
    }


@contextmanager
def ray_session(cfg: Config) -> Iterator[None]:
    """Ray for the run when runtime = "ray" (else nothing): join ray.address, or start a
    local Ray sized for the actors and shut it down afterwards."""
    if cfg.runtime != "ray":
        yield
        return
    import ray

    # The actors import rlvr and the user's reward modules by name: give them this sys.path.
    path = os.pathsep.join(p for p in sys.path if p)
    options = {"runtime_env": {"env_vars": {"PYTHONPATH": path}}, "include_dashboard": False,
               "logging_level": "WARNING", "log_to_driver": True}  # fmt: skip
    need = needed_resources(cfg)
    started = not ray.is_initialized()
    if started:
        if cfg.ray.address:
            try:
                ray.init(address=cfg.ray.address, **options)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(
                    f"ray.address {cfg.ray.address!r}: could not join the cluster ({e}); check "
                    "`ray status` there (a cluster with token authentication, Ray's default, "
                    "also needs RAY_AUTH_MODE=token here and its token in ~/.ray/auth_token), "
                    "or leave ray.address empty for a local Ray."
                ) from e
        else:  # a local Ray: room for every actor, even past this machine's cores
            cpus = max(float(os.cpu_count() or 1), need["CPU"])
            ray.init(num_cpus=cpus, **options)
    try:
        have = ray.cluster_resources()
        for kind, amount in need.items():
            if amount > have.get(kind, 0.0) + 1e-9:
                raise ConfigError(
                    f"The [ray] actors reserve {amount:g} {kind}s but the cluster has "
                    f"{have.get(kind, 0.0):g}; lower ray.num_samplers, ray.num_verifiers or "
                    "the per-actor ray.*_cpus / ray.*_gpus, or add machines."
                )
        yield
    finally:
        if started:
            ray.shutdown()


def check_model(policy: torch.nn.Module) -> None:
    """Raise ConfigError unless `policy` can be rebuilt in an actor: rlvr's model class (its
    config and named weights travel)."""
    from rlvr.model import Transformer

    if not isinstance(policy, Transformer):
        raise ConfigError(
            f'runtime = "ray" needs rlvr\'s own model class (Llama, Qwen2, Qwen3 and Mistral '
            f"checkpoints load into it), not {type(policy).__name__}; set runtime = "
            '"local" for this model.'
        )


def pack_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's parameters by name as CPU numpy arrays (bfloat16 travels as its bits,
    int16, and is told apart by the name's "|bf16" suffix)."""
    packed = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            t = p.detach().cpu()
            if t.dtype == torch.bfloat16:
                packed[name + "|bf16"] = t.view(torch.int16).numpy()
            else:
                packed[name] = t.numpy()
    return packed


@torch.no_grad()
def load_weights(model: torch.nn.Module, packed: dict[str, np.ndarray]) -> None:
    """Copy `pack_weights` output into `model`'s parameters (on whatever device they are)."""
    params = dict(model.named_parameters())
    with warnings.catch_warnings():  # arrays from the object store are read-only: only read
        warnings.simplefilter("ignore", UserWarning)
        for key, array in packed.items():
            name, _, kind = key.partition("|")
            t = torch.from_numpy(array)
            params[name].copy_(t.view(torch.bfloat16) if kind == "bf16" else t)


def gpu_device() -> torch.device:
    """Inside an actor: its GPU when Ray gave it one (Ray sets CUDA_VISIBLE_DEVICES), else the
    CPU."""
    import ray

    return torch.device("cuda", 0) if ray.get_gpu_ids() else torch.device("cpu")


def actor_error(error: BaseException) -> BaseException:
    """The exception an actor's method raised (a ConfigError stays one), from Ray's wrapper."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error
