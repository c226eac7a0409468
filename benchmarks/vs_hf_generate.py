"""rlvr's Engine against transformers `generate` on the same Qwen2-architecture checkpoint.

    python benchmarks/vs_hf_generate.py [--threads 2] [--runs 5] [--sizes 1m,6m] [--device cpu]

For each size, a random Qwen2 model is built in code with transformers, saved, and loaded
into rlvr with `load_hf_model`; both sides then sample 8 prompts x 8 samples x 128 new
tokens (forced: no stop token on either side), temperature 1.0, top-p 1.0, no top-k, fp32,
the same thread count, the same torch settings (one process). One warm-up run each, then
the median of `--runs` alternating runs. Prints one line per size to stderr and one JSON
line last on stdout; `ratio` is our new tokens/s over theirs (above 1: rlvr is faster),
with rlvr's default fp32 path (the one that gives the same tokens for the same seed).
`--device cuda` runs both sides on the GPU (timed to the end of the GPU's work); rlvr decodes
through a CUDA graph there, and the extra column `eager` is rlvr without it.

Extra column, measured in the same alternation (`--extras`, on by default; it changes float
rounding, so it is not the headline): `bf16`, rlvr's engine on the model in bfloat16. Run it
alone: 2-thread torch slows down when another process holds a core. Needs transformers.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time

import torch
import transformers

from rlvr.hf import char_tokenizer_to_hf, load_hf_model
from rlvr.sampling.engine import Engine
from rlvr.tokenizer import CharTokenizer

# Qwen2 shapes (q/k/v biases, untied embeddings off: tied, as small Qwen2 models are).
SIZES = {
    "1m": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=6,
               num_attention_heads=4, num_key_value_heads=2),
    "6m": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=8,
               num_attention_heads=8, num_key_value_heads=4),
}  # fmt: skip


def build_checkpoint(size: str, folder: str) -> torch.nn.Module:
    """A random Qwen2 model (transformers) saved into `folder` with a character tokenizer."""
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=CharTokenizer().vocab_size,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        **SIZES[size],
    )
    model = transformers.Qwen2ForCausalLM(config).eval()
    model.save_pretrained(folder)
    char_tokenizer_to_hf(CharTokenizer()).save_pretrained(folder)
    return model


def measure(size: str, args: argparse.Namespace) -> dict:
    """Median new tokens/s of both sides on one model size; prints one line to stderr."""
    new_tokens = args.prompts * args.samples * args.new_tokens
    with tempfile.TemporaryDirectory() as folder:
        theirs = build_checkpoint(size, folder).to(args.device)
        ours, _ = load_hf_model(folder)
        ours.to(args.device)
    vocab = ours.config.vocab_size
    # Prompts of varied lengths, left-padded on transformers' side as the engine does.
    prompts = [
        torch.randint(7, vocab, (args.prompt_len - i % 5,)).tolist() for i in range(args.prompts)
    ]
    input_ids = torch.tensor([[0] * (args.prompt_len - len(p)) + p for p in prompts])
    lengths = torch.tensor([len(p) for p in prompts])[:, None]
    attention_mask = (torch.arange(args.prompt_len) >= args.prompt_len - lengths).long()
    input_ids, attention_mask = input_ids.to(args.device), attention_mask.to(args.device)
    engines = {"ours": Engine(ours, pad_id=0)}
    if args.extras:
        engines["bf16"] = Engine(copy.deepcopy(ours).to(torch.bfloat16), pad_id=0)
        if args.device.startswith("cuda"):  # what the CUDA graph is worth
            engines["eager"] = Engine(ours, pad_id=0, decode="eager")

    def run_ours(seed: int, engine: Engine) -> float:
        generator = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        completions = engine.generate(
            prompts,
            num_samples=args.samples,
            max_new_tokens=args.new_tokens,
            temperature=1.0,
            top_p=1.0,
            generator=generator,
        )
        seconds = time.perf_counter() - start
        assert sum(len(c.token_ids) for c in completions) == new_tokens
        return seconds

    @torch.inference_mode()
    def run_theirs(seed: int) -> float:
        torch.manual_seed(seed)
        start = time.perf_counter()
        out = theirs.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=True,
            num_return_sequences=args.samples,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            pad_token_id=0,
            eos_token_id=None,
        )
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        seconds = time.perf_counter() - start
        assert out[:, args.prompt_len :].numel() == new_tokens
        return seconds

    for engine in engines.values():  # warm-up
        run_ours(0, engine)
    run_theirs(0)
    seconds: dict[str, list[float]] = {name: [] for name in [*engines, "theirs"]}
    for seed in range(1, args.runs + 1):  # alternate, so drift in machine load hits all
        for name, engine in engines.items():
            seconds[name].append(run_ours(seed, engine))
        seconds["theirs"].append(run_theirs(seed))
    tps = {name: new_tokens / statistics.median(s) for name, s in seconds.items()}
    extras = "".join(f"  {n} {tps[n]:,.0f} tok/s" for n in engines if n != "ours")
    print(
        f"{size}: {ours.num_parameters():,} params  rlvr {tps['ours']:,.0f} tok/s  "
        f"transformers {tps['theirs']:,.0f} tok/s  ratio {tps['ours'] / tps['theirs']:.2f}"
        f"{extras}",
        file=sys.stderr,
    )
    result = {
        "num_parameters": ours.num_parameters(),
        "ours_new_tokens_per_s": round(tps["ours"]),
        "transformers_new_tokens_per_s": round(tps["theirs"]),
        "ratio": round(tps["ours"] / tps["theirs"], 2),
    }
    for name in engines:
        if name != "ours":
            result[f"ours_{name}_new_tokens_per_s"] = round(tps[name])
            result[f"ratio_{name}"] = round(tps[name] / tps["theirs"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=24, help="longest prompt, tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1m,6m", help=f"comma-separated of {list(SIZES)}")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both sides)")
    parser.add_argument(
        "--extras",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure rlvr on the model in bfloat16 (and on a GPU without CUDA graphs)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    results = {size: measure(size, args) for size in args.sizes.split(",")}
    print(
        json.dumps(
            {
                "benchmark": "vs_hf_generate",
                "architecture": "qwen2",
                "prompts": args.prompts,
                "samples": args.samples,
                "new_tokens": args.new_tokens,
                "prompt_len": args.prompt_len,
                "temperature": 1.0,
                "top_p": 1.0,
                "dtype": "float32",
                "threads": torch.get_num_threads(),
                "device": torch.cuda.get_device_name(args.device)
                if args.device.startswith("cuda")
                else "cpu",
                "runs": args.runs,
                "warmup_runs": 1,
                "forced_length": "ours: no stop ids; transformers: min_new_tokens=max_new_tokens",
                "statistic": "median",
                "transformers_version": transformers.__version__,
                "torch_version": torch.__version__,
                "sizes": results,
            }
        )
    )


if __name__ == "__main__":
    main()
