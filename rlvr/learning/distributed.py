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

With `learner.fsdp = true` the parameters, gradients and optimizer state are sharded instead of
replicated (torch FSDP's `fully_shard`: each block, then the root), for models whose training
state does not fit one device. Every rank trains a sharded copy (rank 0 too); after each step
the shards are gathered into rank 0's plain policy, the loop's. FSDP averages the gradients it
reduce-scatters, so each rank backpropagates world x its share. Checkpoints hold the gathered
optimizer state, keyed by parameter name (`torch.distributed.checkpoint.state_dict`), so they
resume FSDP runs only.
"""

from __future__ import annotations

import copy
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

    def __init__(self, rank: int, world: int, device: torch.device, fsdp: bool = False) -> None:
        self.rank, self.world, self.device = rank, world, device
        self.fsdp = fsdp
        """Parameters, gradients and optimizer state sharded (FSDP) rather than replicated."""

    def wrap(self, policy: torch.nn.Module, reference: torch.nn.Module | None) -> None:
        """With fsdp, shard the policy and the reference in place: each block, then the rest
        (embeddings, final norm, the head) at the root."""
        if not self.fsdp:
            return
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.type, (self.world,))
        for model in (policy, reference):
            if model is not None:
                for block in model.model.layers:
                    fully_shard(block, mesh=mesh)
                fully_shard(model, mesh=mesh)

    def backward(self, loss: torch.Tensor, model: torch.nn.Module) -> None:
        """Backpropagate this rank's share of the loss and sum the gradients over the ranks.
        FSDP reduce-scatters their mean, so its ranks backpropagate world x their share."""
        if self.fsdp:
            (loss * self.world).backward()
        else:
            loss.backward()
            self.sum_gradients(model)

    def full(self, value: torch.Tensor) -> torch.Tensor:
        """A plain tensor from a possibly sharded one (FSDP's grad norm is a DTensor)."""
        return value.full_tensor() if hasattr(value, "full_tensor") else value

    @torch.no_grad()
    def gather_weights(self, model: torch.nn.Module, into: torch.nn.Module | None) -> None:
        """With fsdp, the whole parameters from the shards (a collective every rank joins);
        rank 0 copies them into `into`, the loop's unsharded policy."""
        target = dict(into.named_parameters()) if into is not None else {}
        for name, p in model.named_parameters():
            full = p.full_tensor()
            if name in target:
                target[name].copy_(full)

    def full_state(self, policy, optimizer, reference) -> tuple[dict, dict | None]:
        """With fsdp, the optimizer's and the reference's whole state (keyed by parameter
        name), gathered on every rank (a collective)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_optimizer_state_dict(policy, optimizer, options=options)
        ref = get_model_state_dict(reference, options=options) if reference is not None else None
        return state, ref

    def load_full_state(self, policy, optimizer, reference, state: dict) -> None:
        """With fsdp, each rank takes its shards of a `full_state` (every rank has it)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(policy, optimizer, state["optimizer"], options=options)
        if reference is not None:
            set_model_state_dict(reference, state["reference"], options=options)

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
        """fn(rows) -> (rows, T-1) over the whole batch: each rank computes one of `world`
        contiguous slices (sizes differ by at most one, none empty: the batch has at least
        `world` groups), the slices are gathered (zero-padded to one size for the collective)."""
        n, width = batch["input_ids"].shape
        slices = torch.arange(n).tensor_split(self.world)
        size = len(slices[0])
        mine = slices[self.rank].to(self.device)
        part = torch.zeros((size, width - 1), device=self.device)
        part[: len(mine)] = fn({k: v[mine] for k, v in batch.items()}).float()
        pieces = [torch.empty_like(part) for _ in range(self.world)]
        dist.all_gather(pieces, part)
        return torch.cat([piece[: len(rows)] for piece, rows in zip(pieces, slices)])


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
        dp = DataParallel(rank, world, device, fsdp=cfg.learner.fsdp)
        learner = GRPOLearner(policy, cfg, spec["pad_id"], spec["reward_weights"], dp=dp)
        while True:
            command = [None]
            dist.broadcast_object_list(command, src=0, device=device)
            kind, *args = command[0]
            if kind == "step":
                learner.train_step(*args)
                if dp.fsdp:
                    dp.gather_weights(policy, into=None)
            elif kind == "state":  # with fsdp: the gathering is a collective
                learner.state_dict()
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
        self.policy = policy  # the loop's: whole weights, for evaluations and checkpoints
        self.dp = DataParallel(0, self.world, self.device, fsdp=cfg.learner.fsdp)
        # With fsdp, rank 0 trains a sharded copy and gathers it into the loop's policy.
        train = copy.deepcopy(policy) if self.dp.fsdp else policy
        with self._collective():
            self.learner = GRPOLearner(train, cfg, pad_id, reward_weights, dp=self.dp)

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
                result = self.learner.train_step(episodes, step)
                if self.dp.fsdp:
                    self.dp.gather_weights(self.learner.policy, into=self.policy)
                return result
        finally:
            torch.set_num_threads(threads)

    @property
    def bad_in_row(self) -> int:
        return self.learner.bad_in_row

    def state_dict(self) -> dict:
        """Rank 0's state: every rank holds the same weights, optimizer state and shuffle
        (with fsdp, every rank's shards gathered)."""
        with self._collective():
            if self.dp.fsdp:
                self._broadcast(("state",))
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
