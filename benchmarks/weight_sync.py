"""What a weight sync costs on Ray as the model grows (runtime = "ray").

Per policy version the driver puts the learner's parameters into Ray's object store once
(`pack_weights` + `ray.put`), and each sampler actor gets them (`ray.get`: on one machine a
read of shared memory, no copy) and copies them into its model (`load_weights`). This measures
the three parts for models of about 1M to 100M parameters (rlvr's Transformer, float32), with
two sampler-like actors reading the same put, on a local Ray:

    python benchmarks/weight_sync.py                       # 1M, 10M, 30M, 100M; 5 repetitions
    python benchmarks/weight_sync.py --sizes 1,10 --repeat 3 --threads 1

Last line: one JSON object, per size: parameters, megabytes per version, and the median
seconds of put, get (in an actor) and load (copy into the actor's model).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from rlvr.cluster import load_weights, pack_weights
from rlvr.model import ModelConfig, Transformer

# (hidden, intermediate, layers) for about 1M, 10M, 30M and 100M parameters with a 32k
# vocabulary cut to 4096 tokens (the embedding share stays small, as in real models).
SHAPES = {
    1: (128, 352, 4),
    10: (384, 1024, 6),
    30: (640, 1728, 6),
    100: (1024, 2816, 8),
}


def model_of(millions: int) -> Transformer:
    hidden, inter, layers = SHAPES[millions]
    cfg = ModelConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=hidden // 64,
                      num_key_value_heads=max(1, hidden // 256), max_position_embeddings=256)  # fmt: skip
    return Transformer(cfg)


class Receiver:
    """A sampler stand-in: a model of the same shape that takes a version's weights."""

    def __init__(self, config: ModelConfig, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.model = Transformer(config)

    def receive(self, box: list) -> tuple[float, float]:
        import ray

        t0 = time.perf_counter()
        packed = ray.get(box[0])
        t1 = time.perf_counter()
        load_weights(self.model, packed)
        return t1 - t0, time.perf_counter() - t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10,30,100", help="millions of parameters")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--receivers", type=int, default=2)
    args = parser.parse_args()
    import ray

    torch.set_num_threads(args.threads)
    ray.init(num_cpus=max(2, args.receivers), include_dashboard=False, logging_level="ERROR")
    results = {}
    for millions in [int(s) for s in args.sizes.split(",")]:
        model = model_of(millions)
        receivers = [
            ray.remote(Receiver).options(num_cpus=1).remote(model.config, args.threads)
            for _ in range(args.receivers)
        ]
        rows = []
        for _ in range(args.repeat + 1):  # the first round warms up (allocations)
            t0 = time.perf_counter()
            ref = ray.put(pack_weights(model))
            put = time.perf_counter() - t0
            timings = ray.get([r.receive.remote([ref]) for r in receivers])
            rows.append((put, *max(timings)))  # the slowest receiver's get and load
            del ref
        rows = rows[1:]
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        results[f"{millions}M"] = {
            "parameters": model.num_parameters(),
            "megabytes": round(size / 2**20, 1),
            "put_s": round(statistics.median(r[0] for r in rows), 4),
            "get_s": round(statistics.median(r[1] for r in rows), 4),
            "load_s": round(statistics.median(r[2] for r in rows), 4),
        }
        print(f"{millions}M: {results[f'{millions}M']}", flush=True)
        for r in receivers:
            ray.kill(r)
        del model
    ray.shutdown()
    print(json.dumps({"benchmark": "weight_sync", "receivers": args.receivers,
                      "threads": args.threads, "repeat": args.repeat, "sizes": results}))  # fmt: skip


if __name__ == "__main__":
    main()
