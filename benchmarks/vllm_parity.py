"""Does vLLM sample what rlvr's engine samples? Same checkpoint, same problems, same settings.

    python benchmarks/vllm_parity.py --init RUN/pretrained [--batches 10] [--seeds 3]
                                     [--threads 2]

The demo recipe's GRPO sampling: its first `--batches` GRPO batches (8 problems each, rlvr's
seeded ProblemStream), 8 samples per problem, up to 64 new tokens ending at EOS, temperature
1.0, fp32. rlvr's Engine and rlvr's vLLM backend (VLLMEngine, the sampler.backend = "vllm"
path) sample every (seed, batch) pair from their own seed. Each completion is graded by the
task's verifier (reward = accuracy, 0 or 1), and the learner (rlvr's model on the same
weights, one full forward) scores its tokens: `mean_token_logprob` per side, and
`mismatch_kl`, the token mean of the k3 estimate of KL(sampler || learner) between the
logprobs each sampler returned and the learner's (what GRPO logs as mismatch_kl). If the two
samplers draw from the same distribution, the mean rewards agree within sampling noise
(`reward_difference_standard_error`, binomial) and both mismatch_kl are float noise. Needs
`rlvr[vllm]`. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")

import torch  # noqa: E402

from rlvr.checkpoint import load_checkpoint  # noqa: E402
from rlvr.cli import recipe_path  # noqa: E402
from rlvr.config import load_config  # noqa: E402
from rlvr.learning.algorithms import kl_k3  # noqa: E402
from rlvr.loop import make_task  # noqa: E402
from rlvr.sampling.engine import Engine  # noqa: E402
from rlvr.sampling.rollout import prompt_text, response_text  # noqa: E402
from rlvr.sampling.sampler import ProblemStream  # noqa: E402
from rlvr.sampling.vllm_engine import VLLMEngine  # noqa: E402

SAMPLES, TOKENS = 8, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--init", required=True, help="checkpoint, e.g. a demo run's pretrained/")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(recipe_path("demo"), ["--threads", str(args.threads)])
    model, tokenizer, _, _ = load_checkpoint(args.init)
    task = make_task(cfg)
    stream = ProblemStream(task, cfg)
    batches = [stream.batch(i) for i in range(args.batches)]
    engines = {"rlvr": Engine(model, pad_id=tokenizer.pad_id),
               "vllm": VLLMEngine(model, tokenizer, cfg)}  # fmt: skip
    rewards: dict[str, list[float]] = {name: [] for name in engines}
    logprobs: dict[str, list[float]] = {name: [] for name in engines}
    mismatch: dict[str, list[float]] = {name: [] for name in engines}  # per token

    @torch.inference_mode()
    def learner_logprobs(prompt: list[int], tokens: list[int]) -> torch.Tensor:
        logits = model(torch.tensor([prompt + tokens]))[0, len(prompt) - 1 : -1]
        return logits.log_softmax(-1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]

    for seed in range(args.seeds):
        for index, problems in enumerate(batches):
            stream_seed = seed * len(batches) + index  # its own random numbers, both sides
            prompts = [tokenizer.encode(prompt_text(tokenizer, p, None)) for p in problems]
            for name, engine in engines.items():
                with torch.inference_mode():
                    completions = engine.generate(
                        prompts, num_samples=SAMPLES, max_new_tokens=TOKENS, temperature=1.0,
                        stop_token_ids=tokenizer.stop_ids,
                        generator=torch.Generator().manual_seed(stream_seed),
                    )  # fmt: skip
                for c in completions:
                    text = response_text(tokenizer, c.token_ids)
                    rewards[name].append(task.verify(text, problems[c.prompt_index]).reward)
                    learner = learner_logprobs(prompts[c.prompt_index], c.token_ids)
                    logprobs[name].append(learner.mean().item())
                    mismatch[name] += kl_k3(torch.tensor(c.logprobs), learner).tolist()
        print(f"seed {seed}: reward " + "  ".join(
            f"{n} {statistics.fmean(r):.4f}" for n, r in rewards.items()), file=sys.stderr)  # fmt: skip
    n = len(rewards["rlvr"])
    # Binomial standard error of the difference of two means of independent draws (completions
    # of one prompt share the prompt, so this is a lower bound on the real spread).
    spread = sum(statistics.fmean(r) * (1 - statistics.fmean(r)) / n for r in rewards.values())
    difference = statistics.fmean(rewards["vllm"]) - statistics.fmean(rewards["rlvr"])
    import vllm

    print(json.dumps({
        "benchmark": "vllm_parity", "init": args.init, "batches": args.batches,
        "seeds": args.seeds, "samples_per_prompt": SAMPLES, "max_new_tokens": TOKENS,
        "completions_per_side": n, "threads": args.threads,
        "reward": {k: round(statistics.fmean(v), 4) for k, v in rewards.items()},
        "reward_difference": round(difference, 4),
        "reward_difference_standard_error": round(spread**0.5, 4),
        "within_two_standard_errors": abs(difference) <= 2 * spread**0.5,
        "mean_token_logprob": {k: round(statistics.fmean(v), 4) for k, v in logprobs.items()},
        "mismatch_kl": {k: float(f"{statistics.fmean(v):.3g}") for k, v in mismatch.items()},
        "vllm_version": vllm.__version__, "torch_version": torch.__version__,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
