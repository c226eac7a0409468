"""The data-parallel learner: one GRPO update split over `learner.processes` processes.

    learner.processes = 2        # in a config; then `rlvr train` as usual

Rank 0 is the training process (its policy is the loop's: evaluation, checkpoints and the
hand-over to the sampler read it as before); ranks 1 .. N-1 are spawned processes, each with a
copy of the policy, its own reference model and optimizer. They talk through torch.distributed
(gloo on the CPU, NCCL on GPUs, rank r on cuda:r).

Per step, rank 0 broadcasts the episodes; every rank builds the whole batch and its
advantages (cheap), and the minibatch shuffle draws the same order everywhere (same seeded
generator). Then:

    no-grad forwards (reference, importance correction): each rank a slice of the rows,
        gathered, so every rank holds the batch's logprobs;
    each minibatch: rank r takes groups r::N-ish (tensor_split of the minibatch's groups),
        its loss is its share of the minibatch loss (`loss_share`: the same denominator one
        process would use), gradients are summed (all-reduce), clipped and stepped alike on
        every rank, so the weights stay identical and equal the single-process update up to
        float rounding (summation order).

Statistics (loss, kl, clip fraction, ...) are reduced to the minibatch's values, as one process
would log them. Checkpoints hold rank 0's state; a resume broadcasts it to the other ranks.

Why not FSDP (`torch.distributed.fsdp.fully_shard`) here: see docs/notes/issue-12-ray.md.
"""

from __future__ import annotations

import math
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlvr.config import Config
from rlvr.errors import ConfigError, TrainingError
from rlvr.learning.learner import GRPOLearner, StepResult

START_TIMEOUT_S = 300  # seconds for the processes to meet and for one collective


class DataParallel:
    """One process's view of a data-parallel learner: its rank, the world size, and the
    collectives GRPOLearner needs (all on the default process group)."""

    def __init__(self, rank: int, world: int, device: torch.device) -> None:
        self.rank, self.world, self.device = rank, world, device

    def shard(self, group_ids: torch.Tensor) -> torch.Tensor:
        """This rank's groups of a minibatch (contiguous, sizes differ by at most one)."""
        return group_ids.tensor_split(self.world)[self.rank]

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of `value` over the ranks (a copy; every rank gets it)."""
        total = value.detach().clone().to(self.device, torch.float32)
        dist.all_reduce(total)
        return total

    @torch.no_grad()
    def sum_gradients(self, model: torch.nn.Module) -> None:
        """Replace each trainable parameter's gradient by its sum over the ranks (one
        all-reduce of a flat buffer; a parameter this rank's rows did not reach counts 0)."""
        params = [p for p in model.parameters() if p.requires_grad]
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
        )
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    @staticmethod
    def loss_share(loss_type: str, mask: torch.Tensor, minibatch_mask: torch.Tensor) -> float:
        """The factor that turns this rank's loss (aggregated over its rows) into its share of
        the minibatch's loss: local denominator / the minibatch's (see algorithms._aggregate).

        dapo, cispo already divide by the minibatch's tokens (num_tokens): 1.
        bnpo: tokens; grpo, gspo: sequences with a valid token; dr_grpo: sequences.
        mask: (B_r, T) this rank's rows; minibatch_mask: (B, T) the whole minibatch's."""
        if loss_type in ("dapo", "cispo"):
            return 1.0
        if loss_type == "bnpo":
            return float(mask.sum()) / max(float(minibatch_mask.sum()), 1.0)
        if loss_type in ("grpo", "gspo"):
            mine, total = mask.bool().any(dim=1).sum(), minibatch_mask.bool().any(dim=1).sum()
            return float(mine) / max(float(total), 1.0)
        if loss_type == "dr_grpo":
            return mask.shape[0] / minibatch_mask.shape[0]
        raise ValueError(f"unknown loss_type {loss_type!r}")

    def token_mean(
        self, value: torch.Tensor, mask: torch.Tensor, minibatch_mask: torch.Tensor
    ) -> torch.Tensor:
        """The minibatch's token mean from this rank's token mean `value` over `mask`."""
        weight = float(mask.sum()) / max(float(minibatch_mask.sum()), 1.0)
        return self.sum(value * weight)

    def reduce_stats(
        self, stats: dict[str, torch.Tensor], mask: torch.Tensor, minibatch_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """A minibatch's statistics from every rank's (one all-reduce): the loss terms are
        shares and add up, grad_norm is the same everywhere, the rest are token means."""
        weight = float(mask.sum()) / max(float(minibatch_mask.sum()), 1.0)
        keys = [key for key in stats if key != "grad_norm"]
        parts = [
            stats[key].detach().float() * (1.0 if key in ("loss", "policy_loss") else weight)
            for key in keys
        ]
        totals = self.sum(torch.stack(parts))
        return {key: stats[key] if key == "grad_norm" else totals[keys.index(key)]
                for key in stats}  # fmt: skip

    def gather_rows(self, fn, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """fn(rows) -> (rows, T-1) over the whole batch: each rank computes a contiguous slice
        of ceil(N / world) rows, the slices are gathered (zero-padded to one size)."""
        n, width = batch["input_ids"].shape
        size = math.ceil(n / self.world)
        start, end = min(n, self.rank * size), min(n, (self.rank + 1) * size)
        part = torch.zeros((size, width - 1), device=self.device)
        if end > start:
            part[: end - start] = fn({k: v[start:end] for k, v in batch.items()}).float()
        pieces = [torch.empty_like(part) for _ in range(self.world)]
        dist.all_gather(pieces, part)
        return torch.cat(pieces)[:n]


def check_data_parallel(policy: torch.nn.Module) -> None:
    """Raise ConfigError unless `policy` can be rebuilt in another process: rlvr's model class
    (the other ranks build it from its config and receive its weights)."""
    from rlvr.model import Transformer

    if not isinstance(policy, Transformer):
        raise ConfigError(
            f"learner.processes > 1 needs rlvr's own model class (Llama, Qwen2, Qwen3 and "
            f"Mistral checkpoints load into it), not {type(policy).__name__}; set "
            "learner.processes = 1 for this model."
        )


def _broadcast_weights(model: torch.nn.Module) -> None:
    """Every rank's parameters become rank 0's."""
    with torch.no_grad():
        for p in model.parameters():
            dist.broadcast(p.data, src=0)


def _rank_main(rank: int, world: int, backend: str, init: str, spec: dict) -> None:
    """Rank 1..N-1: hold a copy of the policy and take rank 0's commands until "stop"."""
    from rlvr.model import Transformer
    from rlvr.sampling.process import _die_with_parent

    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 decides when the run stops
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cfg: Config = spec["cfg"]
    torch.set_num_threads(cfg.learner.threads)
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world,
                            timeout=timedelta(seconds=START_TIMEOUT_S))  # fmt: skip
    try:
        policy = Transformer(spec["model_config"]).to(device)
        _broadcast_weights(policy)
        learner = GRPOLearner(policy, cfg, spec["pad_id"], spec["reward_weights"],
                              dp=DataParallel(rank, world, device))  # fmt: skip
        while True:
            command = [None]
            dist.broadcast_object_list(command, src=0, device=device)
            kind, *args = command[0]
            if kind == "step":
                learner.train_step(*args)
            elif kind == "load":
                learner.load_state_dict(args[0])
            else:  # "stop"
                return
    finally:
        dist.destroy_process_group()


class DistributedLearner:
    """The learner role over `learner.processes` processes; the same interface as
    GRPOLearner (train_step, state_dict, load_state_dict, bad_in_row, close)."""

    def __init__(self, policy: torch.nn.Module, cfg: Config, pad_id: int,
                 reward_weights: dict[str, float]) -> None:  # fmt: skip
        check_data_parallel(policy)
        self.cfg, self.world = cfg, cfg.learner.processes
        self.device = next(policy.parameters()).device
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        if dist.is_initialized():
            raise ConfigError(
                "learner.processes > 1 needs this process's torch.distributed to itself, but "
                "a process group is already set up; set learner.processes = 1."
            )
        self._dir = tempfile.mkdtemp(prefix="rlvr-learner-")
        init = f"file://{self._dir}/rendezvous"
        spec = {"cfg": cfg, "model_config": policy.config, "pad_id": pad_id,
                "reward_weights": reward_weights}  # fmt: skip
        ctx = mp.get_context("spawn")
        self._processes = [
            ctx.Process(
                target=_rank_main,
                args=(rank, self.world, backend, init, spec),
                name=f"rlvr-learner-{rank}",
                daemon=True,
            )  # fmt: skip
            for rank in range(1, self.world)
        ]
        for process in self._processes:
            process.start()
        dist.init_process_group(backend, init_method=init, rank=0, world_size=self.world,
                                timeout=timedelta(seconds=START_TIMEOUT_S))  # fmt: skip
        self._open = True
        with self._collective():
            _broadcast_weights(policy)
        self.learner = GRPOLearner(policy, cfg, pad_id, reward_weights,
                                   dp=DataParallel(0, self.world, self.device))  # fmt: skip

    @contextmanager
    def _collective(self) -> Iterator[None]:
        """Turn a failed collective (another rank died) into the run's stop with its resume
        line."""
        try:
            yield
        except RuntimeError as error:
            if isinstance(error, TrainingError):
                raise
            dead = [p.name for p in self._processes if not p.is_alive()]
            who = f"{', '.join(dead)} died" if dead else f"a collective failed ({error})"
            raise TrainingError(
                f"The data-parallel learner stopped: {who}; the last checkpoint is intact, "
                f"resume with `rlvr train --resume {self.cfg.run_dir or 'RUN_DIR'}`."
            ) from error

    def _broadcast(self, command: tuple) -> None:
        dist.broadcast_object_list([command], src=0, device=self.device)

    def train_step(self, episodes: list, step: int) -> StepResult:
        """One update over all the processes (GRPOLearner.train_step on each one's share)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(self.cfg.learner.threads)
        try:
            with self._collective():
                self._broadcast(("step", episodes, step))
                return self.learner.train_step(episodes, step)
        finally:
            torch.set_num_threads(threads)

    @property
    def bad_in_row(self) -> int:
        return self.learner.bad_in_row

    def state_dict(self) -> dict:
        """Rank 0's state: every rank holds the same weights, optimizer state and shuffle."""
        return self.learner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        with self._collective():
            self._broadcast(("load", state))
        self.learner.load_state_dict(state)

    def close(self) -> None:
        """Stop the other ranks and leave the process group."""
        if not self._open:
            return
        self._open = False
        try:
            if all(p.is_alive() for p in self._processes):
                self._broadcast(("stop",))
        finally:
            for process in self._processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
                    process.join()
            dist.destroy_process_group()
            shutil.rmtree(self._dir, ignore_errors=True)
