"""Speculative decoding and continuous batching: new tokens per second with and without.

    python benchmarks/speculative.py --run RUN [--threads 2] [--repeats 3] [--problems 500]
                                     [--batches 16] [--rows 8,16,64] [--clock wall|process]

From a finished demo run folder of 60 GRPO steps (`rlvr demo --grpo.steps 60
--checkpoint.every 20`: its checkpoint/, pretrained/ and checkpoints/grpo-000040), in one
process, each variant alternating with the others, repeat by repeat:

1. grpo: the demo's GRPO sampling, `--batches` batches of its training problems (the run's
   ProblemStream) x 8 samples, temperature 1, <= 64 new tokens, with the trained checkpoint:
   `off` (the batch engine, as sampler.speculate = "off") against `context` (drafts from the
   context, deciding per step whether they pay), and `always` (every draft verified: the
   acceptance without the decision).
2. eval: greedy decoding of `--problems` held-out problems at 8, 16 and 64 rows (the rows of
   eval.batch_size): `off` (continuous batching, no drafts) against `context`, cold (nothing
   kept from before) and `warm` (the completions of the same problems by the step-40
   checkpoint kept, as a training run's evaluation every 20 steps keeps them), and `always`;
   with `--draft FOLDER` also `draft` (speculate = "draft" with that model) and
   `draft_always`.
3. continuous: the same greedy evaluation, batch at a time against continuous batching (the
   rows loop, even where `generate` would pick the batch engine: Engine.uses_rows_loop), with
   pretrained/ (lengths vary: most answers are short, a few think at length) and checkpoint/
   (lengths alike), at 8, 64 and 256 rows (256: the demo's eval.batch_size).
4. exact: the cost of sampler.exact_logprobs: the grpo workload's sampling (speculation off)
   and the learner's forward and backward over its episodes (the demo's minibatch), with the
   default kernels against the batch-invariant ones.

Per variant: new tokens per second (median over repeats), and for the drafting ones the
acceptance (accepted / drafted tokens), accepted tokens per verify step (per row that
drafted), tokens per row and forward, and the share of forwards that verified drafts.
`--clock process` times CPU seconds of this process instead of wall seconds (with one thread:
steady on a machine others load; the figures to publish are wall seconds, run alone).

Prints one JSON line last: ratio (grpo: context / off), eval_ratio (eval, 8 rows, cold:
context / off), eval_ratio_warm, eval_cold_ceiling (the new tokens per row and forward of
`always` cold at 8 rows over `off`'s: what eval_ratio would be if verifying cost nothing), and every
figure behind them.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from rlvr.checkpoint import load_checkpoint
from rlvr.loop import make_task
from rlvr.sampling.engine import Engine
from rlvr.sampling.rollout import prompt_text
from rlvr.sampling.sampler import ProblemStream
from rlvr.sampling.speculative import DraftHistory, Speculation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished 60-step demo run folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--rows", default="8,16,64")
    parser.add_argument("--tokens", type=int, default=4, help="sampler.speculate_tokens")
    parser.add_argument("--clock", choices=["wall", "process"], default="wall")
    parser.add_argument("--draft", default="", help="a small draft model's run folder")
    parser.add_argument("--skip", default="", help="skip some of: grpo,eval,continuous,exact")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    run = Path(args.run)
    model, tokenizer, cfg, _ = load_checkpoint(run / "checkpoint")
    model.eval()
    task = make_task(cfg)
    stop = tokenizer.stop_ids
    result: dict = {"benchmark": "speculative", "threads": args.threads, "clock": args.clock,
                    "machine": platform.processor() or platform.machine(),
                    "speculate_tokens": args.tokens}  # fmt: skip

    def timed(engine: Engine, prompts, **kwargs) -> tuple[float, int]:
        start = clock()
        completions = engine.generate(prompts, stop_token_ids=stop, **kwargs)
        return clock() - start, sum(len(c.token_ids) for c in completions)

    def report(runs: dict[str, list]) -> dict:
        """Median new tokens/s per variant; the loop statistics of the drafting ones."""
        out = {}
        for name, items in runs.items():
            rate = statistics.median(tokens / seconds for seconds, tokens, _ in items)
            entry = {"new_tokens_per_s": round(rate)}
            stats = items[-1][2]
            if stats is not None and stats.row_steps:  # (the first token of a row comes
                # from its prefill, not a decode forward: so even `off` is a little over 1)
                entry["tokens_per_row_step"] = round(stats.new_tokens / stats.row_steps, 3)
            if stats is not None and stats.drafted:
                entry.update(
                    acceptance=round(stats.accepted / stats.drafted, 3),
                    accepted_per_verify_row=round(stats.accepted / max(1, stats.verify_rows), 2),
                    verify_share=round(stats.verify_forwards / stats.forwards, 3),
                )
            out[name] = entry
        base = out.get("off", {}).get("new_tokens_per_s")
        for entry in out.values():
            if base:
                entry["ratio_vs_off"] = round(entry["new_tokens_per_s"] / base, 3)
        return out

    skip = set(args.skip.split(","))
    if "grpo" not in skip:
        stream = ProblemStream(task, cfg)
        batches = [[tokenizer.encode(prompt_text(tokenizer, p, None)) for p in stream.batch(i)]
                   for i in range(args.batches)]  # fmt: skip
        g = cfg.grpo
        variants = {
            "off": lambda: Engine(model, tokenizer.pad_id),
            "context": lambda: Engine(
                model, tokenizer.pad_id, speculation=Speculation(args.tokens)
            ),  # fmt: skip
            "always": lambda: Engine(
                model, tokenizer.pad_id, speculation=Speculation(args.tokens, adaptive=False)
            ),  # fmt: skip
        }
        runs: dict[str, list] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name, make in variants.items():
                engine, generator = make(), torch.Generator().manual_seed(repeat)
                seconds = tokens = 0
                total = None
                for prompts in batches:  # one engine, as the Sampler keeps one across steps
                    s, t = timed(engine, prompts, num_samples=g.group_size,
                                 max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                                 generator=generator)  # fmt: skip
                    seconds, tokens = seconds + s, tokens + t
                    total = _add(total, engine.stats)
                runs[name].append((seconds, tokens, total))
        result["grpo"] = report(runs)
        result["ratio"] = result["grpo"]["context"]["ratio_vs_off"]

    problems = task.problems("test", args.problems, seed=cfg.seed)
    prompts = [tokenizer.encode(prompt_text(tokenizer, p, None)) for p in problems]
    greedy = dict(num_samples=1, max_new_tokens=cfg.eval.max_new_tokens, temperature=0.0)
    if "eval" not in skip:
        kept = DraftHistory()  # the step-40 evaluation's completions, as a run keeps them
        earlier = load_checkpoint(run / "checkpoints" / "grpo-000040")[0].eval()
        Engine(earlier, tokenizer.pad_id, speculation=Speculation(args.tokens, history=kept)
               ).generate(prompts, stop_token_ids=stop, max_rows=64, **greedy)  # fmt: skip
        result["eval"] = {}
        draft = load_checkpoint(args.draft)[0].eval() if args.draft else None
        for rows in [int(r) for r in args.rows.split(",")]:
            variants = {
                "off": lambda: Engine(model, tokenizer.pad_id),
                "context": lambda: Engine(
                    model, tokenizer.pad_id, speculation=Speculation(args.tokens)
                ),  # fmt: skip
                "warm": lambda: Engine(
                    model,
                    tokenizer.pad_id,
                    speculation=Speculation(args.tokens, history=copy.deepcopy(kept)),
                ),  # fmt: skip
                "always": lambda: Engine(
                    model, tokenizer.pad_id, speculation=Speculation(args.tokens, adaptive=False)
                ),  # fmt: skip
            }
            if draft is not None:
                variants["draft"] = lambda: Engine(model, tokenizer.pad_id, speculation=Speculation(
                    args.tokens, draft_model=draft))  # fmt: skip
                variants["draft_always"] = lambda: Engine(model, tokenizer.pad_id, speculation=(
                    Speculation(args.tokens, draft_model=draft, adaptive=False)))  # fmt: skip
            runs = {name: [] for name in variants}
            for _ in range(args.repeats):
                for name, make in variants.items():
                    engine = make()
                    seconds, tokens = timed(engine, prompts, max_rows=rows, **greedy)
                    runs[name].append((seconds, tokens, engine.stats))
            result["eval"][str(rows)] = report(runs)
        result["eval_ratio"] = result["eval"]["8"]["context"]["ratio_vs_off"]
        result["eval_ratio_warm"] = result["eval"]["8"]["warm"]["ratio_vs_off"]
        # The new tokens per row and forward that context drafts give cold, every draft
        # verified, over those without drafts: the ratio eval_ratio could reach if a verify
        # step cost a plain step.
        at8 = result["eval"]["8"]
        result["eval_cold_ceiling"] = round(
            at8["always"]["tokens_per_row_step"] / at8["off"]["tokens_per_row_step"], 3
        )

    if "continuous" not in skip:
        result["continuous"] = {}
        for folder in ("pretrained", "checkpoint"):
            checkpoint = load_checkpoint(run / folder)[0].eval()
            for rows in (8, 64, 256):
                runs = {"batch": [], "continuous": []}
                for _ in range(args.repeats):
                    for name in runs:
                        engine = Engine(checkpoint, tokenizer.pad_id)
                        if name == "continuous":  # the rows loop, whatever generate would pick
                            start = clock()
                            out = list(engine.stream(prompts, stop_token_ids=stop, max_rows=rows,
                                                     **greedy))  # fmt: skip
                            seconds = clock() - start
                            tokens = sum(len(c.token_ids) for c in out)
                        else:
                            engine.continuous_batching = False
                            seconds, tokens = timed(engine, prompts, max_rows=rows, **greedy)
                        runs[name].append((seconds, tokens, None))
                out = report(runs)
                out["ratio"] = round(out["continuous"]["new_tokens_per_s"]
                                     / out["batch"]["new_tokens_per_s"], 3)  # fmt: skip
                result["continuous"][f"{folder}_{rows}"] = out
    if "exact" not in skip:
        result["exact"] = exact_cost(model, tokenizer, task, cfg, args, clock)
    print(json.dumps(result))


def exact_cost(model, tokenizer, task, cfg, args, clock) -> dict:
    """Sampling tokens/s and learner seconds per step, default against batch-invariant."""
    from rlvr.learning.learner import make_batch, sequence_logprobs

    g = cfg.grpo
    stream = ProblemStream(task, cfg)
    batches = [[tokenizer.encode(prompt_text(tokenizer, p, None)) for p in stream.batch(i)]
               for i in range(args.batches)]  # fmt: skip
    sampling: dict[str, list[float]] = {"default": [], "exact": []}
    learning: dict[str, list[float]] = {"default": [], "exact": []}
    for _ in range(args.repeats):
        for name in sampling:
            model.batch_invariant = name == "exact"
            engine, generator = Engine(model, tokenizer.pad_id), torch.Generator().manual_seed(0)
            seconds = tokens = 0
            episodes = []
            for prompts in batches:
                start = clock()
                completions = engine.generate(
                    prompts, num_samples=g.group_size, max_new_tokens=g.max_new_tokens,
                    temperature=g.temperature, stop_token_ids=tokenizer.stop_ids,
                    generator=generator,
                )  # fmt: skip
                seconds += clock() - start
                tokens += sum(len(c.token_ids) for c in completions)
                episodes.append([_Episode(prompts[c.prompt_index], c) for c in completions])
            sampling[name].append(tokens / seconds)
            model.train()
            start = clock()
            for group in episodes:  # one forward and backward per step's batch, as mu = 1
                batch = make_batch(group, tokenizer.pad_id)
                logprobs, _ = sequence_logprobs(model, batch, g.temperature)
                (logprobs * batch["completion_mask"]).sum().backward()
            model.zero_grad(set_to_none=True)
            learning[name].append((clock() - start) / len(episodes))
            model.eval()
    model.batch_invariant = False
    out = {
        "sampling_new_tokens_per_s": {k: round(statistics.median(v)) for k, v in sampling.items()},
        "learner_seconds_per_step": {
            k: round(statistics.median(v), 4) for k, v in learning.items()
        },
    }
    rates, secs = out["sampling_new_tokens_per_s"], out["learner_seconds_per_step"]
    out["sampling_ratio"] = round(rates["exact"] / rates["default"], 3)
    out["learner_ratio"] = round(secs["default"] / secs["exact"], 3)
    return out


class _Episode:
    """What make_batch reads of an episode."""

    def __init__(self, prompt_ids, completion) -> None:
        self.prompt_ids, self.completion_ids = prompt_ids, completion.token_ids
        self.logprobs = completion.logprobs


def _add(total, stats):
    if stats is None:
        return total
    if total is None:
        return copy.copy(stats)
    total.add(stats)
    return total


if __name__ == "__main__":
    main()
