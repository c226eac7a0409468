"""Does torch's FSDP (`fully_shard`) run on this CPU, and does its update equal one process's?

Two processes (gloo) shard rlvr's Transformer with `fully_shard` (each block, then the root),
take one AdamW step on their halves of a batch, and compare the gathered weights with one
process's step on the whole batch (the plan for `learner.processes` with sharding: see
docs/distributed.md).

    python benchmarks/fsdp_cpu.py

Last line: one JSON object: whether it ran, the largest weight difference, seconds.
"""

from __future__ import annotations

import json
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlvr.model import ModelConfig, Transformer

WORLD = 2
CONFIG = ModelConfig(vocab_size=64, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip


def loss_of(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens).float().logsumexp(-1).mean()


def rank_main(rank: int, init: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    torch.manual_seed(0)
    model, single = Transformer(CONFIG), Transformer(CONFIG)
    single.load_state_dict(model.state_dict())
    tokens = torch.randint(0, CONFIG.vocab_size, (2 * WORLD, 16))
    mesh = init_device_mesh("cpu", (WORLD,))
    for block in model.model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # FSDP averages the gradients over the ranks: each rank's mean loss on its half.
    loss_of(model, tokens[2 * rank : 2 * rank + 2]).backward()
    optimizer.step()
    full = {name: p.full_tensor() for name, p in model.named_parameters()}

    reference = torch.optim.AdamW(single.parameters(), lr=1e-3)
    sum(loss_of(single, tokens[2 * r : 2 * r + 2]) / WORLD for r in range(WORLD)).backward()
    reference.step()
    if rank == 0:
        diff = max((full[n] - p).abs().max().item() for n, p in single.named_parameters())
        with open(out, "w") as f:
            json.dump({"max_abs_diff": diff, "param_type": type(model.lm_head.weight).__name__}, f)
    dist.destroy_process_group()


def main() -> None:
    folder = tempfile.mkdtemp(prefix="rlvr-fsdp-")
    out = f"{folder}/result.json"
    t0 = time.perf_counter()
    try:
        mp.spawn(rank_main, args=(f"file://{folder}/rendezvous", out), nprocs=WORLD)
        result = {"ran": True, **json.load(open(out))}
    except Exception as e:  # noqa: BLE001 - the answer may be "no", with the reason
        result = {"ran": False, "error": f"{type(e).__name__}: {e}"[:300]}
    result.update(benchmark="fsdp_cpu", processes=WORLD, torch=torch.__version__,
                  seconds=round(time.perf_counter() - t0, 1))  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
