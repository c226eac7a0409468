"""Does rlvr's engine sample what transformers `generate` samples? Same checkpoint, same prompts.

    .venv/bin/python benchmarks/sampler_parity.py --init RUN/pretrained [--batches 10]
                                                  [--seeds 7] [--threads 2]

The vs_trl.py setting without training: the checkpoint saved as Qwen2 (as vs_trl.py does),
its first `--batches` GRPO batches (8 prompts each, the problems both sides of vs_trl.py
see), 8 samples per prompt, 64 tokens forced by masking EOS, temperature 1.0. transformers
samples with the GenerationConfig TRL's GRPOTrainer builds (left-padded prompts, top_k 0,
top_p 1.0, min_new_tokens 64); rlvr's Engine with `min_new_tokens = 64`. Each completion is
graded as in vs_trl.py (the task's verifier on the response up to its first `</answer>`),
and the mean logprob of its sampled tokens is taken, on both sides by one full forward of
transformers' model on the unpadded sequence. Every (seed, batch) pair draws from its own
seed on both sides. If the two samplers draw from the same distribution, both figures agree
within sampling noise. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import vs_trl  # noqa: E402  (the benchmark's checkpoint, task and problem stream)

from rlvr.loop import load_model  # noqa: E402
from rlvr.sampling.engine import Engine  # noqa: E402
from rlvr.sampling.rollout import response_text  # noqa: E402

SAMPLES, TOKENS = 8, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", required=True, help="checkpoint, e.g. a demo run's pretrained/")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkpoint"
        vs_trl.qwen2_checkpoint(args.init, folder)
        cfg = vs_trl.config(argparse.Namespace(threads=args.threads, warmup=0, steps=args.batches))
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        ours, tokenizer = load_model(str(folder))
    hf.eval()
    task = vs_trl.make_task(cfg)
    engine = Engine(ours, pad_id=tokenizer.pad_id)
    generation = transformers.GenerationConfig(  # what GRPOTrainer passes to generate
        max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=True, temperature=1.0,
        top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0, pad_token_id=tokenizer.pad_id,
        eos_token_id=tokenizer.stop_ids, disable_compile=True,
    )  # fmt: skip
    rewards: dict[str, list[float]] = {"rlvr": [], "transformers": []}
    logprobs: dict[str, list[float]] = {"rlvr": [], "transformers": []}

    @torch.inference_mode()
    def mean_logprob(prompt: list[int], tokens: list[int]) -> float:
        logits = hf(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1]
        return logits.log_softmax(-1).gather(-1, torch.tensor(tokens)[:, None]).mean().item()

    batches = vs_trl.problem_batches(cfg)
    for seed in range(args.seeds):
        for index, problems in enumerate(batches):
            stream = seed * len(batches) + index  # its own random numbers, both sides
            prompts = [tokenizer.encode(tokenizer.format_prompt(p.prompt)) for p in problems]
            width = max(map(len, prompts))
            ids = torch.tensor([[tokenizer.pad_id] * (width - len(p)) + p for p in prompts])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            torch.manual_seed(stream)
            with torch.inference_mode():
                out = hf.generate(
                    input_ids=ids.repeat_interleave(SAMPLES, 0),
                    attention_mask=mask.repeat_interleave(SAMPLES, 0),
                    generation_config=generation,
                )[:, width:]
                for row, tokens in enumerate(out.tolist()):
                    prompt, problem = prompts[row // SAMPLES], problems[row // SAMPLES]
                    text = response_text(tokenizer, tokens)
                    rewards["transformers"].append(task.verify(text, problem).reward)
                    logprobs["transformers"].append(mean_logprob(prompt, tokens))
            completions = engine.generate(
                prompts, num_samples=SAMPLES, max_new_tokens=TOKENS, min_new_tokens=TOKENS,
                temperature=1.0, stop_token_ids=tokenizer.stop_ids,
                generator=torch.Generator().manual_seed(stream),
            )  # fmt: skip
            for c in completions:
                text = response_text(tokenizer, c.token_ids)
                rewards["rlvr"].append(task.verify(text, problems[c.prompt_index]).reward)
                logprobs["rlvr"].append(mean_logprob(prompts[c.prompt_index], c.token_ids))
        last = slice(-len(batches) * SAMPLES * len(batches[0]), None)  # this seed's completions
        print(f"seed {seed}: reward rlvr {statistics.fmean(rewards['rlvr'][last]):.4f} "
              f"transformers {statistics.fmean(rewards['transformers'][last]):.4f}",
              file=sys.stderr)  # fmt: skip
    n = len(rewards["rlvr"])
    # Binomial standard error of the difference of two means of independent draws (completions
    # of one prompt share the prompt, so this is a lower bound on the real spread).
    spread = sum(statistics.fmean(r) * (1 - statistics.fmean(r)) / n for r in rewards.values())
    print(json.dumps({
        "benchmark": "sampler_parity", "init": args.init, "batches": args.batches,
        "seeds": args.seeds, "samples_per_prompt": SAMPLES, "forced_tokens": TOKENS,
        "completions_per_side": n, "threads": args.threads,
        "reward": {k: round(statistics.fmean(v), 4) for k, v in rewards.items()},
        "reward_difference_standard_error": round(spread**0.5, 4),
        "mean_token_logprob": {k: round(statistics.fmean(v), 4) for k, v in logprobs.items()},
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
